"""Colour conversion: hand-computed reference values, round trips, chroma resampling, and agreement
with ffmpeg's swscale on a real clip frame (within one code value)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from nvc_train.video import open_video
from nvc_train.video.colour import (
    rgb_to_ycbcr,
    rgb_to_yuv420,
    ycbcr_to_rgb,
    yuv420_to_444,
    yuv420_to_rgb,
    yuv444_to_420,
)

FFMPEG = shutil.which("ffmpeg")


def codes(ycbcr: torch.Tensor, bit_depth: int = 8) -> list[float]:
    """Normalised Y'CbCr of a 1x1 picture as (unrounded) code values."""
    return (ycbcr.reshape(3) * ((1 << bit_depth) - 1)).tolist()


def pixel(r: float, g: float, b: float) -> torch.Tensor:
    return torch.tensor([r, g, b], dtype=torch.float64).reshape(3, 1, 1)


# Hand-computed from the standards: Y = 16 + 219 (Kr R + Kg G + Kb B),
# Cb = 128 + 224 (B - Y') / (2 (1 - Kb)), Cr = 128 + 224 (R - Y') / (2 (1 - Kr)).
# BT.709 red: Y' = 0.2126 -> 16 + 46.5594 = 62.5594; Cb = 128 - 224 * 0.2126 / 1.8556 = 102.3358.
# BT.601 red: Y' = 0.299 -> 81.481; Cb = 128 - 224 * 0.299 / 1.772 = 90.2032. Cr of red is 240.
# BT.709 green: Y' = 0.7152 -> 172.6288; Cb = 128 - 224 * 0.7152 / 1.8556 = 41.6642;
#               Cr = 128 - 224 * 0.7152 / 1.5748 = 26.2697.
@pytest.mark.parametrize(
    ("matrix", "rgb", "expected"),
    [
        ("bt709", (1.0, 1.0, 1.0), (235.0, 128.0, 128.0)),
        ("bt709", (0.0, 0.0, 0.0), (16.0, 128.0, 128.0)),
        ("bt709", (1.0, 0.0, 0.0), (62.5594, 102.3358, 240.0)),
        ("bt709", (0.0, 1.0, 0.0), (172.6288, 41.6642, 26.2697)),
        ("bt709", (0.0, 0.0, 1.0), (31.8118, 240.0, 117.7303)),
        ("bt601", (1.0, 0.0, 0.0), (81.481, 90.2032, 240.0)),
        ("bt601", (1.0, 1.0, 1.0), (235.0, 128.0, 128.0)),
    ],
)
def test_known_values_limited_8bit(
    matrix: str, rgb: tuple[float, float, float], expected: tuple[float, float, float]
) -> None:
    got = codes(rgb_to_ycbcr(pixel(*rgb), matrix=matrix))
    assert got == pytest.approx(expected, abs=1e-3)


def test_known_values_ten_bit_and_full_range() -> None:
    assert codes(rgb_to_ycbcr(pixel(1, 1, 1), bit_depth=10), 10) == pytest.approx([940, 512, 512])
    assert codes(rgb_to_ycbcr(pixel(0, 0, 0), bit_depth=10), 10) == pytest.approx([64, 512, 512])
    red = codes(rgb_to_ycbcr(pixel(1, 0, 0), bit_depth=10), 10)
    assert red == pytest.approx([64 + 876 * 0.2126, 512 - 896 * 0.2126 / 1.8556, 960])
    assert codes(rgb_to_ycbcr(pixel(1, 1, 1), full_range=True)) == pytest.approx([255, 128, 128])
    assert codes(rgb_to_ycbcr(pixel(0, 0, 1), full_range=True)) == pytest.approx(
        [0.0722 * 255, 255.5, 128 - 0.0722 / 1.5748 * 255]
    )


@pytest.mark.parametrize("matrix", ["bt709", "bt601", "bt2020"])
@pytest.mark.parametrize("full_range", [False, True])
@pytest.mark.parametrize("bit_depth", [8, 10])
def test_round_trip(matrix: str, full_range: bool, bit_depth: int) -> None:
    rgb = torch.rand(2, 4, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ycbcr = rgb_to_ycbcr(rgb, matrix, full_range, bit_depth)
    assert ycbcr.shape == rgb.shape
    assert float(ycbcr.min()) >= 0.0 and float(ycbcr.max()) <= 1.0
    back = ycbcr_to_rgb(ycbcr, matrix, full_range, bit_depth, clamp=False)
    torch.testing.assert_close(back, rgb, atol=1e-12, rtol=0)


def test_float32_round_trip_within_a_tenth_of_a_code() -> None:
    rgb = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2))
    back = ycbcr_to_rgb(rgb_to_ycbcr(rgb))
    assert back.dtype == torch.float32
    assert float((back - rgb).abs().max()) * 255 < 0.1


