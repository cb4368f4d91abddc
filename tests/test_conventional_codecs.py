"""Conventional codecs: the four ffmpeg encoders for real, reference software through a fake binary.

The ffmpeg tests run the real encoders on tiny inputs (a 128x96 synthetic raw clip and the first
frames of the real .y4m clips) and check what a benchmark relies on: every frame comes back, bits
fall as QP rises, the stream has the structure asked for (ffprobe picture types; AV1 frame headers
through ffmpeg's trace_headers filter), and no encoder-info SEI is counted as bits.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nvc_train.codecs.base import CodecError
from nvc_train.codecs.ffmpeg import AomAV1Codec, FFmpegCodec, SvtAV1Codec, X264Codec, X265Codec
from nvc_train.codecs.reference import ReferenceCodec
from nvc_train.ctc import CTCSequence
from nvc_train.structure import CodingStructure
from nvc_train.video.frame import VideoInfo

REPO = Path(__file__).resolve().parents[1]
FFMPEG = shutil.which("ffmpeg")
FFPROBE = shutil.which("ffprobe")
needs_ffmpeg = pytest.mark.skipif(
    FFMPEG is None or FFPROBE is None, reason="ffmpeg/ffprobe not on PATH (apt-get install ffmpeg)"
)

CODECS: dict[str, type[FFmpegCodec]] = {
    "x264": X264Codec,
    "x265": X265Codec,
    "aom": AomAV1Codec,
    "svtav1": SvtAV1Codec,
}
# Small structures so that 10 frames show every feature: I frames at the intra period (ld: 0, 4, 8;
# ra: 0, 8), a full mini-GOP of 4 plus a truncated one.
STRUCTURES = {
    "ld": CodingStructure("ld", 4, 1),
    "ra": CodingStructure("ra", 8, 4),
    "ai": CodingStructure("ai", 1, 1),
}
TINY_W, TINY_H, TINY_SOURCE_FRAMES, TINY_START, TINY_FRAMES = 128, 96, 12, 2, 10


# ---- fixtures and stream inspection -------------------------------------------------------------


def make_codec(name: str, **kwargs) -> FFmpegCodec:
    """A codec built from its real config file, as the evaluation runner builds it."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO / "configs" / "codec" / f"{name}.yaml")
    return instantiate(cfg, **kwargs)


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory: pytest.TempPathFactory) -> CTCSequence:
    """A 128x96 8-bit raw clip of 12 synthetic frames, coded from frame 2 (start_frame honoured)."""
    if FFMPEG is None:
        pytest.skip("ffmpeg not on PATH (apt-get install ffmpeg)")
    path = tmp_path_factory.mktemp("tiny") / "tiny_128x96.yuv"
    subprocess.run(
        [FFMPEG, "-v", "error", "-f", "lavfi", "-i", f"testsrc2=size={TINY_W}x{TINY_H}:rate=30"]
        + ["-frames:v", str(TINY_SOURCE_FRAMES), "-pix_fmt", "yuv420p", "-f", "rawvideo", str(path)],
        check=True,
    )
    info = VideoInfo(TINY_W, TINY_H, 8, 30.0, TINY_FRAMES)
    return CTCSequence("tiny", "synthetic", path, info, start_frame=TINY_START)


def clip(clips_dir: Path, stem: str, frames: int, start: int = 0) -> CTCSequence:
    """The first ``frames`` frames (from ``start``) of a real clip; metadata from its y4m header."""
    path = next(clips_dir.glob(f"{stem}*.y4m"))
    fields = dict((t[:1], t[1:]) for t in path.open("rb").readline().decode().split()[1:])
    num, den = (int(x) for x in fields["F"].split(":"))
    depth = 10 if fields.get("C", "").endswith("p10") else 8
    info = VideoInfo(int(fields["W"]), int(fields["H"]), depth, num / den, frames)
    return CTCSequence(path.stem, "clips", path, info, start_frame=start)


