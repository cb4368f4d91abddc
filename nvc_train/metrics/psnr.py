"""PSNR per plane and 6:1:1 PSNR-YUV on integer code values.

Computed from the integer planes in float64 with data range ``2**bit_depth - 1`` (255 or 1023), so
it matches ffmpeg's ``psnr`` filter on the same frames. Identical planes have an infinite PSNR, which
would make every mean infinite; every per-plane value is therefore clipped to :data:`PSNR_CAP_DB`
(also finite MSEs whose PSNR would exceed it, so the cap never makes PSNR non-monotonic in MSE).
At 100 dB the cap sits far above any coded quality (a single code-value error in a 1080p 8-bit luma
plane is ~111 dB, one in a CIF plane ~98 dB), so it only changes lossless or near-lossless frames.
"""

from __future__ import annotations

import math

import numpy as np

from nvc_train.metrics.aggregate import combine_yuv
from nvc_train.metrics.common import check_pair
from nvc_train.video.frame import YUVFrame

#: Upper bound of every per-plane PSNR, in dB (identical planes give exactly this value).
PSNR_CAP_DB = 100.0


def plane_mse(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Mean squared error of two integer planes, exact in float64 (sums of squared codes < 2**53)."""
    if reference.shape != distorted.shape:
        raise ValueError(f"plane shapes differ: {reference.shape} vs {distorted.shape}")
    diff = reference.astype(np.float64).ravel()
    diff -= distorted.ravel()
    return float(np.dot(diff, diff)) / diff.size


def mse_to_psnr(mse: float, max_value: int) -> float:
    """PSNR in dB for an MSE on code values with peak ``max_value``, clipped to :data:`PSNR_CAP_DB`."""
    if mse <= 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(max_value * max_value / mse))


def plane_psnr(reference: np.ndarray, distorted: np.ndarray, max_value: int) -> float:
    """PSNR of one plane of code values (``max_value`` = 255 for 8-bit, 1023 for 10-bit)."""
    return mse_to_psnr(plane_mse(reference, distorted), max_value)


def frame_psnr(reference: YUVFrame, distorted: YUVFrame) -> dict[str, float]:
    """Per-plane PSNR of one frame and their 6:1:1 combination.

    Returns ``psnr_y``, ``psnr_u``, ``psnr_v`` and ``psnr_yuv`` = (6 Y + U + V) / 8 of the per-plane
    values of this frame (the sequence value is then the mean over frames, see ``aggregate``).
    """
    check_pair(reference, distorted)
    peak = reference.max_value
    y, u, v = (plane_psnr(r, d, peak) for r, d in zip(reference.planes, distorted.planes, strict=True))
    return {"psnr_y": y, "psnr_u": u, "psnr_v": v, "psnr_yuv": combine_yuv(y, u, v)}
