"""Cool-Chic's image-core pieces on our latent-grid network: learned upsampling, the latent gain, the
C3 / Cool-Chic soft-rounding quantizer, and the weights' step search by measured RD cost."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from models.c3 import (
    ARM,
    CAUSAL_NEIGHBOURS,
    C3Net,
    LearnedUpsampling,
    laplace_bin_mass,
    wavefront_slope,
    wavefronts,
)
from nvc_train.training.overfit import fit_sequence
from nvc_train.training.presets import (
    FitOptimizer,
    FitSettings,
    OverfitConfigError,
    OverfitPreset,
    ParameterRdoq,
    StepSearch,
)
from nvc_train.training.step_search import parameter_groups
from tests.conftest import REPO_ROOT
from tests.test_overfit import TINY_H, TINY_W, tiny_net

# The coolchic model's own features (latent gain, learned upsampling) on the tiny network's sizes.
COOLCHIC_FEATURES = {"latent_gain": 16, "upsampling_kernel": 8, "preconcat_kernel": 7, "arm_neighbours": 14,
                     "synthesis_stabiliser": True}  # fmt: skip


def _tiny_coolchic(structure: str = "ai", frames: int = 1, **changes: object) -> C3Net:
    return tiny_net(
        frames=frames, structure=structure, shared_latents=False, **{**COOLCHIC_FEATURES, **changes}
    )


def test_learned_upsampling_starts_as_an_interpolator() -> None:
    """Constant grids stay constant (the 2x kernel's phases each sum to one), sizes follow the grids."""
    up = LearnedUpsampling(levels=4, kernel=8, preconcat_kernel=7)
    sizes = [(17, 23), (9, 12), (5, 6), (3, 3)]
    grids = [torch.full((2, 1, h, w), float(level + 1)) for level, (h, w) in enumerate(sizes)]
    dense = up(grids)
    assert dense.shape == (2, 4, 17, 23)
    for channel in range(4):
        assert torch.allclose(dense[:, channel], torch.full_like(dense[:, channel], channel + 1.0), atol=1e-5)
    assert sum(p.numel() for p in up.parameters()) == 3 * 4 + 3 * 4  # ceil(k / 2) numbers per filter


def test_learned_upsampling_refuses_kernels_it_cannot_use() -> None:
    with pytest.raises(ValueError, match="kernels"):
        LearnedUpsampling(levels=3, kernel=7, preconcat_kernel=7)
    with pytest.raises(ValueError, match="kernels"):
        LearnedUpsampling(levels=3, kernel=8, preconcat_kernel=6)


def test_latent_gain_must_be_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        tiny_net(frames=1, structure="ai", shared_latents=False, latent_gain=12)


@pytest.mark.parametrize(
    ("structure", "changes"),
    [("ai", {"arm_residual": True}), ("ld", {"latent_distribution": "laplace", "arm_coarser_stack": True}),
     ("ld", {"arm_neighbours": 0, "arm_coarser_stack": True}),
     ("ai", {"hyper_grids": 2, "ifce_grids": 2, "ifce_features": 3, "latent_distribution": "laplace"}),
     ("ld", {"arm_neighbours": 0, "hyper_grids": 1, "ifce_grids": 1, "ifce_features": 2})],
)  # fmt: skip
def test_round_trip_with_gain_and_learned_upsampling_is_exact(structure: str, changes: dict) -> None:
    torch.manual_seed(3)
    net = _tiny_coolchic(structure, frames=2, **changes)
    with torch.no_grad():
        for latent in net.latents:
            latent.copy_(torch.randn_like(latent) * 2.5 / net.latent_gain)
        for p in net.upsampling.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    net.quantize_parameters("ste", init_bits=8)
    payload = net.compress()
    y_enc, uv_enc = net.reconstruct()
    decoded = C3Net.decompress(net.architecture, payload)
    y_dec, uv_dec = decoded.reconstruct()
    assert torch.equal(y_enc, y_dec) and torch.equal(uv_enc, uv_dec)
    sent = torch.cat([g.flatten() for g in net.latents]) * net.latent_gain
    assert torch.equal(sent, torch.round(sent)) and sent.abs().max() > 1  # integers, not all zero


def test_hyperlatents_reach_the_rate_only_through_the_ifce() -> None:
    """Cool-Chic's hyperlatents: extra coarse grids the synthesis never sees; the finest grids' ARM
    reads them (and every coarser level) through one linear IFCE per grid, so they change the rate
    and get gradients, but not the picture."""
    torch.manual_seed(5)
    net = _tiny_coolchic("ai", hyper_grids=2, ifce_grids=2, ifce_features=3)
    assert len(net.latents) == net.levels + 2 and len(net.ifce) == 2
    assert [tuple(p.shape[-2:]) for p in net.latents][-2:] == net.grid_sizes[-2:]
    with torch.no_grad():
        for latent in net.latents:
            latent.copy_(torch.randn_like(latent) * 3 / net.latent_gain)
        for layer in net.ifce:
            layer.weight.normal_(0.0, 0.5)
    net.quantizer.mode = "ste"
    index = torch.tensor([0])
    y, uv, bits = net.frames_forward(index)
    bits.backward()
    assert net.latents[-1].grad.abs().sum() > 0 and net.ifce[0].weight.grad.abs().sum() > 0
    with torch.no_grad():
        net.latents[-1].add_(5.0 / net.latent_gain)
        y2, uv2, bits2 = net.frames_forward(index)
    assert torch.equal(y, y2) and torch.equal(uv, uv2) and float(bits2) != float(bits.detach())


def test_hyperlatent_and_ifce_settings_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValueError, match="IFCE is what reads"):
        _tiny_coolchic("ai", hyper_grids=1, ifce_grids=0, ifce_features=0)
    with pytest.raises(ValueError, match="coarser than every grid"):
        _tiny_coolchic("ai", hyper_grids=5, ifce_grids=2, ifce_features=2)
    with pytest.raises(ValueError, match="ifce_features"):
        _tiny_coolchic("ai", ifce_grids=1, ifce_features=0)


