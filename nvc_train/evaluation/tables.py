"""Results tables: points.csv/json, bdrate.csv/md (laid out like the NVC review's Tables 3-4),
complexity.csv. Everything here works on the rows of points.csv, whatever codec made them.
"""

from __future__ import annotations

import logging
import math
import platform
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nvc_train import bdrate
from nvc_train.atomic import atomic_write_csv, atomic_write_json, atomic_write_text
from nvc_train.evaluation.points import POINT_COLUMNS
from nvc_train.evaluation.published import PublishedBDRate, PublishedComplexity

log = logging.getLogger(__name__)

FAMILY_ORDER = ("conventional", "scene-agnostic", "scene-adaptive")
METRIC_LABELS = {
    "psnr_yuv": "PSNR-YUV",
    "psnr_y": "PSNR-Y",
    "msssim_yuv": "MS-SSIM-YUV",
    "msssim_y": "MS-SSIM-Y",
    "vmaf": "VMAF",
    "lpips": "LPIPS",
}
# Metrics where a lower value is better: BD-rate is computed on the negated value.
LOWER_IS_BETTER = {"lpips"}
BITS_RULE = (
    "Bits are counted from the bitstream files on disk: elementary streams (Annex-B H.264/HEVC, "
    "AV1 OBU) without container overhead or encoder-info SEI, and the framework's container for "
    "neural codecs."
)
BDRATE_COLUMNS = [
    "codec", "family", "anchor", "class", "metric", "method", "averaging", "bd_rate", "bd_quality",
    "sequences", "non_monotone", "note",
]  # fmt: skip


@dataclass(frozen=True)
class BDRow:
    codec: str
    family: str
    anchor: str
    test_set: str
    metric: str
    method: str
    averaging: str
    bd_rate: float | None
    bd_quality: float | None
    sequences: int
    note: str = ""
    non_monotone: str = ""  # the class's sequences whose curve of this codec drops as the rate rises

    def as_dict(self) -> dict[str, Any]:
        return {
            "codec": self.codec, "family": self.family, "anchor": self.anchor, "class": self.test_set,
            "metric": self.metric, "method": self.method, "averaging": self.averaging,
            "bd_rate": self.bd_rate, "bd_quality": self.bd_quality, "sequences": self.sequences,
            "non_monotone": self.non_monotone, "note": self.note,
        }  # fmt: skip


