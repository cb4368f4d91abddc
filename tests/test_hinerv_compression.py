"""HiNeRV's compression (models/hinerv_compression.py) and its schedule (method: hinerv presets)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from models import build_model
from models.hinerv_compression import (
    HiNeRVCodingError,
    HiNeRVWeightCodec,
    quantization_axis,
    quantize,
    slice_scales,
)
from nvc_train.training.presets import HiNeRVPhase, OverfitConfigError, OverfitPreset


def _tiny(height: int = 96, width: int = 96, frames: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    return build_model("hinerv_tiny", height=height, width=width, num_frames=frames)


# ---- the quantizer ------------------------------------------------------------------------------


def test_slice_axis_is_the_longest_axis_over_twenty_entries() -> None:
    assert quantization_axis((1600, 400)) == 0
    assert quantization_axis((400, 1600)) == 1
    assert quantization_axis((400, 12, 3, 3)) == 0
    assert quantization_axis((150, 18, 32, 4)) == 0
    assert quantization_axis((8, 4, 4, 4)) is None  # no axis longer than 20: one scale
    assert quantization_axis((21, 21)) == 0  # the first of equals


def test_symmetric_quantizer_scales_per_slice_and_clamps_to_the_bits() -> None:
    weight = torch.randn(30, 5)
    scale = slice_scales(weight, 6)
    assert scale.shape == (1, 5)  # one scale per position of the other axes
    assert torch.allclose(scale, 2 * weight.abs().amax(dim=0, keepdim=True) / 63 + 1e-6)
    symbols = quantize(weight, scale, 6)
    assert symbols.min() >= -32 and symbols.max() <= 31
    assert (symbols * scale - weight).abs().max() <= scale.max() / 2 + 1e-6


# ---- pruning -------------------------------------------------------------------------------------


def test_pruning_counts_every_parameter_and_thins_only_the_decoder_layers() -> None:
    net = _tiny()
    coder = net.parameter_coder()
    assert isinstance(coder, HiNeRVWeightCodec)
    assert coder.prunable[0] == "stem.weight" and coder.prunable[-1] == "head.weight"
    assert not any("grid" in name or "encoding" in name for name in coder.prunable)
    zeros, total = coder.prune(net.network_parameters(), 0.15)
    assert total == sum(p.numel() for p in net.parameters())  # grids and biases count in the total
    assert zeros == int(total * 0.15)
    # the score divides by sqrt(alive): the smallest layer (the 3-channel head) keeps a larger share
    # of its entries than the |w| threshold alone would leave it
    masks = coder.masks()
    assert masks["head.weight"].float().mean() > 0.5
    again = coder.prune(net.network_parameters(), 0.15)
    assert again == (zeros, total)  # nothing more to do at the same ratio


def test_pruning_score_is_magnitude_over_sqrt_alive() -> None:
    coder = HiNeRVWeightCodec({"a": (4, 1), "b": (16, 1)}, ["a", "b"])
    params = {"a": torch.tensor([[1.0], [2.0], [3.0], [4.0]]), "b": 2.4 + 0.1 * torch.arange(16.0)[:, None]}
    coder.prune(params, 0.25)
    # 5 of 20 go. Scores: a |w| / 2 = 0.5, 1, 1.5, 2; b |w| / 4 = 0.6 .. 0.975. By magnitude alone
    # a (all below b) would lose four entries; by score it loses one and b four.
    masks = coder.masks()
    assert masks["a"].flatten().tolist() == [False, True, True, True]
    assert masks["b"].flatten().tolist() == [False] * 4 + [True] * 12


def test_quant_noise_replaces_the_given_share_of_entries() -> None:
    net = _tiny()
    coder = net.parameter_coder()
    coder.set_bits(6)
    params = net.network_parameters()
    torch.manual_seed(1)
    noisy, bits = coder(params, "noise")
    assert float(bits) == 0.0  # no rate term
    weight = params["stages.0.blocks.0.expand.weight"]
    scale = slice_scales(weight.detach(), 6)
    quantized = quantize(weight.detach(), scale, 6) * scale
    replaced = torch.isclose(noisy["stages.0.blocks.0.expand.weight"], quantized).float().mean()
    assert 0.85 < float(replaced) < 0.95
    assert torch.equal(noisy["head.bias"], params["head.bias"])  # biases are not quantized in training


# ---- coding --------------------------------------------------------------------------------------


def test_payload_decodes_to_the_dequantized_weights_and_costs_about_the_estimate() -> None:
    net = _tiny()
    coder = net.parameter_coder()
    params = net.network_parameters()
    coder.prune(params, 0.15)
    coder.set_bits(6)
    expected, estimate = coder(params, "dequantize")
    data = coder.compress(params)
    decoded = coder.decompress(data)
    for name, value in expected.items():
        assert torch.equal(decoded[name].view_as(value), value.detach()), name
    assert (decoded["head.weight"] == 0).sum() >= (~coder.masks()["head.weight"]).sum()  # pruned: zero
    assert 0.97 < 8 * len(data) / float(estimate) < 1.05
    with pytest.raises(HiNeRVCodingError):
        coder.decompress(bytes([2]) + data[1:])  # another version
    other = _tiny(width=128).parameter_coder()
    with pytest.raises(HiNeRVCodingError, match="another architecture"):
        other.decompress(data)


# ---- the schedule ----------------------------------------------------------------------------------


def _preset(repo_root: Path, name: str = "hinerv_tiny", **changes) -> dict:
    config = yaml.safe_load((repo_root / "configs" / "overfit" / f"{name}.yaml").read_text())
    return {**config, **changes}


def test_learning_rate_warms_up_linearly_then_follows_the_cosine() -> None:
    phase = HiNeRVPhase("float", steps=100, lr=2e-3, min_lr=2e-5, warmup_steps=10, warmup_lr=2e-5)
    assert phase.lr_at(0) == pytest.approx(2e-5)
    assert phase.lr_at(5) == pytest.approx(2e-5 + 5 * (2e-3 - 2e-5) / 10)
    # after the warm-up, the cosine over the WHOLE stage (timm without warm-up prefix)
    assert phase.lr_at(10) == pytest.approx(2e-5 + 0.5 * (2e-3 - 2e-5) * (1 + math.cos(math.pi * 0.1)))
    assert phase.lr_at(100) == pytest.approx(2e-5)


def test_official_schedule_preset_scales_phases_and_warmups(repo_root: Path) -> None:
    preset = OverfitPreset.from_config(_preset(repo_root, "hinerv"))
    phases = preset.hinerv_phases()
    assert [p.steps for p in phases] == [180000, 36000, 18000]  # 300 + 60 + 30 epochs of 600 steps
    assert phases[0].warmup_steps == 18000 and phases[2].lr == pytest.approx(phases[1].lr * 0.1)
    assert preset.hinerv.patch_size == 120 and preset.hinerv.patches_per_step == 144
    scaled = OverfitPreset.from_config(_preset(repo_root, "hinerv", total_steps=390)).hinerv_phases()
    assert [p.steps for p in scaled] == [300, 60, 30] and scaled[0].warmup_steps == 30


def test_bad_hinerv_presets_are_refused(repo_root: Path) -> None:
    with pytest.raises(OverfitConfigError, match="hinerv block"):
        OverfitPreset.from_config(_preset(repo_root, hinerv=None))
    bad = _preset(repo_root)
    bad["phases"] = [dict(bad["phases"][0], weights="prune")]  # no prune_ratio
    with pytest.raises(OverfitConfigError, match="prune_ratio"):
        OverfitPreset.from_config(bad)
    with pytest.raises(OverfitConfigError, match="unknown keys"):
        OverfitPreset.from_config(_preset(repo_root, hinerv={"patch_size": 80}))


def test_hinerv_fit_runs_the_three_stages_and_codes_the_pruned_network(repo_root: Path) -> None:
    from nvc_train.training.overfit import fit_sequence

    torch.manual_seed(0)
    y, uv = torch.rand(2, 1, 96, 96), torch.rand(2, 2, 48, 48)
    net = _tiny()
    fit = fit_sequence(net, y, uv, 1.0, _preset(repo_root, total_steps=9))
    assert [row["phase"] for row in fit.stages.history] == ["float", "prune", "quant"]
    assert fit.trainer.global_step == 9 and net.parameter_mode == "noise"
    coder = net.parameter_coder()
    assert coder.bits == 6 and fit.stages.sparsity[0] == int(0.15 * fit.stages.sparsity[1])
    payload = net.compress()
    assert (net.head.weight == 0).sum() >= (~coder.masks()["head.weight"]).sum()
    assert len(payload.parameters) * 8 == pytest.approx(fit.stages.history[-1]["bpp"] * 2 * 96 * 96, rel=0.05)


def test_grids_are_quantized_in_the_official_layout() -> None:
    """The official code keeps a base grid as (slices*h*w, C) and an encoding grid as (slices, cells*C):
    the slice axis, hence the scales, are chosen on those shapes (counted against the official model
    built at 240x320, 8 frames: base grid 0 is (2400, 2), stage 0's encoding grid 0 is (8, 64))."""
    net = build_model("hinerv_tiny", height=240, width=320, num_frames=8)
    shapes = net.parameter_coder().shapes
    assert shapes["base_grids.grids.0"] == (2400, 2) and shapes["base_grids.grids.1"] == (1200, 4)
    assert shapes["stages.0.encoding.grids.0"] == (8, 64) and shapes["stages.2.encoding.grids.1"] == (4, 8)
    assert shapes["stages.0.blocks.0.expand.weight"] == (96, 48)
    assert quantization_axis(shapes["base_grids.grids.0"]) == 0  # one scale per channel


def test_rate_points_are_model_sizes(repo_root: Path) -> None:
    """configs/overfit/hinerv.yaml: rate point i fits hinerv_{s,m,l,xl,xxl}[i] (one RD curve over sizes)."""
    from nvc_train.codecs.adaptive import AdaptiveCodec
    from nvc_train.codecs.base import CodecError
    from nvc_train.structure import CodingStructure

    model = yaml.safe_load((repo_root / "configs" / "model" / "hinerv.yaml").read_text())
    overfit = _preset(repo_root, "hinerv")
    codec = AdaptiveCodec(model, overfit)
    assert codec.rate_points == [0, 1, 2, 3, 4]
    channels = [codec._architecture(1080, 1920, 600, CodingStructure("ra", 32, 16), rp)["channels"]
                for rp in codec.rate_points]  # fmt: skip
    assert channels == [280, 400, 560, 688, 864]  # S, M, L, XL, XXL: the official configs' widths
    with pytest.raises(CodecError, match="one model per rate point"):
        AdaptiveCodec(model, {**overfit, "rate_point_models": ["hinerv_s"]})
    wrong = AdaptiveCodec(model, {**overfit, "rate_point_models": ["c3_tiny"] * 5})
    with pytest.raises(CodecError, match="not the codec's HiNeRV"):
        wrong._architecture(64, 64, 2, CodingStructure("ra", 32, 16), 0)
