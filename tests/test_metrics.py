"""Metrics: PSNR against ffmpeg's psnr filter on real x265 encodes, MS-SSIM, VMAF, LPIPS, aggregation.

The reference numbers come from outside this code: ffmpeg's own ``psnr`` filter (Debian ffmpeg) on
the same decoded frames, and libvmaf in the static ffmpeg of imageio-ffmpeg. The distortions are
real x265 encodes of the real test clips, not synthetic noise.
"""

from __future__ import annotations

import logging
import math
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from nvc_train.metrics import (
    AGGREGATION_RULE,
    PSNR_CAP_DB,
    MetricUnavailable,
    aggregate,
    find_vmaf_ffmpeg,
    frame_lpips,
    frame_msssim,
    frame_psnr,
    lpips_unavailable_reason,
    lpips_weights_path,
    measure_sequence,
    msssim_window,
    vmaf_per_frame,
)
from nvc_train.metrics import common as metrics_common
from nvc_train.video.frame import VideoInfo, YUVFrame
from nvc_train.video.readers import open_video, write_yuv

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg (with libx265 and psnr) is not on PATH")

DOG = "dog_352x288_32f.y4m"
ROOFTOP_10BIT = "rooftop_pq_10bit_416x240_28f.y4m"
CODED_FRAMES = 8


@pytest.fixture(autouse=True)
def _fresh_notices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees its own one-time notices (they are deduplicated per process)."""
    monkeypatch.setattr(metrics_common, "_NOTICED", set())


def _ffmpeg(*args: str, cwd: Path | None = None) -> None:
    command = [FFMPEG, "-y", "-hide_banner", "-nostdin", "-loglevel", "error", *args]
    subprocess.run(command, check=True, cwd=cwd)


def _random_frame(rng: np.random.Generator, width: int, height: int, bit_depth: int = 8) -> YUVFrame:
    """A smooth-ish random picture (blurred noise), so MS-SSIM has structure at every scale."""
    peak = (1 << bit_depth) - 1
    dtype = np.uint8 if bit_depth == 8 else np.uint16

    def plane(h: int, w: int) -> np.ndarray:
        noise = rng.random((h // 8 + 2, w // 8 + 2))
        smooth = np.kron(noise, np.ones((8, 8)))[:h, :w]
        detail = rng.random((h, w)) * 0.2
        return np.clip((0.8 * smooth + detail) * peak, 0, peak).astype(dtype)

    return YUVFrame(
        plane(height, width), plane(height // 2, width // 2), plane(height // 2, width // 2), bit_depth
    )


def _add_noise(frame: YUVFrame, rng: np.random.Generator, sigma: float) -> YUVFrame:
    peak = frame.max_value

    def noisy(p: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(p + rng.normal(0.0, sigma, p.shape)), 0, peak).astype(p.dtype)

    return YUVFrame(noisy(frame.y), noisy(frame.u), noisy(frame.v), frame.bit_depth)


# --------------------------------------------------------------------------------------------------
# Real encodes shared by the ffmpeg / VMAF / measure_sequence tests


class Encoded:
    """A clip's first frames, its raw copy, and an x265 (qp 37) reconstruction as raw yuv."""

    def __init__(self, source: Path, info: VideoInfo, reference: Path, decoded: Path) -> None:
        self.source, self.info, self.reference, self.decoded = source, info, reference, decoded


def _encode(clips_dir: Path, out_dir: Path, clip: str, start: int = 0) -> Encoded:
    """x265 qp 37 of frames [start, start + CODED_FRAMES) of ``clip``, decoded to raw yuv."""
    source = clips_dir / clip
    info = open_video(source).info
    pix_fmt = info.pix_fmt
    reference = out_dir / f"ref_{source.stem}_{start}.yuv"
    bitstream = out_dir / f"{source.stem}_{start}.hevc"
    decoded = out_dir / f"dec_{source.stem}_{start}.yuv"
    select = ["-vf", f"select=gte(n\\,{start}),setpts=N/FRAME_RATE/TB"] if start else []
    _ffmpeg(
        "-i",
        str(source),
        *select,
        "-frames:v",
        str(CODED_FRAMES),
        "-f",
        "rawvideo",
        "-pix_fmt",
        pix_fmt,
        str(reference),
    )
    raw_input = ["-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", f"{info.width}x{info.height}", "-r", "30"]
    x265 = ["-c:v", "libx265", "-pix_fmt", pix_fmt, "-x265-params", "qp=37:log-level=error", "-f", "hevc"]
    _ffmpeg(*raw_input, "-i", str(reference), *x265, str(bitstream))
    _ffmpeg("-i", str(bitstream), "-f", "rawvideo", "-pix_fmt", pix_fmt, str(decoded))
    return Encoded(source, info, reference, decoded)


