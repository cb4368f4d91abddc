"""Throughput of our metrics on one core against ffmpeg's own filters on the same frames.

Not a test: a script that prints figures. For CIF (the real ``dog`` clip, all its frames) and 1080p
(a real clip scaled to 1920x1080 with ffmpeg, a few frames), each distorted by a real x265 encode
(qp 37), it measures frames per second of

- PSNR-YUV (ours, numpy float64)          vs ffmpeg's ``psnr`` filter,
- MS-SSIM Y+U+V (ours, pytorch-msssim)    vs ffmpeg's ``ssim`` filter (single-scale: the nearest
  ffmpeg counterpart) and libvmaf's ``float_ms_ssim`` feature,
- VMAF (ours: :func:`vmaf_per_frame`)     vs a bare ffmpeg ``libvmaf`` command,

all on one core (``torch.set_num_threads(1)``, ``OMP_NUM_THREADS=1``, ffmpeg ``-threads 1`` and one
filter thread, libvmaf ``n_threads=1``). "ours compute" is the metric alone on frames already in
memory; "ours e2e" adds reading both files with ``open_video``; ffmpeg figures are whole-command wall
times (start-up and reading both raw files included), best of ``--repeats``. The ratio is
ours e2e / ffmpeg (above 1: ours is faster).

    .venv/bin/python bench/metrics_throughput.py [--clips ../shared/data/clips]
"""

from __future__ import annotations

import os

# One core for numpy's BLAS too; must be set before numpy is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIPS = REPO_ROOT.parent / "shared" / "data" / "clips"
CIF_CLIP = "dog_352x288_32f.y4m"
HD_SOURCE_CLIP = "cockatoo_640x360_24f.y4m"


