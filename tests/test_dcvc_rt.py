"""DCVC-RT (models/dcvc_rt.py): published size, full-size training step, exact coding, entry points, loss.

The registry tests (tests/test_models.py) already run forward, backward, bits-rise-with-q_index and
the I-P-P round trips on ``dcvc_rt_tiny``; these add what is specific to DCVC-RT: the published
parameter and kMAC/px figures of the full model, one training step at full size, the hierarchical
quality offsets and the feature refresh in real coding (in-process and in a fresh process), the
train.py -> evaluate.py chain, and the YUV + RGB training distortion.
"""

from __future__ import annotations

import copy
import csv
import functools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from models import build_model
from models.base import PayloadError, eval_mode
from models.dcvc_rt import (
    DCVCRT,
    OFFICIAL_PARAMS,
    PUBLISHED,
    REFERENCE,
    DepthConvBlock,
    LevelledDensity,
    Reference,
    context_masks,
)
from nvc_train.complexity import codec_complexity, count_macs
from nvc_train.embedded import ensure_embedded_clips
from nvc_train.entropy import AnsDecoder, AnsEncoder
from nvc_train.training.losses import DISTORTIONS, RGB_WEIGHT, combine_planes, frame_terms, plane_mses
from nvc_train.video import open_video
from tests.test_models import _encode_sequence

NAMES = ("dcvc_rt", "dcvc_rt_tiny")


@functools.cache
def _clip(count: int) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """The first ``count`` frames of an embedded clip (320x256) as (y, uv) tensors."""
    reader = open_video(ensure_embedded_clips()["astronaut_pan"])
    out = []
    for index in range(count):
        y, u, v = reader.read_frame(index).to_tensors()
        out.append((y, torch.cat([u, v], dim=1)))
    return tuple(out)


