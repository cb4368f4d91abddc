"""BD-rate / BD-quality: agreement with an independent implementation, exact cases, errors, class rules.

The reference is the ``bjontegaard`` package (FAU-LMS), whose ``pchip`` equals the JVET CTC Excel
sheet and whose ``cubic`` is VCEG-M33. To compare like with like it is called with
``require_matching_points=False`` (curves with 4 vs 5+ points are legal here), ``min_overlap=0``
(its overlap check only warns; ours raises only when there is no overlap at all) and with points
sorted by ascending rate (it only reverses descending input, it does not sort). It works in log10
and returns percent for BD-rate, dB for BD-PSNR; our natural-log result is mathematically identical.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from nvc_train.bdrate import (
    AVERAGING_CAPTIONS,
    BDRateError,
    averaging_caption,
    bd_quality,
    bd_rate,
    class_bd_quality,
    class_bd_rate,
)

METHODS = ("pchip", "cubic")

# Realistic RD curves (rate, quality), listed in QP order 22/27/32/... i.e. descending rate, the way
# logs are written; several overlap only partly, several have 4 vs 5+ points.
CURVE_PAIRS: dict[str, tuple[list[float], list[float], list[float], list[float]]] = {
    # x265 presets, kbps / PSNR-Y (the bjontegaard README data): near-full overlap, 4 vs 4.
    "x265_presets": (
        [9487.76, 4593.60, 2486.44, 1358.24],
        [40.037, 38.615, 36.845, 34.851],
        [9787.80, 4469.00, 2451.52, 1356.24],
        [40.121, 38.651, 36.970, 34.987],
    ),
    # HEVC class B 1080p, HM anchor vs a VTM-like test (~29 % saving), QP 22/27/32/37, 4 vs 4.
    "classB_hm_vs_vtm": (
        [25843.1, 7215.4, 3302.7, 1642.9],
        [40.71, 38.42, 36.33, 34.12],
        [19012.6, 5411.8, 2445.3, 1215.6],
        [40.86, 38.55, 36.41, 34.18],
    ),
    # Neural codec with 5 points whose quality range ends below the anchor's top: partial overlap.
    "neural_5_vs_hm_4": (
        [25843.1, 7215.4, 3302.7, 1642.9],
        [40.71, 38.42, 36.33, 34.12],
        [9120.0, 5230.5, 3010.2, 1770.4, 1020.8],
        [39.30, 38.05, 36.72, 35.20, 33.61],
    ),
    # Test shifted to higher quality with 6 points: only about half of each range overlaps.
    "six_points_high_range": (
        [3120.0, 1604.2, 842.7, 455.3],
        [38.90, 36.71, 34.52, 32.25],
        [9650.0, 6012.3, 3880.4, 2502.8, 1650.1, 1080.6],
        [42.10, 41.02, 39.81, 38.40, 36.95, 35.31],
    ),
    # Test worse than the anchor (positive BD-rate), bpp / PSNR of an UVG-like sequence, 4 vs 4.
    "uvg_bpp_worse": (
        [0.1523, 0.0761, 0.0402, 0.0221],
        [38.21, 36.63, 35.02, 33.35],
        [0.1780, 0.0893, 0.0461, 0.0251],
        [38.02, 36.51, 34.88, 33.30],
    ),
    # Low-delay-like 5 vs 5 in bpp with crossing curves (test better at high rate only).
    "crossing_5_vs_5": (
        [0.2410, 0.1302, 0.0715, 0.0398, 0.0221],
        [39.10, 37.42, 35.71, 33.96, 32.20],
        [0.2205, 0.1240, 0.0731, 0.0425, 0.0247],
        [39.35, 37.58, 35.70, 33.85, 32.01],
    ),
    # MS-SSIM in dB (-10 log10(1 - MS-SSIM)), a flatter curve, 4 vs 5.
    "msssim_db_4_vs_5": (
        [6210.0, 3105.0, 1560.0, 790.0],
        [19.82, 18.05, 16.21, 14.36],
        [5020.0, 3350.0, 2200.0, 1380.0, 860.0],
        [20.11, 19.02, 17.85, 16.53, 15.20],
    ),
}


def _ascending(rates: list[float], qualities: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Sort points by rate, as the reference package expects (it does not sort)."""
    order = np.argsort(rates)
    return np.asarray(rates)[order], np.asarray(qualities)[order]


