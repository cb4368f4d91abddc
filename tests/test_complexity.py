"""Complexity figures: the MAC convention on hand-checkable layers, codec kMAC/px, FPS timing, the table."""

from __future__ import annotations

import csv
import importlib
import time

import pytest
import torch
from torch import nn

import models
from nvc_train.atomic import atomic_write_csv
from nvc_train.codecs.neural import NeuralCodec
from nvc_train.complexity import codec_complexity, count_macs, measure_fps, padded_size
from nvc_train.evaluation.tables import COMPLEXITY_COLUMNS, complexity_rows

TINY = "dcvc_lite_tiny"


def tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return models.build_model(TINY)


# ---- the counting convention, by hand ------------------------------------------------------------


def test_conv2d_macs_are_output_positions_times_kernel_volume() -> None:
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
    x = torch.rand(2, 3, 16, 20)
    assert count_macs(conv, x) == 2 * 8 * 16 * 20 * (3 * 3 * 3)  # bias is not counted
    strided = nn.Conv2d(4, 6, kernel_size=5, stride=2, padding=2)
    assert count_macs(strided, torch.rand(1, 4, 16, 16)) == 6 * 8 * 8 * (4 * 5 * 5)


def test_transposed_conv_macs_are_input_positions_times_kernel_volume() -> None:
    up = nn.ConvTranspose2d(4, 6, kernel_size=4, stride=2, padding=1)
    assert count_macs(up, torch.rand(1, 4, 8, 8)) == 8 * 8 * 4 * 6 * 4 * 4


def test_linear_and_matmul_macs() -> None:
    linear = nn.Linear(32, 10)
    assert count_macs(linear, torch.rand(5, 32)) == 5 * 32 * 10
    a, b = torch.rand(3, 4, 5), torch.rand(3, 5, 6)
    assert count_macs(torch.bmm, a, b) == 3 * 4 * 5 * 6
    assert count_macs(torch.matmul, a[0], b[0]) == 4 * 5 * 6


def test_elementwise_ops_are_not_counted() -> None:
    x = torch.rand(1, 8, 32, 32)
    assert count_macs(lambda t: torch.relu(t) + t * 2 - t.sigmoid(), x) == 0


# ---- a codec's figures --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dcvc_lite", "dcvc_lite_tiny"])
def test_params_are_every_parameter(name: str) -> None:
    net = models.build_model(name)
    out = codec_complexity(net, 64, 64, "I")
    assert out["params_m"] == sum(p.numel() for p in net.parameters()) / 1e6


def test_tiny_p_frame_costs_more_than_i_and_both_are_positive() -> None:
    net = tiny()
    intra = codec_complexity(net, 64, 64, "I")["kmac_per_px"]
    inter = codec_complexity(net, 64, 64, "P")["kmac_per_px"]
    assert 0 < intra < inter  # the P codec runs the intra-sized transforms plus context and prior


def test_kmac_per_px_is_nearly_size_independent_and_padding_is_charged_to_the_unpadded_frame() -> None:
    net = tiny()
    m = net.pad_multiple
    small, wide, wider = (codec_complexity(net, 2 * m, k * m, "P") for k in (2, 3, 4))
    # A convolutional codec: MACs grow with the area exactly (affine: a size-free part, e.g. per
    # q_index gains, may add a constant), so equal area steps add equal MACs and kMAC/px barely moves.
    assert wider["macs"] - wide["macs"] == wide["macs"] - small["macs"] > 0
    assert small["kmac_per_px"] == pytest.approx(wide["kmac_per_px"], rel=1e-3)
    # An odd size runs on the padded frame; its MACs are charged to the unpadded pixels.
    odd = codec_complexity(net, 2 * m - 2, 3 * m - 6, "P")
    assert padded_size(2 * m - 2, 3 * m - 6, m) == (2 * m, 3 * m)
    assert odd["macs"] == wide["macs"]
    assert odd["kmac_per_px"] == pytest.approx(wide["macs"] / ((2 * m - 2) * (3 * m - 6)) / 1e3)


