"""Video quality metrics on YUV 4:2:0 against the source, and the one rule that averages them.

PSNR per plane and 6:1:1 (:mod:`.psnr`), MS-SSIM (:mod:`.msssim`), VMAF through an ffmpeg with
libvmaf (:mod:`.vmaf`), LPIPS (:mod:`.lpips`), the per-sequence and per-class averaging
(:mod:`.aggregate`) and :func:`measure_sequence`, which runs them on a decoded file. Importing this
package loads neither torch nor Lightning; torch is imported by the MS-SSIM and LPIPS functions
when they first run.
"""

from nvc_train.metrics.aggregate import AGGREGATION_RULE, YUV_WEIGHTS, aggregate, class_mean, combine_yuv
from nvc_train.metrics.common import MetricUnavailable
from nvc_train.metrics.lpips import frame_lpips, lpips_unavailable_reason, lpips_weights_path
from nvc_train.metrics.measure import METRIC_COLUMNS, SequenceScores, measure_sequence
from nvc_train.metrics.msssim import frame_msssim, msssim_window
from nvc_train.metrics.psnr import PSNR_CAP_DB, frame_psnr, mse_to_psnr, plane_psnr
from nvc_train.metrics.vmaf import find_vmaf_ffmpeg, vmaf_per_frame

__all__ = [
    "AGGREGATION_RULE",
    "METRIC_COLUMNS",
    "PSNR_CAP_DB",
    "YUV_WEIGHTS",
    "MetricUnavailable",
    "SequenceScores",
    "aggregate",
    "class_mean",
    "combine_yuv",
    "find_vmaf_ffmpeg",
    "frame_lpips",
    "frame_msssim",
    "frame_psnr",
    "lpips_unavailable_reason",
    "lpips_weights_path",
    "measure_sequence",
    "mse_to_psnr",
    "msssim_window",
    "plane_psnr",
    "vmaf_per_frame",
]
