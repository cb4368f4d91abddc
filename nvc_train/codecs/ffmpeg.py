"""Conventional anchors through ffmpeg: libx264, libx265, libaom-av1 and libsvtav1.

Each encoder is a :class:`FFmpegCodec` subclass that maps a :class:`CodingStructure` onto the
encoder's own options (the mapping is code; presets, rate points and paths are config, see
``configs/codec/{x264,x265,aom,svtav1}.yaml``)::

    source (.y4m / raw .yuv) --ffmpeg--> encoder (constant QP, structure flags)
        --> elementary stream (.h264 / .hevc Annex B, .obu low-overhead AV1), SEI removed
        --ffmpeg--> raw .yuv at the source's pix_fmt, every frame kept (passthrough), counted

Why these choices:

* **Bits are those of the elementary stream.** No container, and no encoder-info SEI: x264 writes its
  whole option string into every stream and x265 about 2 KB of settings, which is a third of a
  low-rate stream on a short, small clip. SEI NAL units are dropped with ffmpeg's ``filter_units``
  bitstream filter (decoding does not need them) and x265 is told ``info=0`` as well.
* **Constant QP**, so a rate point is a quantiser, as in the CTC (x264/x265 ``qp``, libaom ``crf`` with
  ``-b:v 0`` = constant-quality mode, SVT-AV1 ``-qp`` = CQP with adaptive quantisation off).
* **The structure is honoured, not approximated silently**: no scene-cut intra frames, ``keyint`` =
  intra period, ld without reordering, ra with a fixed mini-GOP of ``gop_size`` frames; what an
  encoder cannot do raises :class:`CodecError` in :meth:`FFmpegCodec.check_structure`, and what it
  does differently from the CTC reference structure is returned in ``EncodeResult.extra["notes"]``.
* **Frames are matched by index.** The decoder runs with ``-fps_mode passthrough`` (elementary
  streams carry no timestamps, so any frame-rate logic could drop or duplicate frames) and a decoded
  frame count other than the coded one is an error.
* Files appear atomically: ffmpeg writes to a hidden ``.<name>.partial`` beside the target, which is
  renamed when complete and removed on any failure.

The helpers at the top (running a tool, reading a source window, counting raw frames) are shared
with :mod:`nvc_train.codecs.reference`.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from nvc_train.codecs.base import Codec, CodecError, DecodeResult, EncodeResult, RatePoint
from nvc_train.structure import CodingStructure

if TYPE_CHECKING:
    from nvc_train.ctc import CTCSequence
    from nvc_train.video.frame import VideoInfo

TAIL_LINES = 20

# ---- helpers shared with the reference-software codecs --------------------------------------------


def output_tail(text: str | None, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` non-empty lines of a tool's output: where encoders put the actual error."""
    kept = [line for line in (text or "").splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def partial_path(path: Path) -> Path:
    """The hidden name a file is written under until it is complete (same folder: atomic rename)."""
    return path.with_name(f".{path.name}.partial")


def run_tool(
    cmd: list[str],
    what: str,
    timeout_s: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``cmd``, returning the finished process and its wall-clock seconds.

    A missing or non-executable binary, a timeout or a non-zero exit becomes a :class:`CodecError`
    that says ``what`` was being done and ends with the tail of the tool's stderr (and stdout, which
    is where the HM / VTM family print their errors) plus the command line, so the user can rerun it.
    """
    full_env = None if env is None else {**os.environ, **env}
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout_s,
            env=full_env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (FileNotFoundError, PermissionError) as error:
        raise CodecError(f"{what}: cannot run {cmd[0]!r}: {error}") from error
    except subprocess.TimeoutExpired as error:
        raise CodecError(f"{what}: timed out after {timeout_s} s\ncommand: {shlex.join(cmd)}") from error
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        parts = [f"{what}: {Path(cmd[0]).name} failed with exit code {proc.returncode}"]
        if output_tail(proc.stderr):
            parts.append("stderr (last lines):\n" + output_tail(proc.stderr))
        if output_tail(proc.stdout):
            parts.append("stdout (last lines):\n" + output_tail(proc.stdout, TAIL_LINES // 2))
        parts.append("command: " + shlex.join(cmd))
        raise CodecError("\n".join(parts))
    return proc, seconds


def rate_text(fps: float) -> str:
    """A frame rate as an exact ffmpeg rational: 30 -> '30/1', 29.97... -> '30000/1001'."""
    rate = Fraction(fps).limit_denominator(1001)
    return f"{rate.numerator}/{rate.denominator}"


_Y4M_DEPTHS = {"420": 8, "420jpeg": 8, "420mpeg2": 8, "420paldv": 8, "420p10": 10}


def read_y4m_header(path: Path) -> tuple[int, int, int]:
    """(width, height, bit depth) from a .y4m stream header; only 4:2:0 is accepted.

    Read here (a few bytes) rather than trusting the registry, because ffmpeg would otherwise
    convert a 10-bit file to an 8-bit registry entry (or the reverse) without a word.
    """
    with open(path, "rb") as handle:
        line = handle.readline(1024)
    if not line.startswith(b"YUV4MPEG2 "):
        raise CodecError(f"{path} is not a YUV4MPEG2 (.y4m) file")
    fields = {token[:1]: token[1:] for token in line.decode("ascii", "replace").split()[1:]}
    try:
        width, height = int(fields["W"]), int(fields["H"])
    except (KeyError, ValueError) as error:
        raise CodecError(f"{path}: y4m header without a valid size: {line[:80]!r}") from error
    chroma = fields.get("C", "420")
    if chroma not in _Y4M_DEPTHS:
        raise CodecError(f"{path}: chroma format C{chroma} is not supported (4:2:0, 8 or 10 bit only)")
    return width, height, _Y4M_DEPTHS[chroma]


def check_source(sequence: CTCSequence) -> Path:
    """The sequence's file, after checking that it exists and agrees with the sequence metadata."""
    info = sequence.info
    path = Path(sequence.path)
    if info.num_frames <= 0:
        raise CodecError(f"{sequence.name}: no frames to code (info.num_frames={info.num_frames})")
    if sequence.start_frame < 0:
        raise CodecError(f"{sequence.name}: start_frame must be >= 0, got {sequence.start_frame}")
    if not path.is_file():
        raise CodecError(f"source of {sequence.name} not found: {path}")
    if is_y4m(path):
        found = read_y4m_header(path)
        expected = (info.width, info.height, info.bit_depth)
        if found != expected:
            raise CodecError(
                f"{path}: the y4m header says {found[0]}x{found[1]} {found[2]}-bit but the sequence "
                f"metadata says {expected[0]}x{expected[1]} {expected[2]}-bit"
            )
    else:
        available = path.stat().st_size // info.frame_bytes
        last = sequence.start_frame + info.num_frames
        if last > available:
            raise CodecError(
                f"{path} holds {available} frames of {info.width}x{info.height} {info.pix_fmt}, but frames "
                f"{sequence.start_frame}..{last - 1} are to be coded"
            )
    return path


def is_y4m(path: Path) -> bool:
    return path.suffix.lower() == ".y4m"


def source_args(sequence: CTCSequence) -> list[str]:
    """ffmpeg input + selection options that yield exactly the frames to code, at the source pix_fmt.

    A .y4m is read by ffmpeg's y4m demuxer; anything else is raw planar 4:2:0 described by the
    metadata. ``start_frame`` is honoured with a frame-index ``trim`` (never a timestamp seek).
    """
    info = sequence.info
    path = check_source(sequence)
    if is_y4m(path):
        args = ["-f", "yuv4mpegpipe", "-i", str(path)]
    else:
        args = ["-f", "rawvideo", "-pix_fmt", info.pix_fmt, "-video_size", f"{info.width}x{info.height}"]
        args += ["-framerate", rate_text(info.fps), "-i", str(path)]
    args += ["-map", "0:v:0"]
    if sequence.start_frame:
        end = sequence.start_frame + info.num_frames
        args += ["-vf", f"trim=start_frame={sequence.start_frame}:end_frame={end},setpts=PTS-STARTPTS"]
    return [*args, "-frames:v", str(info.num_frames), "-pix_fmt", info.pix_fmt]


def progress_frames(progress: str) -> int | None:
    """The last ``frame=N`` of ffmpeg's ``-progress`` output: frames that went through."""
    counts = re.findall(r"^frame=(\d+)\s*$", progress, flags=re.MULTILINE)
    return int(counts[-1]) if counts else None


def count_raw_frames(path: Path, info: VideoInfo, what: str) -> int:
    """Frames in a raw 4:2:0 file of ``info``'s size and depth; a partial frame is an error."""
    size = path.stat().st_size
    frames, rest = divmod(size, info.frame_bytes)
    if rest:
        raise CodecError(
            f"{what}: {path.name} is {size} bytes, not a whole number of {info.width}x{info.height} "
            f"{info.pix_fmt} frames ({info.frame_bytes} bytes each): wrong size or bit depth?"
        )
    return frames


def check_frame_count(path: Path, info: VideoInfo, what: str) -> None:
    """Raise unless ``path`` holds exactly ``info.num_frames`` frames (frames match by index)."""
    frames = count_raw_frames(path, info, what)
    if frames != info.num_frames:
        raise CodecError(f"{what}: decoded {frames} frames but {info.num_frames} were coded")


def convert_source(
    ffmpeg: str, sequence: CTCSequence, output: Path, fmt: str, timeout_s: float | None
) -> None:
    """Write the frames to code as raw .yuv (``fmt="yuv"``) or .y4m for tools that need that format."""
    info = sequence.info
    if fmt == "yuv":
        out_args = ["-f", "rawvideo"]
    elif fmt == "y4m":
        out_args = ["-f", "yuv4mpegpipe", "-strict", "-1"]  # -strict -1: 10-bit y4m
    else:
        raise CodecError(f"unknown input format {fmt!r}: expected 'yuv' or 'y4m'")
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-progress", "pipe:1"]
    cmd += [*source_args(sequence), *out_args, "-y", str(output)]
    proc, _ = run_tool(cmd, f"converting {sequence.name} to {fmt}", timeout_s)
    if progress_frames(proc.stdout) != info.num_frames:
        raise CodecError(
            f"{sequence.path} holds only {progress_frames(proc.stdout)} frames from frame "
            f"{sequence.start_frame}; {info.num_frames} are to be coded"
        )


def resolve_binary(path: str | os.PathLike[str], what: str, config_key: str, hint: str = "") -> str:
    """Absolute path of an executable given by name (PATH lookup) or path; else a CodecError with the fix."""
    found = shutil.which(str(path))
    if found is None:
        raise CodecError(f"{what} not found at {str(path)!r}: set {config_key}=/path/to/it{hint}")
    return found


# ---- the ffmpeg codecs ----------------------------------------------------------------------------


def _params_text(params: Mapping[str, object]) -> str:
    return ":".join(f"{key}={value}" for key, value in params.items())


def _log2(n: int) -> int:
    return int(math.log2(n))


class FFmpegCodec(Codec):
    """A conventional codec run through an ffmpeg binary; subclasses map structures to flags.

    Constructor (= config keys): ``name`` (short name in tables), ``rate_points`` (QP / CRF values),
    ``preset`` (x264/x265 preset name, libaom cpu-used, SVT-AV1 preset number), ``ffmpeg`` (binary
    name or path), ``encoder`` (ffmpeg encoder name), ``params`` (extra encoder-library options
    merged over ours, e.g. ``{aq-mode: 0}``; they can break the structure guarantees),
    ``extra_args`` (extra ffmpeg output options), ``timeout_s`` (per ffmpeg run).
    """

    family = "conventional"

    default_name: ClassVar[str] = "ffmpeg"
    default_encoder: ClassVar[str] = ""
    default_preset: ClassVar[str | int | None] = None
    default_rate_points: ClassVar[tuple[int, ...]] = ()
    preset_option: ClassVar[str] = "-preset"
    params_option: ClassVar[str] = ""
    muxer: ClassVar[str] = ""  # ffmpeg muxer of the elementary stream, also used as demuxer to decode
    suffix: ClassVar[str] = ""
    bitstream_filter: ClassVar[str | None] = None
    rate_label: ClassVar[str] = "QP"
    rate_range: ClassVar[tuple[int, int]] = (0, 51)
    ra_gop_sizes: ClassVar[tuple[int, ...]] = (2, 4, 8, 16)
    library_pattern: ClassVar[str] = ""  # regex on a one-frame encode's output; group 1 = version
    library_label: ClassVar[str] = ""
    env: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        name: str | None = None,
        rate_points: Iterable[RatePoint] | None = None,
        preset: str | int | None = None,
        ffmpeg: str = "ffmpeg",
        encoder: str | None = None,
        params: Mapping[str, object] | None = None,
        extra_args: Iterable[str] = (),
        timeout_s: float | None = None,
    ) -> None:
        self.name = name or self.default_name
        self.rate_points = list(rate_points if rate_points is not None else self.default_rate_points)
        self.preset = preset if preset is not None else self.default_preset
        self.ffmpeg = str(ffmpeg)
        self.encoder = encoder or self.default_encoder
        self.params = dict(params or {})
        self.extra_args = [str(a) for a in extra_args]
        self.timeout_s = timeout_s
        for rate_point in self.rate_points:
            self._check_rate_point(rate_point)
        self._binary: str | None = None
        self._ffmpeg_version = ""
        self._pix_fmts: set[str] = set()
        self._library: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, encoder={self.encoder!r}, preset={self.preset!r})"

    # ---- availability and description ---------------------------------------------------------

    def check_available(self) -> str:
        """Path of a usable ffmpeg that has this encoder; a CodecError saying how to fix it otherwise."""
        if self._binary is not None:
            return self._binary
        binary = resolve_binary(
            self.ffmpeg, "ffmpeg", "codec.ffmpeg", " (Debian/Ubuntu: apt-get install ffmpeg)"
        )
        version, _ = run_tool([binary, "-hide_banner", "-version"], "asking ffmpeg its version", 60)
        match = re.search(r"version (\S+)", version.stdout)
        self._ffmpeg_version = match.group(1) if match else "(unknown version)"
        help_text, _ = run_tool(
            [binary, "-hide_banner", "-h", f"encoder={self.encoder}"], "listing ffmpeg encoders", 60
        )
        if not help_text.stdout.lstrip().startswith(f"Encoder {self.encoder} "):
            library = self.encoder.removeprefix("lib")
            raise CodecError(
                f"{binary} (ffmpeg {self._ffmpeg_version}) has no {self.encoder} encoder: install an ffmpeg "
                f"built with --enable-{self.encoder} (Debian/Ubuntu's ffmpeg package has it) and set "
                f"codec.ffmpeg=/path/to/that/ffmpeg (library: {library})"
            )
        formats = re.search(r"Supported pixel formats:(.*)", help_text.stdout)
        self._pix_fmts = set(formats.group(1).split()) if formats else set()
        self._binary = binary
        return binary

    @property
    def ffmpeg_version(self) -> str:
        self.check_available()
        return self._ffmpeg_version

    def library_version(self) -> str:
        """The encoder library's own version, read from a one-frame encode's banner (cached)."""
        if self._library is None:
            binary = self.check_available()
            cmd = [binary, "-hide_banner", "-nostdin", "-loglevel", "verbose", "-f", "lavfi", "-i"]
            cmd += ["color=black:size=64x64:rate=1", "-frames:v", "1", "-c:v", self.encoder]
            cmd += ["-f", self.muxer, "pipe:1"]
            try:
                proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
                text = (proc.stdout + proc.stderr).decode("latin-1")
            except (OSError, subprocess.TimeoutExpired):
                text = ""
            match = re.search(self.library_pattern, text) if self.library_pattern else None
            self._library = f"{self.library_label} {match.group(1)}" if match else self.encoder
        return self._library

    def description(self) -> str:
        """E.g. 'x265 3.5+1-f0c1022b6 via ffmpeg 5.1.9-0+deb12u1 (libx265, preset medium, QP)'."""
        preset = "" if self.preset is None else f", {self.preset_option.lstrip('-')} {self.preset}"
        return (
            f"{self.library_version()} via ffmpeg {self.ffmpeg_version} "
            f"({self.encoder}{preset}, constant {self.rate_label})"
        )

    # ---- structure and rate point checks ------------------------------------------------------

    def check_structure(self, structure: CodingStructure) -> None:
        self.check_available()
        if structure.kind == "ra" and structure.gop_size not in self.ra_gop_sizes:
            raise CodecError(
                f"{self.name} cannot code random access with a GOP of {structure.gop_size}: "
                f"{self.ra_limit_reason()} (possible: {', '.join(map(str, self.ra_gop_sizes))})"
            )

    def ra_limit_reason(self) -> str:
        return "unsupported mini-GOP size"

    def notes(self, structure: CodingStructure) -> list[str]:
        """How this encoder's rendering of ``structure`` differs from the CTC reference structure."""
        return []

    def _check_rate_point(self, rate_point: RatePoint) -> int:
        low, high = self.rate_range
        try:
            integral = not isinstance(rate_point, bool) and float(rate_point) == int(rate_point)
        except (TypeError, ValueError):
            integral = False
        if not integral or not low <= rate_point <= high:
            raise CodecError(
                f"{self.name}: rate point {rate_point!r} is not an integer {self.rate_label} "
                f"in [{low}, {high}]"
            )
        return int(rate_point)

    def _check_pix_fmt(self, info: VideoInfo) -> None:
        if self._pix_fmts and info.pix_fmt not in self._pix_fmts:
            raise CodecError(
                f"{self.name}: this ffmpeg's {self.encoder} cannot encode {info.pix_fmt} "
                f"({info.bit_depth}-bit); it supports {', '.join(sorted(self._pix_fmts))}. Use a build of "
                f"the library with high bit depth support."
            )

    # ---- encoder flags (subclasses) -----------------------------------------------------------

    def structure_options(
        self, structure: CodingStructure, qp: int, info: VideoInfo
    ) -> tuple[list[str], dict[str, object]]:
        """(ffmpeg encoder options, encoder-library params) for one encode."""
        raise NotImplementedError

    def encoder_args(self, structure: CodingStructure, qp: int, info: VideoInfo) -> list[str]:
        """Everything after the input selection: encoder, preset, rate, structure, SEI removal."""
        options, params = self.structure_options(structure, qp, info)
        args = ["-c:v", self.encoder]
        if self.preset is not None:
            args += [self.preset_option, str(self.preset)]
        args += options
        params = {**params, **self.params}
        if params:
            args += [self.params_option, _params_text(params)]
        if self.bitstream_filter:
            args += ["-bsf:v", self.bitstream_filter]
        return args + self.extra_args

    # ---- the codec protocol -------------------------------------------------------------------

    def encode(
        self, sequence: CTCSequence, rate_point: RatePoint, structure: CodingStructure, bitstream: Path
    ) -> EncodeResult:
        binary = self.check_available()
        info = sequence.info
        structure = structure.resolve(info.fps)
        self.check_structure(structure)
        qp = self._check_rate_point(rate_point)
        self._check_pix_fmt(info)
        what = f"{self.name} encoding {sequence.name} at {self.rate_label} {qp} ({structure})"
        bitstream = Path(bitstream)
        bitstream.parent.mkdir(parents=True, exist_ok=True)
        partial = partial_path(bitstream)
        cmd = [binary, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error", "-progress", "pipe:1"]
        cmd += source_args(sequence)
        cmd += self.encoder_args(structure, qp, info)
        cmd += ["-f", self.muxer, "-y", str(partial)]
        try:
            proc, seconds = run_tool(cmd, what, self.timeout_s, self.env)
            encoded = progress_frames(proc.stdout)
            if encoded != info.num_frames:
                raise CodecError(
                    f"{what}: {encoded} frames were encoded but {info.num_frames} are to be coded "
                    f"(does {sequence.path} hold frames {sequence.start_frame}.."
                    f"{sequence.start_frame + info.num_frames - 1}?)"
                )
            if not partial.is_file() or partial.stat().st_size == 0:
                raise CodecError(f"{what}: ffmpeg exited cleanly but wrote no bitstream")
            os.replace(partial, bitstream)
        finally:
            partial.unlink(missing_ok=True)
        extra = {
            "command": shlex.join(cmd).replace(str(partial), str(bitstream)),
            "structure": str(structure),
        }
        notes = self.notes(structure)
        if notes:
            extra["notes"] = notes
        return EncodeResult(bitstream=bitstream, seconds=seconds, extra=extra)

    def decode(self, bitstream: Path, sequence: CTCSequence, output: Path) -> DecodeResult:
        binary = self.check_available()
        bitstream, output = Path(bitstream), Path(output)
        if not bitstream.is_file():
            raise CodecError(f"{self.name}: bitstream not found: {bitstream}")
        info = sequence.info
        what = f"{self.name} decoding {bitstream.name} ({sequence.name})"
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = partial_path(output)
        cmd = [binary, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "error"]
        cmd += ["-f", self.muxer, "-i", str(bitstream), "-map", "0:v:0", *self._passthrough_args()]
        cmd += ["-f", "rawvideo", "-pix_fmt", info.pix_fmt, "-y", str(partial)]
        try:
            _, seconds = run_tool(cmd, what, self.timeout_s)
            if not partial.is_file():
                raise CodecError(f"{what}: ffmpeg exited cleanly but wrote no frames")
            check_frame_count(partial, info, what)
            os.replace(partial, output)
        finally:
            partial.unlink(missing_ok=True)
        return DecodeResult(reconstruction=output, seconds=seconds)

    def _passthrough_args(self) -> list[str]:
        # -fps_mode appeared in ffmpeg 5.1 (-vsync, its predecessor, is gone from 7.0).
        match = re.match(r"n?(\d+)\.(\d+)", self.ffmpeg_version)
        if match and (int(match.group(1)), int(match.group(2))) < (5, 1):
            return ["-vsync", "passthrough"]
        return ["-fps_mode", "passthrough"]


class X264Codec(FFmpegCodec):
    """H.264 with libx264: Annex-B stream, every SEI (x264's settings string) removed.

    The rate point is the slice QP at any bit depth (x264's own ``qp`` for 10-bit is 12 higher).
    ld: ``bframes=0``, closed GOP; ra: ``bframes=gop-1``, fixed (``b-adapt=0``) with ``b-pyramid=normal``,
    open GOP at the intra period; ai: ``keyint=1``. Always ``keyint=min-keyint=intra period``,
    ``scenecut=0``, ``qp=<rate point>``. x264 allows at most 16 B frames, so ra GOP 32 is refused.
    """

    default_name = "x264"
    default_encoder = "libx264"
    default_preset = "medium"
    default_rate_points = (22, 27, 32, 37)
    params_option = "-x264-params"
    muxer = "h264"
    suffix = ".h264"
    bitstream_filter = "filter_units=remove_types=6"  # SEI
    ra_gop_sizes = (2, 4, 8, 16)
    library_pattern = r"x264 - core (\d+ r\d+ [0-9a-f]+)"
    library_label = "x264 core"

    def ra_limit_reason(self) -> str:
        return "x264 allows at most 16 consecutive B frames (GOP 17)"

    def structure_options(
        self, structure: CodingStructure, qp: int, info: VideoInfo
    ) -> tuple[list[str], dict[str, object]]:
        keyint = structure.keyint(info.num_frames)
        # x264's qp is QP' (QP + 6 * (bit depth - 8)): 10-bit qp=22 would write slice QP 10, 12 steps
        # finer than x265's qp=22. Shift it so that a rate point is the slice QP for every codec.
        qp_prime = qp + 6 * (info.bit_depth - 8)
        params: dict[str, object] = {"qp": qp_prime, "keyint": keyint, "min-keyint": keyint, "scenecut": 0}
        if structure.kind == "ra":
            params |= {"bframes": structure.gop_size - 1, "b-adapt": 0, "b-pyramid": "normal", "open-gop": 1}
        else:
            params |= {"bframes": 0, "open-gop": 0}
        return [], params

    def notes(self, structure: CodingStructure) -> list[str]:
        if structure.kind == "ra":
            return ["x264's b-pyramid keeps one reference B frame per mini-GOP, not a dyadic hierarchy"]
        return []


class X265Codec(FFmpegCodec):
    """HEVC with libx265: Annex-B stream, ``info=0`` and every SEI removed.

    Flags as for :class:`X264Codec` (``b-pyramid=1``; main10 for 10-bit input), in ``-x265-params``.
    """

    default_name = "x265"
    default_encoder = "libx265"
    default_preset = "medium"
    default_rate_points = (22, 27, 32, 37)
    params_option = "-x265-params"
    muxer = "hevc"
    suffix = ".hevc"
    bitstream_filter = "filter_units=remove_types=39|40"  # prefix and suffix SEI
    ra_gop_sizes = (2, 4, 8, 16)
    library_pattern = r"HEVC encoder version (\S+)"
    library_label = "x265"

    def ra_limit_reason(self) -> str:
        return "x265 allows at most 16 consecutive B frames (GOP 17)"

    def structure_options(
        self, structure: CodingStructure, qp: int, info: VideoInfo
    ) -> tuple[list[str], dict[str, object]]:
        keyint = structure.keyint(info.num_frames)
        params: dict[str, object] = {
            "qp": qp,
            "keyint": keyint,
            "min-keyint": keyint,
            "scenecut": 0,
            "info": 0,  # no settings SEI (~2 KB per stream)
            "log-level": "error",
        }
        if structure.kind == "ra":
            params |= {"bframes": structure.gop_size - 1, "b-adapt": 0, "b-pyramid": 1, "open-gop": 1}
        else:
            params |= {"bframes": 0, "open-gop": 0}
        return [], params

    def notes(self, structure: CodingStructure) -> list[str]:
        if structure.kind == "ra":
            return ["x265's b-pyramid keeps one reference B frame per mini-GOP, not a dyadic hierarchy"]
        return []


class AomAV1Codec(FFmpegCodec):
    """AV1 with libaom (``-crf`` + ``-b:v 0``: constant-quality mode), low-overhead OBU stream.

    ld: ``lag-in-frames 0``, ``auto-alt-ref 0`` (no hidden alt-ref frames, display order = coding
    order); ra: alt-ref pyramid with a fixed golden-frame interval of ``gop_size`` and pyramid height
    log2(gop_size); ai: ``-g 1``. Key frames every intra period (``-g`` = ``-keyint_min``).
    ``preset`` is libaom's ``cpu-used`` (0 slowest .. 8 fastest).
    """

    default_name = "aom"
    default_encoder = "libaom-av1"
    default_preset = 6
    default_rate_points = (27, 35, 43, 51)
    preset_option = "-cpu-used"
    params_option = "-aom-params"
    muxer = "obu"
    suffix = ".obu"
    rate_label = "CRF"
    rate_range = (0, 63)
    ra_gop_sizes = (2, 4, 8, 16, 32)
    library_pattern = r"\[libaom-av1 @ [^\]]+\] v(\d\S*)"
    library_label = "libaom"

    def ra_limit_reason(self) -> str:
        return "libaom's golden-frame interval is at most 32 frames (lag-in-frames <= 35)"

    def structure_options(
        self, structure: CodingStructure, qp: int, info: VideoInfo
    ) -> tuple[list[str], dict[str, object]]:
        keyint = structure.keyint(info.num_frames)
        args = ["-crf", str(qp), "-b:v", "0", "-g", str(keyint), "-keyint_min", str(keyint)]
        if structure.kind == "ra":
            gop = structure.gop_size
            args += ["-lag-in-frames", "35", "-auto-alt-ref", "1"]
            height = _log2(gop)
        else:
            # libaom 3.6's one-pass lag-0 constant-quality mode lets the inter-frame quantiser drift
            # away from the crf (bits barely change from crf 35 to 55) unless the golden-frame
            # interval is fixed; with it, inter frames get exactly qindex = 4 * crf.
            gop, height = 16, 4
            args += ["-lag-in-frames", "0", "-auto-alt-ref", "0"]
        params = {
            "min-gf-interval": gop,
            "max-gf-interval": gop,
            "gf-min-pyr-height": height,
            "gf-max-pyr-height": height,
        }
        return args, params

    def notes(self, structure: CodingStructure) -> list[str]:
        if structure.kind == "ra":
            return [
                "intra frames at the intra period are closed-GOP key frames: ffmpeg's libaom wrapper "
                "cannot enable forward key frames (enable-fwd-kf is not settable through -aom-params)"
            ]
        return []


class SvtAV1Codec(FFmpegCodec):
    """AV1 with SVT-AV1 (``-qp``: CQP, adaptive quantisation off), low-overhead OBU stream.

    ld: ``pred-struct=1`` (SVT's low-delay mode, no hidden frames); ra: ``pred-struct=2`` with
    ``hierarchical-levels=log2(gop_size)`` (GOP 4-32), forward key frames (open GOP) for GOP 16 - the
    only size SVT-AV1 1.4 supports them for - and closed key frames otherwise; ai: ``-g 1``.
    ``scd=0`` (no scene-change key frames), ``-g`` = intra period.
    """

    default_name = "svtav1"
    default_encoder = "libsvtav1"
    default_preset = 8
    default_rate_points = (27, 35, 43, 51)
    params_option = "-svtav1-params"
    muxer = "obu"
    suffix = ".obu"
    rate_range = (1, 63)
    ra_gop_sizes = (4, 8, 16, 32)
    library_pattern = r"SVT-AV1 Encoder Lib (v\S+)"
    library_label = "SVT-AV1"
    env = {"SVT_LOG": "1"}  # errors only: SVT-AV1 prints its banner on stderr whatever ffmpeg's log level

    def ra_limit_reason(self) -> str:
        return "SVT-AV1 supports 2 to 5 hierarchical levels (mini-GOP 4 to 32)"

    def structure_options(
        self, structure: CodingStructure, qp: int, info: VideoInfo
    ) -> tuple[list[str], dict[str, object]]:
        args = ["-qp", str(qp), "-g", str(structure.keyint(info.num_frames))]
        params: dict[str, object] = {"scd": 0}
        if structure.kind == "ld":
            params |= {"pred-struct": 1, "irefresh-type": 2}
        elif structure.kind == "ra":
            open_gop = structure.gop_size == 16
            params |= {
                "pred-struct": 2,
                "hierarchical-levels": _log2(structure.gop_size),
                "irefresh-type": 1 if open_gop else 2,
            }
        return args, params

    def notes(self, structure: CodingStructure) -> list[str]:
        if structure.kind == "ld":
            return [
                "SVT-AV1 (1.4 at least) warns that its low-delay mode is work in progress, 'not to be "
                "used for benchmarking until fully implemented'"
            ]
        if structure.kind == "ra" and structure.gop_size != 16:
            return ["closed-GOP key frames: SVT-AV1 supports forward key frames only with GOP 16"]
        return []
