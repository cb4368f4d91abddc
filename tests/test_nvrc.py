"""models/nvrc.py: NVRC from its paper (sizes against Table 7, exact coding, the two-stage fit)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from models import build_model, model_config, network_class
from models.adaptive import AdaptivePayload
from models.nvrc import NVRC, REFERENCE, ContextModel, NVRCCoder
from nvc_train.complexity import LOW_DELAY, adaptive_complexity, main
from nvc_train.entropy.param_coding import ParamCodingError


def _tiny(height: int = 48, width: int = 64, frames: int = 3, seed: int = 0) -> NVRC:
    torch.manual_seed(seed)
    return build_model("nvrc_tiny", height=height, width=width, num_frames=frames)


@pytest.mark.parametrize("name", ["nvrc", "nvrc_tiny", "nvrc_s1", "nvrc_s2", "nvrc_s3", "nvrc_s4"])
def test_config_files_hold_the_registered_numbers(name: str, repo_root: Path) -> None:
    config = yaml.safe_load((repo_root / "configs" / "model" / f"{name}.yaml").read_text())
    assert config.pop("_target_") == "models.nvrc.NVRC"
    with torch.device("meta"):
        built = build_model(name, height=64, width=96, num_frames=2).architecture
    assert {key: built[key] for key in config} == config
    if name in ("nvrc", "nvrc_tiny"):
        schedule = yaml.safe_load((repo_root / "configs" / "overfit" / f"{name}.yaml").read_text())
        assert schedule["name"] == name and schedule["lambdas"] == sorted(schedule["lambdas"])


def test_nvrc_is_the_s2_size() -> None:
    assert model_config("nvrc") == model_config("nvrc_s2")


# The geometry each size's Table 7 count is compared at: S1 is used on MCL-JCV only (Table 8:
# T_grid 50, 120-150 frames), S2..S4 on UVG (T_grid 200, 600 frames).
_COUNTED_AT = {
    "nvrc_s1": {"num_frames": 120, "grid_frames": 50},
    "nvrc_s2": {"num_frames": 600},
    "nvrc_s3": {"num_frames": 600},
    "nvrc_s4": {"num_frames": 600},
}


@pytest.mark.parametrize("name", sorted(_COUNTED_AT))
def test_parameter_counts_match_the_papers_table_7(name: str) -> None:
    """Ours within 1% of the paper's stated counts (2.14 / 6.35 / 14.19 / 31.41 M) at 1080p."""
    numbers = model_config(name)
    cls = network_class(str(numbers.pop("_target_")))
    numbers.update(height=1080, width=1920, **LOW_DELAY, **_COUNTED_AT[name])
    figures = adaptive_complexity(cls, numbers, 1080, 1920, device="meta")
    assert figures["params_m"] * 1e6 == pytest.approx(REFERENCE[name]["paper_params"], rel=0.01)


def test_the_complexity_command_line_counts_nvrc(capsys: pytest.CaptureFixture[str]) -> None:
    main(["nvrc", "--height", "1080", "--width", "1920", "--frames", "600"])
    text = capsys.readouterr().out
    match = re.search(r"params ([\d.]+) M = ([\d,]+) .*?([\d.]+) kMAC/px frame 0", text)
    assert match, text
    assert int(match.group(2).replace(",", "")) == pytest.approx(6_350_000, rel=0.01)
    assert 150 < float(match.group(3)) < 250  # ours 196.9; the paper's Table 3 gives 173.4 (359.6 G/frame)


def test_forward_shapes_gradients_and_bad_architectures() -> None:
    net = _tiny(height=50, width=66)  # not a multiple of the scales: the output is cropped
    out = net(torch.arange(2))
    assert out.y.shape == (2, 1, 50, 66) and out.uv.shape == (2, 2, 25, 33)
    out.y.mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(ValueError, match="odd"):
        build_model("nvrc_tiny", height=48, width=64, num_frames=2, context_kernel=4)
    with pytest.raises(ValueError, match="grid_level_scale"):
        build_model("nvrc_tiny", height=48, width=64, num_frames=2, grid_level_scale=[2.0, 2.0, 2.0])


