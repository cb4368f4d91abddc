"""The C3-like latent-grid codec: complexity of the configs, exact coding, fresh-process decoding,
corrupted files, and the fixed-point context model that makes decoding exact."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from models.adaptive import AdaptivePayload
from models.c3 import ARM, C3Net, PhasedGaussian
from nvc_train.bitstream import BitstreamError, Unit, read_stream, write_stream
from nvc_train.codecs.adaptive import AdaptiveCodec, decode_file
from nvc_train.complexity import count_macs
from nvc_train.ctc import load_sequences
from nvc_train.entropy import AnsDecoder, AnsEncoder
from nvc_train.structure import CodingStructure
from tests.conftest import REPO_ROOT
from tests.test_overfit import make_tiny_clip, tiny_net


def _config(name: str) -> dict:
    cfg = yaml.safe_load((REPO_ROOT / f"configs/model/{name}.yaml").read_text())
    cfg.pop("_target_")
    return cfg


def _kmac_per_px(net: C3Net) -> float:
    net.quantizer.mode = "hard"
    with torch.no_grad():
        macs = count_macs(net.frames_forward, torch.tensor([1]))
    return macs / (net.height * net.width) / 1e3


def test_full_config_is_c3_sized() -> None:
    """C3: about 4.4 kMAC/px (within 10%) and a network of the order of 0.01 M parameters.

    Counted at CIF: every layer runs per latent or per pixel, so kMAC/px does not depend on the size
    beyond the rounding of the coarse grids.
    """
    net = C3Net(height=288, width=352, num_frames=2, **_config("c3"))
    assert _kmac_per_px(net) == pytest.approx(4.4, rel=0.10)
    assert 0.002 < net.complexity()["params_m"] < 0.02


def test_tiny_config_is_cheap() -> None:
    net = C3Net(height=288, width=352, num_frames=2, **_config("c3_tiny"))
    assert _kmac_per_px(net) < 1.0
    assert net.complexity()["params_m"] < 0.003


def _randomised(net: C3Net, scale: float = 2.5) -> C3Net:
    torch.manual_seed(1)
    with torch.no_grad():
        for latent in net.latents:
            latent.copy_(torch.randn_like(latent) * scale)
        for name, p in net.network_parameters().items():
            if name.startswith("arm."):
                p.add_(torch.randn_like(p) * 0.1)
    net.quantize_parameters("ste", init_bits=8)
    return net


@pytest.mark.parametrize("structure", ["ld", "ra", "ai"])
def test_round_trip_is_exact(structure: str) -> None:
    shared = structure == "ld"  # the sequence-level grids and per-frame grids from level 2 on
    net = _randomised(
        tiny_net(structure=structure, shared_latents=shared, frame_min_level=2 if shared else 0)
    )
    payload = net.compress()
    assert len(payload.frames) == net.num_frames and all(payload.frames)
    y_enc, uv_enc = net.reconstruct()
    decoded = C3Net.decompress(net.architecture, payload)
    for sent, got in zip(net.latents, decoded.latents, strict=True):
        assert torch.equal(sent, got)
    y_dec, uv_dec = decoded.reconstruct()
    assert torch.equal(y_enc, y_dec) and torch.equal(uv_enc, uv_dec)


def test_latent_payload_of_another_frame_or_truncated_is_refused() -> None:
    net = _randomised(tiny_net())
    payload = net.compress()
    swapped = AdaptivePayload(payload.parameters, [payload.frames[0][:-3], *payload.frames[1:]])
    with pytest.raises((ValueError, RuntimeError)):
        C3Net.decompress(net.architecture, swapped)


def test_fixed_point_arm_is_order_independent_and_close_to_float() -> None:
    """The decoder's integer ARM: the same integers whatever the summation order, close to the float ARM."""
    torch.manual_seed(0)
    arm = ARM(33, 12, 2)
    context = torch.randint(-6, 7, (1, 33, 9, 11)).double()
    mu, log_scale = arm.fixed_point(context * 256, 8, 12)
    assert torch.equal(mu, torch.round(mu)) and torch.equal(log_scale, torch.round(log_scale))
    permutation = torch.randperm(33)
    permuted = ARM(33, 12, 2)
    permuted.load_state_dict(arm.state_dict())
    with torch.no_grad():
        permuted.hidden[0].weight.copy_(arm.hidden[0].weight[:, permutation])
    mu2, log_scale2 = permuted.fixed_point(context[:, permutation] * 256, 8, 12)
    assert torch.equal(mu, mu2) and torch.equal(log_scale, log_scale2)
    mu_float, _ = arm(context.float())
    assert (mu / 256 - mu_float.double()).abs().max() < 0.05


@pytest.mark.parametrize("distribution", ["gaussian", "laplace"])
def test_phased_tables_code_any_integer_exactly(distribution: str) -> None:
    model = PhasedGaussian(distribution=distribution)
    model.update()
    values = torch.tensor([0, 3, -7, 250, -4000, 1 << 20])
    mu = torch.tensor([0, 700, -100, 64000, 5, 0])  # fixed point, 8 fraction bits
    log_scale = torch.tensor([-900, 0, 300, 500, -5000, 9000])
    n, rows = model.rows(mu, log_scale, 8)
    assert rows.min() >= 0 and rows.max() < model.rows_total
    encoder = AnsEncoder()
    model.encode_into(encoder, values, n, rows)
    decoder = AnsDecoder(encoder.to_bytes())
    assert torch.equal(model.decode_from(decoder, n, rows), values)
    decoder.finish()


