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

from models import build_model
from models.base import PayloadError
from models.ssf import ScaleSpaceFlow, ScaleSpaceWarp, gaussian_taps, to_420, to_444
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
# Scale-space warping


def test_zero_flow_and_scale_zero_return_the_reference() -> None:
    warp = ScaleSpaceWarp(num_levels=5, sigma0=1.5)
    x = torch.rand(2, 3, 24, 40)
    out = warp(x, torch.zeros(2, 3, 24, 40))
    assert torch.equal(out, x)


def test_integer_flow_shifts_and_scale_selects_blur_levels() -> None:
    warp = ScaleSpaceWarp(num_levels=3, sigma0=1.5)
    x = torch.rand(1, 3, 20, 30)
    flow = torch.zeros(1, 3, 20, 30)
    flow[:, 0] = 2.0  # sample two pixels to the right: out[..., j] = x[..., j + 2]
    flow[:, 1] = -1.0  # and one pixel up: out[..., i, :] = x[..., i - 1, :]
    out = warp(x, flow)
    torch.testing.assert_close(out[..., 1:, :-2], x[..., :-1, 2:], atol=1e-5, rtol=0)
    # outside the picture: the edge pixel (border padding)
    torch.testing.assert_close(out[..., 1:, -1], x[..., :-1, -1], atol=1e-5, rtol=0)

    volume = warp.volume(x)
    assert volume.shape == (1, 3, 4, 20, 30)
    assert torch.equal(volume[:, :, 0], x)
    # blur levels get smoother (less energy in the Laplacian) level by level
    lap = [(v[..., 1:, :] - v[..., :-1, :]).abs().mean() for v in volume.unbind(2)]
    assert all(a > b for a, b in zip(lap, lap[1:], strict=False)), lap

    def at_scale(scale: float) -> torch.Tensor:
        return warp(x, torch.tensor([0.0, 0.0, scale]).view(1, 3, 1, 1).expand(1, 3, 20, 30).contiguous())

    for scale, level in ((2.0, 2), (3.0, 3), (9.0, 3)):  # beyond the last level: clamped to it
        torch.testing.assert_close(at_scale(scale), volume[:, :, level], atol=1e-5, rtol=0)
    # between levels: linear in the scale coordinate (trilinear sampling)
    torch.testing.assert_close(at_scale(1.5), 0.5 * (volume[:, :, 1] + volume[:, :, 2]), atol=1e-5, rtol=0)


def test_blur_taps_and_bad_flow() -> None:
    taps = gaussian_taps(1.5)
    assert taps.numel() == 11 and math.isclose(float(taps.sum()), 1.0, rel_tol=1e-6)
    assert torch.equal(taps, taps.flip(0))
    with pytest.raises(ValueError, match="flow must be"):
        ScaleSpaceWarp(2, 1.5)(torch.rand(1, 3, 8, 8), torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="num_levels"):
        ScaleSpaceWarp(0, 1.5)


def test_444_conversion_round_trips_420() -> None:
    y, uv = torch.rand(1, 1, 8, 12), torch.rand(1, 2, 4, 6)
    y2, uv2 = to_420(to_444(y, uv))
    assert torch.equal(y2, y) and torch.equal(uv2, uv)


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
