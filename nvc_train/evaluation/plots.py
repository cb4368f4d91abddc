"""RD curves as PNG: one figure per (class, metric), one class-averaged curve per codec."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nvc_train.atomic import atomic_write_bytes
from nvc_train.evaluation.tables import METRIC_LABELS


def class_average_curves(
    rows: Sequence[Mapping[str, Any]], test_set: str, metric: str
) -> dict[str, tuple[list[float], list[float]]]:
    """codec -> (mean bpp, mean quality) per rate point over the sequences of ``test_set``."""
    by_point: dict[tuple[str, float], list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        value = row.get(metric)
        if str(row["class"]) != test_set or value in (None, ""):
            continue
        by_point[(str(row["codec"]), float(row["rate_point"]))].append((float(row["bpp"]), float(value)))
    curves: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (codec, _), points in by_point.items():
        curves[codec].append(
            (sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points))
        )
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
