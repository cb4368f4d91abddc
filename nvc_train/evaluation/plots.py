"""RD curves as PNG: one figure per (class, metric), one class-averaged curve per codec."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nvc_train.atomic import atomic_write_bytes
from nvc_train.evaluation.tables import METRIC_LABELS
from nvc_train.metrics.aggregate import class_mean


def class_average_curves(
    rows: Sequence[Mapping[str, Any]], test_set: str, metric: str
) -> dict[str, tuple[list[float], list[float]]]:
    """codec -> (mean bpp, mean quality) per rate point over the sequences of ``test_set``.

    Each point is the :func:`~nvc_train.metrics.aggregate.class_mean` of bpp and of ``metric`` over
    every sequence the codec coded in the class. A rate point where one of them lacks the metric
    (or that rate point) is left out of the curve, not averaged over the sequences that have it:
    such a point would describe other content than its neighbours and the other codecs' points.
    """
    sequences: dict[str, set[str]] = defaultdict(set)
    by_point: dict[tuple[str, float], dict[str, Mapping[str, Any]]] = defaultdict(dict)
    for row in rows:
        if str(row["class"]) != test_set:
            continue
        codec, sequence = str(row["codec"]), str(row["sequence"])
        sequences[codec].add(sequence)
        by_point[(codec, float(row["rate_point"]))][sequence] = row
    curves: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (codec, _), by_sequence in by_point.items():
        if set(by_sequence) != sequences[codec]:
            continue  # a sequence was not coded at this rate point
        group = list(by_sequence.values())
        bpp = class_mean(row["bpp"] for row in group)
        quality = class_mean(row.get(metric) for row in group)
        if bpp is not None and quality is not None:
            curves[codec].append((bpp, quality))
    return {
        codec: ([p[0] for p in sorted(pts)], [p[1] for p in sorted(pts)]) for codec, pts in curves.items()
    }


def write_rd_plots(run_dir: Path, rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> list[Path]:
    """Write ``rd_<class>_<metric>.png`` for every class and metric that has values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for test_set in sorted({str(r["class"]) for r in rows}):
        for metric in metrics:
            curves = class_average_curves(rows, test_set, metric)
            if not curves:
                continue
            figure, axis = plt.subplots(figsize=(5, 4), dpi=120)
            for codec, (rates, qualities) in sorted(curves.items()):
                axis.plot(rates, qualities, marker="o", label=codec)
            axis.set_xlabel("bpp (bits from files)")
            axis.set_ylabel(METRIC_LABELS.get(metric, metric))
            axis.set_title(f"{test_set}: mean over sequences per rate point")
            axis.grid(True, alpha=0.3)
            axis.legend()
            figure.tight_layout()
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png")
            plt.close(figure)
            path = run_dir / f"rd_{test_set}_{metric}.png"
            atomic_write_bytes(path, buffer.getvalue())
            written.append(path)
    return written


def radar_axes(
    bd_rows: Sequence[Any],
    complexity: Sequence[Mapping[str, Any]],
    anchor: str,
    test_set: str,
    metrics: Sequence[str],
    method: str = "pchip",
) -> tuple[list[str], dict[str, list[float | None]]]:
    """The raw values of the review's Figure 1 radar: per codec, BD-rate per metric, encode FPS, decode FPS.

    ``bd_rows`` are :class:`~nvc_train.evaluation.tables.BDRow` of one method; the anchor is 0 on
    every BD-rate axis by definition. Returns the axis labels and codec -> values (None: unknown).
    """
    labels = [f"BD-rate {METRIC_LABELS.get(m, m)}" for m in metrics] + ["Enc FPS", "Dec FPS"]
    speed = {str(r["codec"]): r for r in complexity}
    rows = [r for r in bd_rows if r.test_set == test_set and r.method == method]
    codecs = sorted({r.codec for r in rows} | ({anchor} if rows else set()))
    values: dict[str, list[float | None]] = {}
    for codec in codecs:
        bd = {r.metric: r.bd_rate for r in rows if r.codec == codec}
        line: list[float | None] = [0.0 if codec == anchor else bd.get(m) for m in metrics]
        for key in ("enc_fps", "dec_fps"):
            value = speed.get(codec, {}).get(key)
            line.append(float(value) if value not in (None, "") else None)
        values[codec] = line
    return labels, values


