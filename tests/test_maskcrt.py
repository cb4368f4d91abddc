"""MaskCRT (models/maskcrt.py): the official parameter counts and kMAC/px, training, real bitstreams.

The equivalence with the released code on fixtures it made is tests/test_official_maskcrt.py; here
the model's own contract: the full configuration has the official parameter set's size, part by
part; the tiny one trains (gradients reach every trainable part, SpyNet stays frozen), codes real
streams whose decoded pictures equal the encoder's, in this process and in a fresh one, through
both motion coders (the first P frame's hyperprior, then the conditional one with the extrapolated
flow of a growing history), and ``train.py`` / ``evaluate.py`` run it end to end.
"""

from __future__ import annotations

import csv
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import models
from models.maskcrt import OFFICIAL_KMAC_PER_PX, OFFICIAL_PARAMS, LatentCoder, MaskCRT, MaskCRTSet, Reference
from nvc_train.codecs.neural import NeuralCodec
from nvc_train.complexity import codec_complexity
from nvc_train.ctc import embedded_sequences
from nvc_train.structure import CodingStructure
from tests.conftest import REPO_ROOT
from tests.test_neural_codec import DECODE_SCRIPT

TINY = "maskcrt_tiny"
LOW_DELAY = CodingStructure("ld", intra_period=-1, gop_size=1)  # I P P P: both motion coders, full history


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny(seed: int = 0) -> MaskCRT:
    torch.manual_seed(seed)
    net = models.build_model(TINY)
    assert isinstance(net, MaskCRT)
    return net