def test_context_model_position_by_position_equals_its_convolutions() -> None:
    """The coding path (one position at a time, causal taps only) computes the training path's
    function: same means and log-scales to float rounding, and nothing reads a later position."""
    torch.manual_seed(0)
    model = ContextModel(kernel=3, width=4)
    block = (2, 3, 4)
    x = torch.randn(5, *block)
    reference = model(x).detach()
    weights = dict(model.named_parameters())
    first, second, third = model.step_weights(weights)
    table_a, table_b = (ContextModel.neighbour_table(block, 3, include) for include in (False, True))
    positions = x[0].numel()
    flat = torch.cat([x.reshape(5, -1), torch.zeros(5, 1)], dim=1)
    h1, h2 = torch.zeros(5, positions + 1, 4), torch.zeros(5, positions + 1, 4)
    outputs = []
    with torch.no_grad():
        for p in range(positions):
            h1[:, p] = torch.nn.functional.layer_norm(
                torch.nn.functional.gelu(flat[:, table_a[p]] @ first + weights["first.bias"]), (4,), eps=1e-6
            )
            hidden = h1[:, table_b[p]].reshape(5, -1) @ second + weights["second.bias"]
            h2[:, p] = torch.nn.functional.layer_norm(torch.nn.functional.gelu(hidden), (4,), eps=1e-6)
            outputs.append(h2[:, table_b[p]].reshape(5, -1) @ third + weights["third.bias"])
    stepped = torch.stack(outputs, dim=-1).view(5, 2, *block)
    torch.testing.assert_close(stepped, reference, rtol=1e-5, atol=1e-5)
    # Causality: changing the last position changes no output of the training path before it.
    changed = x.clone()
    changed[:, -1, -1, -1] += 10.0
    after = model(changed).detach()
    assert torch.equal(after.reshape(5, 2, -1)[..., :-1], reference.reshape(5, 2, -1)[..., :-1])


def test_compress_decompress_is_exact_and_costs_what_was_estimated() -> None:
    net = _tiny()
    net.quantize_parameters("ste", init_bits=8)
    with torch.no_grad():
        net.quantize_parameters("dequantize")
        estimated = float(net(torch.arange(3)).parameter_bits)
        expected = net.parameter_coder().quantize(net.network_parameters(), "dequantize")
    payload = net.compress()
    assert payload.frames == [b"", b"", b""]
    assert 0.97 < 8 * len(payload.parameters) / estimated < 1.05
    for name, value in net.network_parameters().items():  # the encoder now holds what it sent
        assert torch.equal(value.detach(), expected[name].detach()), name
    encoder_y, encoder_uv = net.reconstruct()
    decoder = NVRC.decompress(net.architecture, payload)
    decoder_y, decoder_uv = decoder.reconstruct()
    assert torch.equal(encoder_y, decoder_y) and torch.equal(encoder_uv, decoder_uv)
    with pytest.raises(ParamCodingError, match="another architecture"):
        NVRC.decompress(dict(net.architecture, channels=24), payload)
    with pytest.raises(ParamCodingError):
        NVRC.decompress(net.architecture, AdaptivePayload(payload.parameters[:-5], payload.frames))