@pytest.fixture(scope="module")
def bjontegaard():
    return pytest.importorskip(
        "bjontegaard",
        reason="independent reference `bjontegaard` not installed (pip install bjontegaard)",
    )


# --------------------------------------------------------------------------------------------------
# (a) agreement with an independent implementation


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pair", sorted(CURVE_PAIRS))
def test_bd_rate_matches_bjontegaard(bjontegaard, pair: str, method: str) -> None:
    rate_a, qual_a, rate_t, qual_t = CURVE_PAIRS[pair]
    reference = bjontegaard.bd_rate(
        *_ascending(rate_a, qual_a),
        *_ascending(rate_t, qual_t),
        method=method,
        require_matching_points=False,
        min_overlap=0,
    )
    assert bd_rate(rate_a, qual_a, rate_t, qual_t, method=method) == pytest.approx(reference, abs=1e-3)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pair", sorted(CURVE_PAIRS))
def test_bd_quality_matches_bjontegaard(bjontegaard, pair: str, method: str) -> None:
    rate_a, qual_a, rate_t, qual_t = CURVE_PAIRS[pair]
    reference = bjontegaard.bd_psnr(
        *_ascending(rate_a, qual_a),
        *_ascending(rate_t, qual_t),
        method=method,
        require_matching_points=False,
        min_overlap=0,
    )
    assert bd_quality(rate_a, qual_a, rate_t, qual_t, method=method) == pytest.approx(reference, abs=1e-3)


def test_pairs_cover_partial_overlap_and_unequal_counts() -> None:
    """Guard the fixture itself: the agreement tests must exercise the hard cases the brief names."""
    partial = 0
    for _rate_a, qual_a, _rate_t, qual_t in CURVE_PAIRS.values():
        low, high = max(min(qual_a), min(qual_t)), min(max(qual_a), max(qual_t))
        union = max(max(qual_a), max(qual_t)) - min(min(qual_a), min(qual_t))
        partial += (high - low) / union < 0.75
    assert len(CURVE_PAIRS) >= 6
    assert partial >= 2
    assert any(len(p[0]) != len(p[2]) for p in CURVE_PAIRS.values())
    assert any(len(p[2]) >= 5 for p in CURVE_PAIRS.values())


# --------------------------------------------------------------------------------------------------
# (b) hand-derivable values