# ---- through the codec adapter and the container -------------------------------------------------


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> tuple[AdaptiveCodec, object, Path]:
    folder = tmp_path_factory.mktemp("c3")
    make_tiny_clip(folder / "clips")
    from omegaconf import OmegaConf

    sequence = load_sequences(OmegaConf.create({"name": "folder", "path": str(folder / "clips"), "fps": None,
                                                "bit_depth": 8}))[0]  # fmt: skip
    overfit = yaml.safe_load((REPO_ROOT / "configs/overfit/c3_tiny.yaml").read_text())
    overfit["steps_scale"] = 0.05
    codec = AdaptiveCodec({"_target_": "models.c3.C3Net", **_config("c3_tiny")}, overfit,
                          encoder_reconstruction=True)  # fmt: skip
    bitstream = folder / "bitstream.nvc"
    result = codec.encode(sequence, 2, CodingStructure("ld", -1, 1), bitstream)
    assert result.seconds > 0 and result.estimated_bits > 0
    return codec, sequence, bitstream


def test_decode_in_a_fresh_process_equals_the_encoder_reconstruction(encoded, tmp_path: Path) -> None:
    codec, sequence, bitstream = encoded
    output = tmp_path / "fresh.yuv"
    proc = subprocess.run(
        [sys.executable, "-m", "nvc_train.codecs.adaptive", str(bitstream), str(output)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    encoder_side = Path(f"{bitstream}.enc.yuv").read_bytes()
    assert output.read_bytes() == encoder_side
    codec.decode(bitstream, sequence, tmp_path / "same.yuv")
    assert (tmp_path / "same.yuv").read_bytes() == encoder_side


def test_corrupted_files_give_a_bitstream_error(encoded, tmp_path: Path) -> None:
    _, _, bitstream = encoded
    data = bytearray(bitstream.read_bytes())
    flipped = tmp_path / "flipped.nvc"
    data[-5] ^= 0x40
    flipped.write_bytes(bytes(data))
    with pytest.raises(BitstreamError):
        decode_file(flipped, tmp_path / "x.yuv")
    truncated = tmp_path / "truncated.nvc"
    truncated.write_bytes(bitstream.read_bytes()[:-9])
    with pytest.raises(BitstreamError, match="truncated"):
        decode_file(truncated, tmp_path / "x.yuv")

    # Intact container (CRCs right), damaged contents: each refused with a message, never a picture.
    header, units = read_stream(bitstream)

    def rewritten(name: str, new_units: list[Unit], new_header=header) -> Path:
        path = tmp_path / name
        write_stream(path, new_header, new_units)
        return path

    garbage_frame = [*units[:-1], Unit(units[-1].kind, units[-1].rate_point, b"\x13\x37" * 9)]
    with pytest.raises(BitstreamError, match="weights hash|cannot be decoded"):
        decode_file(rewritten("frame.nvc", garbage_frame), tmp_path / "x.yuv")
    from dataclasses import replace

    from nvc_train.bitstream import KIND_PARAMETER_SET, weights_hash
    from nvc_train.bitstream.architecture import join_network
    from nvc_train.codecs.adaptive import KIND_NETWORK, KIND_WEIGHTS, network_parts

    _, weights, frames = network_parts(units, "test")
    rate = units[0].rate_point
    foreign_set = b'{"target": "os.system", "architecture": {}}'
    foreign = Unit(KIND_NETWORK, rate, join_network(foreign_set, weights))
    with pytest.raises(BitstreamError, match="not a registered network class"):
        decode_file(rewritten("foreign.nvc", [foreign, *frames]), tmp_path / "x.yuv")
    # the same in the two units of older files, whose header hashed them
    two_units = [Unit(KIND_PARAMETER_SET, rate, foreign_set), Unit(KIND_WEIGHTS, rate, weights), *frames]
    forged = replace(
        header, weights_hash=weights_hash([("parameter_set", foreign_set), ("weights", weights)])
    )
    with pytest.raises(BitstreamError, match="not a registered network class"):
        decode_file(rewritten("foreign2.nvc", two_units, forged), tmp_path / "x.yuv")
    cut = Unit(KIND_NETWORK, rate, b"\xff\x7f" + weights[:10])  # a 16,383-byte set in 10 bytes
    with pytest.raises(BitstreamError, match="does not fit"):
        decode_file(rewritten("cut.nvc", [cut, *frames]), tmp_path / "x.yuv")
    with pytest.raises(BitstreamError, match="made by codec"):
        decode_file(bitstream, tmp_path / "x.yuv", expected_codec_id="other")


def test_pretrained_initialisation_is_loaded_and_checked(encoded, tmp_path: Path) -> None:
    """PNVC-style start: network weights saved by one fit (save_network) start another; others refused."""
    from nvc_train.codecs.base import CodecError

    codec, _, _ = encoded
    source = tiny_net()
    torch.manual_seed(3)
    with torch.no_grad():
        for p in source.network_parameters().values():
            p.add_(torch.randn_like(p))
    weights = tmp_path / "pretrained.pt"
    torch.save({k: v.detach() for k, v in source.network_parameters().items()}, weights)
    started = AdaptiveCodec({"_target_": "models.c3.C3Net", **_config("c3_tiny")}, codec.overfit,
                            init_weights=str(weights))  # fmt: skip
    fresh = tiny_net()
    started._initialise(fresh)
    for name, value in source.network_parameters().items():
        assert torch.equal(fresh.network_parameters()[name], value)
    with pytest.raises(CodecError, match="do not fit"):
        started._initialise(tiny_net(arm_hidden=5))