@pytest.fixture(scope="session")
def dog_encoded(clips_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Encoded:
    if FFMPEG is None:
        pytest.skip("ffmpeg is not on PATH")
    return _encode(clips_dir, tmp_path_factory.mktemp("dog"), DOG)


@pytest.fixture(scope="session")
def rooftop_encoded(clips_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Encoded:
    if FFMPEG is None:
        pytest.skip("ffmpeg is not on PATH")
    return _encode(clips_dir, tmp_path_factory.mktemp("rooftop"), ROOFTOP_10BIT)


def _ffmpeg_psnr_stats(encoded: Encoded, tmp_path: Path) -> list[dict[str, float]]:
    """Per-frame psnr_y/u/v from ffmpeg's psnr filter on the raw files, frames matched by index."""
    info = encoded.info
    raw = ["-f", "rawvideo", "-pix_fmt", info.pix_fmt, "-s", f"{info.width}x{info.height}", "-r", "30"]
    stats = tmp_path / "psnr.log"
    _ffmpeg(
        *raw, "-i", str(encoded.decoded), *raw, "-i", str(encoded.reference),
        "-lavfi", "[0:v]setpts=PTS-STARTPTS[d];[1:v]setpts=PTS-STARTPTS[r];[d][r]psnr=stats_file=psnr.log",
        "-f", "null", "-",
        cwd=tmp_path,
    )  # fmt: skip
    frames = []
    for line in stats.read_text().splitlines():
        fields = dict(item.split(":", 1) for item in line.split())
        frames.append({key: float(fields[key]) for key in ("psnr_y", "psnr_u", "psnr_v")})
    return frames


# --------------------------------------------------------------------------------------------------
# PSNR


def test_psnr_known_values() -> None:
    """MSE by hand on a 4x4 frame: one luma error of 3, one chroma error of 2 in U, none in V."""
    y = np.full((4, 4), 100, np.uint8)
    u = np.full((2, 2), 128, np.uint8)
    v = np.full((2, 2), 60, np.uint8)
    reference = YUVFrame(y, u, v)
    y2, u2 = y.copy(), u.copy()
    y2[1, 2] += 3  # MSE 9/16
    u2[0, 0] -= 2  # MSE 4/4
    scores = frame_psnr(reference, YUVFrame(y2, u2, v.copy()))
    assert scores["psnr_y"] == pytest.approx(10 * math.log10(255**2 / (9 / 16)), abs=1e-12)
    assert scores["psnr_u"] == pytest.approx(10 * math.log10(255**2 / 1.0), abs=1e-12)
    assert scores["psnr_v"] == PSNR_CAP_DB
    expected_yuv = (6 * scores["psnr_y"] + scores["psnr_u"] + scores["psnr_v"]) / 8
    assert scores["psnr_yuv"] == pytest.approx(expected_yuv, abs=1e-12)


def test_psnr_10bit_uses_1023_range() -> None:
    y = np.full((4, 4), 512, np.uint16)
    c = np.full((2, 2), 512, np.uint16)
    y2 = y.copy()
    y2[0, 0] = 1023  # error 511 once: MSE 511**2 / 16
    scores = frame_psnr(YUVFrame(y, c, c, 10), YUVFrame(y2, c.copy(), c.copy(), 10))
    assert scores["psnr_y"] == pytest.approx(10 * math.log10(1023**2 * 16 / 511**2), abs=1e-12)


def test_psnr_identical_frames_are_capped_and_finite() -> None:
    frame = _random_frame(np.random.default_rng(0), 64, 48)
    scores = frame_psnr(frame, frame)
    assert scores == {
        "psnr_y": PSNR_CAP_DB,
        "psnr_u": PSNR_CAP_DB,
        "psnr_v": PSNR_CAP_DB,
        "psnr_yuv": PSNR_CAP_DB,
    }
    # a mean over frames stays finite when some of them are lossless
    assert aggregate({"psnr_y": [scores["psnr_y"], 40.0]})["psnr_y"] == pytest.approx(70.0)


def test_psnr_cap_also_clips_tiny_errors() -> None:
    """One code value off in a 1080p luma plane is ~111 dB uncapped: clipped, so PSNR stays <= cap."""
    y = np.zeros((1080, 1920), np.uint8)
    c = np.zeros((540, 960), np.uint8)
    y2 = y.copy()
    y2[0, 0] = 1
    assert frame_psnr(YUVFrame(y, c, c), YUVFrame(y2, c, c))["psnr_y"] == PSNR_CAP_DB


def test_psnr_rejects_mismatched_frames() -> None:
    rng = np.random.default_rng(1)
    with pytest.raises(ValueError, match="frame sizes differ"):
        frame_psnr(_random_frame(rng, 64, 48), _random_frame(rng, 48, 64))
    with pytest.raises(ValueError, match="bit depths differ"):
        frame_psnr(_random_frame(rng, 64, 48, 8), _random_frame(rng, 64, 48, 10))


@pytest.mark.slow
@needs_ffmpeg
@pytest.mark.parametrize("clip", ["dog_encoded", "rooftop_encoded"])
def test_psnr_matches_ffmpeg_psnr_filter(clip: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Per-plane per-frame PSNR within 0.01 dB of ffmpeg's psnr filter (8-bit and 10-bit x265)."""
    encoded: Encoded = request.getfixturevalue(clip)
    expected = _ffmpeg_psnr_stats(encoded, tmp_path)
    reference = open_video(encoded.reference, encoded.info)
    decoded = open_video(encoded.decoded, encoded.info)
    assert len(expected) == len(decoded) == CODED_FRAMES
    for index, (ref, dec) in enumerate(zip(reference.read(), decoded.read(), strict=True)):
        assert ref.bit_depth == encoded.info.bit_depth
        ours = frame_psnr(ref, dec)
        for plane in ("psnr_y", "psnr_u", "psnr_v"):
            assert ours[plane] == pytest.approx(expected[index][plane], abs=0.01), (index, plane)
        assert 25.0 < ours["psnr_y"] < 60.0  # a real lossy encode, not identical frames


# --------------------------------------------------------------------------------------------------
# MS-SSIM


def test_msssim_identical_is_one_and_drops_with_noise() -> None:
    rng = np.random.default_rng(2)
    frame = _random_frame(rng, 256, 256)  # luma window 11, chroma (128) window 7
    assert frame_msssim(frame, frame) == pytest.approx(
        {"msssim_y": 1.0, "msssim_u": 1.0, "msssim_v": 1.0, "msssim_yuv": 1.0}, abs=1e-5
    )
    light = frame_msssim(frame, _add_noise(frame, rng, 4.0))["msssim_yuv"]
    heavy = frame_msssim(frame, _add_noise(frame, rng, 25.0))["msssim_yuv"]
    assert 1.0 > light > heavy > 0.0


def test_msssim_window_policy() -> None:
    """11 taps above 160 samples, 9 above 128 (CIF chroma), 7 above 96 (class D chroma), else none."""
    assert msssim_window(288, 352) == 11
    assert msssim_window(161, 1000) == 11
    assert msssim_window(160, 1000) == 9
    assert msssim_window(144, 176) == 9  # CIF chroma
    assert msssim_window(120, 208) == 7  # HEVC class D chroma
    assert msssim_window(97, 97) == 7
    assert msssim_window(96, 200) is None


def test_msssim_too_small_is_nan_with_one_notice(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(3)
    frame = _random_frame(rng, 64, 64)
    with caplog.at_level(logging.WARNING, logger="nvc_train.metrics"):
        first = frame_msssim(frame, frame)
        frame_msssim(frame, frame)
    assert all(math.isnan(value) for value in first.values())
    notices = [r for r in caplog.records if "MS-SSIM not computed" in r.getMessage()]
    assert len(notices) == 1
    assert "\n" not in notices[0].getMessage()


# --------------------------------------------------------------------------------------------------
# VMAF


@pytest.fixture(scope="session")
def vmaf_binary() -> str:
    import imageio_ffmpeg

    binary = imageio_ffmpeg.get_ffmpeg_exe()
    found = find_vmaf_ffmpeg(binary)
    assert found == binary, f"imageio-ffmpeg's binary {binary} should have libvmaf"
    return binary


@pytest.mark.slow
def test_vmaf_real_encode_is_plausible(dog_encoded: Encoded, vmaf_binary: str) -> None:
    scores = vmaf_per_frame(dog_encoded.reference, dog_encoded.info, dog_encoded.decoded, ffmpeg=vmaf_binary)
    assert len(scores) == CODED_FRAMES
    assert 20.0 < float(np.mean(scores)) < 100.0
    same = vmaf_per_frame(dog_encoded.reference, dog_encoded.info, dog_encoded.reference, ffmpeg=vmaf_binary)
    assert min(same) > 95.0
    assert float(np.mean(same)) > float(np.mean(scores)) + 5.0


@pytest.mark.slow
def test_vmaf_y4m_reference_with_offset_matches_raw(
    dog_encoded: Encoded, vmaf_binary: str, tmp_path: Path
) -> None:
    """A y4m source read from frame 3 scores like a raw copy of exactly those frames (index matching)."""
    info = dog_encoded.info
    raw_copy = tmp_path / "ref_from3.yuv"
    write_yuv(raw_copy, open_video(dog_encoded.source).read(3, CODED_FRAMES))
    from_raw = vmaf_per_frame(raw_copy, info, dog_encoded.decoded, ffmpeg=vmaf_binary)
    from_y4m = vmaf_per_frame(
        dog_encoded.source,
        info,
        dog_encoded.decoded,
        ffmpeg=vmaf_binary,
        start_frame=3,
        num_frames=CODED_FRAMES,
    )
    assert from_y4m == pytest.approx(from_raw, abs=1e-6)


def test_vmaf_bogus_binary_is_unavailable_not_a_score(tmp_path: Path) -> None:
    info = VideoInfo(64, 64)
    raw = tmp_path / "a.yuv"
    raw.write_bytes(bytes(info.frame_bytes))
    with pytest.raises(MetricUnavailable, match="no libvmaf") as error:
        vmaf_per_frame(raw, info, raw, ffmpeg=str(tmp_path / "no-such-ffmpeg"))
    assert "\n" not in str(error.value)


def test_find_vmaf_ffmpeg_order_and_none(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog) -> None:
    """A configured binary without libvmaf falls back (with a notice); with no candidate: None."""
    debian = shutil.which("ffmpeg")
    with caplog.at_level(logging.WARNING, logger="nvc_train.metrics"):
        found = find_vmaf_ffmpeg(str(tmp_path / "missing"))
    assert found is not None  # imageio-ffmpeg's binary
    assert any("missing" in r.getMessage() for r in caplog.records)
    if debian is not None:
        assert find_vmaf_ffmpeg(debian) != debian  # Debian's ffmpeg has no libvmaf
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(tmp_path / "missing"))
    assert find_vmaf_ffmpeg(None) is None


# --------------------------------------------------------------------------------------------------
# LPIPS


def test_lpips_unavailable_without_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No backbone weights: a one-line reason at once (no 3 s download attempt), never a score."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert lpips_weights_path() == tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    reason = lpips_unavailable_reason()
    assert reason is not None and "alexnet-owt-7be5be79.pth" in reason and "\n" not in reason
    frame = _random_frame(np.random.default_rng(4), 64, 64)
    started = time.perf_counter()
    with pytest.raises(MetricUnavailable, match="LPIPS not computed"):
        frame_lpips(frame, frame)
    assert time.perf_counter() - started < 1.0


def test_lpips_rgb_conversion_levels() -> None:
    """BT.709 limited range: nominal black and white map to 0 and 1 at 8 and 10 bits, grey is grey."""
    from nvc_train.metrics.lpips import frame_to_rgb

    for depth, black, white, mid in ((8, 16, 235, 128), (10, 64, 940, 512)):
        dtype = np.uint8 if depth == 8 else np.uint16
        chroma = np.full((2, 2), mid, dtype)
        for luma, expected in ((black, 0.0), (white, 1.0)):
            rgb = frame_to_rgb(YUVFrame(np.full((4, 4), luma, dtype), chroma, chroma.copy(), depth))
            assert tuple(rgb.shape) == (1, 3, 4, 4)
            assert rgb.numpy() == pytest.approx(expected, abs=1e-5)


def test_lpips_plumbing_with_random_trunk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plumbing only (conversion, scaling, call): a random trunk stands in for the absent weights."""
    import lpips

    from nvc_train.metrics import lpips as lpips_module

    with warnings.catch_warnings():  # torchvision's deprecation of lpips's `pretrained=` argument
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    monkeypatch.setattr(lpips_module, "lpips_unavailable_reason", lambda net="alex": None)
    monkeypatch.setattr(lpips_module, "_model", lambda net, hub_dir: model)
    rng = np.random.default_rng(9)
    frame = _random_frame(rng, 64, 64)
    assert frame_lpips(frame, frame) == pytest.approx(0.0, abs=1e-6)
    assert frame_lpips(frame, _add_noise(frame, rng, 30.0)) > 0.0


@pytest.mark.slow
def test_lpips_with_real_weights() -> None:
    path = lpips_weights_path()
    if not path.is_file():
        pytest.skip(
            f"torchvision AlexNet ImageNet weights absent at {path} (offline machine; not downloaded)"
        )
    rng = np.random.default_rng(5)
    frame = _random_frame(rng, 128, 128)
    assert frame_lpips(frame, frame) == pytest.approx(0.0, abs=1e-6)
    assert 0.0 < frame_lpips(frame, _add_noise(frame, rng, 20.0)) < 1.0


# --------------------------------------------------------------------------------------------------
# Aggregation and measure_sequence


def test_aggregate_is_mean_of_per_frame_values_and_keeps_empty_columns() -> None:
    means = aggregate(
        {
            "psnr_y": [30.0, 32.0, 40.0],
            "vmaf": None,
            "msssim_u": [0.9, math.nan],
            "lpips": [],
            "x": [0.5, None],
        }
    )
    assert means["psnr_y"] == pytest.approx(34.0)
    assert (
        means["vmaf"] is None and means["msssim_u"] is None and means["lpips"] is None and means["x"] is None
    )
    assert "mean of per-frame values" in AGGREGATION_RULE
    assert "(6 PSNR-Y + PSNR-U + PSNR-V)/8 per frame" in AGGREGATION_RULE


def test_psnr_yuv_is_per_frame_6_1_1_then_mean() -> None:
    """The rule is per frame then mean, which differs from 6:1:1 of the per-plane means only in rounding."""
    rng = np.random.default_rng(6)
    frames = [_random_frame(rng, 64, 64) for _ in range(3)]
    per_frame: dict[str, list[float]] = {}
    for frame, sigma in zip(frames, (1.0, 5.0, 20.0), strict=True):
        for key, value in frame_psnr(frame, _add_noise(frame, rng, sigma)).items():
            per_frame.setdefault(key, []).append(value)
    means = aggregate(per_frame)
    assert means["psnr_yuv"] == pytest.approx(float(np.mean(per_frame["psnr_yuv"])))
    assert means["psnr_yuv"] == pytest.approx((6 * means["psnr_y"] + means["psnr_u"] + means["psnr_v"]) / 8)


def test_measure_sequence_frame_count_mismatch(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    info = VideoInfo(64, 64)
    frames = [_random_frame(rng, 64, 64) for _ in range(3)]
    write_yuv(tmp_path / "ref.yuv", frames)
    write_yuv(tmp_path / "dec.yuv", frames[:2])
    with pytest.raises(ValueError, match=r"distorted .*dec\.yuv has 2 frames.* has 3 frames"):
        measure_sequence(tmp_path / "ref.yuv", info, tmp_path / "dec.yuv", metrics=("psnr",))
    # an explicit coded count that the reconstruction does not hold is an error too
    with pytest.raises(ValueError, match="has 2 frames"):
        measure_sequence(tmp_path / "ref.yuv", info, tmp_path / "dec.yuv", metrics=("psnr",), num_frames=3)
    scores = measure_sequence(
        tmp_path / "ref.yuv", info, tmp_path / "dec.yuv", metrics=("psnr",), num_frames=2
    )
    assert scores.num_frames == 2 and scores.means["psnr_yuv"] == PSNR_CAP_DB
    with pytest.raises(ValueError, match="unknown metrics"):
        measure_sequence(tmp_path / "ref.yuv", info, tmp_path / "dec.yuv", metrics=("psnr", "bogus"))


def test_measure_sequence_without_libvmaf_or_lpips_weights(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No ffmpeg with libvmaf anywhere and no LPIPS weights: those columns empty, one notice each."""
    rng = np.random.default_rng(8)
    info = VideoInfo(64, 64)
    frames = [_random_frame(rng, 64, 64) for _ in range(2)]
    write_yuv(tmp_path / "ref.yuv", frames)
    write_yuv(tmp_path / "dec.yuv", [_add_noise(f, rng, 3.0) for f in frames])
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(tmp_path / "missing"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with caplog.at_level(logging.WARNING, logger="nvc_train.metrics"):
        scores = measure_sequence(
            tmp_path / "ref.yuv", info, tmp_path / "dec.yuv", vmaf_ffmpeg="/bogus/ffmpeg"
        )
    assert scores.per_frame["vmaf"] is None and scores.means["vmaf"] is None
    assert scores.per_frame["lpips"] is None and scores.means["lpips"] is None
    assert set(scores.unavailable) >= {"vmaf", "lpips", "msssim_y", "msssim_yuv"}  # 64x64 is too small too
    assert scores.means["msssim_yuv"] is None
    assert 30.0 < scores.means["psnr_yuv"] < 60.0
    messages = [r.getMessage() for r in caplog.records]
    assert sum("VMAF not computed" in m for m in messages) == 1
    assert sum("LPIPS not computed" in m for m in messages) == 1


@pytest.mark.slow
def test_measure_sequence_real_clip_with_offset(clips_dir: Path, tmp_path: Path) -> None:
    """The y4m source read from frame 4 against an x265 reconstruction of frames 4..11: PSNR agrees
    with ffmpeg's psnr filter, MS-SSIM (CIF chroma: 9-tap window) and VMAF are filled, LPIPS is
    empty with its reason when the weights are absent."""
    if FFMPEG is None:
        pytest.skip("ffmpeg is not on PATH")
    encoded = _encode(clips_dir, tmp_path, DOG, start=4)
    scores = measure_sequence(
        encoded.source, encoded.info, encoded.decoded, start_frame=4, num_frames=CODED_FRAMES
    )
    expected = _ffmpeg_psnr_stats(encoded, tmp_path)
    for plane in ("psnr_y", "psnr_u", "psnr_v"):
        ours = scores.per_frame[plane]
        assert ours is not None
        assert ours == pytest.approx([frame[plane] for frame in expected], abs=0.01)
    assert scores.means["psnr_yuv"] == pytest.approx(float(np.mean(scores.per_frame["psnr_yuv"])))
    assert 0.8 < scores.means["msssim_yuv"] < 1.0
    assert 20.0 < scores.means["vmaf"] < 100.0
    assert len(scores.per_frame["vmaf"]) == CODED_FRAMES
    if lpips_unavailable_reason() is not None:
        assert scores.means["lpips"] is None and "lpips" in scores.unavailable
    # off by one frame: PSNR falls, so frames really are matched by index from start_frame
    shifted = measure_sequence(
        encoded.source,
        encoded.info,
        encoded.decoded,
        metrics=("psnr",),
        start_frame=5,
        num_frames=CODED_FRAMES,
    )
    assert shifted.means["psnr_y"] < scores.means["psnr_y"] - 1.0


def test_import_is_light() -> None:
    """``import nvc_train.metrics`` loads neither torch nor Lightning."""
    code = "import sys, nvc_train.metrics; print('torch' in sys.modules, 'lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