def test_ycbcr_to_rgb_clamps_out_of_gamut() -> None:
    ycbcr = torch.tensor([235 / 255, 16 / 255, 240 / 255]).reshape(3, 1, 1)  # white luma, extreme chroma
    assert float(ycbcr_to_rgb(ycbcr, clamp=False).max()) > 1.0
    clamped = ycbcr_to_rgb(ycbcr)
    assert float(clamped.min()) >= 0.0 and float(clamped.max()) <= 1.0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="known: bt601, bt709, bt2020"):
        rgb_to_ycbcr(torch.rand(3, 2, 2), matrix="bt470")
    with pytest.raises(TypeError, match="floating-point"):
        rgb_to_ycbcr(torch.zeros(3, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\)"):
        rgb_to_ycbcr(torch.rand(4, 2, 2))
    with pytest.raises(ValueError, match="unknown chroma upsampling"):
        yuv420_to_444(torch.rand(1, 4, 4), torch.rand(1, 2, 2), torch.rand(1, 2, 2), mode="lanczos")
    with pytest.raises(ValueError, match="not 4:2:0"):
        yuv420_to_444(torch.rand(1, 4, 4), torch.rand(1, 4, 4), torch.rand(1, 2, 2))


def test_chroma_resampling() -> None:
    gen = torch.Generator().manual_seed(3)
    y = torch.rand(2, 1, 8, 12, generator=gen)
    u, v = torch.rand(2, 1, 4, 6, generator=gen), torch.rand(2, 1, 4, 6, generator=gen)

    nearest = yuv420_to_444(y, u, v, mode="nearest")
    assert nearest.shape == (2, 3, 8, 12)
    assert torch.equal(nearest[:, 1, 2:4, 4:6], u[:, 0, 1, 2, None, None].expand(2, 2, 2))
    y2, u2, v2 = yuv444_to_420(nearest)  # average of a repeated sample is the sample
    assert torch.equal(y2, y)
    torch.testing.assert_close(u2, u)
    torch.testing.assert_close(v2, v)

    bilinear = yuv420_to_444(y, u, v, mode="bilinear")
    assert bilinear.shape == (2, 3, 8, 12)
    flat = torch.full((1, 1, 4, 6), 0.3)
    torch.testing.assert_close(
        yuv420_to_444(y[:1], flat, flat, "bilinear")[:, 1:], torch.full((1, 2, 8, 12), 0.3)
    )

    yuv = torch.rand(3, 6, 4, generator=gen)
    _, u3, _ = yuv444_to_420(yuv)
    torch.testing.assert_close(u3[0, 1, 0], yuv[1, 2:4, 0:2].mean())


def test_odd_sizes() -> None:
    yuv = torch.rand(1, 3, 7, 5)
    y, u, v = yuv444_to_420(yuv)
    assert y.shape == (1, 1, 7, 5) and u.shape == v.shape == (1, 1, 4, 3)
    assert yuv420_to_444(y, u, v, "bilinear").shape == (1, 3, 7, 5)


def test_rgb_yuv420_helpers() -> None:
    rgb = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    y, u, v = rgb_to_yuv420(rgb)
    assert y.shape == (1, 1, 16, 16) and u.shape == (1, 1, 8, 8)
    back = yuv420_to_rgb(y, u, v)
    assert back.shape == rgb.shape
    # Luma survives exactly; chroma is low-passed, so only the mean colour is preserved.
    torch.testing.assert_close(rgb_to_ycbcr(back)[:, 0].mean(), y.mean(), atol=2e-3, rtol=0)


def _swscale(data: bytes, size: str, src: str, dst: str, vf: str | None = None) -> bytes:
    """Convert one raw picture from pixel format ``src`` to ``dst`` with ffmpeg (optionally a -vf)."""
    cmd = [FFMPEG, "-v", "error", "-f", "rawvideo", "-pix_fmt", src, "-s", size, "-i", "-"]
    cmd += ["-vf", vf] if vf else []
    cmd += ["-pix_fmt", dst, "-f", "rawvideo", "-"]
    return subprocess.run(cmd, input=data, check=True, capture_output=True).stdout


def test_matches_ffmpeg_on_real_frame(clips_dir: Path) -> None:
    """Both directions agree with swscale's BT.709 limited-range 4:4:4 conversion within one code.

    4:4:4 on both sides keeps chroma resampling (where filters legitimately differ) out of it.
    """
    if FFMPEG is None:
        pytest.skip("ffmpeg is not on PATH")
    frame = open_video(clips_dir / "street_pan_416x240_32f.y4m").read_frame(5)
    height, width = frame.height, frame.width
    size = f"{width}x{height}"
    raw420 = b"".join(plane.tobytes() for plane in frame.planes)
    yuv444 = _swscale(raw420, size, "yuv420p", "yuv444p")
    ycbcr = np.frombuffer(yuv444, np.uint8).reshape(3, height, width)

    # Y'CbCr -> RGB
    to_rgb = "scale=in_color_matrix=bt709:in_range=tv:out_range=pc:flags=bicubic+accurate_rnd"
    rgb_ff = np.frombuffer(_swscale(yuv444, size, "yuv444p", "rgb24", to_rgb), np.uint8)
    rgb_ff = rgb_ff.reshape(height, width, 3).transpose(2, 0, 1).astype(np.int32)
    ours = ycbcr_to_rgb(torch.from_numpy(ycbcr.astype(np.float64)) / 255.0)
    ours_codes = np.rint(ours.numpy() * 255.0).astype(np.int32)
    assert np.abs(ours_codes - rgb_ff).max() <= 1

    # RGB -> Y'CbCr, from ffmpeg's own RGB picture
    rgb24 = rgb_ff.astype(np.uint8).transpose(1, 2, 0).tobytes()
    to_yuv = "scale=out_color_matrix=bt709:out_range=tv:flags=bicubic+accurate_rnd"
    yuv_ff = np.frombuffer(_swscale(rgb24, size, "rgb24", "yuv444p", to_yuv), np.uint8)
    yuv_ff = yuv_ff.reshape(3, height, width).astype(np.int32)
    ours = rgb_to_ycbcr(torch.from_numpy(rgb_ff.astype(np.float64)) / 255.0)
    ours_codes = np.rint(ours.numpy() * 255.0).astype(np.int32)
    assert np.abs(ours_codes - yuv_ff).max() <= 1
    assert np.mean(ours_codes == yuv_ff) > 0.9
