"""The NVC review's published figures (Tables 3-5) as data, and when a run may show them.

Why a data file and a matching rule: a published BD-rate only means something beside ours when it
measured the same thing, i.e. against the same anchor (VTM-20 low delay), with the codec in the same
coding structure, on the same test set. A number from another anchor or set looks the same in a table
and would mislead. So :func:`matching_bdrate` hands out only the cells whose table used the run's
anchor, structure and test set and one of its metrics, and the report shows them as extra rows
marked "published", below the measured ones and outside the best / second-best marks.

The figures live in ``review_2026_published.yaml`` beside this module (shipped with the package),
each cell with where it was quoted from; cells that could not be found are listed there, never
guessed. :func:`load_published` checks every field and names the bad one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PATH = Path(__file__).with_name("review_2026_published.yaml")
FAMILIES = ("conventional", "scene-agnostic", "scene-adaptive")
STRUCTURES = ("LD", "RA")
# An anchor the review's Tables 3-4 name, as "<codec>-<major version> <structure>", e.g. "VTM-20 LD".
ANCHOR_PATTERN = re.compile(r"^(?P<codec>[A-Za-z]+)-(?P<version>\d+) (?P<structure>LD|RA)$")


class PublishedDataError(ValueError):
    """The published-figures file is malformed; the message names the entry and the field."""


@dataclass(frozen=True)
class PublishedBDRate:
    """One cell of the review's Table 3 or 4: ``codec`` (as the review writes it) against ``anchor``."""

    table: int
    codec: str
    family: str
    structure: str  # how the codec of the row was run: "LD" or "RA"
    anchor: str  # as the table states it, e.g. "VTM-20 LD"
    test_set: str  # as the review writes it, e.g. "UVG"
    class_name: str  # the same set as points.csv's `class` (configs/ctc), e.g. "UVG"
    metric: str  # as the review writes it, e.g. "PSNR"
    column: str  # the points.csv column it is compared with, e.g. "psnr_yuv"
    bd_rate: float
    quoted_from: str


@dataclass(frozen=True)
class PublishedComplexity:
    """One row of the review's Table 5 (1080p); a figure the source does not give is ``None``."""

    table: int
    codec: str
    family: str
    params_m: float | None
    kmac_per_px: float | None
    enc_fps: float | None
    dec_fps: float | None
    quoted_from: str


@dataclass(frozen=True)
class PublishedTables:
    """The whole file: its source, the BD-rate cells, the Table 5 rows and what is missing."""

    source: dict[str, Any]
    bdrate: tuple[PublishedBDRate, ...]
    complexity: tuple[PublishedComplexity, ...]
    missing: tuple[dict[str, str], ...]
    path: Path

    def citation(self) -> str:
        """Title, address and the file holding the cells, for table captions."""
        where = (
            f"nvc_train/evaluation/{self.path.name}"
            if self.path == DEFAULT_PATH.resolve()
            else str(self.path)
        )
        title, url = self.source["title"], self.source["url"]
        return f"{title}, {url}; cells as transcribed, each with its quote, in {where}"


def load_published(path: Path | str | None = None) -> PublishedTables:
    """Read and check the published-figures file (default: the review's, shipped with the package)."""
    path = Path(path) if path is not None else DEFAULT_PATH
    return _load(path.resolve())


@lru_cache(maxsize=4)
def _load(path: Path) -> PublishedTables:
    if not path.is_file():
        raise PublishedDataError(f"published figures file not found: {path}")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise PublishedDataError(f"{path}: expected a mapping at the top level")
    source = _mapping(data, "source", path)
    for key in ("title", "url", "tables"):
        if not source.get(key):
            raise PublishedDataError(f"{path}: source.{key} is missing")
    metrics = {str(k): str(v) for k, v in _mapping(data, "metrics", path).items()}
    test_sets = {str(k): str(v) for k, v in _mapping(data, "test_sets", path).items()}
    bdrate = tuple(
        _bdrate_entry(entry, f"{path}: bdrate[{i}]", metrics, test_sets)
        for i, entry in enumerate(_list(data, "bdrate", path))
    )
    complexity = tuple(
        _complexity_entry(entry, f"{path}: complexity[{i}]")
        for i, entry in enumerate(_list(data, "complexity", path))
    )
    seen: set[tuple] = set()
    for cell in bdrate:
        key = (cell.table, cell.codec, cell.structure, cell.anchor, cell.class_name, cell.column)
        if key in seen:
            raise PublishedDataError(f"{path}: two bdrate entries for {key}")
        seen.add(key)
    missing = tuple({str(k): str(v) for k, v in entry.items()} for entry in data.get("missing") or [])
    return PublishedTables(source, bdrate, complexity, missing, path)