RADAR_FLOOR = 0.1  # radius of the worst known value on a radar axis (0 = unknown)


def radar_scores(values: Mapping[str, Sequence[float | None]], num_bd_axes: int) -> dict[str, list[float]]:
    """Each axis scaled to [RADAR_FLOOR, 1] over the codecs, 1 = best: lowest BD-rate, highest FPS.

    Min-max per axis because the axes have unrelated units; FPS on a log scale because codecs differ
    by orders of magnitude in speed. The worst known value sits at ``RADAR_FLOOR``, not at the
    centre, so that the centre means only "unknown"; an axis where every codec is equal puts them
    all halfway.
    """
    import math

    codecs = list(values)
    axes = len(next(iter(values.values()))) if values else 0
    scores = {codec: [0.0] * axes for codec in codecs}
    for axis in range(axes):
        raw = {}
        for codec in codecs:
            value = values[codec][axis]
            if value is None or not math.isfinite(value) or (axis >= num_bd_axes and value <= 0):
                continue
            raw[codec] = -value if axis < num_bd_axes else math.log10(value)
        if not raw:
            continue
        low, high = min(raw.values()), max(raw.values())
        for codec, value in raw.items():
            scaled = 0.5 if high == low else (value - low) / (high - low)
            scores[codec][axis] = RADAR_FLOOR + (1.0 - RADAR_FLOOR) * scaled
    return scores


def write_radar_plots(
    run_dir: Path,
    bd_rows: Sequence[Any],
    complexity: Sequence[Mapping[str, Any]],
    anchor: str,
    metrics: Sequence[str],
    method: str = "pchip",
) -> list[Path]:
    """``radar_<class>.png``: BD-rate per metric and encode / decode speed per codec (review, Figure 1).

    Farther out is better on every axis; axis labels give the best and worst raw value, the legend
    marks codecs with an axis that could not be measured.
    """
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for test_set in sorted({r.test_set for r in bd_rows}):
        labels, values = radar_axes(bd_rows, complexity, anchor, test_set, metrics, method)
        if len(values) < 2:
            continue
        scores = radar_scores(values, len(metrics))
        angles = [2 * math.pi * k / len(labels) for k in range(len(labels))]
        figure, axis = plt.subplots(figsize=(6.5, 5.5), dpi=120, subplot_kw={"projection": "polar"})
        for codec, score in sorted(scores.items()):
            missing = any(v is None for v in values[codec])
            axis.plot(
                angles + angles[:1],
                score + score[:1],
                marker="o",
                label=codec + (" (n/a axes)" if missing else ""),
            )
            axis.fill(angles + angles[:1], score + score[:1], alpha=0.1)
        ticks = []
        for k, label in enumerate(labels):
            known = [v[k] for v in values.values() if v[k] is not None]
            unit = "%" if k < len(metrics) else ""
            span = f"{min(known):.3g}{unit} .. {max(known):.3g}{unit}" if known else "n/a"
            ticks.append(f"{label}\n({span})")
        axis.set_xticks(angles, ticks, fontsize=7)
        axis.set_yticks([0.25, 0.5, 0.75, 1.0], ["", "", "", ""])
        axis.set_ylim(0, 1)
        axis.set_title(f"{test_set}: BD-rate vs {anchor} ({method}) and speed; outer = better", fontsize=9)
        axis.legend(loc="lower right", bbox_to_anchor=(1.25, -0.12), fontsize=7)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        plt.close(figure)
        path = run_dir / f"radar_{test_set}.png"
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    return written