@pytest.mark.parametrize("name", ["dcvc_lite", "dcvc_lite_tiny"])
def test_matches_the_model_files_reference_table(name: str) -> None:
    """The model file states kMAC/px at 256x256 (one decimal); the framework's counter must agree."""
    net = models.build_model(name)
    reference = getattr(importlib.import_module(type(net).__module__), "REFERENCE", {}).get(name)
    if not reference or "kmac_px_intra" not in reference:
        pytest.skip(f"{name} states no kMAC/px reference")
    assert codec_complexity(net, 256, 256, "I")["kmac_per_px"] == pytest.approx(
        reference["kmac_px_intra"], abs=0.05
    )
    assert codec_complexity(net, 256, 256, "P")["kmac_per_px"] == pytest.approx(
        reference["kmac_px_inter"], abs=0.05
    )


def test_counting_changes_neither_state_nor_outputs_nor_mode() -> None:
    net = tiny().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    y, uv = torch.rand(1, 1, 64, 64), torch.rand(1, 2, 32, 32)
    q = torch.tensor([3])
    with torch.no_grad():
        net.eval()
        expected = net.forward_frame(y, uv, q, None)
        net.train()
    for frame_type in ("I", "P"):
        codec_complexity(net, 64, 64, frame_type)
    assert net.training
    after = net.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        net.eval()
        again = net.forward_frame(y, uv, q, None)
    assert torch.equal(expected.y_hat, again.y_hat) and torch.equal(expected.bits, again.bits)


def test_bad_arguments_and_meta_fallback_message() -> None:
    net = tiny()
    with pytest.raises(ValueError, match="frame_type"):
        codec_complexity(net, 64, 64, "B")
    with pytest.raises(ValueError, match="even"):
        codec_complexity(net, 63, 64, "I")
    # dcvc_lite checks q_index values (data-dependent Python), so it cannot run on meta tensors.
    with pytest.raises(ValueError, match="meta"):
        codec_complexity(net, 64, 64, "I", device="meta")


# ---- FPS ----------------------------------------------------------------------------------------


def test_measure_fps_warms_up_repeats_and_divides_frames_by_the_median() -> None:
    calls = {"enc": 0, "dec": 0}

    def encode(frames):
        calls["enc"] += 1
        time.sleep(0.01)
        return list(frames)

    def decode(coded):
        calls["dec"] += 1
        time.sleep(0.02)
        return coded

    out = measure_fps(encode, decode, frames=[0, 1, 2, 3], warmup=2, repeats=3)
    assert calls == {"enc": 5, "dec": 5}
    assert 0 < out["enc_fps"] <= 4 / 0.01 and 0 < out["dec_fps"] <= 4 / 0.02
    assert out["enc_fps"] == pytest.approx(4 / out["enc_s"]) and out["dec_s"] >= 0.02
    with pytest.raises(ValueError):
        measure_fps(encode, decode, frames=[])


# ---- the complexity table ------------------------------------------------------------------------


def test_neural_codec_complexity_reaches_complexity_csv(tmp_path, monkeypatch) -> None:
    codec = NeuralCodec(tiny(), TINY, rate_points=[0, 7])
    counted = []
    import nvc_train.codecs.neural as neural

    real = neural.codec_complexity
    monkeypatch.setattr(neural, "codec_complexity", lambda *a, **k: counted.append(a[1:3]) or real(*a, **k))
    figures = codec.complexity(64, 96)
    assert codec.complexity(64, 96) == figures and len(counted) == 2  # counted once per size (I and P)
    assert figures["params_m"] == sum(p.numel() for p in codec.net.parameters()) / 1e6
    assert 0 < figures["kmac_per_px_intra"] < figures["kmac_per_px"]
    assert figures["kmac_resolution"] == "96x64"

    size = {"width": 96, "height": 64}
    rows = [
        {"codec": TINY, "family": codec.family, "enc_fps": 2.0, "dec_fps": 4.0, **size},
        {"codec": "x265", "family": "conventional", "enc_fps": 9.0, "dec_fps": 9.0, **size},
    ]
    known = {TINY: figures, "x265": {}}
    atomic_write_csv(tmp_path / "complexity.csv", complexity_rows(rows, known), COMPLEXITY_COLUMNS)
    with (tmp_path / "complexity.csv").open() as handle:
        table = {r["codec"]: r for r in csv.DictReader(handle)}
    assert float(table[TINY]["kmac_per_px"]) == pytest.approx(figures["kmac_per_px"])
    assert float(table[TINY]["params_m"]) == pytest.approx(figures["params_m"])
    assert table[TINY]["kmac_resolution"] == "96x64"
    assert table["x265"]["kmac_per_px"] == "" and table["x265"]["params_m"] == ""