def frames(
    count_: int, height: int = 64, width: int = 128, seed: int = 1
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A drifting random texture: successive frames are shifted copies, so motion is not zero."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, height + 8 * count_, width + 8 * count_, generator=generator)
    base = torch.nn.functional.avg_pool2d(base, 3, 1, 1)
    out = []
    for t in range(count_):
        crop = base[..., 2 * t : 2 * t + height, 3 * t : 3 * t + width]
        out.append((crop[:, :1], torch.nn.functional.avg_pool2d(crop[:, 1:], 2)))
    return out


def test_full_size_has_the_official_parameter_counts():
    """Counted on the released code (issue 15): intra 30,998,187, inter 31,175,353, of which the
    first P frame's motion coder is 3,431,106 (the paper's 27.7 M leaves it out)."""
    with torch.device("meta"):
        net = models.build_model("maskcrt")
    assert count(net.intra) == OFFICIAL_PARAMS["params_intra"]
    assert count(net.inter) == OFFICIAL_PARAMS["params_inter"]
    assert count(net.inter.Motion) == OFFICIAL_PARAMS["params_first_p_motion"]
    assert round((count(net.inter) - count(net.inter.Motion)) / 1e6, 1) == 27.7
    assert not any(p.requires_grad for p in net.inter.MENet.parameters())  # the frozen SpyNet


def test_full_size_parameter_names_follow_the_official_modules():
    """Spot checks of the released names (the converter adds nothing but ``intra.`` / ``inter.``)."""
    with torch.device("meta"):
        names = dict(models.build_model("maskcrt").named_parameters())
    expected = {
        "inter.MENet.net.Blocks.4.8.weight": (2, 16, 7, 7),
        "inter.MWNet.net.final_flow.weight": (2, 21, 3, 3),
        "inter.Motion.net.g_a.1.gamma": (128, 128),
        "inter.CondMotion.net.analysis.swin1.cond_layer.blocks.3.attn.relative_position_bias_table": (
            4,
            49,
            8,
        ),
        "inter.CondMotion.net.PA.4.weight": (192, 640, 1, 1),
        "inter.Residual.net.analysis.ctm.ctm_layer.blocks.1.attn.temperature": (8, 1, 1),
        "inter.Residual.net.synthesis.deconv_for_ctm.weight": (192, 192, 3, 3),
        "inter.Residual.net.context_model.y_spatial_prior.block.0.conv1.0.weight": (576, 576, 1, 1),
        "inter.Residual.net.feature_extractor.down2.0.weight": (192, 128, 3, 3),
        "inter.MaskGenerator.net.up_1.4.weight": (1, 16, 3, 3),
        "inter.MCNet.net.d1.3.weight": (3, 64, 3, 3),
        "intra.q_scale_enc": (4, 1, 1, 1),
    }
    for name, shape in expected.items():
        assert tuple(names[name].shape) == shape, name


def test_complexity_counts_the_official_kmac_per_pixel():
    """Issue 15 counted the released code at 1080p (padded to 1088): I 553.2, steady P 1355.2 kMAC/px."""
    with torch.device("meta"):
        net = models.build_model("maskcrt")
    for frame_type, official in OFFICIAL_KMAC_PER_PX.items():
        counted = codec_complexity(net, 1080, 1920, frame_type, device="meta")["kmac_per_px"]
        assert counted == pytest.approx(official, rel=0.02), (frame_type, counted)


def test_stochastic_depth_follows_the_released_rule():
    """Rates linear from 0 to 0.1 over a coder's blocks, each stage at its first block's rate
    (residual depths 4, 4, 2: analysis 0, 0.4/9, 0.8/9; synthesis, depths 2, 4, 4: 0, 0.2/9, 0.6/9)."""
    with torch.device("meta"):
        net = models.build_model("maskcrt")
    coder = net.inter.Residual.net

    def stage_rates(transform: torch.nn.Module) -> list[float]:
        return [getattr(transform, f"swin{i}").cond_layer.blocks[0].drop_path for i in range(3)]

    assert stage_rates(coder.analysis) == pytest.approx([0.0, 0.4 / 9, 0.8 / 9])
    assert stage_rates(coder.synthesis) == pytest.approx([0.0, 0.2 / 9, 0.6 / 9])
    block = coder.analysis.swin2.cond_layer.blocks[1]
    branch = torch.ones(256, 3, 2)
    assert torch.equal(block.eval().dropped(branch), branch)  # coding never drops
    torch.manual_seed(0)
    dropped = block.train().dropped(branch)
    kept = dropped[:, 0, 0] != 0
    assert 0 < int(kept.sum()) < 256 and torch.allclose(dropped[kept], torch.tensor(1 / (1 - 0.8 / 9)))


def test_config_refuses_what_maskcrt_does_not_have():
    numbers = models.model_config(TINY)
    numbers.pop("_target_")
    with pytest.raises(ValueError, match="one rate point"):
        MaskCRT(**{**numbers, "num_q": 4})
    with pytest.raises(ValueError, match="intra_anchor"):
        MaskCRT(**{**numbers, "intra_anchor": 4})
    with pytest.raises(ValueError, match="multiple of its heads"):
        MaskCRT(**{**numbers, "residual_heads": [3, 2, 2]})


def test_training_reaches_every_trainable_part_through_both_motion_coders():
    net = tiny().train()
    ref = None
    total = torch.zeros(())
    for y, uv in frames(3):
        out = net.forward_frame(y, uv, 0, ref)
        assert out.y_hat.shape == y.shape and out.uv_hat.shape == uv.shape
        assert torch.isfinite(out.bits).all() and float(out.bits.detach()) > 0
        total = total + out.bits.sum() + 1e3 * ((out.y_hat - y) ** 2).mean()
        ref = out.ref
    assert isinstance(ref, Reference) and len(ref.history) == 3 and len(ref.flows) == 2
    total.backward()
    for part in ("Motion", "CondMotion", "MWNet", "MCNet", "MaskGenerator", "Residual"):
        grads = [p.grad for n, p in net.inter.named_parameters() if n.startswith(part) and p.requires_grad]
        assert grads and any(g is not None and bool(g.abs().sum() > 0) for g in grads), part
    assert all(p.grad is None for p in net.inter.MENet.parameters())
    assert any(p.grad is not None for p in net.intra.parameters())


def test_streams_decode_to_the_encoders_pictures():
    """I, first P (hyperprior motion), then P frames with the conditional motion coder."""
    net = tiny().eval()
    net.update()
    ref, coded = None, []
    for y, uv in frames(4):
        payload, out = net.compress_frame(y, uv, 0, ref)
        file_bits = 8 * len(payload)
        assert float(out.bits) <= file_bits <= 1.02 * float(out.bits) + 64, (file_bits, float(out.bits))
        coded.append((payload, out))
        ref = out.ref
    ref = None
    for payload, out in coded:
        y_hat, uv_hat, ref = net.decompress_frame(payload, 0, ref, 64, 128)
        assert torch.equal(y_hat, out.y_hat) and torch.equal(uv_hat, out.uv_hat)
        assert torch.equal(ref.frame, out.ref.frame)


def test_rate_counts_at_the_official_floor_and_the_file_estimate_at_the_escape_cost():
    """``forward_frame`` counts the P frame's symbols with CompressAI's floor (1e-9, the official
    ideal bits), ``compress_frame`` at the escape cost the file pays; the symbols are the same."""
    net = tiny().eval()
    net.update()
    (y0, uv0), (y1, uv1) = frames(2)
    _, intra = net.compress_frame(y0, uv0, 0, None)
    with torch.no_grad():
        rate = net.forward_frame(y1, uv1, 0, intra.ref)
    payload, coded = net.compress_frame(y1, uv1, 0, intra.ref)
    assert torch.allclose(rate.ref.frame.clamp(0, 1), coded.ref.frame, atol=1e-5)
    assert float(rate.bits) > float(coded.bits) > 0  # the untrained model has improbable symbols
    assert float(coded.bits) <= 8 * len(payload)
    floors = {m.gaussian.likelihood_bound for m in net.modules() if isinstance(m, LatentCoder)}
    assert floors == {1e-9}  # restored after coding


def test_set_codes_each_rate_point_with_its_member():
    numbers = models.model_config(TINY)
    numbers.pop("_target_")
    numbers.pop("intra_anchor")
    torch.manual_seed(0)
    codec = MaskCRTSet(intra_anchors=[0, 3], **numbers).eval()
    codec.update()
    assert codec.num_q == 2 and [m.intra.anchor for m in codec.members] == [0, 3]
    (y, uv) = frames(1)[0]
    low, _ = codec.compress_frame(y, uv, 0, None)
    high, _ = codec.compress_frame(y, uv, 1, None)
    assert low == codec.members[0].compress_frame(y, uv, 0, None)[0]
    assert high == codec.members[1].compress_frame(y, uv, 0, None)[0]
    with pytest.raises(ValueError, match="one rate point per call"):
        codec.forward_frame(torch.cat([y, y]), torch.cat([uv, uv]), torch.tensor([0, 1]), None)
    with pytest.raises(TypeError, match="intra_anchors"):
        MaskCRTSet(intra_anchors=[0], intra_anchor=0, **numbers)


@pytest.mark.slow
def test_decoding_in_a_fresh_process_is_bit_exact(tmp_path: Path):
    """The adapter's file of 4 embedded frames (I P P P) decodes in a new process byte for byte."""
    net = tiny()
    codec = NeuralCodec(net, TINY, rate_points=[0], encoder_reconstruction=True)
    sequence = embedded_sequences()[0]
    sequence = dataclasses.replace(sequence, info=dataclasses.replace(sequence.info, num_frames=4))
    result = codec.encode(sequence, 0, LOW_DELAY, tmp_path / "stream.nvc")
    torch.save(codec.net.state_dict(), tmp_path / "state.pt")
    decoded = tmp_path / "decoded.yuv"
    subprocess.run(
        [sys.executable, "-c", DECODE_SCRIPT, str(tmp_path / "state.pt"), str(result.bitstream), str(decoded),
         TINY, "4"],
        cwd=REPO_ROOT, check=True, timeout=600,
    )  # fmt: skip
    encoder_side = Path(f"{result.bitstream}.enc.yuv").read_bytes()
    assert len(encoder_side) == sequence.info.frame_bytes * 4
    assert decoded.read_bytes() == encoder_side


@pytest.mark.slow
def test_train_py_then_evaluate_py_with_real_bits(tmp_path: Path):
    """Two ``train.py`` steps on three-frame chains (both motion coders), then ``evaluate.py`` on the
    checkpoint: bits from the file, within the estimate plus the container."""
    run_dir, eval_dir = tmp_path / "run", tmp_path / "eval"
    train = subprocess.run(
        [
            sys.executable, str(REPO_ROOT / "train.py"), f"model={TINY}", "logger=csv", "data.crop=64",
            "data.batch_size=1", "data.frames=3", "data.samples_per_epoch=2", "data.val_frames=2",
            "data.val_crop=[64,64]", "data.val_max_clips=1", "trainer.max_steps=2",
            "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false", "~callbacks.progress_bar", "~callbacks.complexity_profile",
            "~callbacks.reconstruction_samples", "module.lambda_min=1625.6", "module.lambda_max=1625.6",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert train.returncode == 0, train.stderr[-4000:]
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    loaded = torch.load(checkpoint, weights_only=True)
    assert loaded["nvc_config"]["model_name"] == TINY and loaded["global_step"] == 2
    evaluate = subprocess.run(
        [
            sys.executable, str(REPO_ROOT / "evaluate.py"), f"ckpt={checkpoint}", "~anchor", "frames=3",
            "metrics=[psnr]", "progress=false", f"hydra.run.dir={eval_dir}",
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert evaluate.returncode == 0, evaluate.stderr[-4000:]
    with (eval_dir / "points.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows and {(r["codec"], int(r["rate_point"])) for r in rows} == {(TINY, 0)}
    overhead_bits = 8 * (59 + len(TINY) + 3 * (13 + 1 + 8))
    for row in rows:  # one per embedded clip
        bits, estimated = float(row["bits"]), float(row["est_bits"])
        assert abs(bits - estimated) <= 0.02 * estimated + overhead_bits, row
        assert (eval_dir / row["bitstream"]).stat().st_size * 8 == bits