def pict_types(path: Path, muxer: str) -> str:
    """Picture types in output (display) order, e.g. 'IPPPIPPP'."""
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-f", muxer, "-i", str(path), "-show_frames"]
        + ["-show_entries", "frame=pict_type", "-of", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return "".join(frame["pict_type"] for frame in json.loads(out)["frames"])


def av1_hidden_frames(path: Path) -> tuple[int, int]:
    """(frames coded but not shown, frames shown again later) from the AV1 frame headers.

    AV1 has no B picture type: reordering shows up as hidden (alt-ref) frames that are displayed
    later with show_existing_frame. Low delay must have neither.
    """
    trace = subprocess.run(
        [FFMPEG, "-hide_banner", "-f", "obu", "-i", str(path), "-c", "copy"]
        + ["-bsf:v", "trace_headers", "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    hidden = shown_again = 0
    existing = None
    for name, value in re.findall(r"\s(show_existing_frame|show_frame)\s+[01]+ = (\d+)", trace):
        if name == "show_existing_frame":
            existing = int(value)
            shown_again += existing
        elif existing == 0 and value == "0":
            hidden += 1
    return hidden, shown_again


def read_frames(path: Path, info: VideoInfo) -> np.ndarray:
    """Raw 4:2:0 frames as a (frames, frame_samples) array of code values."""
    data = np.fromfile(path, dtype=info.dtype)
    return data.reshape(-1, info.frame_bytes // info.bytes_per_sample)


def source_frames(sequence: CTCSequence) -> np.ndarray:
    """The frames to code, decoded independently of the code under test (ffmpeg -> raw)."""
    info = sequence.info
    raw = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(sequence.path), "-f", "rawvideo", "-pix_fmt", info.pix_fmt, "-"],
        capture_output=True,
        check=True,
    ).stdout
    frames = np.frombuffer(raw, dtype=info.dtype).reshape(-1, info.frame_bytes // info.bytes_per_sample)
    return frames[sequence.start_frame : sequence.start_frame + info.num_frames]


def raw_sequence_frames(sequence: CTCSequence) -> np.ndarray:
    frames = read_frames(sequence.path, sequence.info)
    return frames[sequence.start_frame : sequence.start_frame + sequence.info.num_frames]


def check_structure_in_stream(codec: FFmpegCodec, kind: str, bitstream: Path, frames: int) -> None:
    types = pict_types(bitstream, codec.muxer)
    assert len(types) == frames
    intra = [i for i, t in enumerate(types) if t == "I"]
    if kind == "ai":
        assert types == "I" * frames
    elif kind == "ld":
        assert "B" not in types
        assert intra == list(range(0, frames, STRUCTURES["ld"].intra_period))
    else:
        assert intra == list(range(0, frames, STRUCTURES["ra"].intra_period))
    if codec.muxer == "obu":
        hidden, shown_again = av1_hidden_frames(bitstream)
        if kind == "ra":
            assert hidden > 0 and shown_again > 0, "no alt-ref hierarchy in a random-access AV1 stream"
        else:
            assert (hidden, shown_again) == (0, 0), "AV1 low delay / all intra stream reorders frames"
    elif kind == "ra":
        assert "B" in types


# ---- the four ffmpeg encoders, for real ---------------------------------------------------------


@needs_ffmpeg
@pytest.mark.parametrize("kind", list(STRUCTURES))
@pytest.mark.parametrize("name", list(CODECS))
def test_encode_decode_every_structure(name: str, kind: str, tiny_raw: CTCSequence, tmp_path: Path) -> None:
    codec = make_codec(name)
    structure = STRUCTURES[kind]
    sizes = []
    for qp in (codec.rate_points[0], codec.rate_points[-1]):
        bitstream = tmp_path / f"{name}_{kind}_{qp}{codec.suffix}"
        encoded = codec.encode(tiny_raw, qp, structure, bitstream)
        assert encoded.bitstream == bitstream and encoded.seconds > 0
        decoded = codec.decode(bitstream, tiny_raw, tmp_path / f"{name}_{kind}_{qp}.yuv")
        assert decoded.seconds > 0
        assert decoded.reconstruction.stat().st_size == TINY_FRAMES * tiny_raw.info.frame_bytes
        check_structure_in_stream(codec, kind, bitstream, TINY_FRAMES)
        sizes.append(bitstream.stat().st_size)
    assert sizes[0] > sizes[1], f"{name} {kind}: bits did not fall as QP rose: {sizes}"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@needs_ffmpeg
@pytest.mark.parametrize("suffix", [".yuv", ".y4m"])
def test_lossless_roundtrip_honours_start_frame_and_order(
    suffix: str, tiny_raw: CTCSequence, tmp_path: Path
) -> None:
    """x264 at QP 0 is lossless: decoded frame i must equal source frame start_frame + i, exactly."""
    sequence = tiny_raw
    if suffix == ".y4m":
        y4m = tmp_path / "tiny.y4m"
        subprocess.run(
            [FFMPEG, "-v", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-video_size"]
            + [f"{TINY_W}x{TINY_H}", "-framerate", "30", "-i", str(tiny_raw.path), str(y4m)],
            check=True,
        )
        sequence = CTCSequence("tiny_y4m", "synthetic", y4m, tiny_raw.info, start_frame=TINY_START)
    codec = X264Codec(preset="ultrafast")
    for kind in ("ld", "ra"):
        bitstream = tmp_path / f"lossless_{kind}.h264"
        codec.encode(sequence, 0, STRUCTURES[kind], bitstream)
        decoded = codec.decode(bitstream, sequence, tmp_path / f"lossless_{kind}.yuv")
        np.testing.assert_array_equal(
            read_frames(decoded.reconstruction, sequence.info), raw_sequence_frames(tiny_raw)
        )


@needs_ffmpeg
def test_no_encoder_info_sei_in_streams(tiny_raw: CTCSequence, tmp_path: Path) -> None:
    """x264's options string and x265's settings SEI are removed; the grep would find them otherwise."""
    markers = [b"x264 - core", b"options:", b"x265 (build", b"HEVC encoder version", b"Copyleft"]
    for name, encoder, muxer in (("x264", "libx264", "h264"), ("x265", "libx265", "hevc")):
        plain = tmp_path / f"plain.{muxer}"
        subprocess.run(
            [
                FFMPEG,
                "-v",
                "error",
                "-f",
                "rawvideo",
                "-pix_fmt",
                "yuv420p",
                "-video_size",
                f"{TINY_W}x{TINY_H}",
            ]
            + ["-i", str(tiny_raw.path), "-frames:v", "2", "-c:v", encoder, "-f", muxer, str(plain)],
            check=True,
        )
        assert any(m in plain.read_bytes() for m in markers), f"control: plain {name} stream has no SEI text"
        codec = make_codec(name)
        for kind, structure in STRUCTURES.items():
            bitstream = tmp_path / f"{name}_{kind}.{muxer}"
            codec.encode(tiny_raw, 32, structure, bitstream)
            data = bitstream.read_bytes()
            assert not any(m in data for m in markers), f"{name} {kind} stream still carries encoder info"
            codec.decode(bitstream, tiny_raw, tmp_path / f"{name}_{kind}.yuv")  # still decodes


@needs_ffmpeg
@pytest.mark.slow
@pytest.mark.parametrize("name", list(CODECS))
def test_real_clip_8bit(name: str, clips_dir: Path, tmp_path: Path) -> None:
    sequence = clip(clips_dir, "cars", 8, start=3)
    codec = make_codec(name)
    for kind in ("ld", "ra"):
        bitstream = tmp_path / f"{kind}{codec.suffix}"
        codec.encode(sequence, codec.rate_points[1], STRUCTURES[kind], bitstream)
        decoded = codec.decode(bitstream, sequence, tmp_path / f"{kind}.yuv")
        recon = read_frames(decoded.reconstruction, sequence.info).astype(float)
        mse = np.mean((recon - source_frames(sequence)) ** 2)
        assert 10 * np.log10(255**2 / mse) > 30, f"{name} {kind}: implausibly low PSNR (frames misaligned?)"


@needs_ffmpeg
@pytest.mark.slow
@pytest.mark.parametrize("name", ["x264", "x265", "svtav1", "aom"])
def test_real_clip_10bit(name: str, clips_dir: Path, tmp_path: Path) -> None:
    sequence = clip(clips_dir, "rooftop_pq_10bit", 8)
    codec = make_codec(name)
    psnrs = {}
    for kind in ("ld", "ra", "ai") if name in ("x265", "svtav1") else ("ld",):
        for qp in (codec.rate_points[0], codec.rate_points[-1]):
            bitstream = tmp_path / f"{kind}_{qp}{codec.suffix}"
            codec.encode(sequence, qp, STRUCTURES[kind], bitstream)
            decoded = codec.decode(bitstream, sequence, tmp_path / f"{kind}_{qp}.yuv")
            assert decoded.reconstruction.stat().st_size == 8 * sequence.info.frame_bytes
            recon = read_frames(decoded.reconstruction, sequence.info).astype(float)
            mse = np.mean((recon - source_frames(sequence)) ** 2)
            psnrs[kind, qp] = 10 * np.log10(1023**2 / mse)
        assert psnrs[kind, codec.rate_points[0]] > psnrs[kind, codec.rate_points[-1]] > 30
    if name in ("x264", "x265"):
        # The rate point is the slice QP at 10 bit too (x264's own qp scale is 12 higher): the two
        # H.26x anchors land within a few dB of each other at the same QP.
        assert 38 < psnrs["ld", 22] < 52


# ---- structure limits, rate points, sources -----------------------------------------------------


@needs_ffmpeg
def test_structures_an_encoder_cannot_do_are_refused(tiny_raw: CTCSequence, tmp_path: Path) -> None:
    with pytest.raises(CodecError, match="at most 16 consecutive B frames"):
        X264Codec().check_structure(CodingStructure("ra", 32, 32))
    with pytest.raises(CodecError, match="at most 16"):
        X265Codec().encode(tiny_raw, 32, CodingStructure("ra", 64, 32), tmp_path / "x.hevc")
    with pytest.raises(CodecError, match="hierarchical levels"):
        SvtAV1Codec().check_structure(CodingStructure("ra", 32, 2))
    AomAV1Codec().check_structure(CodingStructure("ra", 32, 32))  # libaom can: GF interval 32
    assert not (tmp_path / "x.hevc").exists()


@needs_ffmpeg
def test_auto_intra_period_follows_the_frame_rate(tiny_raw: CTCSequence, tmp_path: Path) -> None:
    codec = X265Codec(preset="ultrafast")
    sequence = CTCSequence("fast", "synthetic", tiny_raw.path, VideoInfo(TINY_W, TINY_H, 8, 4.0, 10), 2)
    result = codec.encode(sequence, 32, CodingStructure("ra", "auto", 4), tmp_path / "auto.hevc")
    assert result.extra["structure"] == "ra(intra_period=4, gop_size=4)"  # 4 fps: one GOP of 4
    assert pict_types(result.bitstream, "hevc").replace("B", "").replace("P", "") == "III"


def test_rate_points_are_validated() -> None:
    with pytest.raises(CodecError, match="integer QP in \\[0, 51\\]"):
        X265Codec(rate_points=[22, 60])
    with pytest.raises(CodecError, match="integer CRF"):
        AomAV1Codec(rate_points=[27.5])
    with pytest.raises(CodecError, match="integer QP in \\[1, 63\\]"):
        SvtAV1Codec(rate_points=[0])


@needs_ffmpeg
def test_raw_source_problems_are_reported(tiny_raw: CTCSequence, tmp_path: Path) -> None:
    codec = X264Codec(preset="ultrafast")
    ld = STRUCTURES["ld"]
    too_long = CTCSequence("tiny", "synthetic", tiny_raw.path, VideoInfo(TINY_W, TINY_H, 8, 30.0, 11), 2)
    with pytest.raises(CodecError, match="holds 12 frames"):
        codec.encode(too_long, 32, ld, tmp_path / "a.h264")
    missing = CTCSequence("none", "synthetic", tmp_path / "none.yuv", tiny_raw.info)
    with pytest.raises(CodecError, match="not found"):
        codec.encode(missing, 32, ld, tmp_path / "d.h264")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@needs_ffmpeg
def test_y4m_source_problems_are_reported(clips_dir: Path, tmp_path: Path) -> None:
    codec = X264Codec(preset="ultrafast")
    ld = STRUCTURES["ld"]
    short_y4m = clip(clips_dir, "cars", 40)  # the clip has 30 frames
    with pytest.raises(CodecError, match="30 frames were encoded but 40"):
        codec.encode(short_y4m, 32, ld, tmp_path / "b.h264")
    wrong_depth = clip(clips_dir, "cars", 8)
    wrong_depth = CTCSequence("cars", "clips", wrong_depth.path, VideoInfo(320, 240, 10, 30.0, 8))
    with pytest.raises(CodecError, match="8-bit but the sequence metadata says 320x240 10-bit"):
        codec.encode(wrong_depth, 32, ld, tmp_path / "c.h264")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ---- failures -----------------------------------------------------------------------------------


def test_absent_ffmpeg_binary(tmp_path: Path) -> None:
    codec = make_codec("x265", ffmpeg=str(tmp_path / "no" / "ffmpeg"))
    with pytest.raises(CodecError, match=r"ffmpeg not found at '.*/no/ffmpeg': set codec\.ffmpeg="):
        codec.check_structure(STRUCTURES["ld"])
    with pytest.raises(CodecError, match="ffmpeg not found"):
        codec.description()


@needs_ffmpeg
def test_ffmpeg_without_the_encoder(tiny_raw: CTCSequence, tmp_path: Path) -> None:
    codec = X264Codec(encoder="libnotanencoder")
    with pytest.raises(CodecError, match="has no libnotanencoder encoder.*codec.ffmpeg="):
        codec.encode(tiny_raw, 32, STRUCTURES["ld"], tmp_path / "x.h264")


@needs_ffmpeg
def test_failing_ffmpeg_gives_stderr_and_leaves_no_bitstream(tiny_raw: CTCSequence, tmp_path: Path) -> None:
    codec = X265Codec(extra_args=["-no-such-option", "1"])
    with pytest.raises(CodecError, match="(?s)exit code 1.*no-such-option.*command: ") as error:
        codec.encode(tiny_raw, 32, STRUCTURES["ld"], tmp_path / "out" / "x.hevc")
    assert "x265 encoding tiny at QP 32" in str(error.value)
    assert list((tmp_path / "out").iterdir()) == []  # neither the bitstream nor its .partial


@needs_ffmpeg
def test_decoded_frame_count_mismatch(tiny_raw: CTCSequence, tmp_path: Path) -> None:
    codec = X264Codec(preset="ultrafast")
    bitstream = tmp_path / "x.h264"
    codec.encode(tiny_raw, 32, STRUCTURES["ld"], bitstream)
    longer = CTCSequence("tiny", "synthetic", tiny_raw.path, VideoInfo(TINY_W, TINY_H, 8, 30.0, 12))
    with pytest.raises(CodecError, match="decoded 10 frames but 12 were coded"):
        codec.decode(bitstream, longer, tmp_path / "x.yuv")
    assert not (tmp_path / "x.yuv").exists()
    with pytest.raises(CodecError, match="bitstream not found"):
        codec.decode(tmp_path / "none.h264", tiny_raw, tmp_path / "y.yuv")


@needs_ffmpeg
@pytest.mark.parametrize("name", list(CODECS))
def test_configs_and_versioned_description(name: str) -> None:
    codec = make_codec(name)
    assert codec.name == name and codec.family == "conventional"
    assert len(codec.rate_points) == 4 and codec.rate_points == sorted(codec.rate_points)
    description = codec.description()
    assert f"via ffmpeg {codec.ffmpeg_version} ({codec.encoder}" in description
    assert re.match(r"(x264 core \d+|x265 \d|libaom \d|SVT-AV1 v\d)", description), description


# ---- reference software through a fake binary ---------------------------------------------------

FAKE = Path(__file__).resolve().parent / "fake_reference_codec.py"
# config name -> (encoder and decoder paths under root, fake_reference_codec.py mode family)
REFERENCE = {
    "vtm": ("bin/EncoderAppStatic", "bin/DecoderAppStatic", "hm"),
    "ecm": ("bin/EncoderAppStatic", "bin/DecoderAppStatic", "hm"),
    "hm": ("bin/TAppEncoderStatic", "bin/TAppDecoderStatic", "hm"),
    "avm": ("aomenc", "aomdec", "aom"),
}


def install_fake(path: Path, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" {mode} "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def reference_codec(name: str, root: Path, gop_size: int = 4, **overrides) -> ReferenceCodec:
    """The real config of ``name`` with fake binaries (and cfg files with GOPSize) under ``root``."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    encoder, decoder, mode = REFERENCE[name]
    install_fake(root / encoder, f"{mode}-enc")
    install_fake(root / decoder, f"{mode}-dec")
    cfg = OmegaConf.load(REPO / "configs" / "codec" / f"{name}.yaml")
    for key, relative in (cfg.cfg or {}).items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        gop = gop_size if key.startswith("ra") else 8
        (root / relative).write_text(
            f"# fake {key} cfg\nGOPSize                       : {gop}\nIntraPeriod : -1\n"
        )
    return instantiate(cfg, root=str(root), **overrides)


@pytest.fixture()
def fake_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_LOG", str(log))
    return log


def calls(log: Path) -> list[list[str]]:
    """The fake binaries' coding calls (the version probe ``ENCODER --help`` left out)."""
    return [argv for argv in (json.loads(line)["argv"] for line in log.read_text().splitlines())
            if argv[1:] != ["--help"]]  # fmt: skip


@needs_ffmpeg
@pytest.mark.parametrize("name", list(REFERENCE))
def test_reference_codec_round_trip(name: str, tiny_raw: CTCSequence, tmp_path: Path, fake_log: Path) -> None:
    codec = reference_codec(name, tmp_path / "root")
    sizes = []
    for qp in (codec.rate_points[0], codec.rate_points[-1]):
        bitstream = tmp_path / "out" / f"{name}_{qp}{codec.suffix}"
        encoded = codec.encode(tiny_raw, qp, STRUCTURES["ra"], bitstream)
        assert encoded.bitstream == bitstream and encoded.seconds > 0
        decoded = codec.decode(bitstream, tiny_raw, tmp_path / "out" / f"{name}_{qp}.yuv")
        recon = read_frames(decoded.reconstruction, tiny_raw.info).astype(int)
        source = raw_sequence_frames(tiny_raw).astype(int)
        assert recon.shape == source.shape and np.abs(recon - source).max() < 64  # right frames, in order
        sizes.append(bitstream.stat().st_size)
    assert sizes[0] > sizes[1]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"{name}_{qp}{suffix}"
        for qp in (codec.rate_points[0], codec.rate_points[-1])
        for suffix in (codec.suffix, ".yuv")
    )  # no temporary folders, partial files or converted inputs left behind
    encode_call = calls(fake_log)[0]
    if name == "avm":
        # aomenc reads y4m: the raw source was converted (frames 2..11 only, so --skip=0)
        assert "--skip=0" in encode_call and "--limit=10" in encode_call and "--qp=110" in encode_call
        assert "--min-gf-interval=4" in encode_call and "--gf-max-pyr-height=2" in encode_call
        assert "--kf-max-dist=8" in encode_call
    else:
        # the raw source is passed as is, with the frames to skip
        assert encode_call[encode_call.index("-i") + 1] == str(tiny_raw.path)
        assert encode_call[encode_call.index("-fs") + 1] == "2"
        assert encode_call[encode_call.index("-ip") + 1] == "8"
        assert encode_call[encode_call.index("-c") + 1].endswith(
            "randomaccess_main.cfg" if name == "hm" else ".cfg"
        )
    assert codec.description().startswith(codec.display_name)
    if name != "avm":  # version read from the (fake) encoder's banner
        assert codec.description().startswith(f"{codec.display_name} 9.9.1 (")


@needs_ffmpeg
def test_reference_command_line_checked_by_the_fake(
    tiny_raw: CTCSequence, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fake encoder verifies the values it was given against what the test expects."""
    codec = reference_codec("vtm", tmp_path / "root")
    expected = {"-wdt": 128, "-hgt": 96, "-fr": 30, "-f": 10, "-fs": 2, "-q": 27, "-ip": 96}
    expected |= {"--InputBitDepth": 8, "--OutputBitDepth": 8, "--InternalBitDepth": 10, "-o": "/dev/null"}
    monkeypatch.setenv("FAKE_EXPECT", json.dumps(expected))
    codec.encode(tiny_raw, 27, CodingStructure("ld", 96, 1), tmp_path / "ld.bin")
    expected |= {"-ip": 1}
    monkeypatch.setenv("FAKE_EXPECT", json.dumps(expected))
    codec.encode(tiny_raw, 27, STRUCTURES["ai"], tmp_path / "ai.bin")
    expected |= {"-ip": 32}  # wrong on purpose: the fake must refuse it
    monkeypatch.setenv("FAKE_EXPECT", json.dumps(expected))
    with pytest.raises(CodecError, match="expected -ip 32, got '1'"):
        codec.encode(tiny_raw, 27, STRUCTURES["ai"], tmp_path / "ai2.bin")
    assert not (tmp_path / "ai2.bin").exists()


@needs_ffmpeg
@pytest.mark.parametrize("name", ["vtm", "avm"])
def test_reference_y4m_and_10bit_sources(name: str, clips_dir: Path, tmp_path: Path, fake_log: Path) -> None:
    sequence = clip(clips_dir, "rooftop_pq_10bit", 5, start=3)
    codec = reference_codec(name, tmp_path / "root")
    bitstream = tmp_path / f"roof{codec.suffix}"
    codec.encode(sequence, codec.rate_points[0], STRUCTURES["ld"], bitstream)
    decoded = codec.decode(bitstream, sequence, tmp_path / "roof.yuv")
    recon = read_frames(decoded.reconstruction, sequence.info).astype(int)
    assert np.abs(recon - source_frames(sequence).astype(int)).max() < 16
    argv = calls(fake_log)[0]
    if name == "vtm":  # VTM reads raw: the y4m was converted (frames 3..7, so -fs 0), 10-bit
        assert argv[argv.index("-fs") + 1] == "0" and "--InputBitDepth=10" in argv
    else:  # aomenc reads the y4m itself and skips 3 frames
        assert str(sequence.path) in argv and "--skip=3" in argv and "--input-bit-depth=10" in argv


def test_reference_absent_binary(tmp_path: Path) -> None:
    codec = reference_codec("vtm", tmp_path / "root", encoder_bin=str(tmp_path / "nowhere" / "EncoderApp"))
    with pytest.raises(
        CodecError, match=r"VTM encoder not found at '.*nowhere/EncoderApp': set codec\.encoder_bin="
    ):
        codec.check_structure(STRUCTURES["ra"])
    codec = reference_codec("hm", tmp_path / "root2", decoder_bin="bin/NoDecoder")
    with pytest.raises(
        CodecError, match=r"HM decoder not found at '.*root2/bin/NoDecoder': set codec\.decoder_bin="
    ):
        codec.check_structure(STRUCTURES["ra"])


@needs_ffmpeg
def test_reference_failing_encoder_leaves_no_bitstream(
    tiny_raw: CTCSequence, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    codec = reference_codec("vtm", tmp_path / "root")
    monkeypatch.setenv("FAKE_FAIL", "1")
    out = tmp_path / "out"
    with pytest.raises(CodecError, match="(?s)exit code 1.*out of memory at POC 2.*encoding POC 1") as error:
        codec.encode(tiny_raw, 32, STRUCTURES["ra"], out / "x.bin")
    assert "VTM encoding tiny at QP 32" in str(error.value) and "command: " in str(error.value)
    assert list(out.iterdir()) == []  # no bitstream, no partial file, no work folder


@needs_ffmpeg
def test_reference_decoder_losing_a_frame(
    tiny_raw: CTCSequence, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    codec = reference_codec("hm", tmp_path / "root")
    codec.encode(tiny_raw, 32, STRUCTURES["ld"], tmp_path / "x.bin")
    monkeypatch.setenv("FAKE_DROP", "1")
    with pytest.raises(CodecError, match="decoded 9 frames but 10 were coded"):
        codec.decode(tmp_path / "x.bin", tiny_raw, tmp_path / "x.yuv")
    assert not (tmp_path / "x.yuv").exists()


def test_reference_structure_and_template_problems(tiny_raw: CTCSequence, tmp_path: Path) -> None:
    codec = reference_codec("vtm", tmp_path / "root", gop_size=32)
    with pytest.raises(CodecError, match="codes GOPs of 32 frames but the structure asks for 16"):
        codec.check_structure(CodingStructure("ra", 32, 16))
    codec.check_structure(CodingStructure("ra", 64, 32))
    no_ai = reference_codec("vtm", tmp_path / "root", cfg={"ai": None})  # merged over the config
    with pytest.raises(CodecError, match="not configured for 'ai'"):
        no_ai.check_structure(STRUCTURES["ai"])
    missing_cfg = reference_codec("vtm", tmp_path / "root", cfg={"ld": "cfg/absent.cfg"})
    with pytest.raises(CodecError, match="cfg for 'ld' not found"):
        missing_cfg.check_structure(STRUCTURES["ld"])
    bad = reference_codec("vtm", tmp_path / "root", encode_command=["{encoder_bin}", "-q", "{quantiser}"])
    with pytest.raises(CodecError, match=r"unknown placeholder \{quantiser\}"):
        bad.encode(tiny_raw, 32, STRUCTURES["ld"], tmp_path / "x.bin")
    with pytest.raises(CodecError, match="integer QP in \\[0, 63\\]"):
        ReferenceCodec("vtm", "EncoderApp", "DecoderApp", [], [], rate_points=[22, 70], rate_range=[0, 63])
    assert not (tmp_path / "x.bin").exists()


@needs_ffmpeg
@pytest.mark.slow
@pytest.mark.parametrize("name", list(CODECS))
def test_ctc_random_access_gop16(name: str, tmp_path: Path) -> None:
    """configs/structure/ra.yaml (GOP 16, intra period 32) on 34 frames: intra pictures at 0 and 32."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    path = tmp_path / "clip_64x64.yuv"
    subprocess.run(
        [FFMPEG, "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=30", "-frames:v", "34"]
        + ["-pix_fmt", "yuv420p", "-f", "rawvideo", str(path)],
        check=True,
    )
    sequence = CTCSequence("clip", "synthetic", path, VideoInfo(64, 64, 8, 30.0, 34))
    structure = instantiate(OmegaConf.load(REPO / "configs" / "structure" / "ra.yaml"))
    codec = make_codec(name)
    bitstream = tmp_path / f"ra{codec.suffix}"
    codec.encode(sequence, codec.rate_points[2], structure, bitstream)
    codec.decode(bitstream, sequence, tmp_path / "ra.yuv")
    types = pict_types(bitstream, codec.muxer)
    assert [i for i, t in enumerate(types) if t == "I"] == [0, 32]
    if codec.muxer == "obu":
        assert av1_hidden_frames(bitstream)[0] >= 4  # a 4-level alt-ref pyramid in the first GOP
    else:
        assert types[16] == "P" and set(types[1:16]) == {"B"}


@needs_ffmpeg
def test_reference_description_is_the_same_before_and_after_encoding(
    tiny_raw: CTCSequence, tmp_path: Path
) -> None:
    """A point's description is its identity in the point store: read from the banner before the first
    encode (``--help``), it names the version for the first point as for the later ones and the next run."""
    codec = reference_codec("vtm", tmp_path / "root")
    before = codec.description()
    assert before.startswith(f"{codec.display_name} 9.9.1 (")
    codec.encode(tiny_raw, codec.rate_points[0], STRUCTURES["ra"], tmp_path / "a.bin")
    assert codec.description() == before == reference_codec("vtm", tmp_path / "root").description()
    missing = reference_codec("vtm", tmp_path / "root")
    missing.encoder_bin = str(tmp_path / "nowhere" / "EncoderApp")
    assert "version unknown" in missing.description()