def test_the_rate_reaches_every_coder_parameter_in_both_stages() -> None:
    """Stage 1 (soft-rounding + Kumaraswamy noise) and stage 2 (Quant-Noise): the rate of grids,
    layers and side information is differentiable in phi and psi, the distortion in the network."""
    net = _tiny()
    net.quantize_parameters("noise", init_bits=8)
    net.quantizer.mode, net.quantizer.temperature, net.quantizer.noise = "soft", 0.5, 2.0
    coder: NVRCCoder = net.parameter_coder()  # type: ignore[assignment]
    out = net(torch.arange(3))
    assert float(out.parameter_bits.detach()) > 1000
    (out.parameter_bits / 1e4 + out.y.mean()).backward()
    named = dict(coder.named_parameters())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in named.values())
    for prefix in ("grid_log2_step", "context", "layer.step_out", "layer.scale_out", "side_log2_step"):
        assert any(p.grad.abs().sum() > 0 for n, p in named.items() if n.startswith(prefix)), prefix
    net.zero_grad()
    net.quantize_parameters("ste")
    net.quantizer.mode, net.quantizer.noise = "ste", 1.0  # every value rounded: what the decoder sees
    with torch.no_grad():
        quantized = coder.quantize(net.network_parameters(), "ste")
        rounded = coder.quantize(net.network_parameters(), "dequantize")
    for name in quantized:
        torch.testing.assert_close(quantized[name], rounded[name])


_DECODE = """
import json, sys, torch
from models.adaptive import AdaptivePayload
from models.nvrc import NVRC
folder = sys.argv[1]
architecture = json.load(open(folder + "/architecture.json"))
payload = AdaptivePayload(open(folder + "/weights.bin", "rb").read(), [b""] * architecture["num_frames"])
y, uv = NVRC.decompress(architecture, payload).reconstruct()
torch.save({"y": y, "uv": uv}, folder + "/decoded.pt")
"""


def test_decode_in_a_fresh_process_equals_the_encoder(tmp_path: Path, repo_root: Path) -> None:
    net = _tiny(seed=1)
    net.quantize_parameters("noise", init_bits=7)
    payload = net.compress()
    y, uv = net.reconstruct()
    (tmp_path / "architecture.json").write_text(json.dumps(net.architecture))
    (tmp_path / "weights.bin").write_bytes(payload.parameters)
    result = subprocess.run(
        [sys.executable, "-c", _DECODE, str(tmp_path)], cwd=repo_root, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    decoded = torch.load(tmp_path / "decoded.pt", weights_only=True)
    assert torch.equal(decoded["y"], y) and torch.equal(decoded["uv"], uv)


@pytest.mark.slow
def test_evaluate_fits_both_stages_and_a_fresh_decoder_matches(tmp_path: Path, repo_root: Path) -> None:
    """evaluate.py model=nvrc_tiny: trains (two stages), bits from files, the higher lambda gives
    more bits and PSNR, and decoding each file in a fresh process gives the encoder's frames."""
    import csv
    import os

    from tests.test_overfit import make_tiny_clip

    make_tiny_clip(tmp_path / "clips", frames=3)
    run_dir = tmp_path / "run"
    command = [
        sys.executable, str(repo_root / "evaluate.py"), "model=nvrc_tiny", "ctc=folder",
        f"ctc.path={tmp_path / 'clips'}", "overfit.steps_scale=0.25", "codec.rate_points=[0,3]",
        "codec.encoder_reconstruction=true", "~anchor", "metrics=[psnr]", "progress=false",
        f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=repo_root, env={**os.environ, "HYDRA_FULL_ERROR": "1"}, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    with (run_dir / "points.csv").open() as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: int(r["rate_point"]))
    assert [(r["codec"], r["rate_point"]) for r in rows] == [("nvrc_tiny", "0"), ("nvrc_tiny", "3")]
    assert int(rows[1]["bits"]) > int(rows[0]["bits"])
    assert float(rows[1]["psnr_yuv"]) > float(rows[0]["psnr_yuv"]) > 20
    for row in rows:
        bitstream = run_dir / row["bitstream"]
        assert int(row["bits"]) == bitstream.stat().st_size * 8
        decoded = tmp_path / f"decoded_{row['rate_point']}.yuv"
        subprocess.run(
            [sys.executable, "-m", "nvc_train.codecs.adaptive", str(bitstream), str(decoded)],
            cwd=repo_root, check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        assert decoded.read_bytes() == Path(f"{bitstream}.enc.yuv").read_bytes()
