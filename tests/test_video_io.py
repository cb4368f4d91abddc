"""Video readers and writers (raw .yuv, .y4m, containers through decord), pad and crop.

Bytes are checked against ffmpeg's own decoding of the real clips, so a reader that is merely
self-consistent (writes and reads back the same wrong layout) cannot pass.
"""

from __future__ import annotations

import pickle
import shutil
import subprocess
import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from nvc_train.video import (
    DecordReader,
    RawYUVReader,
    VideoFormatError,
    VideoInfo,
    Y4MReader,
    YUVFrame,
    YUVWriter,
    open_video,
    parse_yuv_name,
    write_y4m,
    write_yuv,
)
from nvc_train.video.pad import crop_frame, crop_to, crop_yuv420, pad_frame, pad_to_multiple, pad_yuv420

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not on PATH")
TEN_BIT_CLIP = "rooftop_pq_10bit_416x240_28f.y4m"


def random_frames(count: int, width: int, height: int, bit_depth: int, seed: int = 0) -> list[YUVFrame]:
    """Frames of random code values over the full range, so byte order and depth mistakes show."""
    rng = np.random.default_rng(seed)
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    top = (1 << bit_depth) - 1

    def plane(h: int, w: int) -> np.ndarray:
        return rng.integers(0, top + 1, size=(h, w)).astype(dtype)

    return [
        YUVFrame(
            plane(height, width), plane(height // 2, width // 2), plane(height // 2, width // 2), bit_depth
        )
        for _ in range(count)
    ]


def indexed_frames(count: int, width: int, height: int) -> list[YUVFrame]:
    """Frames whose every sample encodes the frame index, so a read of the wrong frame is obvious."""
    frames = []
    for index in range(count):
        y = np.full((height, width), index, np.uint8)
        y[0, :] = np.arange(width, dtype=np.uint8)  # and a row that catches stride mistakes
        chroma = np.full((height // 2, width // 2), 255 - index, np.uint8)
        frames.append(YUVFrame(y, chroma, chroma.copy(), 8))
    return frames


def assert_same_frames(got: list[YUVFrame], expected: list[YUVFrame]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a.bit_depth == b.bit_depth
        for pa, pb in zip(a.planes, b.planes, strict=True):
            np.testing.assert_array_equal(pa, pb)


def ffmpeg_raw(path: Path, pix_fmt: str) -> bytes:
    """Every frame of ``path`` decoded by ffmpeg to raw planar bytes."""
    cmd = [FFMPEG, "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", pix_fmt, "-"]
    return subprocess.run(cmd, check=True, capture_output=True).stdout


def frame_bytes(frame: YUVFrame) -> bytes:
    dtype = np.uint8 if frame.bit_depth == 8 else np.dtype("<u2")
    return b"".join(plane.astype(dtype).tobytes() for plane in frame.planes)


# -------------------------------------------------------------------------------------------------
# Raw .yuv


@pytest.mark.parametrize("bit_depth", [8, 10])
def test_raw_round_trip(tmp_path: Path, bit_depth: int) -> None:
    frames = random_frames(5, 48, 32, bit_depth)
    suffix = "_10bit" if bit_depth == 10 else ""
    path = tmp_path / f"noise_48x32_25{suffix}.yuv"
    assert write_yuv(path, frames) == 5
    assert path.stat().st_size == 5 * VideoInfo(48, 32, bit_depth).frame_bytes

    reader = open_video(path)
    assert isinstance(reader, RawYUVReader)
    assert reader.info == VideoInfo(48, 32, bit_depth, 25.0, 5)
    assert len(reader) == 5
    assert_same_frames(list(reader.read()), frames)
    assert reader.read_frame(3).y.dtype == (np.uint8 if bit_depth == 8 else np.uint16)


def test_raw_ten_bit_is_little_endian_words(tmp_path: Path) -> None:
    y = np.full((4, 4), 0x0302, np.uint16)
    chroma = np.full((2, 2), 0x0001, np.uint16)
    path = tmp_path / "x_4x4_10bit.yuv"
    write_yuv(path, [YUVFrame(y, chroma, chroma.copy(), 10)])
    assert path.read_bytes()[:4] == b"\x02\x03\x02\x03"


def test_raw_info_overrides_name(tmp_path: Path) -> None:
    frames = random_frames(3, 16, 8, 8)
    path = tmp_path / "no_size_here.yuv"
    write_yuv(path, frames)
    reader = open_video(path, VideoInfo(16, 8, 8, 50.0, num_frames=99))
    assert reader.info == VideoInfo(16, 8, 8, 50.0, 3)  # frame count is what the file holds
    assert_same_frames(list(reader.read()), frames)


def test_frame_range_reads(tmp_path: Path) -> None:
    frames = indexed_frames(20, 32, 16)
    path = tmp_path / "idx_32x16_30.yuv"
    write_yuv(path, frames)
    reader = open_video(path)

    assert_same_frames([reader.read_frame(7)], [frames[7]])
    assert_same_frames(list(reader.read(5, 3)), frames[5:8])
    assert_same_frames(list(reader.read(17)), frames[17:])
    assert list(reader.read(20, 0)) == []
    assert_same_frames(list(reader), frames)


def test_out_of_range_is_index_error(tmp_path: Path) -> None:
    path = tmp_path / "idx_32x16_30.yuv"
    write_yuv(path, indexed_frames(4, 32, 16))
    reader = open_video(path)
    with pytest.raises(IndexError, match=r"frame 4 out of range: idx_32x16_30.yuv has 4 frames"):
        reader.read_frame(4)
    with pytest.raises(IndexError):
        reader.read_frame(-1)
    with pytest.raises(IndexError, match="out of range"):
        reader.read(2, 3)  # fails when asked, before any frame is yielded
    with pytest.raises(IndexError, match="start frame 5 out of range"):
        reader.read(5)


def test_seek_does_not_read_whole_file(tmp_path: Path) -> None:
    """A 600-frame 1080p file (1.8 GB, sparse here) is opened and its last frame read in little memory."""
    info = VideoInfo(1920, 1080, 8, 50.0)
    path = tmp_path / "Big_1920x1080_50.yuv"
    with open(path, "wb") as handle:
        handle.truncate(600 * info.frame_bytes)
        handle.seek(599 * info.frame_bytes)
        handle.write(b"\x57" * 16)  # a marker at the start of the last frame
    tracemalloc.start()
    try:
        reader = open_video(path)
        frame = reader.read_frame(599)
        frames = list(reader.read(598, 2))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(reader) == 600
    assert frame.y[0, :16].tolist() == [0x57] * 16 and frame.y[0, 16] == 0
    assert frames[1].y[0, 0] == 0x57 and frames[0].y[0, 0] == 0
    assert peak < 4 * info.frame_bytes, f"reading one frame took {peak} bytes"


def test_size_not_a_whole_number_of_frames(tmp_path: Path) -> None:
    path = tmp_path / "odd_16x8_30.yuv"
    path.write_bytes(bytes(2 * 192 + 7))
    with pytest.raises(VideoFormatError) as error:
        open_video(path)
    message = str(error.value)
    for part in (str(path), "391 bytes", "192 bytes", "7 bytes left over"):
        assert part in message


def test_name_without_size(tmp_path: Path) -> None:
    path = tmp_path / "sequence.yuv"
    path.write_bytes(bytes(192))
    with pytest.raises(VideoFormatError, match="pass width and height"):
        open_video(path)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("BasketballDrive_1920x1080_50.yuv", (1920, 1080, 50.0, 8)),
        ("foo_416x240_30f.yuv", (416, 240, 30.0, 8)),  # 30f is a frame count, fps falls back
        ("x_1920x1080_10bit.yuv", (1920, 1080, 30.0, 10)),
        ("Beauty_3840x2160_120fps_420_10bit_YUV.yuv", (3840, 2160, 120.0, 10)),
        ("RaceHorses_416x240_30_10b.yuv", (416, 240, 30.0, 10)),
        ("Kimono1_1920x1080_24.yuv", (1920, 1080, 24.0, 8)),
        ("clip_832x480_59.94hz.yuv", (832, 480, 59.94, 8)),
    ],
)
def test_parse_yuv_name(name: str, expected: tuple[int, int, float, int]) -> None:
    info = parse_yuv_name(name)
    assert (info.width, info.height, info.fps, info.bit_depth) == expected


# -------------------------------------------------------------------------------------------------
# Writers


def test_writer_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "rec_32x16_30.yuv"
    frames = indexed_frames(3, 32, 16)
    with YUVWriter(path) as writer:
        writer.write(frames[0])
        assert not path.exists()  # nothing under the final name until close
    assert path.stat().st_size == VideoInfo(32, 16).frame_bytes

    class Killed(Exception):
        pass

    with pytest.raises(Killed), YUVWriter(path) as writer:
        writer.write(frames[1])
        writer.write(frames[2])
        raise Killed
    assert_same_frames(list(open_video(path).read()), frames[:1])  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left over


def test_writer_rejects_mixed_frames(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds 32x16 8-bit frames"), YUVWriter(tmp_path / "a.yuv") as writer:
        writer.write(indexed_frames(1, 32, 16)[0])
        writer.write(indexed_frames(1, 16, 16)[0])
    assert not (tmp_path / "a.yuv").exists()


@needs_ffmpeg
@pytest.mark.parametrize("bit_depth", [8, 10])
def test_write_y4m_is_read_by_ffmpeg(tmp_path: Path, bit_depth: int) -> None:
    frames = random_frames(3, 32, 16, bit_depth, seed=bit_depth)
    info = VideoInfo(32, 16, bit_depth, 30000 / 1001, 3)
    path = tmp_path / "out.y4m"
    write_y4m(path, frames, info)
    header = path.read_bytes().split(b"\n", 1)[0].decode()
    assert "F30000:1001" in header
    assert ("C420p10" if bit_depth == 10 else "C420jpeg") in header

    reader = open_video(path)
    assert reader.info == info
    assert_same_frames(list(reader.read()), frames)
    pix_fmt = "yuv420p10le" if bit_depth == 10 else "yuv420p"
    assert ffmpeg_raw(path, pix_fmt) == b"".join(frame_bytes(f) for f in frames)


# -------------------------------------------------------------------------------------------------
# y4m


def test_y4m_real_clips_match_ffmpeg(clips_dir: Path) -> None:
    if FFMPEG is None:
        pytest.skip("ffmpeg is not on PATH")
    clips = sorted(clips_dir.glob("*.y4m"))
    assert any(clip.name == TEN_BIT_CLIP for clip in clips)
    for clip in clips:
        reader = open_video(clip)
        assert isinstance(reader, Y4MReader)
        name_info = parse_yuv_name(clip.name.replace(".y4m", ".yuv"))
        info = reader.info
        assert (info.width, info.height) == (name_info.width, name_info.height), clip.name
        assert info.bit_depth == (10 if "10bit" in clip.name else 8), clip.name
        frames_in_name = int(clip.stem.rsplit("_", 1)[1].rstrip("f"))
        assert info.num_frames == frames_in_name, clip.name

        raw = ffmpeg_raw(clip, info.pix_fmt)
        assert len(raw) == info.num_frames * info.frame_bytes
        for index in (0, info.num_frames // 2, info.num_frames - 1):
            expected = raw[index * info.frame_bytes : (index + 1) * info.frame_bytes]
            assert frame_bytes(reader.read_frame(index)) == expected, (clip.name, index)


def test_y4m_ten_bit_clip(clips_dir: Path) -> None:
    reader = open_video(clips_dir / TEN_BIT_CLIP)
    assert reader.info == VideoInfo(416, 240, 10, 30.0, 28)
    frame = reader.read_frame(10)
    assert frame.y.dtype == np.uint16 and frame.bit_depth == 10
    assert int(frame.y.max()) > 255
    assert int(max(p.max() for p in frame.planes)) <= 1023


def test_y4m_frame_parameters_and_ratio(tmp_path: Path) -> None:
    """FRAME lines may carry parameters of any length; offsets must follow them."""
    frames = indexed_frames(4, 8, 4)
    body = b"YUV4MPEG2 W8 H4 F24000:1001 It A1:1 C420mpeg2 XYSCSS=420MPEG2\n"
    for index, frame in enumerate(frames):
        body += b"FRAME" + (b" Ixyz XFOO=" + b"7" * index if index % 2 else b"") + b"\n" + frame_bytes(frame)
    path = tmp_path / "params.y4m"
    path.write_bytes(body)
    reader = open_video(path)
    assert reader.fps_ratio == Fraction(24000, 1001)
    assert reader.info == VideoInfo(8, 4, 8, 24000 / 1001, 4)
    assert_same_frames(list(reader.read(1, 3)), frames[1:])


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"YUV4MPEG2 W8 H4 F25:1 C444\n", "C444 is not supported; only 4:2:0"),
        (b"YUV4MPEG2 W8 H4 F25:1 C420p12\n", "C420p12 is not supported"),
        (b"YUV4MPEG2 W8 H4 F25:1 Cmono\n", "Cmono is not supported"),
        (b"YUV4MPEG2 H4 F25:1\n", "without a valid W and H"),
        (b"RIFF\n", "not a y4m file"),
    ],
)
def test_y4m_rejects_bad_headers(tmp_path: Path, header: bytes, message: str) -> None:
    path = tmp_path / "bad.y4m"
    path.write_bytes(header + b"FRAME\n" + bytes(48))
    with pytest.raises(VideoFormatError, match=message):
        open_video(path)


def test_y4m_truncated_frame(tmp_path: Path) -> None:
    path = tmp_path / "cut.y4m"
    path.write_bytes(b"YUV4MPEG2 W8 H4 F25:1 C420jpeg\nFRAME\n" + bytes(48) + b"FRAME\n" + bytes(20))
    with pytest.raises(VideoFormatError, match=r"frame 1 is truncated \(20 of 48 bytes"):
        open_video(path)


def test_y4m_info_must_match_header(clips_dir: Path) -> None:
    with pytest.raises(VideoFormatError, match="does not match its metadata"):
        open_video(clips_dir / TEN_BIT_CLIP, VideoInfo(416, 240, 8))


# -------------------------------------------------------------------------------------------------
# Containers through decord


@pytest.fixture(scope="module")
def mp4_clip(tmp_path_factory: pytest.TempPathFactory, clips_dir: Path) -> tuple[Path, Path]:
    """A lossless H.264 (4:2:0, tagged BT.709) .mp4 made by ffmpeg from a real 8-bit clip."""
    if FFMPEG is None:
        pytest.skip("ffmpeg is not on PATH")
    source = clips_dir / "street_pan_416x240_32f.y4m"
    target = tmp_path_factory.mktemp("mp4") / "street_pan.mp4"
    cmd = [FFMPEG, "-v", "error", "-i", str(source), "-frames:v", "12", "-c:v", "libx264", "-qp", "0"]
    cmd += ["-pix_fmt", "yuv420p", "-colorspace", "bt709", "-color_primaries", "bt709"]
    cmd += ["-color_trc", "bt709", "-color_range", "tv", str(target)]
    subprocess.run(cmd, check=True, capture_output=True)
    return source, target


def test_decord_reader_matches_source(mp4_clip: tuple[Path, Path]) -> None:
    """decord gives RGB; after our BT.709 conversion back, frames are close to the coded YUV."""
    source, target = mp4_clip
    reader = open_video(target)
    assert isinstance(reader, DecordReader)
    assert reader.info == VideoInfo(416, 240, 8, 25.0, 12)
    original = open_video(source)
    for got, expected in zip(reader.read(4, 3), original.read(4, 3), strict=True):
        for plane_got, plane_expected in zip(got.planes, expected.planes, strict=True):
            diff = plane_got.astype(np.int32) - plane_expected.astype(np.int32)
            assert np.abs(diff).mean() < 1.5
            mse = float(np.mean(diff.astype(np.float64) ** 2))
            assert 10 * np.log10(255**2 / max(mse, 1e-9)) > 40.0
    with pytest.raises(IndexError):
        reader.read_frame(12)


def test_readers_pickle(tmp_path: Path, clips_dir: Path, mp4_clip: tuple[Path, Path]) -> None:
    raw_path = tmp_path / "idx_32x16_30.yuv"
    write_yuv(raw_path, indexed_frames(6, 32, 16))
    readers = [open_video(raw_path), open_video(clips_dir / TEN_BIT_CLIP), open_video(mp4_clip[1])]
    for reader in readers:
        before = reader.read_frame(3)  # a decord reader now holds a decoder; pickling must drop it
        clone = pickle.loads(pickle.dumps(reader))
        assert clone.info == reader.info
        assert_same_frames([clone.read_frame(3)], [before])


class _FrameDataset(torch.utils.data.Dataset):
    def __init__(self, reader: DecordReader) -> None:
        self.reader = reader

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.reader.read_frame(index).y.copy())


