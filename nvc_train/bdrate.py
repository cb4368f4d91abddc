"""Bjøntegaard-delta metrics: BD-rate and BD-quality (BD-PSNR), per sequence and per class.

Why this module exists and how it computes
------------------------------------------
Codec comparisons under common test conditions reduce two rate-distortion curves (an anchor and a
test, usually four points each, e.g. HEVC QP 22/27/32/37) to one number: the average relative
bit-rate difference at equal quality (BD-rate, G. Bjøntegaard, VCEG-M33, 2001) or the average
quality difference at equal rate (BD-PSNR). Both interpolate one curve variable as a function of
the other, integrate the difference of the two interpolants over the interval where *both* curves
are defined (the overlap of their ranges; no extrapolation) and divide by its length.

* BD-rate interpolates log-rate over quality; the mean log-rate difference ``m`` becomes a percent
  ``(exp(m) - 1) * 100`` (negative = the test codec needs fewer bits). The natural log is used
  throughout; the base cancels out in the percent, so results equal the log10 formulation.
* BD-quality interpolates quality over log-rate (positive = the test codec is better).

Two interpolations are offered:

``"pchip"`` (default)
    Piecewise cubic Hermite interpolation with shape-preserving (Fritsch-Butland) slopes, the
    practice of the JCT-VC / JVET CTC Excel sheets (JCTVC-L1100, JVET-T2010). It follows the points
    without the overshoot a global cubic can show, so one odd point cannot swing the result. Each
    cubic piece is integrated in closed form, so there is no sampling error.
``"cubic"``
    The original VCEG-M33 method: a least-squares third-order polynomial (``np.polyfit`` degree 3,
    exact through four points) integrated analytically. Kept because older papers report it.

Validation is strict (:class:`BDRateError`), because a silently wrong BD-rate in a results table is
worse than none: every curve needs at least four finite points, positive rates, and quality that
rises strictly with rate once the points are sorted by rate.

Per-class numbers (:func:`class_bd_rate`, :func:`class_bd_quality`) are computed per sequence and
then averaged (the CTC practice, and the default), or, on request, from the class-averaged curve;
:func:`averaging_caption` gives the sentence a results table prints so the rule is never implicit.

This module imports only numpy and :mod:`nvc_train.metrics.aggregate` (not torch, not Lightning)
so reporting tools can use it alone. Class means are :func:`~nvc_train.metrics.aggregate.class_mean`,
the one averaging rule every table and plot uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from nvc_train.metrics.aggregate import class_mean

__all__ = [
    "AVERAGING_CAPTIONS",
    "Averaging",
    "BDRateError",
    "ClassBD",
    "Method",
    "averaging_caption",
    "bd_quality",
    "bd_rate",
    "class_bd_quality",
    "class_bd_rate",
]

Method = Literal["pchip", "cubic"]
Averaging = Literal["sequence", "curve"]

METHODS: tuple[str, ...] = ("pchip", "cubic")
AVERAGINGS: tuple[str, ...] = ("sequence", "curve")
MIN_POINTS = 4

#: Caption text per averaging rule, with ``{quantity}`` standing for "BD-rate" or "BD-PSNR".
#: Tables print it (through :func:`averaging_caption`) so a reader knows which rule produced a number.
AVERAGING_CAPTIONS: Mapping[str, str] = {
    "sequence": "{quantity} per sequence, then averaged over the class",
    "curve": (
        "{quantity} of the class-averaged RD curves (rate and quality averaged per rate point over the "
        "sequences)"
    ),
}

# anchor rates, anchor qualities, test rates, test qualities
RDPair = tuple[ArrayLike, ArrayLike, ArrayLike, ArrayLike]


class BDRateError(ValueError):
    """RD points that cannot give a meaningful Bjøntegaard delta (too few, invalid, no overlap)."""


def averaging_caption(averaging: Averaging = "sequence", quantity: str = "BD-rate") -> str:
    """Return the caption sentence for an averaging rule, e.g. for the footer of a BD-rate table."""
    _check_choice("averaging", averaging, AVERAGINGS)
    return AVERAGING_CAPTIONS[averaging].format(quantity=quantity)


# --------------------------------------------------------------------------------------------------
# Validation


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    """Reject unknown option strings early, naming the allowed ones (typos otherwise pass silently)."""
    if value not in allowed:
        raise BDRateError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, allowed))}")


def _prepare_curve(name: str, rates: ArrayLike, qualities: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validate one RD curve and return it sorted by rate as (rate, quality).

    Sorting makes the input order irrelevant (QP-descending lists are common); the strict
    monotonicity check then guarantees that both directions of interpolation (rate over quality
    and quality over rate) are functions, which BD metrics silently assume.
    """
    rate = np.asarray(rates, dtype=np.float64).reshape(-1)
    quality = np.asarray(qualities, dtype=np.float64).reshape(-1)
    if rate.size != quality.size:
        raise BDRateError(f"{name} curve: {rate.size} rates but {quality.size} quality values")
    if rate.size < MIN_POINTS:
        raise BDRateError(f"{name} curve: {rate.size} points; BD metrics need at least {MIN_POINTS}")
    if not np.all(np.isfinite(rate)):
        raise BDRateError(
            f"{name} curve: non-finite rate(s) at index {np.flatnonzero(~np.isfinite(rate)).tolist()}"
        )
    if not np.all(np.isfinite(quality)):
        bad = np.flatnonzero(~np.isfinite(quality)).tolist()
        raise BDRateError(f"{name} curve: non-finite quality value(s) at index {bad}")
    if np.any(rate <= 0):
        raise BDRateError(f"{name} curve: non-positive rate(s) at index {np.flatnonzero(rate <= 0).tolist()}")

    order = np.argsort(rate, kind="stable")
    rate, quality = rate[order], quality[order]
    for k in range(rate.size - 1):
        if rate[k + 1] <= rate[k] or quality[k + 1] <= quality[k]:
            raise BDRateError(
                f"{name} curve is not monotone: after sorting by rate, point (rate={rate[k]:g}, "
                f"quality={quality[k]:g}) is followed by (rate={rate[k + 1]:g}, quality={quality[k + 1]:g}) "
                f"(input index {int(order[k])} then {int(order[k + 1])}); quality must increase "
                "strictly with rate"
            )
    return rate, quality


