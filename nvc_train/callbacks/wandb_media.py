"""What the W&B dashboard shows beyond scalars: tables, charts and plots of the callbacks' results.

Scalars (loss terms, estimated bpp, PSNR, lambda, learning rate, ``ctc/*``, ``complexity/*``) reach
every logger through ``log_metrics``; W&B draws their curves by itself. This module adds what only
W&B can show, each under a fixed key so that a dashboard built once keeps working:

* ``ctc/points`` (table of every RD point: file bpp beside the estimate), ``ctc/bpp_est_vs_real``
  (scatter of the two), ``ctc/rd_<metric>`` (RD curves of the model and the anchor, a W&B line
  chart), ``ctc/bdrate`` (table, with the reason where a BD-rate is not measurable),
  ``ctc/rd_plot`` (the runner's RD plot PNGs);
* ``complexity/table`` (the review's Table 5 row of the model);
* ``samples/reconstructions``, logged by
  :class:`~nvc_train.callbacks.reconstruction_samples.ReconstructionSamples` through
  :func:`wandb_loggers` (that callback needs no W&B: it writes its PNGs in any run).

Nothing here runs unless a ``WandbLogger`` is attached (``logger=[csv,wandb]``, the default); in
offline mode everything lands in ``<run dir>/wandb/offline-run-*`` for ``wandb sync``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # Lightning is imported where a trainer's loggers are looked at
    from lightning.pytorch import Trainer

POINT_TABLE_COLUMNS = [
    "step", "codec", "class", "sequence", "rate_point", "bpp", "bpp_est", "psnr_yuv", "msssim_yuv",
    "enc_fps", "dec_fps",
]  # fmt: skip
BD_TABLE_COLUMNS = ["step", "codec", "anchor", "class", "metric", "method", "bd_rate", "bd_quality", "note"]


def wandb_loggers(trainer: Trainer) -> list[Any]:
    """The trainer's W&B loggers (none when W&B is not configured or disabled)."""
    from lightning.pytorch.loggers import WandbLogger

    return [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]


def _cell(value: Any) -> Any:
    """Table cells: numbers as floats (None for missing), text as text."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return None if isinstance(value, float) and math.isnan(value) else value
    return str(value)


def log_ctc_to_wandb(trainer: Trainer, record: Mapping[str, Any], metrics: Sequence[str]) -> None:
    """Log one CTC evaluation's points, RD curves, BD-rate table and plots to every W&B logger."""
    loggers = wandb_loggers(trainer)
    if not loggers:
        return
    import wandb

    from nvc_train.evaluation.plots import class_average_curves
    from nvc_train.evaluation.points import estimated_bpp

    step = int(record["step"])
    rows = record["rows"]
    point_data = [
        [step, *(_cell(row.get(c)) for c in POINT_TABLE_COLUMNS[1:6]), _cell(estimated_bpp(row))]
        + [_cell(row.get(c)) for c in POINT_TABLE_COLUMNS[7:]]
        for row in rows
    ]
    points = wandb.Table(columns=POINT_TABLE_COLUMNS, data=point_data)
    model_points = wandb.Table(
        columns=POINT_TABLE_COLUMNS, data=[r for r in point_data if r[1] == record["codec"]]
    )
    bd_data = [
        [
            step,
            r.codec,
            r.anchor,
            r.test_set,
            r.metric,
            r.method,
            _cell(r.bd_rate),
            _cell(r.bd_quality),
            r.note,
        ]
        for r in record["bdrate"]
    ]
    media: dict[str, Any] = {
        "ctc/points": points,
        "ctc/bpp_est_vs_real": wandb.plot.scatter(
            model_points, "bpp", "bpp_est", title=f"estimated vs file bpp, step {step}"
        ),
        "ctc/bdrate": wandb.Table(columns=BD_TABLE_COLUMNS, data=bd_data),
    }
    for test_set in sorted({str(r["class"]) for r in rows}):
        for metric in metrics:
            curves = class_average_curves(rows, test_set, metric)
            if not curves:
                continue
            names = sorted(curves)
            media[f"ctc/rd_{metric}"] = wandb.plot.line_series(
                xs=[curves[n][0] for n in names],
                ys=[curves[n][1] for n in names],
                keys=names,
                title=f"{test_set} {metric} vs bpp (files), step {step}",
                xname="bpp",
            )
    images = [wandb.Image(str(path), caption=Path(path).stem) for path in record.get("plots", [])]
    if images:
        media["ctc/rd_plot"] = images
    for logger in loggers:
        logger.experiment.log({**media, "trainer/global_step": step})


def log_complexity_to_wandb(trainer: Trainer, row: Mapping[str, Any], columns: Sequence[str]) -> None:
    """The complexity row (Table 5 layout) as a W&B table; its numbers are logged as scalars elsewhere."""
    loggers = wandb_loggers(trainer)
    if not loggers:
        return
    import wandb

    table = wandb.Table(columns=list(columns), data=[[_cell(row.get(c)) for c in columns]])
    for logger in loggers:
        logger.experiment.log({"complexity/table": table, "trainer/global_step": trainer.global_step})
