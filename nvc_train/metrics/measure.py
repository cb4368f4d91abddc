"""Measure one decoded sequence against its source: every metric, per frame, then aggregated.

This is the function the evaluation runner calls for every (codec, sequence, rate point), neural
or conventional, so all of them are measured and averaged the same way. Frames are streamed one
pair at a time (a 1080p sequence is never held in memory); VMAF runs in ffmpeg on the files
themselves, in the background while the Python metrics stream.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nvc_train.metrics.aggregate import AGGREGATION_RULE, aggregate
from nvc_train.metrics.common import MetricUnavailable, notice_once
from nvc_train.metrics.lpips import frame_lpips, lpips_unavailable_reason
from nvc_train.metrics.msssim import frame_msssim, msssim_window
from nvc_train.metrics.psnr import frame_psnr
from nvc_train.metrics.vmaf import DEFAULT_VMAF_MODEL, VmafJob, find_vmaf_ffmpeg
from nvc_train.video.frame import VideoInfo

#: Metric families :func:`measure_sequence` knows, and the per-frame columns each one fills.
METRIC_COLUMNS: dict[str, tuple[str, ...]] = {
    "psnr": ("psnr_y", "psnr_u", "psnr_v", "psnr_yuv"),
    "msssim": ("msssim_y", "msssim_u", "msssim_v", "msssim_yuv"),
    "vmaf": ("vmaf",),
    "lpips": ("lpips",),
}


@dataclass
class SequenceScores:
    """Scores of one decoded sequence.

    ``per_frame`` maps each column (``psnr_y`` ... ``lpips``) to its per-frame values, or None when
    the metric was unavailable; ``means`` are the per-sequence values from :func:`aggregate` (None =
    empty cell); ``unavailable`` maps a column or metric to the one-line reason it is empty.
    """

    num_frames: int
    per_frame: dict[str, list[float] | None]
    means: dict[str, float | None]
    unavailable: dict[str, str] = field(default_factory=dict)
    aggregation_rule: str = AGGREGATION_RULE


def _open_pair(reference_path: Path, reference_info: VideoInfo, distorted_path: Path):
    """Readers for the source (with its metadata) and the raw reconstruction (same metadata)."""
    from nvc_train.video.readers import open_video

    # Both readers report the frames present in their file (info.num_frames is not trusted). The
    # reconstruction was written by a decoder at the source's size and depth: its content is checked
    # against nothing (a poor codec's noise is a result to measure, not a mislabelled file).
    return (
        open_video(reference_path, reference_info),
        open_video(distorted_path, reference_info, check_content=False),
    )


def measure_sequence(
    reference_path: str | Path,
    reference_info: VideoInfo,
    distorted_path: str | Path,
    metrics: Sequence[str] = ("psnr", "msssim", "vmaf", "lpips"),
    start_frame: int = 0,
    vmaf_ffmpeg: str | None = None,
    progress: bool = False,
    *,
    num_frames: int | None = None,
    vmaf_model: str = DEFAULT_VMAF_MODEL,
    vmaf_threads: int = 2,
) -> SequenceScores:
    """Measure the raw ``distorted_path`` (same :class:`VideoInfo` as the source) against the source.

    Distorted frame ``i`` is compared with source frame ``start_frame + i`` (matched by index). The
    coded frame count is ``num_frames``, or by default every source frame from ``start_frame`` on;
    the distorted file must hold exactly that many frames, otherwise a ``ValueError`` names both
    counts. Unavailable metrics (no libvmaf, no LPIPS weights, planes too small for MS-SSIM) leave
    their columns empty, with their reason in ``unavailable`` and one logged notice.
    """
    unknown = [m for m in metrics if m not in METRIC_COLUMNS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {', '.join(METRIC_COLUMNS)}")
    if start_frame < 0:
        raise ValueError(f"start_frame must be >= 0, got {start_frame}")
    reference_path, distorted_path = Path(reference_path), Path(distorted_path)
    reference, distorted = _open_pair(reference_path, reference_info, distorted_path)
    available = len(reference) - start_frame
    expected = available if num_frames is None else num_frames
    if expected > available:
        raise ValueError(
            f"frame count mismatch: {expected} frames requested from frame {start_frame}, "
            f"but the reference {reference_path} has {len(reference)} frames"
        )
    if len(distorted) != expected:
        raise ValueError(
            f"frame count mismatch: distorted {distorted_path} has {len(distorted)} frames, "
            f"reference {reference_path} has {expected} frames to compare (from frame {start_frame})"
        )
    if expected == 0:
        raise ValueError(f"nothing to measure: no frames in {distorted_path}")

    unavailable: dict[str, str] = {}
    per_frame: dict[str, list[float] | None] = {c: [] for m in metrics for c in METRIC_COLUMNS[m]}

    use_msssim = "msssim" in metrics
    if use_msssim:
        width, height = reference_info.width, reference_info.height
        planes = ((("msssim_y",), height, width), (("msssim_u", "msssim_v"), height // 2, width // 2))
        for columns, plane_height, plane_width in planes:
            if msssim_window(plane_height, plane_width) is None:
                reason = (
                    f"MS-SSIM not computed: {plane_width}x{plane_height} planes are too small for 5 scales"
                )
                for column in (*columns, "msssim_yuv"):
                    unavailable.setdefault(column, reason)

    use_lpips = "lpips" in metrics
    if use_lpips:
        reason = lpips_unavailable_reason()
        if reason is not None:
            notice_once(reason)
            unavailable["lpips"] = reason
            use_lpips = False

    vmaf_job: VmafJob | None = None
    if "vmaf" in metrics:
        try:
            binary = find_vmaf_ffmpeg(vmaf_ffmpeg)
            vmaf_job = VmafJob(
                reference_path,
                reference_info,
                distorted_path,
                model=vmaf_model,
                ffmpeg=binary,
                threads=vmaf_threads,
                start_frame=start_frame,
                num_frames=expected,
            )
        except MetricUnavailable as error:
            notice_once(str(error))
            unavailable["vmaf"] = str(error)

    try:
        pairs = zip(reference.read(start_frame, expected), distorted.read(0, expected), strict=True)
        if progress:
            from tqdm import tqdm

            pairs = tqdm(pairs, total=expected, desc=f"metrics {distorted_path.name}", unit="frame")
        for ref_frame, dist_frame in pairs:
            values: dict[str, float] = {}
            if "psnr" in metrics:
                values.update(frame_psnr(ref_frame, dist_frame))
            if use_msssim:
                values.update(frame_msssim(ref_frame, dist_frame))
            if use_lpips:
                values["lpips"] = frame_lpips(ref_frame, dist_frame)
            for column, value in values.items():
                per_frame[column].append(value)
        vmaf_scores = vmaf_job.result() if vmaf_job is not None else None
    except BaseException:
        if vmaf_job is not None:
            vmaf_job.cancel()
        raise

    if "vmaf" in metrics:
        per_frame["vmaf"] = vmaf_scores
    for column in unavailable:
        if column in per_frame:
            per_frame[column] = None
    for column, values in per_frame.items():
        if values is not None and any(math.isnan(v) for v in values):
            per_frame[column] = None
    return SequenceScores(
        num_frames=expected, per_frame=per_frame, means=aggregate(per_frame), unavailable=unavailable
    )