def _overlap(x_anchor: np.ndarray, x_test: np.ndarray, axis: str) -> tuple[float, float]:
    """Return the interval where both curves are defined; BD metrics never extrapolate."""
    low = max(float(x_anchor[0]), float(x_test[0]))
    high = min(float(x_anchor[-1]), float(x_test[-1]))
    if not high > low:
        raise BDRateError(
            f"the anchor and test curves do not overlap in {axis} (anchor "
            f"[{x_anchor[0]:g}, {x_anchor[-1]:g}], test [{x_test[0]:g}, {x_test[-1]:g}])"
        )
    return low, high


# --------------------------------------------------------------------------------------------------
# Interpolation and exact integration


def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Node derivatives of the shape-preserving piecewise cubic Hermite interpolant.

    Interior nodes use the weighted harmonic mean of the neighbouring secant slopes (Fritsch &
    Butland 1984), zero where the data turn; the ends use the one-sided three-point formula with
    the usual clamps that keep the end pieces monotone (Moler, *Numerical Computing with MATLAB*,
    ch. 3). This is the interpolant of the CTC Excel sheets and of MATLAB's / SciPy's ``pchip``.
    """
    h = np.diff(x)
    delta = np.diff(y) / h
    n = x.size
    d = np.zeros(n)
    for k in range(1, n - 1):
        if delta[k - 1] * delta[k] > 0:
            w1 = 2.0 * h[k] + h[k - 1]
            w2 = h[k] + 2.0 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / delta[k - 1] + w2 / delta[k])
    d[0] = _pchip_end_slope(h[0], h[1], delta[0], delta[1])
    d[-1] = _pchip_end_slope(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _pchip_end_slope(h0: float, h1: float, delta0: float, delta1: float) -> float:
    """One-sided, shape-preserving slope at an end node (first two intervals seen from that end)."""
    slope = ((2.0 * h0 + h1) * delta0 - h0 * delta1) / (h0 + h1)
    if np.sign(slope) != np.sign(delta0):
        return 0.0
    if np.sign(delta0) != np.sign(delta1) and abs(slope) > abs(3.0 * delta0):
        return 3.0 * delta0
    return float(slope)


def _integrate_pchip(x: np.ndarray, y: np.ndarray, low: float, high: float) -> float:
    """Integral of the pchip interpolant of (x, y) over [low, high] ⊆ [x[0], x[-1]], in closed form.

    Each piece is written as a cubic in the local coordinate ``t = x - x_k`` and its antiderivative
    evaluated at the clipped piece ends, so the result carries no sampling error.
    """
    d = _pchip_slopes(x, y)
    total = 0.0
    for k in range(x.size - 1):
        a, b = max(low, x[k]), min(high, x[k + 1])
        if b <= a:
            continue
        h = x[k + 1] - x[k]
        delta = (y[k + 1] - y[k]) / h
        c0, c1 = y[k], d[k]
        c2 = (3.0 * delta - 2.0 * d[k] - d[k + 1]) / h
        c3 = (d[k] + d[k + 1] - 2.0 * delta) / (h * h)

        def antiderivative(t: float, c0=c0, c1=c1, c2=c2, c3=c3) -> float:
            return t * (c0 + t * (c1 / 2.0 + t * (c2 / 3.0 + t * c3 / 4.0)))

        total += antiderivative(b - x[k]) - antiderivative(a - x[k])
    return float(total)


def _integrate_cubic(x: np.ndarray, y: np.ndarray, low: float, high: float) -> float:
    """Integral over [low, high] of the least-squares cubic through (x, y), as in VCEG-M33."""
    antiderivative = np.polyint(np.polyfit(x, y, 3))
    return float(np.polyval(antiderivative, high) - np.polyval(antiderivative, low))


_INTEGRATORS: dict[str, Callable[[np.ndarray, np.ndarray, float, float], float]] = {
    "pchip": _integrate_pchip,
    "cubic": _integrate_cubic,
}


def _mean_difference(
    x_anchor: np.ndarray,
    y_anchor: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    method: str,
    axis: str,
) -> float:
    """Mean of (test - anchor) interpolants over the overlap of the x ranges: the core BD quantity."""
    _check_choice("method", method, METHODS)
    low, high = _overlap(x_anchor, x_test, axis)
    integrate = _INTEGRATORS[method]
    area = integrate(x_test, y_test, low, high) - integrate(x_anchor, y_anchor, low, high)
    return area / (high - low)


# --------------------------------------------------------------------------------------------------
# Public per-sequence metrics


def bd_rate(
    rate_anchor: ArrayLike,
    quality_anchor: ArrayLike,
    rate_test: ArrayLike,
    quality_test: ArrayLike,
    method: Method = "pchip",
) -> float:
    """BD-rate in percent: the test's average bit-rate change at equal quality (negative = saves bits).

    Log-rate is interpolated over quality on each curve and the difference is averaged over the
    overlap of the two quality ranges. Points may come in any order; the curves may have different
    numbers of points (at least four each). Raises :class:`BDRateError` on invalid input.
    """
    rate_a, quality_a = _prepare_curve("anchor", rate_anchor, quality_anchor)
    rate_t, quality_t = _prepare_curve("test", rate_test, quality_test)
    log_rate_a, log_rate_t = np.log(rate_a), np.log(rate_t)
    mean_log_ratio = _mean_difference(quality_a, log_rate_a, quality_t, log_rate_t, method, "quality")
    return float(np.expm1(mean_log_ratio) * 100.0)


def bd_quality(
    rate_anchor: ArrayLike,
    quality_anchor: ArrayLike,
    rate_test: ArrayLike,
    quality_test: ArrayLike,
    method: Method = "pchip",
) -> float:
    """BD-quality (BD-PSNR for PSNR in dB): the test's average quality gain at equal rate.

    Quality is interpolated over log-rate on each curve and the difference is averaged over the
    overlap of the two log-rate ranges; the result is in the quality's own unit (positive = test
    better). Raises :class:`BDRateError` on invalid input.
    """
    rate_a, quality_a = _prepare_curve("anchor", rate_anchor, quality_anchor)
    rate_t, quality_t = _prepare_curve("test", rate_test, quality_test)
    log_rate_a, log_rate_t = np.log(rate_a), np.log(rate_t)
    return float(_mean_difference(log_rate_a, quality_a, log_rate_t, quality_t, method, "log-rate"))


# --------------------------------------------------------------------------------------------------
# Per-class aggregation


@dataclass(frozen=True)
class ClassBD:
    """One class's BD value, the rule that produced it, and the per-sequence values behind it.

    ``per_sequence`` is filled for both rules, so a table can show the sequences even when the
    class value comes from the averaged curve.
    """

    value: float
    averaging: Averaging
    method: Method
    quantity: str
    per_sequence: dict[str, float] = field(default_factory=dict)

    @property
    def caption(self) -> str:
        """The sentence stating the averaging rule, for the table that prints :attr:`value`."""
        return averaging_caption(self.averaging, self.quantity)


def _average_curves(curves: list[tuple[np.ndarray, np.ndarray]], which: str) -> tuple[np.ndarray, np.ndarray]:
    """Average rate and quality per rate-point index (points sorted by rate) across sequences."""
    counts = {rate.size for rate, _ in curves}
    if len(counts) != 1:
        raise BDRateError(
            f"averaging='curve' needs the same number of {which} points in every sequence; "
            f"got {sorted(counts)}"
        )
    rates = np.array([_mean_of(column, which) for column in zip(*(rate for rate, _ in curves), strict=True)])
    qualities = np.array(
        [_mean_of(column, which) for column in zip(*(quality for _, quality in curves), strict=True)]
    )
    return rates, qualities


def _mean_of(values: Sequence[float], what: str) -> float:
    """:func:`class_mean` of validated per-sequence numbers; a missing one is a BD-rate error."""
    mean = class_mean(float(v) for v in values)
    if mean is None:
        raise BDRateError(f"a {what} value of the class is not a number; the class mean is undefined")
    return mean


def _class_bd(
    metric: Callable[[ArrayLike, ArrayLike, ArrayLike, ArrayLike, Method], float],
    quantity: str,
    per_sequence: Mapping[str, RDPair],
    method: Method,
    averaging: Averaging,
) -> ClassBD:
    """Shared body of :func:`class_bd_rate` and :func:`class_bd_quality`."""
    _check_choice("method", method, METHODS)
    _check_choice("averaging", averaging, AVERAGINGS)
    if not per_sequence:
        raise BDRateError("no sequences given for the class")

    values: dict[str, float] = {}
    anchors: list[tuple[np.ndarray, np.ndarray]] = []
    tests: list[tuple[np.ndarray, np.ndarray]] = []
    for name, (rate_a, quality_a, rate_t, quality_t) in per_sequence.items():
        try:
            values[name] = metric(rate_a, quality_a, rate_t, quality_t, method)
            anchors.append(_prepare_curve("anchor", rate_a, quality_a))
            tests.append(_prepare_curve("test", rate_t, quality_t))
        except BDRateError as error:
            raise BDRateError(f"sequence {name!r}: {error}") from error

    if averaging == "sequence":
        value = _mean_of(list(values.values()), quantity)
    else:
        mean_rate_a, mean_quality_a = _average_curves(anchors, "anchor")
        mean_rate_t, mean_quality_t = _average_curves(tests, "test")
        try:
            value = metric(mean_rate_a, mean_quality_a, mean_rate_t, mean_quality_t, method)
        except BDRateError as error:
            raise BDRateError(f"class-averaged curves: {error}") from error
    return ClassBD(value=value, averaging=averaging, method=method, quantity=quantity, per_sequence=values)


def class_bd_rate(
    per_sequence: Mapping[str, RDPair],
    method: Method = "pchip",
    averaging: Averaging = "sequence",
) -> ClassBD:
    """BD-rate of a sequence class, e.g. HEVC class B, from per-sequence anchor and test curves.

    ``per_sequence`` maps a sequence name to ``(anchor_rates, anchor_qualities, test_rates,
    test_qualities)``. ``averaging="sequence"`` (the CTC practice) averages the per-sequence
    BD-rates; ``averaging="curve"`` computes one BD-rate from the class-averaged curves (rate and
    quality averaged per rate-point index, points sorted by rate), which needs the same number of
    points in every sequence. The two generally differ, hence :attr:`ClassBD.caption`.
    """
    return _class_bd(bd_rate, "BD-rate", per_sequence, method, averaging)


def class_bd_quality(
    per_sequence: Mapping[str, RDPair],
    method: Method = "pchip",
    averaging: Averaging = "sequence",
    quantity: str = "BD-PSNR",
) -> ClassBD:
    """BD-quality of a sequence class, with the same input and averaging rules as :func:`class_bd_rate`.

    ``quantity`` only names the metric in the caption (e.g. "BD-MS-SSIM" when the qualities are
    MS-SSIM in dB).
    """
    return _class_bd(bd_quality, quantity, per_sequence, method, averaging)