def test_the_laplace_bin_masses_sum_to_one_and_stay_positive_in_the_tail() -> None:
    k = torch.arange(-3000, 3001, dtype=torch.float64)
    for scale in (0.05, 0.3, 1.0, 20.0):
        mass = laplace_bin_mass(k - 0.375, torch.tensor(scale, dtype=torch.float64))
        assert float(mass.sum()) == pytest.approx(1.0, abs=1e-12)
    far = laplace_bin_mass(torch.tensor([200.0], dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64))
    assert float(far) == pytest.approx(0.5 * math.exp(-199.5 / 2) * (1 - math.exp(-0.5)), rel=1e-9)
    # Far from the mean at a small scale: finite gradients (a discarded branch once overflowed to NaN).
    distance = torch.tensor([0.2, 40.0, -300.0], requires_grad=True)
    scale = torch.tensor([0.05, 0.05, 0.06], requires_grad=True)
    (-torch.log2(laplace_bin_mass(distance, scale).clamp_min(1e-9))).sum().backward()
    assert torch.isfinite(distance.grad).all() and torch.isfinite(scale.grad).all()


def test_cool_chics_fourteen_neighbours_decode_in_lines_of_slope_three() -> None:
    """Its 14 neighbours reach two columns right on the row above: lines x + 3y; 4 of them: x + 2y."""
    assert wavefront_slope(CAUSAL_NEIGHBOURS[:14]) == 3 and wavefront_slope(CAUSAL_NEIGHBOURS[:4]) == 2
    assert len(set(CAUSAL_NEIGHBOURS)) == 40 and all(dy < 0 or dx < 0 for dy, dx in CAUSAL_NEIGHBOURS)