def _run(command: list[str]) -> None:
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _best_of(repeats: int, work: Callable[..., object], *args: object, **kwargs: object) -> float:
    """Smallest wall time of ``repeats`` runs (the machine is shared; the minimum is the least noisy)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        work(*args, **kwargs)
        best = min(best, time.perf_counter() - started)
    return best


def _raw_args(info) -> list[str]:
    return ["-f", "rawvideo", "-pix_fmt", info.pix_fmt, "-s", f"{info.width}x{info.height}", "-r", "30"]


def _prepare(ffmpeg: str, clips: Path, work: Path, frames_1080p: int):
    """Raw reference and x265-qp37 reconstruction for CIF and 1080p; returns [(label, info, ref, dist)]."""
    from nvc_train.video.frame import VideoInfo

    cases = []
    cif_ref = work / "cif_ref.yuv"
    _run([ffmpeg, "-y", "-i", str(clips / CIF_CLIP), "-f", "rawvideo", "-pix_fmt", "yuv420p", str(cif_ref)])
    cases.append(("CIF 352x288", VideoInfo(352, 288), cif_ref))
    hd_ref = work / "hd_ref.yuv"
    _run([
        ffmpeg, "-y", "-i", str(clips / HD_SOURCE_CLIP), "-frames:v", str(frames_1080p),
        "-vf", "scale=1920:1080:flags=lanczos", "-f", "rawvideo", "-pix_fmt", "yuv420p", str(hd_ref),
    ])  # fmt: skip
    cases.append(("1080p 1920x1080", VideoInfo(1920, 1080), hd_ref))

    prepared = []
    for label, info, ref in cases:
        bitstream, dist = ref.with_suffix(".hevc"), ref.with_name(ref.stem.replace("ref", "dist") + ".yuv")
        _run([
            ffmpeg, "-y", *_raw_args(info), "-i", str(ref), "-c:v", "libx265", "-preset", "ultrafast",
            "-x265-params", "qp=37:log-level=error", "-f", "hevc", str(bitstream),
        ])  # fmt: skip
        _run([ffmpeg, "-y", "-i", str(bitstream), "-f", "rawvideo", "-pix_fmt", "yuv420p", str(dist)])
        prepared.append((label, info, ref, dist))
    return prepared


def _each_pair(metric: Callable, pairs) -> None:
    for reference, distorted in pairs:
        metric(reference, distorted)


def _read_pairs(info, ref: Path, dist: Path):
    """Frame pairs streamed from the two files, as ``measure_sequence`` reads them."""
    from nvc_train.video.readers import open_video

    return zip(open_video(ref, info).read(), open_video(dist, info).read(), strict=True)


def _ffmpeg_filter(binary: str, info, ref: Path, dist: Path, graph: str) -> list[str]:
    return [
        binary, "-y", "-hide_banner", "-nostdin", "-loglevel", "error",
        "-filter_threads", "1", "-filter_complex_threads", "1",
        "-threads", "1", *_raw_args(info), "-i", str(dist),
        "-threads", "1", *_raw_args(info), "-i", str(ref),
        "-lavfi", f"[0:v][1:v]{graph}", "-f", "null", "-",
    ]  # fmt: skip


Row = tuple[str, str, float | None, float | None, float | None, str]


def _bench_case(label: str, info, ref: Path, dist: Path, ffmpeg: str, vmaf_ffmpeg: str | None, repeats: int):
    """Rows (input, metric, ours fps, ours e2e fps, ffmpeg fps, counterpart) for one input."""
    from nvc_train.metrics import frame_msssim, frame_psnr, vmaf_per_frame

    pairs = list(_read_pairs(info, ref, dist))
    count = len(pairs)
    frame_msssim(*pairs[0])  # warm-up: the first call imports pytorch-msssim and builds kernels
    ms_ssim_counterparts = [(ffmpeg, "ssim", "ssim filter (1-scale)")]
    if vmaf_ffmpeg:
        feature = "libvmaf=n_threads=1:feature=name=float_ms_ssim"
        ms_ssim_counterparts.append((vmaf_ffmpeg, feature, "libvmaf float_ms_ssim (+vmaf)"))

    rows: list[Row] = []
    for name, metric, counterparts in (
        ("PSNR-YUV", frame_psnr, [(ffmpeg, "psnr", "psnr filter")]),
        ("MS-SSIM", frame_msssim, ms_ssim_counterparts),
    ):
        ours = count / _best_of(repeats, _each_pair, metric, pairs)
        ours_e2e = count / _best_of(repeats, lambda m: _each_pair(m, _read_pairs(info, ref, dist)), metric)
        for binary, graph, what in counterparts:
            theirs = count / _best_of(repeats, _run, _ffmpeg_filter(binary, info, ref, dist, graph))
            rows.append((label, name, ours, ours_e2e, theirs, what))

    if vmaf_ffmpeg is None:
        rows.append((label, "VMAF", None, None, None, "no ffmpeg with libvmaf found"))
    else:
        ours_vmaf = count / _best_of(repeats, vmaf_per_frame, ref, info, dist, ffmpeg=vmaf_ffmpeg, threads=1)
        command = _ffmpeg_filter(vmaf_ffmpeg, info, ref, dist, "libvmaf=n_threads=1")
        theirs = count / _best_of(repeats, _run, command)
        rows.append((label, "VMAF v0.6.1", None, ours_vmaf, theirs, "libvmaf (bare command)"))
    return count, rows


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--clips", type=Path, default=DEFAULT_CLIPS, help="folder of the real .y4m test clips"
    )
    parser.add_argument("--frames-1080p", type=int, default=10, help="frames of the scaled 1080p input")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; the fastest is reported")
    args = parser.parse_args(argv)

    missing = [name for name in (CIF_CLIP, HD_SOURCE_CLIP) if not (args.clips / name).is_file()]
    if missing:
        sys.exit(f"error: real clips {', '.join(missing)} not found in {args.clips} (pass --clips FOLDER)")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        sys.exit("error: ffmpeg (with libx265, psnr and ssim) not found on PATH")

    import torch

    from nvc_train.metrics import find_vmaf_ffmpeg

    torch.set_num_threads(1)
    vmaf_ffmpeg = find_vmaf_ffmpeg(None)
    print(
        f"one core: torch threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    )
    print(f"ffmpeg (x265, psnr, ssim): {ffmpeg}; ffmpeg with libvmaf: {vmaf_ffmpeg}")

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="nvc_bench_metrics_") as tmp:
        for label, info, ref, dist in _prepare(ffmpeg, args.clips, Path(tmp), args.frames_1080p):
            count, case_rows = _bench_case(label, info, ref, dist, ffmpeg, vmaf_ffmpeg, args.repeats)
            print(f"{label}: {count} frames, x265 qp 37 reconstruction")
            rows += case_rows

    header = ["input", "metric", "ours fps", "ours e2e fps", "ffmpeg fps", "e2e/ffmpeg", "ffmpeg counterpart"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for label, name, ours, ours_e2e, theirs, what in rows:
        ratio = f"{ours_e2e / theirs:.2f}" if ours_e2e and theirs else "-"
        print(f"| {label} | {name} | {_fmt(ours)} | {_fmt(ours_e2e)} | {_fmt(theirs)} | {ratio} | {what} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