def _mapping(data: Mapping[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise PublishedDataError(f"{path}: '{key}' must be a mapping")
    return value


def _list(data: Mapping[str, Any], key: str, path: Path) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list):
        raise PublishedDataError(f"{path}: '{key}' must be a list")
    return value


def _text(entry: Mapping[str, Any], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise PublishedDataError(f"{where}: '{key}' must be a non-empty text, got {value!r}")
    return value


def _number(entry: Mapping[str, Any], key: str, where: str, optional: bool = False) -> float | None:
    value = entry.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PublishedDataError(f"{where}: '{key}' must be a finite number, got {value!r}")
    return float(value)


def _family(entry: Mapping[str, Any], where: str) -> str:
    family = _text(entry, "family", where)
    if family not in FAMILIES:
        raise PublishedDataError(f"{where}: family {family!r} is not one of {', '.join(FAMILIES)}")
    return family


def _bdrate_entry(
    entry: Any, where: str, metrics: Mapping[str, str], test_sets: Mapping[str, str]
) -> PublishedBDRate:
    if not isinstance(entry, dict):
        raise PublishedDataError(f"{where}: expected a mapping")
    structure = _text(entry, "structure", where)
    if structure not in STRUCTURES:
        raise PublishedDataError(f"{where}: structure {structure!r} is not one of {', '.join(STRUCTURES)}")
    anchor = _text(entry, "anchor", where)
    if not ANCHOR_PATTERN.match(anchor):
        raise PublishedDataError(f"{where}: anchor {anchor!r} is not '<codec>-<version> <LD|RA>'")
    test_set, metric = _text(entry, "test_set", where), _text(entry, "metric", where)
    if test_set not in test_sets:
        raise PublishedDataError(
            f"{where}: test set {test_set!r} is not in test_sets ({', '.join(test_sets)})"
        )
    if metric not in metrics:
        raise PublishedDataError(f"{where}: metric {metric!r} is not in metrics ({', '.join(metrics)})")
    bd_rate = _number(entry, "bd_rate", where)
    assert bd_rate is not None
    return PublishedBDRate(
        table=int(_number(entry, "table", where) or 0),
        codec=_text(entry, "codec", where),
        family=_family(entry, where),
        structure=structure,
        anchor=anchor,
        test_set=test_set,
        class_name=test_sets[test_set],
        metric=metric,
        column=metrics[metric],
        bd_rate=bd_rate,
        quoted_from=_text(entry, "quoted_from", where),
    )


def _complexity_entry(entry: Any, where: str) -> PublishedComplexity:
    if not isinstance(entry, dict):
        raise PublishedDataError(f"{where}: expected a mapping")
    figures = {
        key: _number(entry, key, where, optional=True)
        for key in ("params_m", "kmac_per_px", "enc_fps", "dec_fps")
    }
    if all(value is None for value in figures.values()):
        raise PublishedDataError(f"{where}: no figure at all (params_m, kmac_per_px, enc_fps, dec_fps)")
    return PublishedComplexity(
        table=int(_number(entry, "table", where) or 0),
        codec=_text(entry, "codec", where),
        family=_family(entry, where),
        quoted_from=_text(entry, "quoted_from", where),
        **figures,
    )


# ---- which published table a run matches ------------------------------------------------------------


def structure_kind(label: str | None) -> str | None:
    """'LD' / 'RA' from a points.csv structure label such as 'ld ip=96 gop=1'; None otherwise."""
    if not label:
        return None
    kind = str(label).split()[0].upper()
    return kind if kind in STRUCTURES else None


def anchor_label(name: str, descriptions: Iterable[str], structures: Iterable[str]) -> str | None:
    """The run's anchor in the tables' words ("VTM-20 LD"), or None when it cannot be told.

    The codec and its major version come from the anchor rows' ``codec_description`` (e.g. 'VTM 20.0
    (bin/EncoderAppStatic)', the version read from the encoder's banner or set as codec.version), or
    from the anchor's name for imported points (e.g. 'VTM-20'); the structure from the rows'
    ``structure`` column. A version that is unknown, another release (20.1), or rows coded under
    several structures give None: no published row is then shown.
    """
    kinds = {structure_kind(s) for s in structures}
    if len(kinds) != 1 or None in kinds:
        return None
    (kind,) = kinds
    found = set()
    # A description is 'VTM 20.0 (path)': only the part before the path says the version (a folder
    # named VTM-20.0 says nothing about the binary inside it).
    for text in [*(re.sub(r"\s*\(.*\)\s*$", "", str(d)) for d in descriptions), name]:
        match = re.search(r"\b(VTM|HM|ECM|AVM)[\s_-]*v?(\d+)(?:\.0+)?(?![\d.])", text, re.IGNORECASE)
        if match:
            found.add(f"{match.group(1).upper()}-{int(match.group(2))}")
    if len(found) != 1:
        return None
    return f"{found.pop()} {kind}"


def run_anchor_label(rows: Sequence[Mapping[str, Any]], anchor: str) -> str | None:
    """:func:`anchor_label` of the anchor's rows in a run's points."""
    mine = [r for r in rows if str(r.get("codec")) == anchor]
    if not mine:
        return None
    descriptions = {str(r["codec_description"]) for r in mine if r.get("codec_description")}
    return anchor_label(anchor, descriptions, [str(r.get("structure") or "") for r in mine])


def matching_bdrate(
    published: PublishedTables,
    anchor: str | None,
    structure: str | None,
    classes: Iterable[str],
    columns: Iterable[str],
) -> list[PublishedBDRate]:
    """The published cells a run may show: same anchor, codec structure, test set and metric.

    ``anchor``: the run's anchor as :func:`run_anchor_label` gives it; ``structure``: the structure
    the run coded its codecs in ('LD'/'RA' or a points.csv label); ``classes``: the test sets of the
    table (points.csv's ``class``); ``columns``: its metric columns (bd_metrics).
    """
    kind = structure_kind(structure) if structure and structure not in STRUCTURES else structure
    if anchor is None or kind is None:
        return []
    wanted_classes, wanted_columns = set(classes), set(columns)
    return [
        cell
        for cell in published.bdrate
        if cell.anchor == anchor
        and cell.structure == kind
        and cell.class_name in wanted_classes
        and cell.column in wanted_columns
    ]


def complexity_rows_to_show(
    published: PublishedTables, matched: Sequence[PublishedBDRate]
) -> list[PublishedComplexity]:
    """Table 5's rows, for a run that matched one of the review's BD-rate tables (its benchmark).

    Table 5 states complexity at 1080p for the codecs of Tables 3-4; it belongs beside a run of that
    benchmark, not beside an unrelated one (an embedded-clip run against x265).
    """
    return list(published.complexity) if matched else []
