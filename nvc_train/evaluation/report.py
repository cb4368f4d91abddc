"""Every table and plot of a run folder, written from its points alone.

One function for ``evaluate.py`` and for :mod:`nvc_train.evaluation.merge`, so that a merged folder
and a run over the union of the same points cannot differ by how their tables were made.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nvc_train.evaluation.plots import write_radar_plots, write_rd_plots
from nvc_train.evaluation.published import (
    PublishedBDRate,
    PublishedComplexity,
    PublishedDataError,
    PublishedTables,
    complexity_rows_to_show,
    load_published,
    matching_bdrate,
    run_anchor_label,
)
from nvc_train.evaluation.tables import (
    BDRow,
    bdrate_markdown,
    compute_bdrates,
    write_bdrate,
    write_complexity,
    write_points,
)

log = logging.getLogger(__name__)


def write_run_tables(
    run_dir: Path,
    rows: Sequence[Mapping[str, Any]],
    complexity: Sequence[Mapping[str, Any]],
    anchor: str | None,
    anchor_family: str,
    structure: str,
    bd_metrics: Sequence[str],
    bd_methods: Sequence[str],
    averaging: str,
    published: bool = True,
) -> list[BDRow]:
    """points.csv/json, bdrate.csv/md (with an anchor), complexity.csv/md, rd_*.png and radar_*.png.

    Returns the BD-rate rows (empty without an anchor). ``structure`` is the caption's label of the
    coding structure (:func:`nvc_train.evaluation.points.structure_label`). ``published``: add the
    review's published rows to bdrate.md and complexity.md where the run's anchor, structure and
    test sets are those of one of its tables (:mod:`nvc_train.evaluation.published`); the CSVs,
    the plots and the best / second-best marks keep to what was measured.
    """
    from nvc_train.metrics import AGGREGATION_RULE

    write_points(run_dir, rows)
    bd_rows: list[BDRow] = []
    shown_bdrate: list[PublishedBDRate] = []
    shown_complexity: list[PublishedComplexity] = []
    source = ""
    if anchor is not None:
        bd_rows = compute_bdrates(rows, anchor, bd_metrics, bd_methods, averaging)
        tables = _published_tables() if published else None
        if tables is not None:
            source = tables.citation()
            label = run_anchor_label(rows, anchor)
            classes = {row.test_set for row in bd_rows}
            shown_bdrate = matching_bdrate(tables, label, structure, classes, bd_metrics)
            shown_complexity = complexity_rows_to_show(tables, shown_bdrate)
            log.info(
                "published rows: %d BD-rate cells, %d Table 5 rows (anchor %s, structure %s)",
                len(shown_bdrate),
                len(shown_complexity),
                label or f"{anchor}, not one the review's tables name",
                structure,
            )
        markdown = bdrate_markdown(
            bd_rows,
            anchor=anchor,
            anchor_family=anchor_family,
            metrics=bd_metrics,
            method=bd_methods[0],
            averaging=averaging,
            aggregation_rule=AGGREGATION_RULE,
            structure=structure,
            points=rows,
            published=shown_bdrate,
            published_source=source,
        )
        write_bdrate(run_dir, bd_rows, markdown)
    write_complexity(run_dir, complexity, published=shown_complexity, published_source=source)
    write_rd_plots(run_dir, rows, bd_metrics)
    if anchor is not None:
        write_radar_plots(run_dir, bd_rows, complexity, anchor, bd_metrics, bd_methods[0])
    log.info("aggregation: %s", AGGREGATION_RULE)
    return bd_rows


def _published_tables() -> PublishedTables | None:
    """The shipped published figures; a broken file costs the published rows, never the run's tables."""
    try:
        return load_published()
    except PublishedDataError as error:
        log.error("published rows left out of bdrate.md / complexity.md: %s", error)
        return None