@pytest.mark.parametrize(("count", "h", "w"), [(14, 7, 11), (40, 9, 5), (1, 3, 4)])
def test_every_neighbour_is_decoded_on_an_earlier_line(count: int, h: int, w: int) -> None:
    offsets = CAUSAL_NEIGHBOURS[:count]
    lines = wavefronts(h, w, wavefront_slope(offsets))
    line_of = torch.full((h * w,), -1)
    for number, line in enumerate(lines):
        line_of[line] = number
    assert sorted(torch.cat(lines).tolist()) == list(range(h * w))  # each latent once
    for index in range(h * w):
        y, x = divmod(index, w)
        for dy, dx in offsets:
            if 0 <= y + dy < h and 0 <= x + dx < w:
                assert line_of[(y + dy) * w + x + dx] < line_of[index]


def test_the_causal_context_sees_no_latent_coded_after_it() -> None:
    """Training's context (all latents at once) reads, for each latent, only latents of earlier lines:
    a change at one latent moves the context of later latents only."""
    net = _tiny_coolchic()
    h, w = net.grid_sizes[1]
    lines = wavefronts(h, w, wavefront_slope(net.neighbours))
    line_of = torch.empty(h * w, dtype=torch.long)
    for number, line in enumerate(lines):
        line_of[line] = number
    grid = torch.zeros(1, 1, h, w)
    zero_ref, no_ref = torch.zeros(1, 1, h, w), torch.zeros(1, dtype=torch.bool)
    base = net._context(1, grid, None, zero_ref, zero_ref, no_ref)
    changed = grid.clone()
    changed[0, 0, 5, 7] = 3.0
    moved = (net._context(1, changed, None, zero_ref, zero_ref, no_ref) != base).any(dim=1).flatten()
    assert moved.any() and bool((line_of[moved] > line_of[5 * w + 7]).all())


def test_cool_chics_arm_form_starts_linear_and_its_fixed_point_follows_the_float() -> None:
    """``arm_residual``: residual hidden layers start at zero (the trunk passes its input on), the
    stabiliser adds a linear path; the decoder's integer evaluation stays within rounding of it."""
    torch.manual_seed(0)
    arm = ARM(12, 12, 2, residual=True)
    assert arm.skips == [True, True] and arm.stabiliser is not None
    assert all(float(layer.weight.abs().sum()) == 0.0 for layer in arm.hidden)
    with torch.no_grad():
        for p in arm.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    context = torch.randint(-6, 7, (1, 12, 9, 11)).double()
    mu, log_scale = arm.fixed_point(context * 256, 8, 12)
    mu_float, log_scale_float = arm(context.float())
    assert torch.equal(mu, torch.round(mu))
    assert (mu / 256 - mu_float.double()).abs().max() < 0.05
    assert (log_scale / 256 - log_scale_float.double()).abs().max() < 0.05
    plain = ARM(12, 12, 2)
    assert plain.skips == [False, False] and plain.stabiliser is None


def test_all_intra_arm_has_no_reference_inputs() -> None:
    """Reference context exists only when some frame has references: its weights would get no gradient."""
    intra, low_delay = tiny_net(frames=2, structure="ai"), tiny_net(frames=2, structure="ld")
    assert intra.context_features + 18 == low_delay.context_features
    assert intra.arm.hidden[0].in_features == intra.context_features


def test_soft_twice_keeps_values_near_integers() -> None:
    """C3 / Cool-Chic's quantizer: noise between two soft-roundings, so values sit near integers."""
    net = _tiny_coolchic()
    net.quantizer.mode, net.quantizer.temperature, net.quantizer.noise = "soft_twice", 0.1, 0.2
    torch.manual_seed(0)
    latent = torch.randn(4096) * 3
    once = net._quantized(latent)
    distance = (once - torch.round(once)).abs()
    assert float(distance.mean()) < 0.1  # soft-round + uniform noise would spread them over +-0.5
    net.quantizer.mode = "soft"
    spread = net._quantized(latent)
    assert float((spread - torch.round(spread)).abs().mean()) > float(distance.mean())


def test_parameter_groups_are_module_and_kind() -> None:
    names = ["arm.hidden.0.weight", "arm.hidden.0.bias", "synthesis.head.weight", "upsampling.upsample"]
    assert parameter_groups(names) == {
        "arm.weight": [0], "arm.bias": [1], "synthesis.weight": [2], "upsampling.weight": [3],
    }  # fmt: skip


