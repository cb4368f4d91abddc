"""``CTCEvaluation``: real-bitstream RD points and BD-rate of the model being trained, during training.

Validation losses are estimates (likelihood bits, no entropy coder, no container); what a paper
reports is bits read from files. This callback closes that gap while training runs: every N steps
or epochs (and at the end of the fit) it wraps a frozen copy of the live network in the same
:class:`~nvc_train.codecs.neural.NeuralCodec` and runs it through the same evaluation runner as
``evaluate.py`` (encode to a file, decode that file, measure, bits from the file size)::

    live net --deepcopy, update tables--> NeuralCodec --runner--> <out_dir>/step_0000450/points/...
    anchor (x265 / CSV) --runner, once--> <out_dir>/anchor/points/...         (re-used, never re-coded)
    rows --compute_bdrates--> bdrate.csv/md, rd_*.png, ctc/* scalars, W&B tables and plots

Under DDP every rank codes its share of the (sequence, rate point) jobs (the runner's ``Shard``),
the rows are gathered with ``torch.distributed.all_gather_object`` and rank 0 writes and logs them,
so the numbers equal those of a single-process run (``tests/test_callbacks.py`` checks it).

A tiny or young model sits far below the anchor's rate range; BD-rate is then not measurable and
is logged as NaN, with the reason (no overlap, non-monotone curve) in ``bdrate.csv`` and the log.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from nvc_train.codecs.base import Codec
from nvc_train.codecs.neural import frozen_codec, spread_rate_points
from nvc_train.ctc import CONFIG_DIR, CTCSequence, load_sequences
from nvc_train.evaluation.plots import write_rd_plots
from nvc_train.evaluation.points import Job, estimated_bpp, structure_label
from nvc_train.evaluation.runner import MeasureOptions, Shard, make_jobs, run_jobs
from nvc_train.evaluation.tables import (
    BDRow,
    bdrate_markdown,
    compute_bdrates,
    sort_rows,
    write_bdrate,
    write_points,
)
from nvc_train.metrics.aggregate import class_mean
from nvc_train.structure import CodingStructure

log = logging.getLogger(__name__)


def embedded_ctc() -> dict[str, Any]:
    """The ``configs/ctc/embedded.yaml`` registry as a plain dict (the callback's default CTC set)."""
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "embedded.yaml"), resolve=True)
    assert isinstance(config, dict)
    return config


def select_sequences(
    ctc: Mapping[str, Any], names: Sequence[str] | None, frames: int | None
) -> list[CTCSequence]:
    """The registry's sequences (first ``frames`` frames each), restricted to ``names`` in their order."""
    sequences = load_sequences(ctc, max_frames=frames)
    if not names:
        return sequences
    by_name = {s.name: s for s in sequences}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"CTC subset names {unknown} are not in the registry; known: {sorted(by_name)}")
    return [by_name[n] for n in names]


def gather_shards(mine: Any, shard: Shard) -> list[Any]:
    """Every rank's ``mine`` on every rank, in rank order (``all_gather_object``); one process: ``[mine]``."""
    if shard.world_size == 1:
        return [mine]
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"sharded over {shard.world_size} ranks but torch.distributed is not initialised")
    gathered: list[Any] = [None] * shard.world_size
    dist.all_gather_object(gathered, mine)
    return gathered