def frames(height: int, width: int, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` consecutive real frames cropped to ``height`` x ``width`` (even sizes)."""
    return [
        (y[..., :height, :width].contiguous(), uv[..., : height // 2, : width // 2].contiguous())
        for y, uv in _clip(count)
    ]


@functools.cache
def tiny(**overrides) -> DCVCRT:
    """A seeded, untrained tiny model with coder tables (shared: tests must not change its weights)."""
    torch.manual_seed(0)
    model = build_model("dcvc_rt_tiny", **overrides)
    model.update()
    return model.eval()


# ---------------------------------------------------------------------------------------------------
# Configs and published size


@pytest.mark.parametrize("name", NAMES)
def test_config_file_equals_the_registered_variant(name: str, repo_root: Path):
    config = OmegaConf.to_container(OmegaConf.load(repo_root / "configs" / "model" / f"{name}.yaml"))
    assert config.pop("_target_") == "models.dcvc_rt.DCVCRT"
    built = instantiate(OmegaConf.load(repo_root / "configs" / "model" / f"{name}.yaml"))
    assert built.config == build_model(name).config == config, f"configs/model/{name}.yaml differs"


def _frame_macs(model: DCVCRT, height: int, width: int) -> tuple[int, int, int]:
    """MACs of an intra frame, the first P frame after it and a steady-state P frame (a P reference).

    The first P frame builds its reference feature from the intra picture (``feature_adaptor_i``,
    a 192->256 block); every later one, except at a refresh, from the previous decoder feature (a
    1x1 convolution): that is the P frame a sequence is made of, and the one DCVC-RT reports.
    ``model`` is counted where it lives (the meta device: no memory, no arithmetic).
    """
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    y = torch.rand(1, 1, height, width, generator=generator).to(device)
    uv = torch.rand(1, 2, height // 2, width // 2, generator=generator).to(device)
    q = torch.full((1,), model.num_q // 2, dtype=torch.long, device=device)
    outputs = []

    def frame(ref: Reference | None) -> Reference:
        outputs.append(model.forward_frame(y, uv, q, ref))
        return outputs[-1].ref

    with torch.no_grad(), eval_mode(model):
        intra = count_macs(frame, None)
        first = count_macs(frame, outputs[-1].ref)
        steady = count_macs(frame, outputs[-1].ref)
    return intra, first, steady


def test_full_model_counts_the_official_parameters_and_the_published_kmac_per_pixel():
    """DCVC-RT's P model: exactly the official parameters (DMC 20,691,456; DMCI 45,651,314, counted
    on microsoft/DCVC's code, tests/fixtures/official/README.md), as ``python -m nvc_train.complexity
    dcvc_rt`` counts them; 185.7 kMAC/px at 1920x1080 (review Table 5), +-10%.

    Counted by the framework's counter (FlopCounterMode, MACs = FLOPs / 2) on the meta device (no
    memory, no arithmetic, seconds at 1080p); a test below checks that meta counts what real tensors
    count. Measured: steady-state P frame 196.4 kMAC/px, the first P frame after an intra frame
    204.4, an intra frame 490.0 (1920x1080, padded to 1088).
    """
    torch.manual_seed(0)
    net = build_model("dcvc_rt")
    figures = net.complexity()
    counts = {k.removesuffix("_m"): round(v * 1e6) for k, v in figures.items()}
    assert {k: counts[k] for k in OFFICIAL_PARAMS} == OFFICIAL_PARAMS, counts
    assert figures["params_inter_m"] == pytest.approx(PUBLISHED["params_inter_m"], rel=0.10), figures
    assert figures["params_m"] == pytest.approx(figures["params_inter_m"] + figures["params_intra_m"])
    assert figures["params_m"] == pytest.approx(sum(p.numel() for p in net.parameters()) / 1e6)

    meta = copy.deepcopy(net).to("meta")
    del net
    intra, first, steady = _frame_macs(meta, 1088, 1920)
    kmac_steady = steady / (1080 * 1920) / 1e3
    assert kmac_steady == pytest.approx(PUBLISHED["kmac_per_px_inter"], rel=0.10), kmac_steady
    assert intra > first > steady  # the picture's adaptor block costs more than the 1x1 feature adaptor
    # The framework's own P-frame count (what evaluate.py writes into complexity.csv) is the steady state.
    assert codec_complexity(meta, 1080, 1920, "P")["macs"] == steady


def test_meta_device_counts_what_real_tensors_count():
    model = tiny()
    assert _frame_macs(copy.deepcopy(model).to("meta"), 128, 192) == _frame_macs(model, 128, 192)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_equal_the_reference_table(name: str):
    model = build_model(name)
    figures = {k.removesuffix("_m"): round(v * 1e6) for k, v in model.complexity().items()}
    assert figures == REFERENCE[name], f"{name}: {figures}; update REFERENCE if the change is deliberate"


@pytest.mark.slow
def test_one_training_step_of_the_full_model_at_256():
    """The full model trains on the CPU: an I-P-P chain at 256x256, R + lambda D, backward, AdamW."""
    torch.manual_seed(0)
    net = build_model("dcvc_rt").train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    clip = frames(256, 256, 3)
    q = torch.tensor([net.num_q - 1])
    ref, loss = None, torch.zeros(())
    for y, uv in clip:
        out = net.forward_frame(y, uv, q, ref)
        terms = frame_terms(out.y_hat, out.uv_hat, out.bits, y, uv)
        loss = loss + (terms.bpp + 1000.0 * terms.distortion).mean()
        ref = out.ref
    assert torch.isfinite(loss)
    before = net.inter.recon_head.weight.detach().clone()
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    optimizer.step()
    assert not torch.equal(before, net.inter.recon_head.weight)


def test_rate_stays_float32_under_mixed_precision():
    """bf16 autocast (GPU training recipes): the transforms may run in bf16, the likelihoods and bits
    may not (bf16 would round a frame's rate to 2-3 significant digits)."""
    torch.manual_seed(0)
    model = build_model("dcvc_rt_tiny").train()
    (y0, uv0), (y1, uv1) = frames(64, 64, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        intra = model.forward_frame(y0, uv0, torch.tensor([3]), None)
        inter = model.forward_frame(y1, uv1, torch.tensor([3]), intra.ref)
    for out in (intra, inter):
        assert out.bits.dtype == torch.float32 and torch.isfinite(out.bits).all()
    (intra.bits + inter.bits).sum().backward()


# ---------------------------------------------------------------------------------------------------
# Inference speed paths: the block without autograd, half precision, compiled transforms


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize(("in_ch", "out_ch", "shortcut"), [(8, 8, False), (6, 8, False), (8, 8, True)])
def test_block_inference_path_equals_the_training_path(batch: int, in_ch: int, out_ch: int, shortcut: bool):
    """Without autograd a DepthConvBlock folds x*sigmoid(4x) into one silu (the 4 and 1/4 scale
    neighbouring layers: exact powers of two) and runs 1x1 layers as GEMMs (batch 1) or convolutions
    with scaled weights (other batches); only the activation's rounding may differ."""
    torch.manual_seed(0)
    block = DepthConvBlock(in_ch, out_ch, shortcut=shortcut)
    with torch.no_grad():
        for parameter in block.parameters():  # non-trivial values everywhere (biases included)
            parameter.uniform_(-0.5, 0.5)
    x = torch.randn(batch, in_ch, 5, 7)
    reference = block(x)  # autograd on: the training path
    with torch.no_grad():
        fast = block(x)
    assert reference.requires_grad and not fast.requires_grad
    assert torch.allclose(fast, reference, rtol=1e-5, atol=1e-5), float((fast - reference).abs().max())
    assert not torch.equal(fast, torch.zeros_like(fast))


def test_coding_under_bf16_autocast_keeps_the_entropy_parameters_float32(monkeypatch: pytest.MonkeyPatch):
    """Half-precision transforms (bench/codec_speed.py --precision bf16, the GPU path's fp16 the
    same way): the coder is given float32 scales and float32 symbols, the decoder reproduces the
    encoder's pictures, and pictures and rates stay close to the float32 ones."""
    model = tiny()
    clip = frames(64, 64, 3)
    seen: list[torch.dtype] = []
    for half in (model.intra.context, model.inter.coder):
        original = half.gaussian.encode_into

        def recording(encoder, y, scales, means=None, original=original):
            seen.extend([y.dtype, scales.dtype])
            return original(encoder, y, scales, means)

        monkeypatch.setattr(half.gaussian, "encode_into", recording)
    float32, float32_outputs = _encode_sequence(model, clip, [5, 5, 5])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        payloads, outputs = _encode_sequence(model, clip, [5, 5, 5])
        ref = None
        for data, out in zip(payloads, outputs, strict=True):
            y_hat, uv_hat, ref = model.decompress_frame(data, 5, ref, 64, 64)
            assert torch.equal(y_hat, out.y_hat) and torch.equal(uv_hat, out.uv_hat)
    assert seen and set(seen) == {torch.float32}
    assert payloads != float32  # the transforms did run in bf16
    # Measured (untrained tiny model, 64x64): mean |bf16 - fp32| 0.3e-3 to 1.6e-3, bits within 1.4%.
    for out, reference in zip(outputs, float32_outputs, strict=True):
        assert out.y_hat.dtype == torch.float32
        assert float((out.y_hat - reference.y_hat).abs().mean()) < 0.01
        assert float(out.bits) == pytest.approx(float(reference.bits), rel=0.05)


@pytest.mark.slow
def test_compiled_transforms_code_the_same_bytes():
    """``compile_transforms`` (bench/codec_speed.py --compile / --cuda-graphs) compiles every
    sub-network the coding path calls and none of the entropy models; with a backend that keeps the
    arithmetic (``eager``: dynamo's tracing and guards only) the stream and pictures are unchanged."""
    model = copy.deepcopy(tiny())  # compiling changes the module: not the shared one
    clip = frames(64, 64, 3)
    eager_payloads, eager_outputs = _encode_sequence(model, clip, [5, 5, 5])
    names = model.compile_transforms(backend="eager")
    assert "intra.enc" in names and "inter.recon" in names and "intra.context_adaptors.2" in names
    assert "inter.context" in names  # the P model's context transform; the intra "context" is its coder
    assert not {"intra.z_prior", "intra.context", "inter.z_prior", "inter.coder"} & set(names)
    payloads, outputs = _encode_sequence(model, clip, [5, 5, 5])
    assert payloads == eager_payloads
    ref = None
    for data, out, eager in zip(payloads, outputs, eager_outputs, strict=True):
        assert torch.equal(out.y_hat, eager.y_hat)
        y_hat, _, ref = model.decompress_frame(data, 5, ref, 64, 64)
        assert torch.equal(y_hat, out.y_hat)


# ---------------------------------------------------------------------------------------------------
# Entropy-model parts


def test_context_masks_partition_the_latent_and_rotate_positions():
    for steps in (2, 4):
        masks = context_masks(8, 6, 4, steps, torch.device("cpu"))
        assert len(masks) == steps
        total = torch.stack(masks).sum(dim=0)
        assert torch.equal(total, torch.ones_like(total))  # every element in exactly one step
        for mask in masks:
            assert int(mask.sum()) == 8 * 6 * 4 // steps  # equal shares
    four = context_masks(4, 2, 2, 4, torch.device("cpu"))
    # channel group g codes 2x2 position g xor key in step k (keys 0, 3, 2, 1)
    for step, key in enumerate((0, 3, 2, 1)):
        for group in range(4):
            position = group ^ key
            assert bool(four[step][0, group, position // 2, position % 2])
    two = context_masks(2, 2, 2, 2, torch.device("cpu"))
    assert two[0][0, 0].tolist() == [[True, False], [False, True]]
    assert two[0][0, 1].tolist() == [[False, True], [True, False]]
    with pytest.raises(ValueError, match="steps"):
        context_masks(6, 2, 2, 4, torch.device("cpu"))


def test_levelled_density_codes_each_level_with_its_own_density():
    """The official z density: a 1-1-1-1 chain per (level, channel); z_hat = clamp(round(z), -128, 127)."""
    torch.manual_seed(0)
    prior = LevelledDensity(3, 4)
    assert [tuple(p.shape) for p in prior.parameters()] == [(3, 4, 1, 1)] * 11  # f1..f3 h, b, a; f4 h, b
    with torch.no_grad():  # make the levels' densities differ clearly: level l is narrower with l
        prior.f1.h[1] += 2.0
        prior.f1.h[2] += 4.0
    prior.update()
    z = torch.randn(2, 4, 3, 5) * 6
    z[0, 0, 0, 0] = 300.0  # clamped to 127, coded as an escape
    _, like_0 = prior.forward_level(z, torch.tensor([0, 0]), "dequantize")
    _, like_2 = prior.forward_level(z, torch.tensor([2, 2]), "dequantize")
    assert not torch.allclose(like_0, like_2)
    z_hat, mixed = prior.forward_level(z, torch.tensor([0, 2]), "dequantize")
    assert torch.equal(mixed[0], like_0[0]) and torch.equal(mixed[1], like_2[1])
    assert torch.equal(z_hat, torch.clamp(torch.round(z), -128, 127)) and z_hat[0, 0, 0, 0] == 127
    # the likelihoods are the CDF differences of the chain, level by level
    cdf = lambda v, lv: torch.sigmoid(prior.logits(v, torch.tensor([lv])))  # noqa: E731
    expected = cdf(z_hat[1:] + 0.5, 2) - cdf(z_hat[1:] - 0.5, 2)
    assert torch.allclose(mixed[1:], expected.clamp_min(2.0**-16), rtol=1e-4, atol=1e-7)
    encoder = AnsEncoder()
    coded = prior.encode_level_into(encoder, z[:1], 2)
    decoder = AnsDecoder(encoder.to_bytes())
    assert torch.equal(prior.decode_level_from(decoder, (3, 5), 2), coded)
    decoder.finish()
    assert torch.equal(coded, z_hat[:1])
    # training: noise stands for rounding, and the density learns from the likelihoods
    noisy, likelihoods = prior.forward_level(z, torch.tensor([1, 1]), "noise")
    assert (noisy - z).abs().max() <= 0.5
    (-likelihoods.log2().sum()).backward()
    assert (
        prior.f1.h.grad is not None
        and prior.f1.h.grad[1].abs().sum() > 0
        and prior.f1.h.grad[0].abs().sum() == 0
    )


def test_per_level_vectors_are_plain_multipliers_that_load_any_value():
    """The official ``q_*`` are unconstrained multipliers (L, C, 1, 1): a checkpoint's value, negative
    or zero included, loads unchanged and multiplies the feature as it is."""
    model = build_model("dcvc_rt_tiny")
    state = {key: value.clone() for key, value in model.state_dict().items()}
    assert tuple(state["inter.q_recon"].shape) == (model.arch.inter_levels, model.arch.recon_channels, 1, 1)
    values = torch.tensor([-0.7, 0.0]).view(2, 1, 1)
    state["intra.q_enc"][3, :2] = values
    model.load_state_dict(state)
    assert torch.equal(model.intra.q_enc[3, :2].detach(), values)
    x = torch.rand(1, 3, 64, 64)
    feature = model.intra.enc_in(torch.nn.functional.pixel_unshuffle(x, 8))
    y = model.intra.analysis(x, torch.tensor([3]))
    assert torch.equal(y, model.intra.enc(feature * model.intra.q_enc[3:4]))


def test_force_zero_thres_skips_small_scale_elements_in_coding():
    """With ``force_zero_thres`` the elements whose scale is not above it cost nothing and decode to
    the mean: fewer bits, the same stream on both sides, and the estimate still matches the file."""
    plain, skipping = tiny(), tiny(force_zero_thres=1.0)
    skipping.load_state_dict(plain.state_dict())
    clip = frames(64, 128, 2)
    (i_plain, p_plain), _ = _encode_sequence(plain, clip, [4, 4])
    payloads, outputs = _encode_sequence(skipping, clip, [4, 4])
    assert len(payloads[0]) < len(i_plain) and len(payloads[1]) < len(p_plain)
    ref = None
    for data, out in zip(payloads, outputs, strict=True):
        y_hat, uv_hat, ref = skipping.decompress_frame(data, 4, ref, 64, 128)
        assert torch.equal(y_hat, out.y_hat) and torch.equal(uv_hat, out.uv_hat)
        assert abs(8 * len(data) - float(out.bits)) <= 0.05 * float(out.bits) + 64


# ---------------------------------------------------------------------------------------------------
# Real coding: offsets, refresh, several rate points


# positions 0..9 after the intra frame: offsets 2, 0, 1, 0, 1, 0, 1, 0, 2 (tiny's [0, 2, 0, 1, ...]) and,
# with refresh_interval 3, refreshes at positions 1, 4 and 7; the rate point changes along the way.
SEQUENCE_QS = [7, 7, 3, 3, 0, 5, 5, 1, 6, 2]


def test_position_rules_give_offsets_and_refreshes():
    model = tiny(refresh_interval=3)
    frame = torch.zeros(1, 3, 64, 64)
    rules = [model.position_rules(Reference(frame, None, p)) for p in range(9)]
    assert [r[0] for r in rules] == list(range(1, 10))
    assert [r[1] for r in rules] == [2, 0, 1, 0, 1, 0, 1, 0, 2]
    assert [r[2] for r in rules] == [True, False, False, True, False, False, True, False, False]
    assert model.inter.z_prior.levels == model.num_q + 2  # q_index + offset has its own rows
    assert not tiny().position_rules(Reference(frame, None, 3))[2]  # refresh_interval 32


def test_round_trip_is_exact_with_offsets_refreshes_and_changing_rate_points():
    model = tiny(refresh_interval=3)
    h, w = 64, 128
    clip = frames(h, w, len(SEQUENCE_QS))
    payloads, outputs = _encode_sequence(model, clip, SEQUENCE_QS)
    ref = None
    for index, (data, out, q) in enumerate(zip(payloads, outputs, SEQUENCE_QS, strict=True)):
        y_hat, uv_hat, ref = model.decompress_frame(data, q, ref, h, w)
        assert torch.equal(y_hat, out.y_hat) and torch.equal(uv_hat, out.uv_hat), f"frame {index}"
        assert torch.equal(ref.frame, out.ref.frame) and ref.position == index
        assert (ref.feature is None) == (index == 0)
        assert abs(8 * len(data) - float(out.bits)) <= 0.05 * float(out.bits) + 64, (
            index,
            len(data),
            out.bits,
        )

    # The refresh and the offsets are real: switching them off changes exactly the frames they touch.
    plain, _ = _encode_sequence(tiny(), clip, SEQUENCE_QS)  # no refresh before position 33
    assert plain[:4] == payloads[:4]  # positions 0..3: same rules (position 1 uses the picture anyway)
    assert plain[4] != payloads[4]  # position 4: refreshed from the picture with refresh_interval 3
    flat, _ = _encode_sequence(tiny(qp_offsets=(0,)), clip[:3], SEQUENCE_QS[:3])
    unflat, _ = _encode_sequence(tiny(qp_offsets=(0,) * 8), clip[:3], SEQUENCE_QS[:3])
    assert flat == unflat  # a period of zeros is no offset, whatever its length
    assert flat[1] != plain[1]  # position 1 carries offset 2 in the tiny pattern


def test_truncated_and_corrupted_payloads_raise_payload_error():
    model = tiny()
    clip = frames(64, 64, 2)
    (i_data, p_data), outputs = _encode_sequence(model, clip, [4, 4])
    for data, ref in ((i_data, None), (p_data, outputs[0].ref)):
        for cut in (1, 2, 5, len(data) // 2, len(data) - 1):
            with pytest.raises(PayloadError):
                model.decompress_frame(data[:cut], 4, ref, 64, 64)
        with pytest.raises(PayloadError):
            model.decompress_frame(data + b"\x07", 4, ref, 64, 64)
    # ANS has no redundancy: a flipped bit is caught by the end-of-stream check in most cases (the
    # container's CRC catches the rest before the model sees them); never a crash or a hang.
    refused = 0
    flips = range(8, 8 * len(p_data), 8 * max(1, len(p_data) // 24))
    for bit in flips:
        damaged = bytearray(p_data)
        damaged[bit // 8] ^= 1 << (bit % 8)
        try:
            model.decompress_frame(bytes(damaged), 4, outputs[0].ref, 64, 64)
        except PayloadError:
            refused += 1
    assert refused >= 0.8 * len(flips), (refused, len(flips))


_DECODE_SCRIPT = """
import json, sys, torch
from models import build_model
folder = sys.argv[1]
meta = json.load(open(folder + "/meta.json"))
model = build_model("dcvc_rt_tiny", refresh_interval=meta["refresh_interval"])
model.load_state_dict(torch.load(folder + "/state.pt", weights_only=True))  # coder tables included
ref = None
for i, q in enumerate(meta["q"]):
    data = open(f"{folder}/frame{i}.bin", "rb").read()
    y, uv, ref = model.decompress_frame(data, q, ref, meta["height"], meta["width"])
    open(f"{folder}/decoded{i}.raw", "wb").write(y.numpy().tobytes() + uv.numpy().tobytes())
"""


def test_a_fresh_process_decodes_the_encoders_pictures_byte_for_byte(tmp_path: Path, repo_root: Path):
    model = tiny(refresh_interval=3)
    h, w = 64, 128
    clip = frames(h, w, 6)
    qs = SEQUENCE_QS[:6]
    payloads, outputs = _encode_sequence(model, clip, qs)
    torch.save(model.state_dict(), tmp_path / "state.pt")
    for index, data in enumerate(payloads):
        (tmp_path / f"frame{index}.bin").write_bytes(data)
    meta = {"q": qs, "height": h, "width": w, "refresh_interval": 3}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    result = subprocess.run(
        [sys.executable, "-c", _DECODE_SCRIPT, str(tmp_path)],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for index, out in enumerate(outputs):
        expected = out.y_hat.numpy().tobytes() + out.uv_hat.numpy().tobytes()
        assert (tmp_path / f"decoded{index}.raw").read_bytes() == expected, f"frame {index} differs"


# ---------------------------------------------------------------------------------------------------
# Entry points: train.py, then evaluate.py on its checkpoint


@pytest.mark.slow
def test_train_py_then_evaluate_py_with_real_bits(tmp_path: Path, repo_root: Path):
    run_dir, eval_dir = tmp_path / "run", tmp_path / "eval"
    train = subprocess.run(
        [
            sys.executable,
            str(repo_root / "train.py"),
            "model=dcvc_rt_tiny",
            "logger=csv",
            "module.distortion=mse_yuv_rgb",
            "data.crop=64",
            "data.batch_size=2",
            "data.frames=2",
            "data.samples_per_epoch=4",
            "data.val_frames=2",
            "data.val_crop=[64,64]",
            "data.val_max_clips=1",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "~callbacks.progress_bar",
            "~callbacks.complexity_profile",
            "~callbacks.reconstruction_samples",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert train.returncode == 0, train.stderr[-4000:]
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["nvc_config"]["model_name"] == "dcvc_rt_tiny"
    evaluate = subprocess.run(
        [
            sys.executable,
            str(repo_root / "evaluate.py"),
            f"ckpt={checkpoint}",
            "~anchor",
            "frames=3",
            "metrics=[psnr]",
            "progress=false",
            f"hydra.run.dir={eval_dir}",
        ],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert evaluate.returncode == 0, evaluate.stderr[-4000:]
    with (eval_dir / "points.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows and {r["codec"] for r in rows} == {"dcvc_rt_tiny"}
    assert {int(r["rate_point"]) for r in rows} == {0, 2, 5, 7}  # 4 q_index values spread over 8
    for row in rows:
        assert float(row["bits"]) > 0 and math.isfinite(float(row["psnr_yuv"]))
        assert abs(float(row["bits"]) / float(row["est_bits"]) - 1.0) < 0.15, row
        assert (eval_dir / row["bitstream"]).stat().st_size * 8 == float(row["bits"])  # bits = file size


# ---------------------------------------------------------------------------------------------------
# The YUV + RGB distortion (nvc_train/training/losses.py)


def test_yuv_rgb_distortion_mixes_the_two_mses_and_leaves_the_others_alone():
    assert "mse_yuv_rgb" in DISTORTIONS
    torch.manual_seed(0)
    y, uv = torch.rand(2, 1, 16, 16) * 0.6 + 0.2, torch.rand(2, 2, 8, 8) * 0.6 + 0.2
    bits = torch.full((2,), 100.0)
    exact = frame_terms(y, uv, bits, y, uv, "mse_yuv_rgb")
    assert torch.all(exact.distortion == 0)

    delta = 0.01  # a pure luma offset moves R, G and B alike, by 255 / 219 of it (limited range)
    mixed = frame_terms(y + delta, uv, bits, y, uv, "mse_yuv_rgb")
    yuv = 6 / 8 * delta**2
    rgb = (255 / 219 * delta) ** 2
    expected = (1 - RGB_WEIGHT) * yuv + RGB_WEIGHT * rgb
    assert torch.allclose(mixed.distortion, torch.full((2,), expected), rtol=1e-3)
    assert torch.allclose(mixed.mse, torch.full((2,), yuv), rtol=1e-3)  # the logged MSE stays YUV 6:1:1

    # the default is unchanged: D of "mse" is the 6:1:1 YUV MSE
    y_hat, uv_hat = y + 0.02 * torch.randn_like(y), uv + 0.02 * torch.randn_like(uv)
    plain = frame_terms(y_hat, uv_hat, bits, y, uv, "mse")
    assert torch.equal(plain.distortion, combine_planes(plane_mses(y_hat, uv_hat, y, uv)))
    # chroma errors count more through RGB (Cr drives R by 1.57x, Cb drives B by 1.86x) than at 1/8
    chroma = frame_terms(y, uv + 0.01, bits, y, uv, "mse_yuv_rgb")
    assert bool((chroma.distortion > frame_terms(y, uv + 0.01, bits, y, uv, "mse").distortion).all())
    with pytest.raises(ValueError, match="mse_yuv_rgb"):
        frame_terms(y, uv, bits, y, uv, "nope")


def test_cool_chics_distortion_weighs_planes_by_their_samples() -> None:
    """``mse_420`` is the MSE over every sample of the 4:2:0 picture (Cool-Chic's loss): Y:U:V 4:1:1."""
    torch.manual_seed(0)
    y, uv = torch.rand(1, 1, 16, 16), torch.rand(1, 2, 8, 8)
    y_hat, uv_hat = y + 0.02 * torch.randn_like(y), uv + 0.05 * torch.randn_like(uv)
    terms = frame_terms(y_hat, uv_hat, torch.zeros(1), y, uv, "mse_420")
    every_sample = torch.cat([(y_hat - y).flatten(), (uv_hat - uv).flatten()]).square().mean()
    assert torch.allclose(terms.distortion, every_sample.view(1), rtol=1e-6)
    assert torch.equal(terms.mse, combine_planes(plane_mses(y_hat, uv_hat, y, uv)))  # logged: 6:1:1
