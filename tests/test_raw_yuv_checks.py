"""Raw .yuv files whose name gives the wrong size or depth are refused (or warned about), not measured.

A raw file has no header: a 10-bit file named as 8-bit, an 8-bit file named ``_10bit`` or a file of
another width still holds a whole number of frames, and used to be read as garbage and measured
with exit 0. These tests write small raw files from the real clips of ../shared/data/clips (they
skip, saying why, where those are absent) and, for the depth cases, from synthetic smooth content,
and check that the reader refuses the mislabelled ones with the measured evidence, passes the
right ones silently, and that stating the size and depth explicitly satisfies or skips the check.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from nvc_train.ctc import SequenceFileError, load_sequences, scan_folder
from nvc_train.video.frame import VideoInfo, YUVFrame
from nvc_train.video.readers import (
    RawContentWarning,
    VideoFormatError,
    check_raw_content,
    open_video,
    width_evidence,
    write_yuv,
)
from tests.conftest import REPO_ROOT

EIGHT_BIT_CLIPS = (
    "cars_320x240_30f.y4m",
    "city_night_416x240_32f.y4m",
    "cockatoo_640x360_24f.y4m",
    "dog_352x288_32f.y4m",
    "street_pan_416x240_32f.y4m",
)
TEN_BIT_CLIP = "rooftop_pq_10bit_416x240_28f.y4m"
FRAMES = 4  # even, so an 8-bit file also holds whole 10-bit frames of the same size


def clip_frames(clips_dir: Path, name: str, count: int = FRAMES, start: int = 8) -> list[YUVFrame]:
    path = clips_dir / name
    if not path.is_file():
        pytest.skip(f"real clip {name} not found in {clips_dir}")
    return list(open_video(path).read(start, count))


def raw_copy(frames: list[YUVFrame], folder: Path, name: str) -> Path:
    """The frames as a raw file under ``name`` (the name is what may lie about them)."""
    path = folder / name
    write_yuv(path, frames)
    return path


def smooth_frames(
    width: int, height: int, bit_depth: int, count: int = FRAMES, seed: int = 0
) -> list[YUVFrame]:
    """Natural-looking synthetic pictures: a few low-frequency waves, a drift and a little noise.

    Spread over the limited range of ``bit_depth`` (16..235 or 64..940), as camera video is.
    """
    rng = np.random.default_rng(seed)
    low, high = (16, 235) if bit_depth == 8 else (64, 940)
    dtype = np.uint8 if bit_depth == 8 else np.uint16

    def plane(h: int, w: int, shift: float) -> np.ndarray:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        field = np.zeros((h, w))
        for _ in range(6):
            fy, fx = rng.uniform(0.5, 6.0, size=2) / np.array([h, w])
            field += rng.uniform(0.5, 1.0) * np.cos(
                2 * np.pi * (fy * yy + fx * (xx + shift)) + rng.uniform(0, 6.3)
            )
        field = (field - field.min()) / (field.max() - field.min())
        field += rng.normal(0.0, 0.01, size=(h, w))
        return np.clip(low + field * (high - low), low, high).round().astype(dtype)

    return [
        YUVFrame(
            plane(height, width, 3.0 * index),
            plane(height // 2, width // 2, 1.5 * index),
            plane(height // 2, width // 2, 1.5 * index),
            bit_depth,
        )
        for index in range(count)
    ]


def opens_silently(path: Path, info: VideoInfo | None = None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        reader = open_video(path, info)
        assert len(reader) >= 1


# ---- right names pass ------------------------------------------------------------------------


@pytest.mark.parametrize("clip", EIGHT_BIT_CLIPS)
def test_correct_8bit_clip_passes_without_warning(tmp_path: Path, clips_dir: Path, clip: str) -> None:
    frames = clip_frames(clips_dir, clip)
    width, height = frames[0].width, frames[0].height
    path = raw_copy(frames, tmp_path, f"clip_{width}x{height}_30.yuv")
    opens_silently(path)
    assert open_video(path).info == VideoInfo(width, height, 8, 30.0, FRAMES)


def test_correct_10bit_clip_passes_without_warning(tmp_path: Path, clips_dir: Path) -> None:
    frames = clip_frames(clips_dir, TEN_BIT_CLIP)
    path = raw_copy(frames, tmp_path, "rooftop_416x240_30_10bit.yuv")
    opens_silently(path)
    assert open_video(path).info.bit_depth == 10


@pytest.mark.parametrize("bit_depth", [8, 10])
def test_correct_synthetic_content_passes(tmp_path: Path, bit_depth: int) -> None:
    tag = "_10bit" if bit_depth == 10 else ""
    path = raw_copy(smooth_frames(320, 256, bit_depth), tmp_path, f"smooth_320x256_25{tag}.yuv")
    opens_silently(path)


@pytest.mark.parametrize("bit_depth", [8, 10])
def test_noise_flat_and_pattern_content_is_not_flagged(tmp_path: Path, bit_depth: int) -> None:
    """What other tests write (noise over the full range, flat frames, ramps) must not be judged."""
    rng = np.random.default_rng(1)
    top = (1 << bit_depth) - 1
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    width, height = 320, 256
    pictures = {
        "noise": rng.integers(0, top + 1, size=(height, width)),
        "flat": np.full((height, width), top // 2),
        "black": np.zeros((height, width)),
        "ramp_across": np.tile(np.arange(width) % (top + 1), (height, 1)),
        "ramp_down": np.repeat((np.arange(height) % (top + 1))[:, None], width, axis=1),
        "stripes": np.repeat((np.arange(height) % 2 * top)[:, None], width, axis=1),
    }
    tag = "_10bit" if bit_depth == 10 else ""
    for name, luma in pictures.items():
        chroma = np.full((height // 2, width // 2), (top + 1) // 2, dtype)
        frame = YUVFrame(luma.astype(dtype), chroma, chroma.copy(), bit_depth)
        opens_silently(raw_copy([frame] * 2, tmp_path, f"{name}_{width}x{height}_25{tag}.yuv"))


def test_interlaced_like_content_is_not_flagged(tmp_path: Path, clips_dir: Path) -> None:
    """Rows of two frames woven (fields) look alike two rows apart: that is not a wrong width."""
    for clip in EIGHT_BIT_CLIPS:
        first, second = clip_frames(clips_dir, clip, count=2)
        woven = first.y.copy()
        woven[1::2] = second.y[1::2]
        frame = YUVFrame(woven, first.u, first.v, 8)
        path = raw_copy([frame] * 2, tmp_path, f"{Path(clip).stem}_woven_{frame.width}x{frame.height}_25.yuv")
        opens_silently(path)


def test_repeated_text_screen_content_is_not_flagged(tmp_path: Path) -> None:
    """Text repeated along its lines matches best at the repeat, yet the rows are clear: no warning."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = 1280, 720
    page = Image.new("L", (width, height), 235)
    draw = ImageDraw.Draw(page)
    line = "def check_raw_content(path, info): ==== return None  # 0123456789 " * 6
    for index, top in enumerate(range(0, height, 12)):
        draw.text((4 + index % 3 * 8, top), line, fill=16, font=ImageFont.load_default())
    chroma = np.full((height // 2, width // 2), 128, np.uint8)
    frame = YUVFrame(np.asarray(page, dtype=np.uint8).copy(), chroma, chroma.copy(), 8)
    opens_silently(raw_copy([frame] * 2, tmp_path, f"slides_{width}x{height}_30.yuv"))


# ---- wrong depth is refused -------------------------------------------------------------------


def test_10bit_clip_named_as_8bit_is_refused(tmp_path: Path, clips_dir: Path) -> None:
    path = raw_copy(clip_frames(clips_dir, TEN_BIT_CLIP), tmp_path, "rooftop_416x240_30.yuv")
    with pytest.raises(VideoFormatError) as caught:
        open_video(path)
    message = str(caught.value)
    assert "16-bit little-endian words of 10-bit video" in message
    assert "100.00% of the odd bytes are 0..3" in message  # the evidence, measured
    assert "rename" in message and "_10bit" in message and "check_content=False" in message
    assert "\n" not in message


@pytest.mark.parametrize("name", ["deep_320x256_25.yuv", "deep_320x256_25_8bit.yuv"])
def test_synthetic_10bit_named_as_8bit_is_refused(tmp_path: Path, name: str) -> None:
    path = raw_copy(smooth_frames(320, 256, 10), tmp_path, name)
    with pytest.raises(VideoFormatError, match=r"odd bytes are 0\.\.3.*read as 10-bit the samples span"):
        open_video(path)


def test_8bit_clip_named_as_10bit_is_refused(tmp_path: Path, clips_dir: Path) -> None:
    frames = clip_frames(clips_dir, "dog_352x288_32f.y4m")
    path = raw_copy(frames, tmp_path, "dog_352x288_30_10bit.yuv")
    with pytest.raises(VideoFormatError) as caught:
        open_video(path)
    message = str(caught.value)
    assert "100.00% of its 16-bit words exceed 1023" in message
    assert "8-bit samples" in message and "rename" in message


def test_synthetic_8bit_named_as_10bit_is_refused(tmp_path: Path) -> None:
    path = raw_copy(smooth_frames(320, 256, 8), tmp_path, "shallow_320x256_25_10bit.yuv")
    with pytest.raises(VideoFormatError, match=r"16-bit words exceed 1023.*8-bit samples"):
        open_video(path)


def test_big_endian_10bit_is_named_as_such(tmp_path: Path) -> None:
    frames = smooth_frames(320, 256, 10)
    path = tmp_path / "be_320x256_25_10bit.yuv"
    path.write_bytes(b"".join(p.astype(">u2").tobytes() for f in frames for p in f.planes))
    with pytest.raises(VideoFormatError, match="big-endian"):
        open_video(path)


# ---- wrong width ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("named", "why"),
    [
        ((384, 264), "same frame area, unrelated width"),
        ((176, 576), "half the width: each true row read as two"),
        ((264, 384), "width and height swapped (same area)"),
    ],
)
def test_wrong_width_with_whole_frames_is_refused(
    tmp_path: Path, clips_dir: Path, named: tuple[int, int], why: str
) -> None:
    frames = clip_frames(clips_dir, "dog_352x288_32f.y4m")  # 352x288: every named size holds 4 frames
    path = raw_copy(frames, tmp_path, f"dog_{named[0]}x{named[1]}_30.yuv")
    with pytest.raises(VideoFormatError) as caught:
        open_video(path)
    message = str(caught.value)
    assert f"do not look {named[0]} samples wide" in message, why
    assert "samples 352 apart match" in message  # the best line offset is the true width
    assert "352x288" in message  # among the sizes that give whole frames
    assert "\n" not in message


def test_double_width_is_warned_with_evidence(
    tmp_path: Path, clips_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows two apart still look alike, so a doubled width is only suspected: warned, loudly."""
    frames = clip_frames(clips_dir, "dog_352x288_32f.y4m")
    path = raw_copy(frames, tmp_path, "dog_704x144_30.yuv")
    with caplog.at_level(logging.WARNING), pytest.warns(RawContentWarning, match="samples 352 apart match"):
        reader = open_video(path)
    assert reader.info.width == 704
    assert any("do not look 704 samples wide" in record.getMessage() for record in caplog.records)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_video(path)  # judged once per process: later opens (measurement) stay quiet


@pytest.mark.parametrize("clip", [*EIGHT_BIT_CLIPS, TEN_BIT_CLIP])
def test_width_evidence_on_real_clips(clips_dir: Path, clip: str) -> None:
    """The measured separation the thresholds rest on: true width best, half width refused."""
    frame = clip_frames(clips_dir, clip, count=1)[0]
    luma, depth = frame.y.ravel(), frame.bit_depth
    right = width_evidence(luma, frame.width, depth)
    assert right.verdict == "ok" and right.gain == pytest.approx(1.0) and right.dip < 0.45
    half = width_evidence(luma, frame.width // 2, depth)
    assert half.verdict == "wrong" and abs(half.best_lag - frame.width) <= 1 and half.dip > 0.95


# ---- stating size and depth explicitly --------------------------------------------------------


def test_explicit_info_satisfies_the_check(tmp_path: Path, clips_dir: Path) -> None:
    deep = raw_copy(clip_frames(clips_dir, TEN_BIT_CLIP), tmp_path, "rooftop_416x240_30.yuv")
    opens_silently(deep, VideoInfo(416, 240, 10, 30.0))  # the depth stated: the samples fit it
    with pytest.raises(VideoFormatError):
        open_video(deep, VideoInfo(416, 240, 8, 30.0))  # stated wrong: refused all the same
    misnamed = raw_copy(clip_frames(clips_dir, "dog_352x288_32f.y4m"), tmp_path, "dog_384x264_30.yuv")
    opens_silently(misnamed, VideoInfo(352, 288, 8, 30.0))


def test_check_content_false_skips_and_trusts(tmp_path: Path) -> None:
    path = raw_copy(smooth_frames(320, 256, 10), tmp_path, "deep_320x256_25.yuv")
    reader = open_video(path, check_content=False)
    assert reader.info.bit_depth == 8 and len(reader) == 2 * FRAMES  # read as the name says
    open_video(path)  # the same file in the same process: trusted from now on (measurement opens it)
    with pytest.raises(VideoFormatError):  # the check itself still sees the 10-bit words
        check_raw_content(path, VideoInfo(320, 256, 8, 25.0, 2 * FRAMES))


def test_folder_scan_refuses_then_takes_bit_depth(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    raw_copy(smooth_frames(320, 256, 10), folder, "deep_320x256_25.yuv")
    with pytest.raises(SequenceFileError, match=r"mine/deep_320x256_25: deep_320x256_25\.yuv is read as"):
        scan_folder(folder)
    (sequence,) = scan_folder(folder, bit_depth=10)  # ctc.bit_depth=10: names without a depth tag
    assert sequence.info.bit_depth == 10 and sequence.info.num_frames == FRAMES


def test_ctc_check_content_false_and_registry_entry(tmp_path: Path, clips_dir: Path) -> None:
    frames = clip_frames(clips_dir, "dog_352x288_32f.y4m")
    folder = tmp_path / "set"
    folder.mkdir()
    raw_copy(frames, folder, "dog_384x264_30.yuv")
    with pytest.raises(SequenceFileError, match="samples 352 apart match"):
        load_sequences({"name": "folder", "path": str(folder), "fps": None, "bit_depth": 8})
    (trusting,) = load_sequences(
        {"name": "folder", "path": str(folder), "fps": None, "bit_depth": 8, "check_content": False}
    )
    assert trusting.info.width == 384  # read as named, as asked
    entry = {
        "file": "dog_384x264_30.yuv",
        "width": 352,
        "height": 288,
        "fps": 30,
        "bit_depth": 8,
        "frames": 4,
    }
    registry = {"name": "mine", "root": str(folder), "test_sets": {"MINE": {"sequences": {"dog": entry}}}}
    (stated,) = load_sequences(registry)  # a registry entry states the size: the samples fit it
    assert stated.info.width == 352


# ---- through the real entry point -------------------------------------------------------------


def test_evaluate_refuses_a_mislabelled_file_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "clips"
    folder.mkdir()
    raw_copy(smooth_frames(320, 256, 10, count=2), folder, "deep_320x256_25.yuv")  # 10-bit, named 8-bit
    cmd = [
        sys.executable, str(REPO_ROOT / "evaluate.py"), "ctc=folder", f"ctc.path={folder}",
        "codec=x264", "anchor=x265", "frames=2", "progress=false", f"hydra.run.dir={tmp_path / 'run'}",
    ]  # fmt: skip
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "deep_320x256_25.yuv is read as" in line]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "16-bit little-endian words of 10-bit video" in lines[0] and "rename" in lines[0]
    assert not (tmp_path / "run" / "points.csv").exists()


def test_a_reconstruction_is_measured_whatever_it_looks_like(tmp_path: Path) -> None:
    """A decoder's output is written at the source's size: even bytes that would be refused as a
    source (here: every odd byte small, as 10-bit words read as 8-bit) are measured, silently."""
    from nvc_train.metrics.measure import measure_sequence

    source = raw_copy(smooth_frames(320, 256, 8), tmp_path, "source_320x256_25.yuv")
    info = VideoInfo(320, 256, 8, 25.0, FRAMES)
    odd_small = np.zeros(320 * 256 * 3 // 2 * FRAMES, dtype=np.uint8)
    odd_small[0::2] = np.random.default_rng(1).integers(16, 236, odd_small[0::2].size)
    decoded = tmp_path / "decoded.yuv"
    decoded.write_bytes(odd_small.tobytes())
    with pytest.raises(VideoFormatError):  # as a source it would be refused ...
        open_video(decoded, info)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = measure_sequence(source, info, decoded, metrics=["psnr"])  # ... as a result, measured
    assert scores.num_frames == FRAMES and scores.means["psnr_y"] < 20