def test_a_bad_parameter_search_is_refused() -> None:
    preset = yaml.safe_load((REPO_ROOT / "configs/overfit/coolchic.yaml").read_text())
    assert OverfitPreset.from_config(preset).parameter_search == StepSearch((-12, 0), (-24, 0), 2, (4,))
    for bad in ({"weight_log2": [0, -12], "bias_log2": [-24, 0]}, {"weight_log2": [-12, 0]},
                {"weight_log2": [-12, 0], "bias_log2": [-24, 0], "passes": 0},
                {"weight_log2": [-12, 0], "bias_log2": [-24, 0], "step": 1},
                {"weight_log2": [-12, 0], "bias_log2": [-24, 0], "per_octave": 3},
                {"weight_log2": [-12, 0], "bias_log2": [-24, 0], "per_octave": [1, 3]},
                {"weight_log2": [-12, 0], "bias_log2": [-24, 0], "per_octave": []}):  # fmt: skip
        with pytest.raises(OverfitConfigError, match="parameter_search"):
            OverfitPreset.from_config({**preset, "parameter_search": bad})
    searching = {**preset, "parameter_search": None}
    searching["phases"] = [*preset["phases"], {"name": "q", "steps": 10, "lr": 1e-4, "quantizer": "ste",
                                               "parameters": "ste", "step_search": True}]  # fmt: skip
    with pytest.raises(OverfitConfigError, match="no parameter_search"):
        OverfitPreset.from_config(searching)


def test_step_candidates_divide_each_octave() -> None:
    search = StepSearch((-3, -1), (-5, -4))
    assert search.candidates("arm.weight", 1) == [-3, -2, -1]
    assert search.candidates("arm.bias", 4) == [-5, -4.75, -4.5, -4.25, -4]
    preset = yaml.safe_load((REPO_ROOT / "configs/overfit/coolchic.yaml").read_text())
    for grids, parsed in ((4, (4,)), ([1, 4], (1, 4))):
        search = {"weight_log2": [-3, -1], "bias_log2": [-5, -4], "per_octave": grids}
        assert (
            OverfitPreset.from_config({**preset, "parameter_search": search}).parameter_search.per_octave
            == parsed
        )