def test_decord_reader_in_dataloader_workers(mp4_clip: tuple[Path, Path]) -> None:
    """Workers (forked after the parent opened the decoder) each open their own and read right."""
    reader = open_video(mp4_clip[1])
    expected = [torch.from_numpy(frame.y.copy()) for frame in reader.read()]
    loader = torch.utils.data.DataLoader(_FrameDataset(reader), batch_size=3, num_workers=2)
    got = torch.cat(list(loader))
    assert torch.equal(got, torch.stack(expected))


# -------------------------------------------------------------------------------------------------
# Pad and crop


@pytest.mark.parametrize("mode", ["replicate", "reflect", "constant"])
def test_pad_and_crop_tensor(mode: str) -> None:
    x = torch.rand(2, 3, 30, 45)
    padded, size = pad_to_multiple(x, 16, mode)
    assert padded.shape == (2, 3, 32, 48) and size == (30, 45)
    assert torch.equal(crop_to(padded, size), x)
    if mode == "replicate":
        assert torch.equal(padded[..., 31, :45], x[..., 29, :])
        assert torch.equal(padded[..., :30, 47], x[..., :, 44])
    same, _ = pad_to_multiple(torch.rand(1, 32, 64), 16)
    assert same.shape == (1, 32, 64)
    with pytest.raises(ValueError, match="larger"):
        crop_to(x, (31, 45))


def test_pad_yuv420_planes() -> None:
    y, u, v = torch.rand(1, 1, 240, 416), torch.rand(1, 1, 120, 208), torch.rand(1, 1, 120, 208)
    (py, pu, pv), size = pad_yuv420(y, u, v, 64)
    assert py.shape[-2:] == (256, 448) and pu.shape[-2:] == pv.shape[-2:] == (128, 224)
    cy, cu, cv = crop_yuv420(py, pu, pv, size)
    assert torch.equal(cy, y) and torch.equal(cu, u) and torch.equal(cv, v)
    with pytest.raises(ValueError, match="even multiple"):
        pad_yuv420(y, u, v, 15)


def test_pad_and_crop_frame() -> None:
    frame = random_frames(1, 416, 240, 10)[0]
    padded, size = pad_frame(frame, 64)
    assert (padded.height, padded.width) == (256, 448) and padded.u.shape == (128, 224)
    assert padded.bit_depth == 10 and size == (240, 416)
    np.testing.assert_array_equal(padded.y[255, :416], frame.y[239])
    np.testing.assert_array_equal(padded.u[:120, 223], frame.u[:, 207])
    assert_same_frames([crop_frame(padded, size)], [frame])
