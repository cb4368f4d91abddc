"""ssf (Scale-Space Flow): scale-space warping, real coding, and the entry points on miniature Vimeo-90k.

The registry tests (tests/test_models.py) already run ssf_tiny through forward, gradients, bits
against q_index, fresh-process decoding and payload errors; this file checks what is particular to
the residual codec (the warp, the four-latent P payload) and that `train.py model=ssf_tiny
data=vimeo90k` and `evaluate.py ckpt=...` work end to end with bits counted from files.
"""

from __future__ import annotations

import csv
import functools
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models import build_model, model_config
from models.base import PayloadError
from models.ssf import (
    ScaleSpaceFlow,
    ScaleSpaceFlowSet,
    ScaleSpaceWarp,
    centred_padding,
    gaussian_taps,
    rgb_to_yuv420,
    to_420,
    to_444,
    yuv420_to_rgb,
)
from nvc_train.embedded import ensure_embedded_clips
from nvc_train.video import open_video
from tests.conftest import REPO_ROOT
from tests.test_vimeo_bvi import write_vimeo


@functools.cache
def coded_tiny() -> ScaleSpaceFlow:
    torch.manual_seed(0)
    model = build_model("ssf_tiny")
    model.update()
    return model.eval()


def clip(height: int, width: int, count: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` real consecutive frames (embedded astronaut_pan: camera motion), cropped."""
    reader = open_video(ensure_embedded_clips()["astronaut_pan"])
    out = []
    for index in range(count):
        y, u, v = reader.read_frame(index).to_tensors()
        uv = torch.cat([u, v], dim=1)
        out.append(
            (y[..., 32 : 32 + height, 64 : 64 + width], uv[..., 16 : 16 + height // 2, 32 : 32 + width // 2])
        )
    return out


# --------------------------------------------------------------------------------------------------
# Scale-space warping (CompressAI's units: normalised grid coordinates, scale 0 = the middle level)


def level_coordinate(level: int, levels: int) -> float:
    """The normalised scale coordinate of a volume level (grid_sample, align_corners False)."""
    return (2 * level + 1) / levels - 1


def pixel_flow(
    warp: ScaleSpaceWarp, shape: tuple[int, int], dx: float, dy: float, scale: float
) -> torch.Tensor:
    """A constant flow field of (dx, dy) pixels and a scale coordinate, in the warp's units."""
    h, w = shape
    flow = torch.tensor([2 * dx / w, 2 * dy / h, scale]).view(1, 3, 1, 1)
    return flow.expand(1, 3, h, w).contiguous()


def test_zero_flow_at_the_first_level_returns_the_reference() -> None:
    warp = ScaleSpaceWarp(num_levels=5, sigma0=1.5)
    x = torch.rand(2, 3, 32, 48)
    out = warp(x, pixel_flow(warp, (32, 48), 0, 0, -1.0).expand(2, 3, 32, 48))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_integer_flow_shifts_and_scale_selects_levels() -> None:
    warp = ScaleSpaceWarp(num_levels=3, sigma0=1.5)
    x = torch.rand(1, 3, 32, 48)
    first = level_coordinate(0, 4)
    out = warp(x, pixel_flow(warp, (32, 48), 2, -1, first))  # out[i, j] = x[i - 1, j + 2]
    torch.testing.assert_close(out[..., 1:, :-2], x[..., :-1, 2:], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[..., 1:, -1], x[..., :-1, -1], atol=1e-5, rtol=0)  # border

    volume = warp.volume(x)
    assert volume.shape == (1, 3, 4, 32, 48)
    assert torch.equal(volume[:, :, 0], x)
    lap = [(v[..., 1:, :] - v[..., :-1, :]).abs().mean() for v in volume.unbind(2)]
    assert all(a > b for a, b in zip(lap, lap[1:], strict=False)), lap  # ever smoother

    def at_scale(scale: float) -> torch.Tensor:
        return warp(x, pixel_flow(warp, (32, 48), 0, 0, scale))

    for level in range(4):
        torch.testing.assert_close(
            at_scale(level_coordinate(level, 4)), volume[:, :, level], atol=1e-5, rtol=0
        )
    torch.testing.assert_close(at_scale(5.0), volume[:, :, 3], atol=1e-5, rtol=0)  # clamped (border)
    # scale 0 is the middle of the volume: halfway between levels 1 and 2 of four
    torch.testing.assert_close(at_scale(0.0), 0.5 * (volume[:, :, 1] + volume[:, :, 2]), atol=1e-5, rtol=0)


def test_blur_taps_pyramid_and_bad_flow() -> None:
    taps = gaussian_taps(1.5)
    assert taps.numel() == 11 and math.isclose(float(taps.sum()), 1.0, rel_tol=1e-6)
    assert torch.equal(taps, taps.flip(0))
    # level 2 is level 1 pooled, blurred and upsampled: constant pictures stay constant throughout
    volume = ScaleSpaceWarp(5, 1.5).volume(torch.full((1, 3, 32, 32), 0.25))
    torch.testing.assert_close(volume, torch.full_like(volume, 0.25))
    with pytest.raises(ValueError, match="flow must be"):
        ScaleSpaceWarp(2, 1.5)(torch.rand(1, 3, 8, 8), torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="num_levels"):
        ScaleSpaceWarp(0, 1.5)


def test_444_conversion_round_trips_420() -> None:
    y, uv = torch.rand(1, 1, 8, 12), torch.rand(1, 2, 4, 6)
    y2, uv2 = to_420(to_444(y, uv))
    assert torch.equal(y2, y) and torch.equal(uv2, uv)


def test_rgb_conversion_is_bt709_centred_chroma_and_padding_is_centred() -> None:
    grey = yuv420_to_rgb(torch.full((1, 1, 4, 4), 0.3), torch.full((1, 2, 2, 2), 0.5))
    torch.testing.assert_close(grey, torch.full_like(grey, 0.3))  # neutral chroma is 0.5, not 128/255
    y, uv = torch.rand(1, 1, 16, 24), 0.25 + 0.5 * torch.rand(1, 2, 8, 12)
    y2, _ = rgb_to_yuv420(yuv420_to_rgb(y, uv))
    torch.testing.assert_close(y2, y, atol=1e-6, rtol=0)
    assert centred_padding(72, 104, 128) == (12, 12, 28, 28)
    assert centred_padding(70, 102, 32) == (13, 13, 13, 13) and centred_padding(64, 96, 32) == (0, 0, 0, 0)


def test_parameter_set_is_compressais_and_variable_rate_is_an_option() -> None:
    """34,209,609 parameters as in CompressAI 1.2.8 (tests/fixtures/official/ssf/meta.json)."""
    plain = build_model("ssf")
    assert plain.num_q == 1 and plain.colour_space == "rgb" and plain.pad_multiple == 2
    assert sum(p.numel() for p in plain.parameters()) == 34_209_609
    shared = {name for name, _ in plain.named_parameters()}
    varying = build_model("ssf", variable_rate=True, num_q=4)
    extra = {name for name, _ in varying.named_parameters()} - shared
    assert extra == {f"{part}_hyperprior.gain.log_step" for part in ("img", "res", "motion")}
    with pytest.raises(ValueError, match="num_q 1"):
        build_model("ssf", num_q=4)


@pytest.mark.parametrize("name", ["ssf_tiny", pytest.param("ssf", marks=pytest.mark.slow)])
def test_the_scale_field_gets_a_gradient_from_the_start_for_every_seed(name: str) -> None:
    """The scale channel starts at zero (the middle of the volume), so it always learns.

    Before, the scale was clamped to [0, 5] levels and started near the last layer's bias: for 7
    of 13 seeds of ``ssf`` (3 of 13 of ``ssf_tiny``) the whole field sat below 0, without gradient.
    """
    (y0, uv0), (y1, uv1), _ = clip(64, 64)
    for seed in range(20):
        torch.manual_seed(seed)
        model = build_model(name).train()
        intra = model.forward_frame(y0, uv0, 0, None)
        inter = model.forward_frame(y1, uv1, 0, intra.ref)
        loss = inter.bits.sum() / 4096 + 100 * (
            (inter.y_hat - y1).square().mean() + (inter.uv_hat - uv1).square().mean()
        )
        loss.backward()
        head = model.motion_decoder[-1]
        assert head.bias.grad[2] != 0 and head.weight.grad[:, 2].abs().sum() > 0, f"seed {seed}: no gradient"


# --------------------------------------------------------------------------------------------------
# Real coding


@pytest.mark.parametrize("q_index", [0, 3, 7])
def test_round_trip_is_exact_for_i_and_p_frames(q_index: int) -> None:
    model = coded_tiny()
    frames = clip(64, 96)
    ref_enc = ref_dec = None
    sizes = []
    for y, uv in frames:
        data, out = model.compress_frame(y, uv, q_index, ref_enc)
        y_hat, uv_hat, ref_dec = model.decompress_frame(data, q_index, ref_dec, 64, 96)
        assert torch.equal(y_hat, out.y_hat) and torch.equal(uv_hat, out.uv_hat)
        assert torch.equal(ref_dec.frame, out.ref.frame)
        assert data[:1] == (b"I" if ref_enc is None else b"P")
        sizes.append(len(data))
        ref_enc = out.ref
    assert all(s > 8 for s in sizes)


def test_payload_grows_with_q_index_and_p_frames_use_the_prediction() -> None:
    model = coded_tiny()
    (y0, uv0), (y1, uv1), _ = clip(64, 96)
    intra, inter = [], []
    for q in (0, 4, 7):
        i_data, i_out = model.compress_frame(y0, uv0, q, None)
        p_data, _ = model.compress_frame(y1, uv1, q, i_out.ref)
        intra.append(len(i_data))
        inter.append(len(p_data))
    assert intra == sorted(intra) and inter == sorted(inter), (intra, inter)


def test_yuv420_option_and_sizes_the_model_pads_itself_round_trip_exactly() -> None:
    torch.manual_seed(1)
    yuv = build_model("ssf_tiny", colour_space="yuv420").eval()
    yuv.update()
    assert yuv.pad_multiple == 32 and yuv.padding(64, 96) == (0, 0, 0, 0)
    rgb = coded_tiny()  # pads itself, centred: any even size
    for model, (h, w) in ((yuv, (64, 96)), (rgb, (70, 102))):
        ref_enc = ref_dec = None
        for y, uv in clip(h, w, count=2):
            data, out = model.compress_frame(y, uv, 3, ref_enc)
            y_hat, uv_hat, ref_dec = model.decompress_frame(data, 3, ref_dec, h, w)
            assert y_hat.shape == (1, 1, h, w) and uv_hat.shape == (1, 2, h // 2, w // 2)
            assert torch.equal(y_hat, out.y_hat) and torch.equal(uv_hat, out.uv_hat)
            ref_enc = out.ref
    assert ref_dec.frame.shape[-2:] == (96, 128)  # 70x102 centred in multiples of 32


def test_a_set_of_single_rate_models_is_one_codec_whose_q_index_picks_the_model() -> None:
    numbers = {k: v for k, v in model_config("ssf_tiny").items() if k != "_target_"}
    numbers.update(variable_rate=False, num_q=1)
    torch.manual_seed(2)
    codec = ScaleSpaceFlowSet(rate_points=3, **numbers).eval()
    codec.update()
    assert codec.num_q == 3 and codec.config["rate_points"] == 3
    assert sum(p.numel() for p in codec.parameters()) == 3 * sum(
        p.numel() for p in codec.members[0].parameters()
    )
    (y0, uv0), (y1, uv1), _ = clip(64, 64)
    batch_y, batch_uv = torch.cat([y0, y0, y0]), torch.cat([uv0, uv0, uv0])
    with torch.no_grad():
        mixed = codec.forward_frame(batch_y, batch_uv, torch.tensor([2, 0, 2]), None)
        for item, q in enumerate((2, 0, 2)):
            alone = codec.members[q].forward_frame(y0, uv0, 0, None)
            torch.testing.assert_close(mixed.y_hat[item : item + 1], alone.y_hat)
            torch.testing.assert_close(mixed.bits[item : item + 1], alone.bits)
    i_data, i_out = codec.compress_frame(y0, uv0, 1, None)
    assert i_data == codec.members[1].compress_frame(y0, uv0, 0, None)[0]
    p_data, p_out = codec.compress_frame(y1, uv1, 2, i_out.ref)  # another rate point than its reference
    _, _, ref = codec.decompress_frame(i_data, 1, None, 64, 64)
    y_hat, _, _ = codec.decompress_frame(p_data, 2, ref, 64, 64)
    assert torch.equal(y_hat, p_out.y_hat)


def test_corrupted_payloads_raise_payload_error() -> None:
    model = coded_tiny()
    (y0, uv0), (y1, uv1), _ = clip(64, 96)
    i_data, i_out = model.compress_frame(y0, uv0, 2, None)
    p_data, _ = model.compress_frame(y1, uv1, 2, i_out.ref)
    for bad in (p_data[: len(p_data) // 2], p_data[:1], p_data + b"\x01\x02\x03\x04", b""):
        with pytest.raises(PayloadError, match="payload"):
            model.decompress_frame(bad, 2, i_out.ref, 64, 96)
    with pytest.raises(PayloadError, match="ref is None"):
        model.decompress_frame(p_data, 2, None, 64, 96)
    with pytest.raises(PayloadError, match="ref is given"):
        model.decompress_frame(i_data, 2, i_out.ref, 64, 96)
    with pytest.raises(ValueError, match="Reference of a previous 64x128"):
        model.decompress_frame(p_data, 2, i_out.ref, 64, 128)


# --------------------------------------------------------------------------------------------------
# Entry points: train.py on a miniature Vimeo-90k, evaluate.py on its checkpoint


def _run(args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("model", ["ssf_tiny", "dcvc_rt_tiny"])  # residual and conditional, one path
def test_train_py_on_vimeo_then_evaluate_py_with_real_bits(model: str, tmp_path: Path) -> None:
    vimeo = write_vimeo(tmp_path / "vimeo_septuplet", ensure_embedded_clips()["astronaut_pan"])
    run_dir = tmp_path / "train"
    _run(
        [
            str(REPO_ROOT / "train.py"),
            f"model={model}",
            "data=vimeo90k",
            f"data.root={vimeo}",
            "data.frames=2",
            "data.crop=64",
            "data.batch_size=2",
            "data.num_workers=0",
            "data.pin_memory=false",
            "data.val_frames=2",
            "data.val_crop=[64,64]",
            "data.val_batch_size=1",
            "trainer.max_steps=3",
            "trainer.val_check_interval=3",
            "trainer.enable_progress_bar=false",
            "~callbacks.progress_bar",
            "logger=csv",
            f"hydra.run.dir={run_dir}",
        ]
    )
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(ckpt, weights_only=True)
    assert checkpoint["global_step"] == 3 and checkpoint["nvc_config"]["model_name"] == model

    eval_dir = tmp_path / "eval"
    _run(
        [
            str(REPO_ROOT / "evaluate.py"),
            f"ckpt={ckpt}",
            "~anchor",
            "frames=2",
            "metrics=[psnr]",
            "progress=false",
            f"hydra.run.dir={eval_dir}",
        ]
    )
    with (eval_dir / "points.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows and {r["codec"] for r in rows} == {model}
    for row in rows:
        stream = Path(row["bitstream"])
        stream = stream if stream.is_absolute() else eval_dir / stream
        assert float(row["bits"]) == 8 * stream.stat().st_size, "bits are counted from the file"
        assert abs(float(row["bits"]) / float(row["est_bits"]) - 1.0) < 0.15, row
        assert math.isfinite(float(row["psnr_yuv"]))


@pytest.mark.slow
def test_codec_speed_bench_codes_and_decodes_exactly() -> None:
    """bench/codec_speed.py runs the real compress / decompress chain and reports an exact decode."""
    proc = _run(
        [
            str(REPO_ROOT / "bench" / "codec_speed.py"),
            "ssf_tiny",
            "--height=64",
            "--width=96",
            "--frames=2",
            "--repeats=1",
            "--warmup=0",
            "--threads=1",
        ]
    )
    row = proc.stdout.strip().splitlines()[-1].split("|")
    cells = [c.strip() for c in row[1:-1]]
    assert cells[0] == "ssf_tiny" and cells[9] == "yes", proc.stdout
    assert float(cells[5]) > 0 and float(cells[6]) > 0 and int(cells[7]) > 0  # fps, fps, I bits
    assert float(cells[11]) < float(cells[12]), "a P frame costs more MACs than an I frame"
