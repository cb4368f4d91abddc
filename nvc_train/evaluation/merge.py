"""Merge finished evaluation runs into one set of tables, computed again from their points.

    python -m nvc_train.evaluation.merge runs/evaluate/A runs/evaluate/B --out runs/evaluate/AB

Two runs made on different days (or machines, or by different people: x264 and x265 in one, the
neural codecs in another) can only share a table when they measured the same thing: the same
sequences and frames, the same structure and metrics, the same anchor. Each of these is checked
and a run that differs is refused with the reason, since a BD-rate against another anchor's curve,
or over other frames, is a different number that would look the same in the table. The tables are
then made by the same code as ``evaluate.py`` (:func:`nvc_train.evaluation.report.write_run_tables`)
from the union of the points, so they equal those of one run over the union.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from nvc_train.atomic import atomic_write_text
from nvc_train.evaluation.report import write_run_tables

log = logging.getLogger(__name__)

NUMERIC_COMPLEXITY = ("params_m", "kmac_per_px", "kmac_per_px_intra", "enc_fps", "dec_fps")


class MergeError(ValueError):
    """Runs that cannot share a table; the message says which run and what differs."""


@dataclass
class Run:
    """One finished run folder: its points, its complexity rows and the settings that measured them."""

    path: Path
    rows: list[dict[str, Any]]
    complexity: list[dict[str, Any]]
    settings: dict[str, Any]

    @property
    def anchor(self) -> str | None:
        anchor = self.settings.get("anchor")
        return anchor.get("name") if isinstance(anchor, dict) else None


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as handle:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _number(text: str | None) -> Any:
    """CSV cells back to what evaluate.py wrote: '' is None, numbers are numbers, the rest text."""
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def load_run(path: Path) -> Run:
    """A run folder written by evaluate.py: points.csv, complexity.csv and .hydra/config.yaml."""
    config = path / ".hydra" / "config.yaml"
    for needed in (path / "points.csv", config):
        if not needed.is_file():
            raise MergeError(f"{path}: no {needed.relative_to(path)} (not a finished evaluate.py run folder)")
    settings = OmegaConf.to_container(OmegaConf.load(config), resolve=False)
    assert isinstance(settings, dict)
    complexity = path / "complexity.csv"
    return Run(
        path, _read_csv(path / "points.csv"), _read_csv(complexity) if complexity.is_file() else [], settings
    )


def _measurement(run: Run) -> dict[str, Any]:
    """What must agree between merged runs, as readable values (for the refusal's message)."""
    anchor_rows = [r for r in run.rows if r["codec"] == run.anchor]
    return {
        "anchor": run.anchor,
        "anchor description": sorted({str(r.get("codec_description")) for r in anchor_rows}),
        "anchor rate points": sorted({str(r["rate_point"]) for r in anchor_rows}),
        "metrics": sorted(run.settings.get("metrics") or []),
        "frames": sorted({(str(r["class"]), str(r["sequence"]), r["frames"]) for r in run.rows}),
        "start_frame": run.settings.get("start_frame", 0),
        "structure": sorted({str(r.get("structure")) for r in run.rows}),
    }


def check_compatible(runs: Sequence[Run]) -> None:
    """Refuse, naming the run and the setting, when any run measured differently from the first."""
    if len(runs) < 2:
        raise MergeError("merge needs at least two run folders")
    if runs[0].anchor is None:
        raise MergeError(f"{runs[0].path}: the run has no anchor; BD-rate tables need one")
    first = _measurement(runs[0])
    problems = []
    for run in runs[1:]:
        mine = _measurement(run)
        for key, value in first.items():
            if mine[key] != value:
                what = "sequences and frames" if key == "frames" else key
                problems.append(
                    f"{run.path}: {what} differ from {runs[0].path}: {_short(mine[key])} vs {_short(value)}"
                )
    seen: dict[str, tuple[Path, set[str]]] = {}
    for run in runs:  # one codec name, one codec: the same name measured otherwise would be two rows in one
        for codec in sorted({str(r["codec"]) for r in run.rows} - {str(run.anchor)}):
            descriptions = {str(r.get("codec_description")) for r in run.rows if r["codec"] == codec}
            if codec in seen and seen[codec][1] != descriptions:
                problems.append(
                    f"{run.path}: codec {codec} is {sorted(descriptions)} here but {sorted(seen[codec][1])} "
                    f"in {seen[codec][0]}; rename one (+codec_overrides.{codec}.name=OTHER) before merging"
                )
            seen.setdefault(codec, (run.path, descriptions))
    if problems:
        raise MergeError("these runs cannot share a table:\n" + "\n".join(f"- {p}" for p in problems))


def _short(value: Any, limit: int = 300) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def merge_runs(paths: Sequence[Path], out: Path) -> Path:
    """Write the merged run folder ``out`` from the run folders ``paths`` (first run's table settings).

    Points of a codec found in several runs are taken once (from the first run holding that
    point); complexity rows likewise. The first run's ``bd_metrics``, ``bd_methods`` and
    ``class_averaging`` lay out the tables: they change how points are summarised, not what was
    measured, so runs may differ in them.
    """
    runs = [load_run(Path(p)) for p in paths]
    check_compatible(runs)
    rows: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    complexity: dict[str, dict[str, Any]] = {}
    for run in runs:
        for row in run.rows:
            rows.setdefault(
                (str(row["codec"]), str(row["class"]), str(row["sequence"]), str(row["rate_point"])), row
            )
        for row in run.complexity:
            complexity.setdefault(str(row["codec"]), row)
    first = runs[0]
    anchor = str(first.anchor)
    anchor_family = next((str(r.get("family")) for r in first.rows if r["codec"] == anchor), "conventional")
    settings = first.settings
    out.mkdir(parents=True, exist_ok=True)
    write_run_tables(
        out,
        list(rows.values()),
        [complexity[name] for name in sorted(complexity)],
        anchor=anchor,
        anchor_family=anchor_family,
        structure=str(first.rows[0].get("structure")) if first.rows else "",
        bd_metrics=list(settings.get("bd_metrics") or ["psnr_yuv"]),
        bd_methods=list(settings.get("bd_methods") or ["pchip"]),
        averaging=str(settings.get("class_averaging") or "sequence"),
        published=bool((settings.get("report") or {}).get("published", True)),
    )
    atomic_write_text(out / "merged_from.txt", "".join(f"{run.path.resolve()}\n" for run in runs))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m nvc_train.evaluation.merge RUN_A RUN_B ... --out RUN``."""
    parser = argparse.ArgumentParser(
        prog="python -m nvc_train.evaluation.merge",
        description="Tables of several evaluate.py runs that share sequences, settings and anchor.",
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders written by evaluate.py")
    parser.add_argument("--out", required=True, type=Path, help="folder for the merged tables")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        out = merge_runs(args.runs, args.out)
    except MergeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if (out / "bdrate.md").is_file():
        print((out / "bdrate.md").read_text())
    print(f"merged tables in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