def sort_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A stable order for points.csv: codec, class, sequence, rate point."""
    return sorted(
        (dict(r) for r in rows),
        key=lambda r: (str(r["codec"]), str(r["class"]), str(r["sequence"]), float(r["rate_point"])),
    )


def write_points(run_dir: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    ordered = sort_rows(rows)
    extra = sorted({key for row in ordered for key in row} - set(POINT_COLUMNS))
    atomic_write_csv(run_dir / "points.csv", ordered, POINT_COLUMNS + extra)
    atomic_write_json(run_dir / "points.json", ordered)


def _curves(rows: Iterable[Mapping[str, Any]], metric: str) -> dict[tuple[str, str, str], tuple[list, list]]:
    """(codec, class, sequence) -> (bpp list, quality list), sorted by rate; rows lacking the metric drop."""
    curves: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        value = row.get(metric)
        if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
            continue
        quality = -float(value) if metric in LOWER_IS_BETTER else float(value)
        curves[(str(row["codec"]), str(row["class"]), str(row["sequence"]))].append(
            (float(row["bpp"]), quality)
        )
    return {key: ([p[0] for p in sorted(pts)], [p[1] for p in sorted(pts)]) for key, pts in curves.items()}


@dataclass(frozen=True)
class NonMonotone:
    """One RD curve (codec, class, sequence, metric) where a higher rate gave a worse quality."""

    codec: str
    test_set: str
    sequence: str
    metric: str
    drops: tuple[str, ...]  # e.g. "rp 37 (0.012 bpp, 31.20) is worse than rp 42 (0.009 bpp, 31.50)"

    def text(self) -> str:
        label = METRIC_LABELS.get(self.metric, self.metric)
        return f"{self.codec} {self.test_set}/{self.sequence} {label}: " + "; ".join(self.drops)


def non_monotone_curves(rows: Iterable[Mapping[str, Any]], metrics: Sequence[str]) -> list[NonMonotone]:
    """Every curve whose quality falls somewhere as its rate rises, with the offending point pairs.

    BD-rate integrates a curve assumed to rise with rate; a curve that does not (a scene-adaptive fit
    that ended worse at a higher rate, an encoder's rate control gone wrong) still yields a number,
    which would be averaged into the class as if it were fine. Such curves are named, never hidden.
    Qualities are compared as measured (LPIPS: lower is better, so a rise is the drop).
    """
    found = []
    for metric in metrics:
        curves: dict[tuple[str, str, str], list[tuple[float, float, str]]] = defaultdict(list)
        for row in rows:
            value = row.get(metric)
            if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
                continue
            quality = -float(value) if metric in LOWER_IS_BETTER else float(value)
            key = (str(row["codec"]), str(row["class"]), str(row["sequence"]))
            curves[key].append((float(row["bpp"]), quality, str(row["rate_point"])))
        for (codec, test_set, sequence), points in sorted(curves.items()):
            points.sort()
            drops = tuple(
                f"rp {high[2]} ({high[0]:.4g} bpp, {_shown(high[1], metric):.4g}) is worse than "
                f"rp {low[2]} ({low[0]:.4g} bpp, {_shown(low[1], metric):.4g})"
                for low, high in zip(points, points[1:], strict=False)
                if high[0] > low[0] and high[1] < low[1]
            )
            if drops:
                found.append(NonMonotone(codec, test_set, sequence, metric, drops))
    return found


def _shown(quality: float, metric: str) -> float:
    return -quality if metric in LOWER_IS_BETTER else quality


def compute_bdrates(
    rows: Sequence[Mapping[str, Any]],
    anchor: str,
    metrics: Sequence[str],
    methods: Sequence[str] = ("pchip", "cubic"),
    averaging: str = "sequence",
) -> list[BDRow]:
    """BD-rate and BD-quality of every codec against ``anchor``, per class and metric.

    A class value needs every sequence of the class coded by both codecs; otherwise the cell is
    empty and the note says which sequences are missing or why a curve was rejected.
    """
    families = {str(r["codec"]): str(r.get("family", "conventional")) for r in rows}
    classes = sorted({str(r["class"]) for r in rows})
    bent: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for curve in non_monotone_curves(rows, metrics):
        log.warning("RD curve not monotone (its BD-rate cell is marked): %s", curve.text())
        bent[(curve.codec, curve.test_set, curve.metric)].append(curve.sequence)
    out: list[BDRow] = []
    for metric in metrics:
        curves = _curves(rows, metric)
        for codec in sorted(families):
            if codec == anchor:
                continue
            for test_set in classes:
                names = sorted({s for (c, k, s) in curves if k == test_set and c in (codec, anchor)})
                pairs, problems = {}, []
                for name in names:
                    a, t = curves.get((anchor, test_set, name)), curves.get((codec, test_set, name))
                    if a is None or t is None:
                        problems.append(f"{name}: no {metric} points for {anchor if a is None else codec}")
                        continue
                    pairs[name] = (a[0], a[1], t[0], t[1])
                for method in methods:
                    value = quality = None
                    note = "; ".join(problems)
                    if pairs and not problems:
                        try:
                            value = bdrate.class_bd_rate(pairs, method=method, averaging=averaging).value
                            quality = bdrate.class_bd_quality(pairs, method=method, averaging=averaging).value
                        except bdrate.BDRateError as error:
                            note = str(error)
                    if metric in LOWER_IS_BETTER and quality is not None:
                        quality = -quality
                    out.append(
                        BDRow(
                            codec,
                            families[codec],
                            anchor,
                            test_set,
                            metric,
                            method,
                            averaging,
                            value,
                            quality,
                            len(pairs),
                            note,
                            " ".join(bent.get((codec, test_set, metric), [])),
                        )
                    )
    return out


def write_bdrate(run_dir: Path, bd_rows: Sequence[BDRow], markdown: str) -> None:
    """bdrate.csv (every method) and bdrate.md (one table, from :func:`bdrate_markdown`)."""
    atomic_write_csv(run_dir / "bdrate.csv", [r.as_dict() for r in bd_rows], BDRATE_COLUMNS)
    atomic_write_text(run_dir / "bdrate.md", markdown)


def bdrate_markdown(
    bd_rows: Sequence[BDRow],
    anchor: str,
    anchor_family: str,
    metrics: Sequence[str],
    method: str,
    averaging: str,
    aggregation_rule: str,
    structure: str,
    points: Sequence[Mapping[str, Any]] = (),
    published: Sequence[PublishedBDRate] = (),
    published_source: str = "",
) -> str:
    """Rows: codecs grouped by family; columns: class x metric; best two per column marked.

    A number whose class holds a non-monotone curve of that codec (or of the anchor) gets a dagger,
    and ``points`` (the rows the BD-rates came from) name every such curve below the table: the
    number is still shown, but never as if its curves were sound.

    ``published``: cells of the review's tables whose anchor, structure and test set are this run's
    (:func:`nvc_train.evaluation.published.matching_bdrate`); they follow the measured rows as rows
    marked "(published)", as printed, and take no part in the best / second-best marks, which rank
    what was measured here only. ``published_source`` names where they come from in the caption.
    """
    rows = [r for r in bd_rows if r.method == method]
    columns = [(k, m) for k in sorted({r.test_set for r in rows}) for m in metrics]
    family = {anchor: anchor_family} | {r.codec: r.family for r in rows}
    # BD-rate per (codec, column); the anchor is 0 by definition, None marks an unmeasurable cell.
    value: dict[tuple[str, tuple[str, str]], float | None] = {(anchor, col): 0.0 for col in columns}
    value |= {(r.codec, (r.test_set, r.metric)): r.bd_rate for r in rows}
    codecs = sorted(family, key=lambda c: (_family_rank(family[c]), c != anchor, c))
    best_two = {
        col: sorted({v for (c, k), v in value.items() if k == col and v is not None})[:2] for col in columns
    }

    lines = [
        "| Codec | " + " | ".join(f"{k} {METRIC_LABELS.get(m, m)}" for k, m in columns) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    bent_curves = non_monotone_curves(points, metrics)
    bent = {(c.codec, (c.test_set, c.metric)) for c in bent_curves}
    for group in sorted(set(family.values()), key=_family_rank):
        lines.append(f"| *{group}* |" + " |" * len(columns))
        for codec in (c for c in codecs if family[c] == group):
            cells = [
                _mark(value.get((codec, col)), best_two[col], codec == anchor)
                + (
                    " †"  # an empty cell averaged nothing; a number from a bent curve is marked
                    if value.get((codec, col)) is not None and ((codec, col) in bent or (anchor, col) in bent)
                    else ""
                )
                for col in columns
            ]
            lines.append(f"| {codec}{' (anchor)' if codec == anchor else ''} | " + " | ".join(cells) + " |")
    lines += _published_bdrate_lines(published, columns)
    averaging_text = bdrate.averaging_caption(averaging)
    caption = (
        f"BD-rate (%) against {anchor} ({structure}); negative = fewer bits than the anchor for the same "
        f"quality. Interpolation: {method}. {averaging_text}. Aggregation: {aggregation_rule}. {BITS_RULE} "
        "Best per column in **bold**, second best <u>underlined</u>; "
        "empty cells: not measurable (see bdrate.csv)."
    )
    if published:
        tables = ", ".join(sorted({str(c.table) for c in published}))
        caption += (
            f" Rows marked (published): the review's Table {tables} ({published_source}), shown "
            "because its anchor, codec structure and test set are this run's; not measured here, not "
            "ranked, not in bdrate.csv; an empty published cell was not transcribed."
        )
    table = f"**Table: BD-rate.** {caption}\n\n" + "\n".join(lines) + "\n"
    if bent_curves:
        table += (
            "\n† Not monotone: these RD curves lose quality as the rate rises. A per-sequence BD-rate "
            "refuses them (the cell stays empty); a number that still came from their class (e.g. "
            "class_averaging=curve) is marked †, as it rests on a curve that is not a rate-distortion "
            "trade-off:\n\n" + "\n".join(f"- {c.text()}" for c in bent_curves) + "\n"
        )
    return table


def _published_bdrate_lines(
    published: Sequence[PublishedBDRate], columns: Sequence[tuple[str, str]]
) -> list[str]:
    """One group per published table, one row per codec (the file's order), cells as printed."""
    lines: list[str] = []
    for table in sorted({c.table for c in published}):
        cells = [c for c in published if c.table == table]
        first = cells[0]
        lines.append(
            f"| *published: review Table {table} ({first.structure}, against {first.anchor})* |"
            + " |" * len(columns)
        )
        for codec in dict.fromkeys(c.codec for c in cells):
            value = {(c.class_name, c.column): c.bd_rate for c in cells if c.codec == codec}
            family = next(c.family for c in cells if c.codec == codec)
            shown = [f"{value[col]:g}" if col in value else "" for col in columns]
            lines.append(f"| {codec}, {family} (published) | " + " | ".join(shown) + " |")
    return lines


def _mark(value: float | None, best_two: list[float], is_anchor: bool) -> str:
    if value is None:
        return ""
    text = "0.0" if is_anchor else f"{value:+.1f}"
    if best_two and value == best_two[0]:
        return f"**{text}**"
    if len(best_two) > 1 and value == best_two[1]:
        return f"<u>{text}</u>"
    return text


def _family_rank(family: str) -> int:
    return FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER)


COMPLEXITY_COLUMNS = [
    "codec",
    "family",
    "params_m",
    "kmac_per_px",
    "kmac_per_px_intra",
    "kmac_resolution",
    "enc_fps",
    "dec_fps",
    "resolution",
    "device",
    "fps_method",
]


def complexity_rows(rows: Sequence[Mapping[str, Any]], known: Mapping[str, Mapping[str, Any]]) -> list[dict]:
    """Per codec: parameters and kMAC/px where the codec reports them, mean encode/decode FPS measured.

    ``known`` maps a codec name to its ``Codec.complexity(height, width)``; kMAC/px is counted at one
    size (``kmac_resolution``), while ``resolution`` lists every size the FPS were averaged over.
    """
    out = []
    for codec in sorted({str(r["codec"]) for r in rows}):
        mine = [r for r in rows if str(r["codec"]) == codec and r.get("enc_fps") not in (None, "")]
        if not mine:
            continue  # imported points carry no timing
        sizes = sorted({f"{r['width']}x{r['height']}" for r in mine})
        out.append({
            "codec": codec,
            "family": mine[0].get("family", ""),
            "params_m": known.get(codec, {}).get("params_m"),
            "kmac_per_px": known.get(codec, {}).get("kmac_per_px"),
            "kmac_per_px_intra": known.get(codec, {}).get("kmac_per_px_intra"),
            "kmac_resolution": known.get(codec, {}).get("kmac_resolution"),
            "enc_fps": sum(float(r["enc_fps"]) for r in mine) / len(mine),
            "dec_fps": sum(float(r["dec_fps"]) for r in mine) / len(mine),
            "resolution": ",".join(sizes),
            "device": known.get(codec, {}).get("device") or device_name(),
            "fps_method": "runner",
        })  # fmt: skip
    return out


# The review's Table 5: one row per codec; (column key, header, format).
TABLE5_LAYOUT = (
    ("codec", "Codec", "{}"),
    ("params_m", "Params (M)", "{:.2f}"),
    ("kmac_per_px", "kMAC/px", "{:.1f}"),
    ("enc_fps", "Enc FPS", "{:.2f}"),
    ("dec_fps", "Dec FPS", "{:.2f}"),
    ("device", "Device", "{}"),
)
# How the FPS of a row were measured (complexity.csv's fps_method), as the caption states it.
FPS_RULES = {
    "runner": (
        "FPS: coded frames over the seconds of the evaluation runner's encode / decode of each point "
        "(reading the source and writing the bitstream or reconstruction included), averaged over the points"
    ),
    "model": (
        "FPS marked *: the network's coding path alone (compress_frame / decompress_frame, entropy coding "
        "to bytes included, no file I/O) on natural frames at the stated resolution, median of timed "
        "rounds after warm-up, device synchronised around each timed call"
    ),
}


def complexity_markdown(
    rows: Sequence[Mapping[str, Any]],
    fps_rule: str | None = None,
    published: Sequence[PublishedComplexity] = (),
    published_source: str = "",
) -> str:
    """complexity.csv's rows as the review's Table 5: codec, params, kMAC/px, enc / dec FPS, device.

    Codecs are grouped by family like the BD-rate table; empty cells are figures a codec does not
    have (parameters and kMAC/px of a conventional encoder). The caption states how each number
    was obtained (``fps_rule``, else the rule of every ``fps_method`` present), since FPS from
    different rules (the network alone vs whole files) do not compare. ``published``: the review's
    Table 5 rows, after the measured ones, marked "(published)", as printed (1080p, the review's
    device); ``published_source`` names where they come from.
    """
    lines = [
        "| " + " | ".join(header for _, header, _ in TABLE5_LAYOUT) + " |",
        "|" + "---|" * len(TABLE5_LAYOUT),
    ]
    ordered = sorted(rows, key=lambda r: (_family_rank(str(r.get("family", ""))), str(r["codec"])))
    for group in dict.fromkeys(str(r.get("family", "")) for r in ordered):
        lines.append(f"| *{group or 'other'}* |" + " |" * (len(TABLE5_LAYOUT) - 1))
        for row in (r for r in ordered if str(r.get("family", "")) == group):
            mark = "*" if row.get("fps_method") == "model" else ""
            cells = [
                _format_cell(row.get(k), fmt)
                + (mark if k.endswith("_fps") and row.get(k) not in (None, "") else "")
                for k, _, fmt in TABLE5_LAYOUT
            ]
            lines.append("| " + " | ".join(cells) + " |")
    if published:
        lines.append("| *published: review Table 5 (1080p)* |" + " |" * (len(TABLE5_LAYOUT) - 1))
        for entry in published:
            figures = {"params_m": entry.params_m, "kmac_per_px": entry.kmac_per_px}
            figures |= {"enc_fps": entry.enc_fps, "dec_fps": entry.dec_fps}
            cells = [f"{entry.codec}, {entry.family} (published)"]
            cells += ["" if figures.get(k) is None else f"{figures[k]:g}" for k, _, _ in TABLE5_LAYOUT[1:-1]]
            lines.append("| " + " | ".join([*cells, ""]) + " |")
    resolutions = sorted({str(r["kmac_resolution"]) for r in rows if r.get("kmac_resolution")})
    methods = dict.fromkeys(str(r.get("fps_method") or "runner") for r in ordered)
    rule = fps_rule or ". ".join(FPS_RULES.get(m, m) for m in methods)
    caption = (
        "Params: every parameter of the network. kMAC/px: multiply-accumulates per luma pixel of a P "
        f"frame at {', '.join(resolutions) or 'the test size'} (convolutions and matrix products "
        "counted by torch's FlopCounterMode, MAC = FLOP/2; complexity.csv also has the I frame's). "
        f"{rule}."
    )
    if published:
        caption += (
            f" Rows marked (published): the review's Table 5 ({published_source}), at 1080p "
            "on the review's hardware; not measured here; an empty published cell was not transcribed."
        )
    return f"**Table: complexity.** {caption}\n\n" + "\n".join(lines) + "\n"


def _format_cell(value: Any, fmt: str) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str) and fmt != "{}":
        try:
            value = float(value)
        except ValueError:
            return value
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    return fmt.format(value)


def write_complexity(
    run_dir: Path,
    rows: Sequence[Mapping[str, Any]],
    fps_rule: str | None = None,
    published: Sequence[PublishedComplexity] = (),
    published_source: str = "",
) -> None:
    """complexity.csv (every column, measured rows only) and complexity.md (Table 5 layout, with the
    ``published`` rows after them) in ``run_dir``, atomically."""
    atomic_write_csv(run_dir / "complexity.csv", [dict(r) for r in rows], COMPLEXITY_COLUMNS)
    atomic_write_text(
        run_dir / "complexity.md", complexity_markdown(rows, fps_rule, published, published_source)
    )


def device_name(device: Any = None) -> str:
    """The name of the device that ran the codec: the GPU's for a CUDA device, else the CPU model
    (Linux /proc/cpuinfo, else platform) with the core count."""
    import os

    if device is not None and str(device).startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores)"
