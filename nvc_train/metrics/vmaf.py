"""VMAF per frame through an ffmpeg that has libvmaf (its built-in models, no model files needed).

Debian's ffmpeg has no libvmaf; the static ffmpeg of the ``imageio-ffmpeg`` wheel does.
:func:`find_vmaf_ffmpeg` picks the first usable binary; when there is none, :func:`vmaf_per_frame`
raises :class:`MetricUnavailable` with one line saying so and the caller leaves the column empty.

Frames are matched by index, never by timestamp: each input's timestamps are replaced by its frame
number before libvmaf's frame sync, and the number of scores is checked against the frame count.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

from nvc_train.metrics.common import MetricUnavailable, notice_once
from nvc_train.video.frame import VideoInfo

DEFAULT_VMAF_MODEL = "vmaf_v0.6.1"


@lru_cache(maxsize=16)
def _has_libvmaf(binary: str) -> bool:
    """Whether ``binary -filters`` lists a filter named exactly ``libvmaf`` (not ``vmafmotion``)."""
    try:
        listing = subprocess.run(
            [binary, "-hide_banner", "-filters"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return any(line.split()[1:2] == ["libvmaf"] for line in listing.splitlines())


def _imageio_ffmpeg() -> str | None:
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # not installed, or its binary is missing: just one candidate less
        return None


def find_vmaf_ffmpeg(configured: str | None = None) -> str | None:
    """First ffmpeg with libvmaf among: ``configured``, ``ffmpeg`` on PATH, imageio-ffmpeg's binary.

    A configured binary that is unusable is reported (once) before falling back, so a typo in the
    config does not go unnoticed. Returns None when no candidate has libvmaf.
    """
    if configured:
        resolved = shutil.which(configured) or configured
        if _has_libvmaf(resolved):
            return resolved
        notice_once(f"configured ffmpeg {configured!r} is missing or has no libvmaf; looking elsewhere")
    for candidate in (shutil.which("ffmpeg"), _imageio_ffmpeg()):
        if candidate and _has_libvmaf(candidate):
            return candidate
    return None


def _is_raw(path: Path) -> bool:
    """Raw planar 4:2:0 by suffix, as ``open_video`` decides (y4m and containers carry a header)."""
    return path.suffix.lower() == ".yuv"


def _input_args(path: Path, info: VideoInfo) -> list[str]:
    """ffmpeg input options: raw ``.yuv`` gets explicit rawvideo parameters; y4m has its header."""
    if not _is_raw(path):
        return ["-i", str(path)]
    return [
        "-f", "rawvideo",
        "-pix_fmt", info.pix_fmt,
        "-s", f"{info.width}x{info.height}",
        "-r", f"{info.fps:g}",
        "-i", str(path),
    ]  # fmt: skip


def _raw_frame_count(path: Path, info: VideoInfo) -> int | None:
    """Frames in a raw file from its size (None for y4m: the number of scores is checked instead)."""
    if not _is_raw(path):
        return None
    size = path.stat().st_size
    if size % info.frame_bytes:
        raise ValueError(
            f"{path}: {size} bytes is not a whole number of {info.width}x{info.height} "
            f"{info.bit_depth}-bit 4:2:0 frames ({info.frame_bytes} bytes each)"
        )
    return size // info.frame_bytes


def _model_option(model: str) -> str:
    """libvmaf ``model`` value: a built-in version name, or a model file given by path."""
    if model.endswith(".json") or os.sep in model:
        escaped = str(Path(model).resolve()).replace("\\", "\\\\").replace(":", "\\:").replace("'", "\\'")
        return f"path={escaped}"
    return f"version={model}"


class VmafJob:
    """One libvmaf run in the background: start it, do other work, then collect the scores.

    ``measure_sequence`` starts the job before streaming frames through the Python metrics, so on a
    multi-core machine ffmpeg's VMAF and the Python metrics overlap instead of adding up.
    """

    def __init__(
        self,
        reference: Path,
        reference_info: VideoInfo,
        distorted: Path,
        *,
        model: str = DEFAULT_VMAF_MODEL,
        ffmpeg: str | None = None,
        threads: int = 2,
        start_frame: int = 0,
        num_frames: int | None = None,
    ) -> None:
        binary = ffmpeg if ffmpeg is not None else find_vmaf_ffmpeg(None)
        if binary is None:
            raise MetricUnavailable(
                "VMAF not computed: no ffmpeg with libvmaf found (configured path, PATH, imageio-ffmpeg); "
                "install imageio-ffmpeg or set the path of an ffmpeg built with libvmaf"
            )
        if not _has_libvmaf(binary):
            raise MetricUnavailable(f"VMAF not computed: {binary!r} is missing or has no libvmaf filter")
        reference, distorted = Path(reference).resolve(), Path(distorted).resolve()
        for path in (reference, distorted):
            if not path.is_file():
                raise FileNotFoundError(f"VMAF input not found: {path}")
        dist_count = _raw_frame_count(distorted, reference_info)
        self.expected = num_frames if num_frames is not None else dist_count
        if num_frames is not None and dist_count is not None and dist_count != num_frames:
            raise ValueError(
                f"frame count mismatch: {distorted} has {dist_count} frames, expected {num_frames}"
            )

        # Reference: drop frames before start_frame, keep `expected`; both: pts := frame index.
        bounds = [f"start_frame={start_frame}"] if start_frame else []
        if self.expected is not None:
            bounds.append(f"end_frame={start_frame + self.expected}")
        trim = f"trim={':'.join(bounds)}" if bounds else ""
        index_pts = "settb=1/1,setpts=N"
        ref_chain = ",".join(part for part in (trim, index_pts) if part)
        graph = (
            f"[0:v]{index_pts}[dist];[1:v]{ref_chain}[ref];"
            f"[dist][ref]libvmaf=model={_model_option(model)}:n_threads={threads}"
            f":log_fmt=json:log_path=vmaf.json:shortest=1:repeatlast=0"
        )
        self._tmp = tempfile.TemporaryDirectory(prefix="nvc_vmaf_")
        command = [
            binary, "-hide_banner", "-nostdin", "-loglevel", "error",
            "-filter_threads", str(threads), "-filter_complex_threads", str(threads),
            *_input_args(distorted, reference_info),
            *_input_args(reference, reference_info),
            "-lavfi", graph, "-fps_mode", "passthrough", "-f", "null", "-",
        ]  # fmt: skip
        self.command = command
        # cwd = the temp dir, so the log path needs no filter-graph escaping; stderr goes to a file
        # there (a pipe nobody reads while frames stream could fill up and stall ffmpeg).
        self._stderr_path = Path(self._tmp.name) / "ffmpeg.stderr"
        with open(self._stderr_path, "wb") as stderr:
            self._process = subprocess.Popen(
                command, cwd=self._tmp.name, stdout=subprocess.DEVNULL, stderr=stderr
            )

    def result(self) -> list[float]:
        """Wait for ffmpeg and return one VMAF score per distorted frame, in frame order."""
        try:
            self._process.wait()
            if self._process.returncode != 0:
                stderr = self._stderr_path.read_text(errors="replace")
                tail = " | ".join(stderr.strip().splitlines()[-3:])
                raise RuntimeError(f"ffmpeg libvmaf failed (exit {self._process.returncode}): {tail}")
            log = json.loads((Path(self._tmp.name) / "vmaf.json").read_text())
        finally:
            self._tmp.cleanup()
        frames = sorted(log["frames"], key=lambda frame: frame["frameNum"])
        scores = [float(frame["metrics"]["vmaf"]) for frame in frames]
        if self.expected is not None and len(scores) != self.expected:
            raise ValueError(
                f"frame count mismatch: libvmaf scored {len(scores)} frames, expected {self.expected}"
            )
        return scores

    def cancel(self) -> None:
        """Stop the run (the caller failed elsewhere) and remove its temporary files."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._tmp.cleanup()


def vmaf_per_frame(
    reference: Path,
    reference_info: VideoInfo,
    distorted: Path,
    model: str = DEFAULT_VMAF_MODEL,
    ffmpeg: str | None = None,
    threads: int = 2,
    *,
    start_frame: int = 0,
    num_frames: int | None = None,
) -> list[float]:
    """VMAF of each distorted frame against the reference frame of the same index.

    ``.yuv`` files are raw 4:2:0 of ``reference_info``; ``.y4m`` (and container) files are read
    through their header.
    ``start_frame`` skips that many reference frames (the distorted file starts at the coded first
    frame); ``num_frames`` is the expected count, checked against the scores. ``ffmpeg`` is used as
    given (no fallback); None means :func:`find_vmaf_ffmpeg`. Raises :class:`MetricUnavailable` when
    there is no usable binary: never a substitute score.
    """
    job = VmafJob(
        reference,
        reference_info,
        distorted,
        model=model,
        ffmpeg=ffmpeg,
        threads=threads,
        start_frame=start_frame,
        num_frames=num_frames,
    )
    return job.result()
