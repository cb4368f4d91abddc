"""The one place where per-frame metric values become per-sequence values.

Every codec, neural or conventional, goes through :func:`aggregate`, and every table prints
:data:`AGGREGATION_RULE` in its caption, so two rows of a table are always averaged the same way
(the contrast is a per-frame PSNR mean in one tool and a PSNR of the mean MSE in another).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

#: Weights of Y, U and V in the combined YUV value of PSNR and MS-SSIM (6:1:1, DCVC / NVC practice).
YUV_WEIGHTS: tuple[float, float, float] = (6 / 8, 1 / 8, 1 / 8)

AGGREGATION_RULE = (
    "per-sequence values are the mean of per-frame values; "
    "PSNR-YUV = (6 PSNR-Y + PSNR-U + PSNR-V)/8 per frame (MS-SSIM-YUV likewise)"
)


def combine_yuv(y: float, u: float, v: float) -> float:
    """6:1:1 weighted value of three per-plane values of one frame (NaN if any plane is NaN)."""
    wy, wu, wv = YUV_WEIGHTS
    return wy * y + wu * u + wv * v


def _is_missing(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def aggregate(per_frame: Mapping[str, Sequence[float | None] | None]) -> dict[str, float | None]:
    """Per-sequence value of each metric: the arithmetic mean of its per-frame values.

    A column that is ``None``, empty, or has a missing (None / NaN) value in any frame stays empty
    (``None``): a mean over the frames that happened to be measurable would be biased and would not
    compare with another codec's full mean, so no partial mean is ever reported.
    """
    means: dict[str, float | None] = {}
    for name, values in per_frame.items():
        if values is None or len(values) == 0 or any(_is_missing(v) for v in values):
            means[name] = None
        else:
            means[name] = math.fsum(float(v) for v in values) / len(values)
    return means