@pytest.mark.parametrize("method", METHODS)
def test_rate_scaled_by_0_9_is_minus_ten_percent(method: str) -> None:
    """Log-rate differs by exactly log(0.9) at every quality, so both interpolants differ by it too."""
    rate_a, qual_a, _, _ = CURVE_PAIRS["classB_hm_vs_vtm"]
    rate_t = [0.9 * r for r in rate_a]
    assert bd_rate(rate_a, qual_a, rate_t, qual_a, method=method) == pytest.approx(-10.0, abs=1e-9)
    assert bd_rate(rate_t, qual_a, rate_a, qual_a, method=method) == pytest.approx(100 / 0.9 - 100, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_quality_shift_gives_bd_psnr(method: str) -> None:
    rate_a, qual_a, _, _ = CURVE_PAIRS["neural_5_vs_hm_4"]
    qual_t = [q + 0.5 for q in qual_a]
    assert bd_quality(rate_a, qual_a, rate_a, qual_t, method=method) == pytest.approx(0.5, abs=1e-9)
    assert bd_quality(rate_a, qual_t, rate_a, qual_a, method=method) == pytest.approx(-0.5, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_linear_log_rate_with_partial_overlap_is_exact(method: str) -> None:
    """Both interpolants reproduce a straight line, so sampling the two curves at different,
    partly overlapping qualities still gives exactly the rate ratio (here 0.8 -> -20 %)."""
    qual_a = np.array([32.0, 34.5, 36.0, 39.0])
    qual_t = np.array([35.0, 36.2, 37.9, 40.0, 42.5])
    rate_a = np.exp(0.23 * qual_a - 1.0)
    rate_t = 0.8 * np.exp(0.23 * qual_t - 1.0)
    assert bd_rate(rate_a, qual_a, rate_t, qual_t, method=method) == pytest.approx(-20.0, abs=1e-9)
    # Quality over log-rate is a line with slope 1/0.23: a rate factor 0.8 is worth -ln(0.8)/0.23 dB.
    expected_db = -np.log(0.8) / 0.23
    assert bd_quality(rate_a, qual_a, rate_t, qual_t, method=method) == pytest.approx(expected_db, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_identical_curves_and_point_order(method: str) -> None:
    rate_a, qual_a, rate_t, qual_t = CURVE_PAIRS["six_points_high_range"]
    assert bd_rate(rate_a, qual_a, rate_a, qual_a, method=method) == pytest.approx(0.0, abs=1e-12)
    shuffled = [3, 0, 5, 1, 4, 2]
    rate_s = [rate_t[i] for i in shuffled]
    qual_s = [qual_t[i] for i in shuffled]
    assert bd_rate(rate_a, qual_a, rate_s, qual_s, method=method) == pytest.approx(
        bd_rate(rate_a, qual_a, rate_t, qual_t, method=method), abs=1e-12
    )


def test_module_imports_neither_torch_nor_lightning() -> None:
    code = (
        "import sys, nvc_train.bdrate; "
        "bad = [m for m in ('torch', 'lightning', 'pytorch_lightning') if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --------------------------------------------------------------------------------------------------
# (c) errors


GOOD_R = [1000.0, 2000.0, 4000.0, 8000.0]
GOOD_Q = [33.0, 35.0, 37.0, 39.0]


@pytest.mark.parametrize(
    ("rates", "qualities", "message"),
    [
        ([1000.0, 2000.0, 4000.0], [33.0, 35.0, 37.0], "at least 4"),
        ([1000.0, 2000.0, 4000.0, 8000.0], [33.0, 35.0, 37.0], "4 rates but 3 quality"),
        ([1000.0, float("nan"), 4000.0, 8000.0], GOOD_Q, "non-finite rate"),
        ([1000.0, 2000.0, float("inf"), 8000.0], GOOD_Q, "non-finite rate"),
        (GOOD_R, [33.0, 35.0, float("nan"), 39.0], "non-finite quality"),
        ([0.0, 2000.0, 4000.0, 8000.0], GOOD_Q, "non-positive rate"),
        ([-5.0, 2000.0, 4000.0, 8000.0], GOOD_Q, "non-positive rate"),
        (GOOD_R, [33.0, 36.0, 35.0, 39.0], "not monotone"),
        (GOOD_R, [33.0, 35.0, 35.0, 39.0], "not monotone"),
        ([1000.0, 2000.0, 2000.0, 8000.0], GOOD_Q, "not monotone"),
    ],
)
@pytest.mark.parametrize("which", ["anchor", "test"])
@pytest.mark.parametrize("metric", [bd_rate, bd_quality])
def test_invalid_curves_raise(metric, which: str, rates, qualities, message: str) -> None:
    args = (rates, qualities, GOOD_R, GOOD_Q) if which == "anchor" else (GOOD_R, GOOD_Q, rates, qualities)
    with pytest.raises(BDRateError, match=message) as info:
        metric(*args)
    assert str(info.value).startswith(f"{which} curve")
    assert isinstance(info.value, ValueError)


def test_non_monotone_message_names_the_points() -> None:
    with pytest.raises(BDRateError) as info:
        bd_rate(GOOD_R, GOOD_Q, [8000.0, 4000.0, 2000.0, 1000.0], [39.0, 36.0, 37.0, 33.0])
    text = str(info.value)
    assert "test curve" in text
    assert "rate=2000" in text and "quality=37" in text
    assert "rate=4000" in text and "quality=36" in text
    assert "input index 2 then 1" in text


def test_no_overlap_raises() -> None:
    high_q = [q + 10.0 for q in GOOD_Q]
    with pytest.raises(BDRateError, match="do not overlap in quality"):
        bd_rate(GOOD_R, GOOD_Q, GOOD_R, high_q)
    high_r = [r * 100.0 for r in GOOD_R]
    with pytest.raises(BDRateError, match="do not overlap in log-rate"):
        bd_quality(GOOD_R, GOOD_Q, high_r, GOOD_Q)
    # Touching at a single point is no overlap either.
    with pytest.raises(BDRateError, match="do not overlap"):
        bd_rate(GOOD_R, GOOD_Q, GOOD_R, [39.0, 40.0, 41.0, 42.0])


def test_unknown_method_raises() -> None:
    with pytest.raises(BDRateError, match="unknown method 'akima'"):
        bd_rate(GOOD_R, GOOD_Q, GOOD_R, GOOD_Q, method="akima")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# (d) class averaging


def _synthetic_class() -> dict[str, tuple[list[float], list[float], list[float], list[float]]]:
    """Two sequences: one where the test saves exactly 10 %, one where it saves exactly 30 %."""
    easy_r, easy_q = [400.0, 800.0, 1600.0, 3200.0], [36.0, 38.0, 40.0, 42.0]
    hard_r, hard_q = [4000.0, 9000.0, 20000.0, 45000.0], [30.0, 32.5, 35.0, 37.0]
    return {
        "Easy": (easy_r, easy_q, [0.9 * r for r in easy_r], easy_q),
        "Hard": (hard_r, hard_q, [0.7 * r for r in hard_r], hard_q),
    }


@pytest.mark.parametrize("method", METHODS)
def test_class_sequence_averaging(method: str) -> None:
    result = class_bd_rate(_synthetic_class(), method=method)
    assert result.averaging == "sequence"
    assert result.method == method
    assert result.per_sequence == pytest.approx({"Easy": -10.0, "Hard": -30.0}, abs=1e-9)
    assert result.value == pytest.approx(-20.0, abs=1e-9)
    assert result.caption == "BD-rate per sequence, then averaged over the class"


@pytest.mark.parametrize("method", METHODS)
def test_class_curve_averaging(method: str) -> None:
    per_sequence = _synthetic_class()
    result = class_bd_rate(per_sequence, method=method, averaging="curve")
    assert result.averaging == "curve"
    assert result.per_sequence == pytest.approx({"Easy": -10.0, "Hard": -30.0}, abs=1e-9)
    # Built by hand: mean rate and mean quality per rate-point index, then one BD-rate.
    easy, hard = per_sequence["Easy"], per_sequence["Hard"]
    mean = [[(a + b) / 2 for a, b in zip(easy[i], hard[i], strict=True)] for i in range(4)]
    assert result.value == pytest.approx(bd_rate(*mean, method=method), abs=1e-12)
    # The high-rate sequence dominates the averaged rates, so the two rules give different numbers.
    assert result.value < -25.0
    assert "class-averaged RD curves" in result.caption


def test_class_curve_averaging_sorts_points_by_rate_before_averaging() -> None:
    per_sequence = _synthetic_class()
    ra, qa, rt, qt = per_sequence["Hard"]
    per_sequence["Hard"] = (ra[::-1], qa[::-1], rt[::-1], qt[::-1])
    assert class_bd_rate(per_sequence, averaging="curve").value == pytest.approx(
        class_bd_rate(_synthetic_class(), averaging="curve").value, abs=1e-12
    )


def test_class_bd_quality_and_captions() -> None:
    per_sequence = {
        name: (ra, qa, ra, [q + shift for q in qa])
        for (name, (ra, qa, _, _)), shift in zip(_synthetic_class().items(), (0.2, 0.6), strict=True)
    }
    result = class_bd_quality(per_sequence)
    assert result.value == pytest.approx(0.4, abs=1e-9)
    assert result.caption == "BD-PSNR per sequence, then averaged over the class"
    assert averaging_caption("curve").startswith("BD-rate of the class-averaged RD curves")
    assert set(AVERAGING_CAPTIONS) == {"sequence", "curve"}


def test_class_errors() -> None:
    with pytest.raises(BDRateError, match="no sequences"):
        class_bd_rate({})
    with pytest.raises(BDRateError, match="unknown averaging"):
        class_bd_rate(_synthetic_class(), averaging="frame")  # type: ignore[arg-type]
    with pytest.raises(BDRateError, match="unknown averaging"):
        averaging_caption("frame")  # type: ignore[arg-type]
    bad = _synthetic_class()
    ra, qa, rt, qt = bad["Hard"]
    bad["Hard"] = (ra, qa, rt, [qt[0], qt[2], qt[1], qt[3]])
    with pytest.raises(BDRateError, match="sequence 'Hard': test curve is not monotone"):
        class_bd_rate(bad)
    uneven = _synthetic_class()
    ra, qa, rt, qt = uneven["Easy"]
    uneven["Easy"] = (ra, qa, [*rt, rt[-1] * 2**0.5], [*qt, 43.0])
    assert class_bd_rate(uneven).per_sequence["Easy"] == pytest.approx(-10.0, abs=1e-9)
    with pytest.raises(BDRateError, match="same number of test points"):
        class_bd_rate(uneven, averaging="curve")
