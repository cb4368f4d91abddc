"""``evaluate(cfg)``: the function behind ``evaluate.py`` (and the tests, which call it directly)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from nvc_train.codecs.base import Codec
from nvc_train.ctc import load_sequences
from nvc_train.evaluation.complexity import complexity_table_rows
from nvc_train.evaluation.points import structure_label
from nvc_train.evaluation.preflight import check_inputs
from nvc_train.evaluation.report import write_run_tables
from nvc_train.evaluation.runner import MeasureOptions, Shard, collect_rows, make_jobs, run_jobs
from nvc_train.evaluation.store import (
    absolute_bitstreams,
    anchor_settings,
    build_listed_codecs,
    is_stored,
    make_store_jobs,
    many_codecs_requested,
    merge_anchor,
)

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate the codec under test (or every listed codec) and the anchor on the CTC sequences.

    Writes points.csv/json, bdrate.csv/md, complexity.csv/md, rd_*.png and radar_*.png into
    ``cfg.run_dir`` and returns the rows and the run folder. Under sharding, every rank codes its
    share and rank 0 waits for the others and writes the tables.

    ``codecs=[...]`` (or ``ckpt=[A,B]``) makes it a several-codec run: the points go to the shared
    point store (:mod:`nvc_train.evaluation.store`) and the tables have one row per codec; otherwise
    the one ``codec`` is coded into the run folder, as before.
    """
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    structure = instantiate(cfg.structure)
    anchor = instantiate(cfg.anchor) if cfg.get("anchor") else None
    imported = anchor is not None and getattr(anchor, "imported", False)
    many = many_codecs_requested(cfg)
    pairs: list[tuple[Codec, dict[str, Any]]] = []

    def build() -> list[Codec]:
        """Every codec this run codes (the anchor last), built before the checks of check_inputs."""
        nonlocal pairs
        if many:
            listed = build_listed_codecs(cfg)
            if anchor is not None and not imported:
                listed = merge_anchor(listed, anchor, anchor_settings(cfg))
            pairs = [(item.codec, item.settings) for item in listed]
            if anchor is not None and not imported:
                pairs.append((anchor, anchor_settings(cfg)))
            return [codec for codec, _ in pairs]
        codec: Codec = instantiate(cfg.codec)
        return [c for c in (codec, anchor) if c is not None and not getattr(c, "imported", False)]

    # Sequences, binaries and cfg files all checked before hours of coding: one message lists them all.
    sequences, coded = check_inputs(
        lambda: load_sequences(cfg.ctc, max_frames=cfg.frames, start_frame=cfg.start_frame), build, structure
    )

    store: Path | None = None
    if many:
        store = Path(cfg.point_store).expanduser().resolve()
        structure_settings = OmegaConf.to_container(cfg.structure, resolve=True)
        assert isinstance(structure_settings, dict)
        jobs = make_store_jobs(pairs, sequences, store, structure_settings, cfg.metrics)
        stored = sum(1 for job in jobs if not cfg.force and is_stored(job, structure))
        log.info(
            "%d codecs (%s), %d points: %d to code, %d already in the point store %s",
            len(coded), ", ".join(c.name for c in coded), len(jobs), len(jobs) - stored, stored, store,
        )  # fmt: skip
    else:
        jobs = make_jobs(coded, sequences)
    shard = Shard.from_env(cfg.shard.rank, cfg.shard.world_size)
    options = MeasureOptions(
        metrics=tuple(cfg.metrics),
        vmaf_ffmpeg=cfg.vmaf_ffmpeg,
        keep_reconstructions=cfg.keep_reconstructions,
        force=cfg.force,
        progress=cfg.progress,
    )
    log.info(
        "%d sequences x rate points x codecs = %d points; run folder %s", len(sequences), len(jobs), run_dir
    )
    run_jobs(jobs, structure, run_dir, options, shard)  # metric notices are logged once, where they arise
    if shard.rank != 0:
        return {"run_dir": run_dir, "rows": [], "bdrate": []}

    rows = collect_rows(jobs, run_dir, wait_s=cfg.shard.wait_s if shard.world_size > 1 else 0.0)
    if store is not None:
        rows = absolute_bitstreams(rows, store)
    if imported:
        rows += anchor.rows_for(sequences)
    # kMAC/px at the first test sequence's size (one count per codec: 1080p costs seconds on a CPU).
    size = (sequences[0].info.height, sequences[0].info.width) if sequences else (1080, 1920)
    complexity = complexity_table_rows(coded, rows, *size, **cfg.get("complexity", {}))
    bd_rows = write_run_tables(
        run_dir,
        rows,
        complexity,
        anchor=anchor.name if anchor is not None else None,
        anchor_family=anchor.family if anchor is not None else "",
        structure=structure_label(structure),
        bd_metrics=cfg.bd_metrics,
        bd_methods=cfg.bd_methods,
        averaging=cfg.class_averaging,
        published=bool(cfg.get("report", {}).get("published", True)),
    )
    if (run_dir / "bdrate.md").is_file():
        print((run_dir / "bdrate.md").read_text())
    print(f"results in {run_dir}")
    return {"run_dir": run_dir, "rows": rows, "bdrate": bd_rows, "jobs": len(jobs)}