@pytest.mark.slow
@pytest.mark.parametrize("per_octave", [[1], [1, 4]])
def test_step_search_picks_measured_steps_that_the_file_codes(per_octave: list[int]) -> None:
    """After a short fit, the search lowers the measured RD loss, every group lands on a tried step
    of the kept grid (with ``per_octave`` [1, 4]: the one whose RDOQ ended lower), and the coded
    file decodes to exactly the network that was measured."""
    torch.manual_seed(0)
    frames = 1
    y = torch.rand(frames, 1, TINY_H, TINY_W) * 0.2 + torch.linspace(0.2, 0.8, TINY_W)
    uv = torch.full((frames, 2, TINY_H // 2, TINY_W // 2), 0.5)
    net = _tiny_coolchic()
    preset = yaml.safe_load((REPO_ROOT / "configs/overfit/coolchic.yaml").read_text())
    preset["total_steps"], preset["warmup"] = 60, None
    preset["parameter_search"] = {"weight_log2": [-10, -2], "bias_log2": [-14, -2], "passes": 1,
                                  "per_octave": per_octave}  # fmt: skip
    preset["phases"] = [p for p in preset["phases"] if not p.get("step_search")]  # search after the fit
    fit = fit_sequence(net, y, uv, 200.0, preset)
    tried = fit.stages.search
    groups = parameter_groups(net.parameter_coder().names)
    assert {row["group"] for row in tried} == set(groups)
    octaves = sum(12 if group.endswith(".bias") else 8 for group in groups)  # the ranges' widths
    assert len(tried) == sum(octaves * n + len(groups) for n in per_octave)
    assert {row["per_octave"] for row in tried} == set(per_octave)
    final = float(fit.module.sequence_terms(y, uv).loss)
    assert final == pytest.approx(fit.stages.rdoq["loss_after"], rel=1e-6)
    assert final <= min(row["loss"] for row in tried) * (1 + 1e-6)  # the RDOQ only ever lowers it
    assert math.isfinite(final)
    coder = net.parameter_coder()
    for indexes in groups.values():
        steps = {float(v) for i in indexes for v in coder.log2_step[i].detach()}
        assert len(steps) == 1 and (steps.pop() * max(per_octave)).is_integer()
    payload = net.compress()
    y_enc, uv_enc = net.reconstruct()
    y_dec, uv_dec = C3Net.decompress(net.architecture, payload).reconstruct()
    assert torch.equal(y_enc, y_dec) and torch.equal(uv_enc, uv_dec)


@pytest.mark.slow
def test_a_step_search_phase_searches_then_trains_the_quantized_network() -> None:
    """``step_search: true`` on a phase: the steps are chosen on entering it, then the phase trains
    with those quantized weights, and the file codes what the phase left."""
    torch.manual_seed(0)
    y = torch.rand(1, 1, TINY_H, TINY_W) * 0.2 + torch.linspace(0.2, 0.8, TINY_W)
    uv = torch.full((1, 2, TINY_H // 2, TINY_W // 2), 0.5)
    net = _tiny_coolchic()
    preset = yaml.safe_load((REPO_ROOT / "configs/overfit/coolchic.yaml").read_text())
    preset["parameter_search"] = {"weight_log2": [-8, -3], "bias_log2": [-10, -4], "passes": 1}
    preset["warmup"] = None
    preset["phases"] = [
        {"name": "soft", "steps": 30, "lr": 0.01, "quantizer": "soft", "temperature": [0.5, 0.1]},
        {"name": "quantized", "steps": 10, "lr": 1e-4, "quantizer": "ste", "parameters": "ste",
         "step_search": True},
    ]  # fmt: skip
    fit = fit_sequence(net, y, uv, 200.0, preset)
    assert fit.stages.search and net.parameter_mode == "ste"
    assert fit.schedule.total_steps == 40 and fit.trainer.global_step == 40
    payload = net.compress()
    y_enc, uv_enc = net.reconstruct()
    y_dec, uv_dec = C3Net.decompress(net.architecture, payload).reconstruct()
    assert torch.equal(y_enc, y_dec) and torch.equal(uv_enc, uv_dec)


def test_a_bad_parameter_rdoq_is_refused() -> None:
    preset = yaml.safe_load((REPO_ROOT / "configs/overfit/coolchic.yaml").read_text())
    assert OverfitPreset.from_config(preset).parameter_rdoq == ParameterRdoq(15)
    for bad in ({"max_shift": 0}, {"max_shift": 3, "passes": 2}, {}):
        with pytest.raises(OverfitConfigError, match="parameter_rdoq"):
            OverfitPreset.from_config({**preset, "parameter_rdoq": bad})
    unquantized = {**preset, "parameter_search": None,
                   "phases": [{k: v for k, v in p.items() if k not in ("parameters", "step_search")}
                              for p in preset["phases"]]}  # fmt: skip
    with pytest.raises(OverfitConfigError, match="neither a parameter_search nor a phase"):
        OverfitPreset.from_config(unquantized)


@pytest.mark.slow
def test_parameter_rdoq_lowers_the_measured_loss_and_the_file_codes_it() -> None:
    """After the fit, moving single weights by whole steps only ever lowers the RD loss measured with
    the weights' own rate; the weights stay multiples of their steps and the file decodes to them."""
    torch.manual_seed(0)
    y = torch.rand(1, 1, TINY_H, TINY_W) * 0.2 + torch.linspace(0.2, 0.8, TINY_W)
    uv = torch.full((1, 2, TINY_H // 2, TINY_W // 2), 0.5)
    net = _tiny_coolchic()
    preset = yaml.safe_load((REPO_ROOT / "configs/overfit/coolchic.yaml").read_text())
    preset["warmup"], preset["total_steps"] = None, 40
    preset["parameter_search"] = {"weight_log2": [-8, -3], "bias_log2": [-10, -4], "passes": 1}
    preset["parameter_rdoq"] = {"max_shift": 2}
    fit = fit_sequence(net, y, uv, 200.0, preset)
    rdoq = fit.stages.rdoq
    assert rdoq["loss_after"] < rdoq["loss_before"] and rdoq["changed"] > 0
    assert rdoq["forwards"] >= 2 * sum(t.numel() for t in net.network_parameters().values())
    assert float(fit.module.sequence_terms(y, uv).loss) == pytest.approx(rdoq["loss_after"], rel=1e-6)
    params = net.network_parameters()
    dequantized = net.parameter_coder().quantize(params, "dequantize")
    assert all(torch.equal(params[name], dequantized[name]) for name in net.parameter_coder().names)
    payload = net.compress()
    y_enc, uv_enc = net.reconstruct()
    y_dec, uv_dec = C3Net.decompress(net.architecture, payload).reconstruct()
    assert torch.equal(y_enc, y_dec) and torch.equal(uv_enc, uv_dec)


@pytest.mark.parametrize("structure", ["ai", "ld"])
def test_the_rdoq_split_measure_equals_the_whole_forward(structure: str) -> None:
    """Recomputing only the ARM's rate (an ARM weight moved) or only the pictures (a synthesis or
    upsampling weight moved) gives the loss of the whole forward, with the parameters' bits."""
    from nvc_train.training.overfit import OverfitModule
    from nvc_train.training.step_search import SplitMeasure

    torch.manual_seed(0)
    frames = 1 if structure == "ai" else 3
    y = torch.rand(frames, 1, TINY_H, TINY_W)
    uv = torch.rand(frames, 2, TINY_H // 2, TINY_W // 2)
    net = _tiny_coolchic(structure=structure, frames=frames)
    with torch.no_grad():
        for latent in net.latents:
            latent.normal_(0, 0.2)
    net.quantize_parameters("dequantize", init_bits=6)
    coder, params = net.parameter_coder(), net.network_parameters()
    with torch.no_grad():
        for name, value in coder.quantize(params, "dequantize").items():
            params[name].copy_(value)
        module = OverfitModule(net, 300.0, lr=0.01, parameter_lr_ratio=1)
        measure = SplitMeasure(module, y, uv, chunk=2)
        for module_name, part in C3Net.RD_SPLIT.items():
            names = [n for n in coder.names if n.startswith(f"{module_name}.")]
            if not names:
                continue
            flat = params[names[0]].data.view(-1)
            flat[0] += 4 * float(coder.element_steps(coder.names.index(names[0])).reshape(-1)[0])
            split = measure.loss(part)
            measure.accept()
            measure.close()
            whole = float(module.sequence_terms(y, uv).loss)
            measure = SplitMeasure(module, y, uv, chunk=2)
            assert split == pytest.approx(whole, rel=1e-6), module_name
        measure.close()
    assert net.parameter_mode == "dequantize"


WARMUP = {"candidates": [5, 2], "steps": 50, "phase": {"lr": 0.01, "quantizer": "soft_twice",
                                                       "temperature": 0.35, "noise": 0.165}}  # fmt: skip


def test_warmup_iterations_count_in_the_effort() -> None:
    preset = yaml.safe_load((REPO_ROOT / "configs/overfit/coolchic.yaml").read_text())
    parsed = OverfitPreset.from_config({**preset, "warmup": WARMUP, "total_steps": 2000})
    assert parsed.warmup_steps == 5 * 50 + 2 * 50
    assert sum(p["steps"] for p in parsed.scaled_phases()) == 2000 - 350 and parsed.fit_steps == 2000
    for bad in ({**WARMUP, "candidates": [2, 5]}, {**WARMUP, "steps": 0}, {"candidates": [2], "steps": 5},
                {**WARMUP, "phase": {**WARMUP["phase"], "steps": 3}}):  # fmt: skip
        with pytest.raises(OverfitConfigError, match="warmup"):
            OverfitPreset.from_config({**preset, "warmup": bad})
    with pytest.raises(OverfitConfigError, match="warm-up"):
        OverfitPreset.from_config({**preset, "warmup": WARMUP, "total_steps": 351})


def test_warmup_noise_can_follow_lambda_and_its_optimizer_can_differ() -> None:
    """Cool-Chic's warm-up: Gaussian noise ``(-0.432 log10(l_cc) + 0.747) / 10`` with ``l_cc = 1 /
    lambda`` ours, and faster latent betas than the main phases."""
    preset = yaml.safe_load((REPO_ROOT / "configs/overfit/coolchic.yaml").read_text())
    preset["optimizer"] = {"name": "soap", "network_betas": [0.95, 0.95], "latent_betas": [0.9, 0.999],
                           "weight_decay": 0.01, "precondition_frequency": 10,
                           "max_precond_dim": 256}  # fmt: skip
    phase = {k: v for k, v in WARMUP["phase"].items() if k != "noise"}
    warmup = {**WARMUP, "phase": phase, "noise_log10_lambda": [0.0432, 0.0747],
              "optimizer": {"latent_betas": [0.725, 0.97]}}  # fmt: skip
    parsed = OverfitPreset.from_config({**preset, "warmup": warmup}).warmup
    for lmbda_cc in (0.008, 0.00015):
        expected = (-0.432 * math.log10(lmbda_cc) + 0.747) / 10
        assert parsed.phase_at(1 / lmbda_cc)["noise"] == pytest.approx(expected)
    optimizer = parsed.fit_optimizer(FitOptimizer.from_config(preset["optimizer"]))
    assert optimizer.latent_betas == (0.725, 0.97) and optimizer.network_betas == (0.95, 0.95)
    bad_optimizers = ({"name": "soap"}, {"momentum": 0.9})
    for bad in ({**warmup, "phase": WARMUP["phase"]}, {**warmup, "noise_log10_lambda": [1.0]},
                *({**warmup, "optimizer": o} for o in bad_optimizers)):  # fmt: skip
        with pytest.raises(OverfitConfigError, match="warmup"):
            OverfitPreset.from_config({**preset, "warmup": bad})


@pytest.mark.slow
def test_warmup_keeps_the_best_candidate_in_the_given_network() -> None:
    from nvc_train.training.overfit import OverfitModule, warm_up

    torch.manual_seed(0)
    y = torch.rand(1, 1, TINY_H, TINY_W) * 0.2 + torch.linspace(0.2, 0.8, TINY_W)
    uv = torch.full((1, 2, TINY_H // 2, TINY_W // 2), 0.5)
    net = _tiny_coolchic()
    first_weight = net.synthesis.head.weight.detach().clone()
    preset = yaml.safe_load((REPO_ROOT / "configs/overfit/coolchic.yaml").read_text())
    warmup = {**WARMUP, "candidates": [3, 2], "steps": 4}
    parsed = OverfitPreset.from_config({**preset, "warmup": warmup})
    trials = warm_up(net, y, uv, 200.0, parsed, FitSettings(), seed=0)
    assert [(t["stage"], t["candidate"]) for t in trials] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    best_of_last = min(t["loss"] for t in trials if t["stage"] == 1)
    measured = float(OverfitModule(net, 200.0, lr=0.01, parameter_lr_ratio=1).sequence_terms(y, uv).loss)
    assert measured == pytest.approx(best_of_last, rel=1e-5)
    assert not torch.equal(
        net.synthesis.head.weight, first_weight
    )  # trained (or replaced), not left as built


@pytest.mark.parametrize("distribution", ["gaussian", "laplace"])
def test_the_network_builds_on_meta_tensors(distribution: str) -> None:
    """The decoder checks a file's architecture on a meta build before allocating anything."""
    config = yaml.safe_load((REPO_ROOT / "configs/model/coolchic.yaml").read_text())
    config.pop("_target_")
    with torch.device("meta"):
        net = C3Net(height=1088, width=1920, num_frames=600, structure="ai", intra_period=1, gop_size=1,
                    **{**config, "latent_distribution": distribution})  # fmt: skip
    assert net.latents[0].is_meta and net.entropy.tail_width > 6