def rd_scalars(rows: Sequence[Mapping[str, Any]], codec: str, metrics: Sequence[str]) -> dict[str, float]:
    """Per rate point, means over the sequences of ``codec``'s rows: file bpp, estimated bpp, quality.

    Means are :func:`~nvc_train.metrics.aggregate.class_mean`, the rule of every table and plot: a
    value some sequence lacks is logged as NaN (not measurable), never as the mean of the others.
    """
    by_rate: dict[Any, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["codec"] == codec:
            by_rate[row["rate_point"]].append(row)
    out: dict[str, float] = {}
    ratios: list[float | None] = []
    for rate, group in sorted(by_rate.items()):
        out[f"ctc/bpp_q{rate}"] = _logged(class_mean(r["bpp"] for r in group))
        out[f"ctc/bpp_est_q{rate}"] = _logged(class_mean(estimated_bpp(r) for r in group))
        for metric in metrics:
            out[f"ctc/{metric}_q{rate}"] = _logged(class_mean(r.get(metric) for r in group))
        ratios += [float(r["bits"]) / float(r["est_bits"]) if r.get("est_bits") else None for r in group]
    out["ctc/file_over_est_bits"] = _logged(class_mean(ratios))
    return out


def _logged(value: float | None) -> float:
    """A scalar for the loggers: NaN stands for "not measurable" (they take no None)."""
    return math.nan if value is None else value


class CTCEvaluation(Callback):
    """Real-bitstream evaluation of the live model on a CTC subset, against an anchor, while training.

    Args:
        ctc: a ``configs/ctc`` registry node (dict); None: the embedded clips.
        sequences: names of the sequences to code (the subset); None: all of the registry.
        frames: frames coded per sequence (from the first).
        q_indices: the model's rate points; None: ``num_rate_points`` spread over its q range.
        num_rate_points: how many rate points when ``q_indices`` is None.
        structure: the coding structure; None: low delay, first frame intra only.
        anchor: a codec (e.g. ``X265Codec``) coded once through the runner, or imported points
            (``ImportedPoints``, a CSV); None: RD points only, no BD-rate.
        out_dir: folder of the evaluations (one ``step_NNNNNNN`` per global step); None:
            ``<trainer.default_root_dir>/ctc_eval``.
        anchor_dir: where the anchor's points live (share one across runs to code it once per
            machine); None: ``<out_dir>/anchor``.
        every_n_steps, every_n_epochs: when to evaluate (None / 0: never on that clock).
        at_fit_start: also evaluate before the first step (the initial weights).
        at_fit_end: also evaluate at the end of the fit (skipped if that step was just evaluated).
        metrics: what the runner measures (``psnr``, ``msssim``, ``vmaf``, ``lpips``).
        bd_metrics: points.csv columns BD-rate is computed on.
        bd_method: ``pchip`` or ``cubic``.
        codec_name: the model's name in tables; None: the run's ``model_name``.
    """

    def __init__(
        self,
        ctc: Mapping[str, Any] | None = None,
        sequences: Sequence[str] | None = None,
        frames: int | None = 3,
        q_indices: Sequence[int] | None = None,
        num_rate_points: int = 4,
        structure: CodingStructure | None = None,
        anchor: Codec | Any | None = None,
        out_dir: str | Path | None = None,
        anchor_dir: str | Path | None = None,
        every_n_steps: int | None = None,
        every_n_epochs: int | None = None,
        at_fit_start: bool = False,
        at_fit_end: bool = True,
        metrics: Sequence[str] = ("psnr", "msssim"),
        bd_metrics: Sequence[str] = ("psnr_yuv", "msssim_yuv"),
        bd_method: str = "pchip",
        codec_name: str | None = None,
    ) -> None:
        for name, value in (("every_n_steps", every_n_steps), ("every_n_epochs", every_n_epochs)):
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 (0 or null: never), got {value}")
        if bd_method not in ("pchip", "cubic"):
            raise ValueError(f"bd_method must be 'pchip' or 'cubic', got {bd_method!r}")
        if num_rate_points < 1:
            raise ValueError(f"num_rate_points must be >= 1, got {num_rate_points}")
        self.ctc = dict(ctc) if ctc is not None else None
        self.sequence_names = list(sequences) if sequences else None
        self.frames = frames
        self.q_indices = [int(q) for q in q_indices] if q_indices is not None else None
        self.num_rate_points = int(num_rate_points)
        self.structure = structure or CodingStructure("ld", -1, 1)
        self.anchor = anchor
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.anchor_dir = Path(anchor_dir) if anchor_dir is not None else None
        self.every_n_steps = int(every_n_steps or 0)
        self.every_n_epochs = int(every_n_epochs or 0)
        self.at_fit_start = at_fit_start
        self.at_fit_end = at_fit_end
        self.options = MeasureOptions(metrics=tuple(metrics), progress=False)
        self.bd_metrics = list(bd_metrics)
        self.bd_method = bd_method
        self.codec_name = codec_name
        #: One entry per evaluation (rank 0): step, rows, BD rows, scalars, folder.
        self.history: list[dict[str, Any]] = []
        self._sequences: list[CTCSequence] | None = None
        self._anchor_rows: list[dict[str, Any]] | None = None
        self._last_step: int | None = None

    # ---- when --------------------------------------------------------------------------------------

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.at_fit_start and not trainer.sanity_checking:
            self.evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self.evaluate(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if (
            self.every_n_epochs
            and epoch % self.every_n_epochs == 0
            and trainer.global_step != self._last_step
        ):
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.at_fit_end and trainer.global_step != self._last_step:
            self.evaluate(trainer, pl_module)

    # ---- what --------------------------------------------------------------------------------------

    def _setup(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._sequences is None:
            self._sequences = select_sequences(self.ctc or embedded_ctc(), self.sequence_names, self.frames)
            if not self._sequences:
                raise ValueError("the CTC subset holds no sequences")
        if self.out_dir is None:
            self.out_dir = Path(trainer.default_root_dir) / "ctc_eval"
        if self.anchor_dir is None:
            self.anchor_dir = self.out_dir / "anchor"
        if self.codec_name is None:
            config = getattr(pl_module, "nvc_config", None) or {}
            self.codec_name = config.get("model_name") or type(pl_module.net).__name__.lower()

    def evaluate(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any] | None:
        """Code the subset with the live weights on every rank's share; rank 0 writes and logs.

        Returns the evaluation's record on rank 0, None on the other ranks and under ``fast_dev_run``
        (which Lightning treats as a smoke test: no checkpoints, no loggers, and here no coding).
        """
        if getattr(trainer, "fast_dev_run", False):  # a smoke test of the steps, like Lightning's checkpoints
            log.info("fast_dev_run: CTC evaluation at step %d skipped", trainer.global_step)
            return None
        started = time.perf_counter()
        self._setup(trainer, pl_module)
        assert self._sequences is not None and self.out_dir is not None and self.anchor_dir is not None
        step = trainer.global_step
        self._last_step = step
        shard = Shard(trainer.global_rank, trainer.world_size)
        net = pl_module.net
        rates = self.q_indices or spread_rate_points(int(net.num_q), self.num_rate_points)
        codec = frozen_codec(net, str(self.codec_name), rates, pl_module.device)
        folder = self.out_dir / f"step_{step:07d}"
        jobs = make_jobs([codec], self._sequences)
        anchor_jobs = self._anchor_jobs()
        mine, anchor_mine, error = self._run_share(jobs, anchor_jobs, folder, shard)
        log.info(
            "CTC evaluation at step %d: rank %d coded %d of %d points",
            step,
            shard.rank,
            len(mine) + len(anchor_mine),
            len(jobs) + len(anchor_jobs),
        )
        # One collective carries rows and failures, so a rank that failed never leaves the others
        # waiting in a gather: every rank learns of it and raises.
        parts = gather_shards((mine, anchor_mine, error), shard)
        errors = [part[2] for part in parts if part[2]]
        if errors:
            raise RuntimeError(f"CTC evaluation at step {step} failed: " + "; ".join(errors))
        rows = [row for part in parts for row in part[0]]
        if anchor_jobs:  # coded this time; later evaluations re-use these rows (and the runner its files)
            self._anchor_rows = [row for part in parts for row in part[1]]
        anchor_rows = self._anchor_rows or []
        if shard.rank != 0:
            return None

        rows = sort_rows(rows + anchor_rows)
        bd_rows = self._bdrates(rows)
        write_points(folder, rows)
        plots = write_rd_plots(folder, rows, self.bd_metrics)
        scalars = rd_scalars(rows, codec.name, self.bd_metrics)
        for row in bd_rows:
            scalars[f"ctc/bd_rate_{row.metric}"] = math.nan if row.bd_rate is None else row.bd_rate
            if row.bd_rate is None:
                log.info(
                    "step %d: BD-rate (%s) vs %s not measurable: %s", step, row.metric, row.anchor, row.note
                )
        scalars["ctc/eval_s"] = time.perf_counter() - started
        record = {
            "step": step,
            "folder": folder,
            "rows": rows,
            "bdrate": bd_rows,
            "scalars": scalars,
            "plots": plots,
            "codec": codec.name,
        }
        self.history.append(record)
        self._log(trainer, record)
        log.info(
            "CTC evaluation at step %d: %d points in %.1f s, results in %s",
            step,
            len(jobs),
            scalars["ctc/eval_s"],
            folder,
        )
        return record

    def _run_share(
        self, jobs: list[Job], anchor_jobs: list[Job], folder: Path, shard: Shard
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str | None]:
        """This rank's model and anchor points; under DDP a failure is returned (to be gathered), alone
        it is raised as it is."""
        assert self.anchor_dir is not None
        try:
            mine = run_jobs(jobs, self.structure, folder, self.options, shard)
            anchor_mine = run_jobs(anchor_jobs, self.structure, self.anchor_dir, self.options, shard)
        except Exception as error:
            if shard.world_size == 1:
                raise
            log.exception("CTC evaluation failed on rank %d", shard.rank)
            return [], [], f"rank {shard.rank}: {type(error).__name__}: {error}"
        return mine, anchor_mine, None

    def _anchor_jobs(self) -> list[Job]:
        """The anchor's jobs the first time (none afterwards); imported points are read, not coded."""
        if self.anchor is None or self._anchor_rows is not None:
            return []
        assert self._sequences is not None
        if getattr(self.anchor, "imported", False):
            self._anchor_rows = self.anchor.rows_for(self._sequences)
            return []
        return make_jobs([self.anchor], self._sequences)

    def _bdrates(self, rows: list[dict[str, Any]]) -> list[BDRow]:
        if self.anchor is None:
            return []
        bd_rows = compute_bdrates(rows, self.anchor.name, self.bd_metrics, [self.bd_method], "sequence")
        return bd_rows

    def _log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """Scalars to every logger (CSV too); tables, RD charts and plots to W&B; bdrate.md to disk."""
        from nvc_train.callbacks.wandb_media import log_ctc_to_wandb
        from nvc_train.metrics import AGGREGATION_RULE

        folder: Path = record["folder"]
        if self.anchor is not None:
            markdown = bdrate_markdown(
                record["bdrate"],
                anchor=self.anchor.name,
                anchor_family=getattr(self.anchor, "family", "conventional"),
                metrics=self.bd_metrics,
                method=self.bd_method,
                averaging="sequence",
                aggregation_rule=AGGREGATION_RULE,
                structure=structure_label(self.structure),
            )
            write_bdrate(folder, record["bdrate"], markdown)
        for logger in trainer.loggers:
            logger.log_metrics(record["scalars"], step=record["step"])
            logger.save()
        log_ctc_to_wandb(trainer, record, self.bd_metrics)
