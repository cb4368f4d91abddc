"""The one place where metric values are averaged: frames into a sequence, sequences into a class.

Every codec, neural or conventional, goes through :func:`aggregate`, and every table prints
:data:`AGGREGATION_RULE` in its caption, so two rows of a table are always averaged the same way
(the contrast is a per-frame PSNR mean in one tool and a PSNR of the mean MSE in another).
Class means (BD-rate per class, the RD plots' class curves, the CTC callback's scalars) go through
:func:`class_mean`, which refuses a partial mean by the same rule.

This module imports nothing beyond the standard library, so the BD-rate module (numpy only) and
the reporting tools can use it alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

#: Weights of Y, U and V in the combined YUV value of PSNR and MS-SSIM (6:1:1, DCVC / NVC practice).
YUV_WEIGHTS: tuple[float, float, float] = (6 / 8, 1 / 8, 1 / 8)

AGGREGATION_RULE = (
    "per-sequence values are the mean of per-frame values; "
    "PSNR-YUV = (6 PSNR-Y + PSNR-U + PSNR-V)/8 per frame (MS-SSIM-YUV likewise); "
    "a class value is the mean over its sequences, left empty when any sequence lacks it"
)


def combine_yuv(y: float, u: float, v: float) -> float:
    """6:1:1 weighted value of three per-plane values of one frame (NaN if any plane is NaN)."""
    wy, wu, wv = YUV_WEIGHTS
    return wy * y + wu * u + wv * v


def _is_missing(value: float | str | None) -> bool:
    """None, NaN, and the empty cell of a points.csv row (what CSV makes of None)."""
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def aggregate(per_frame: Mapping[str, Sequence[float | None] | None]) -> dict[str, float | None]:
    """Per-sequence value of each metric: the arithmetic mean of its per-frame values.

    A column that is ``None``, empty, or has a missing (None / NaN) value in any frame stays empty
    (``None``): a mean over the frames that happened to be measurable would be biased and would not
    compare with another codec's full mean, so no partial mean is ever reported.
    """
    return {name: _strict_mean(values or ()) for name, values in per_frame.items()}


def class_mean(values: Iterable[float | str | None]) -> float | None:
    """Mean of per-sequence values over a class (or any set of sequences), by :func:`aggregate`'s rule.

    ``None`` when there is no value or any value is missing (None, NaN, an empty CSV cell): a mean
    over the sequences that happened to have the value would describe another set of sequences than
    the other codecs' means, so it is never reported. Numbers given as text (CSV) are accepted.
    """
    return _strict_mean(values)


def _strict_mean(values: Iterable[float | str | None]) -> float | None:
    """The mean both levels share: exact summation (``fsum``), None if empty or any value missing."""
    values = list(values)
    if not values or any(_is_missing(v) for v in values):
        return None
    return math.fsum(float(v) for v in values) / len(values)
