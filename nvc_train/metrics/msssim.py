"""MS-SSIM per plane (pytorch-msssim) and its 6:1:1 YUV combination.

Size policy. pytorch-msssim always uses 5 scales and needs the smaller side of a plane to exceed
``(win_size - 1) * 2**4``; with the standard 11-tap Gaussian window (sigma 1.5) that is 160 samples,
which the chroma planes of CIF (176x144) and HEVC class D (208x120) are not. Rather than dropping
chroma from MS-SSIM-YUV for those classes, the window shrinks with the plane, deterministically from
its size alone (see :func:`msssim_window`): 11 taps when the smaller side is > 160, 9 when > 128,
7 when > 96; sigma stays 1.5 and the 5 scales and their weights are unchanged. A plane whose smaller
side is <= 96 (a 7-tap window is the shortest that still spans +-2 sigma) has no MS-SSIM: its value
is NaN, one notice is logged, and the YUV value (and the sequence column) is left empty. Because the
window depends only on the plane size, every codec measured on a sequence gets the same metric.
"""

from __future__ import annotations

import math

import numpy as np

from nvc_train.metrics.aggregate import combine_yuv
from nvc_train.metrics.common import check_pair, notice_once
from nvc_train.video.frame import YUVFrame

#: Window sizes tried from the standard one down; the first that fits the plane is used.
MSSSIM_WINDOWS: tuple[int, ...] = (11, 9, 7)
MSSSIM_SIGMA = 1.5
_SCALES = 5
_MIN_SIDE = (MSSSIM_WINDOWS[-1] - 1) * 2 ** (_SCALES - 1)


def msssim_window(height: int, width: int) -> int | None:
    """Gaussian window length used for a plane of this size, or None when MS-SSIM is not defined.

    The largest of :data:`MSSSIM_WINDOWS` with ``min(height, width) > (win - 1) * 2**4`` (the
    condition pytorch-msssim asserts for its 5 scales).
    """
    side = min(height, width)
    for win in MSSSIM_WINDOWS:
        if side > (win - 1) * 2 ** (_SCALES - 1):
            return win
    return None


def _to_batch(planes: list[np.ndarray], max_value: int):
    """Stack same-size integer planes as a float32 (N, 1, H, W) tensor in [0, 1]."""
    import torch

    stacked = np.stack(planes).astype(np.float32)
    stacked /= float(max_value)
    return torch.from_numpy(stacked)[:, None]


def planes_msssim(references: list[np.ndarray], distorteds: list[np.ndarray], max_value: int) -> list[float]:
    """MS-SSIM of each pair of same-size planes (data range 1.0 on [0, 1] values), or NaN per plane.

    NaN when the planes are too small for :func:`msssim_window` (the caller gives the notice).
    """
    import torch
    from pytorch_msssim import ms_ssim

    win = msssim_window(*references[0].shape)
    if win is None:
        return [math.nan] * len(references)
    with torch.no_grad():
        values = ms_ssim(
            _to_batch(references, max_value),
            _to_batch(distorteds, max_value),
            data_range=1.0,
            size_average=False,
            win_size=win,
            win_sigma=MSSSIM_SIGMA,
        )
    return [float(v) for v in values.double()]


def frame_msssim(reference: YUVFrame, distorted: YUVFrame) -> dict[str, float]:
    """``msssim_y``, ``msssim_u``, ``msssim_v`` and 6:1:1 ``msssim_yuv`` of one frame (NaN if undefined)."""
    check_pair(reference, distorted)
    small = [
        name
        for name, plane in (("luma", reference.y), ("chroma", reference.u))
        if msssim_window(*plane.shape) is None
    ]
    if small:
        notice_once(
            f"MS-SSIM not computed for the {' and '.join(small)} planes of "
            f"{reference.width}x{reference.height} frames: a plane's smaller side must exceed "
            f"{_MIN_SIDE}; those columns are left empty"
        )
    peak = reference.max_value
    (y,) = planes_msssim([reference.y], [distorted.y], peak)
    u, v = planes_msssim([reference.u, reference.v], [distorted.u, distorted.v], peak)
    return {"msssim_y": y, "msssim_u": u, "msssim_v": v, "msssim_yuv": combine_yuv(y, u, v)}
