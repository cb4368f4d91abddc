"""``trainer=ddp`` on two CPU processes (gloo): what data each rank sees, how metrics are reduced,
and who writes checkpoints.

One ``train.py`` run with a probe callback (built from the config like any other callback) that
writes, per rank, the sampler's indices, a fingerprint of every training batch, the reduced
validation metrics and every checkpoint file the rank actually wrote. The reduced ``val/loss`` is
then checked against a single-process validation of the saved checkpoint on all the clips.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback

from tests.test_resume import LEAN_CALLBACKS
from tests.test_train import SHRINK, make_cfg, run_train_py

TRAIN_SAMPLES, VAL_CLIPS = 4, 2  # SHRINK's data.samples_per_epoch and data.val_max_clips


class DDPProbe(Callback):
    """Test helper: records what this rank sees and writes into ``<out_dir>/rank<N>.json``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.record: dict[str, Any] = {"batches": [], "written": []}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        checkpoint_io = trainer.strategy.checkpoint_io
        save = checkpoint_io.save_checkpoint

        def recording_save(checkpoint: dict, path: Any, storage_options: Any = None) -> None:
            self.record["written"].append(str(path))
            save(checkpoint, path, storage_options=storage_options)

        checkpoint_io.save_checkpoint = recording_save  # only real writes reach the IO plugin

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        train_sampler = trainer.train_dataloader.sampler
        val_loader = trainer.val_dataloaders
        self.record["sampler"] = type(train_sampler).__name__
        self.record["train_indices"] = [int(i) for i in train_sampler]
        self.record["val_indices"] = [int(i) for i in val_loader.sampler]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        digest = hashlib.sha1(batch["y"].detach().cpu().numpy().tobytes()).hexdigest()
        self.record["batches"].append([trainer.global_step, digest])

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.record["val"] = {
            key: float(value) for key, value in trainer.callback_metrics.items() if key.startswith("val/")
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.record))


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("ddp")
    run_dir, probe_dir = tmp / "run", tmp / "probe"
    overrides = [  # besides SHRINK
        *LEAN_CALLBACKS,
        "data.frames=2",
        "data.val_frames=2",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
    ]
    run_train_py(
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
        "trainer.num_sanity_val_steps=0",
        "logger=csv",
        *SHRINK,
        *overrides,
        "+callbacks.ddp_probe._target_=tests.test_ddp.DDPProbe",
        f"+callbacks.ddp_probe.out_dir={probe_dir}",
        f"hydra.run.dir={run_dir}",
    )
    ranks = [json.loads((probe_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    return {"run_dir": run_dir, "ranks": ranks, "overrides": overrides, "tmp": tmp}


@pytest.mark.slow
def test_each_rank_reads_its_own_share(ddp_run: dict[str, Any]) -> None:
    rank0, rank1 = ddp_run["ranks"]
    assert rank0["sampler"] == rank1["sampler"] == "DistributedSampler"
    for key, size in (("train_indices", TRAIN_SAMPLES), ("val_indices", VAL_CLIPS)):
        assert not set(rank0[key]) & set(rank1[key]), key
        assert sorted(rank0[key] + rank1[key]) == list(range(size)), key
    assert len(rank0["batches"]) == len(rank1["batches"]) == 2
    for (step0, digest0), (step1, digest1) in zip(rank0["batches"], rank1["batches"], strict=True):
        assert step0 == step1 and digest0 != digest1, "both ranks trained on the same batch"


@pytest.mark.slow
def test_checkpoints_are_written_by_rank_zero_only(ddp_run: dict[str, Any]) -> None:
    rank0, rank1 = ddp_run["ranks"]
    assert rank1["written"] == []
    written = {Path(p).name for p in rank0["written"]}
    assert {"last.ckpt", "step0000002.ckpt"} <= written
    checkpoint = torch.load(ddp_run["run_dir"] / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2
    assert checkpoint["nvc_config"]["trainer"]["strategy"].startswith("ddp")


@pytest.mark.slow
def test_validation_metrics_are_reduced_over_ranks(ddp_run: dict[str, Any]) -> None:
    """Both ranks hold the same reduced val/loss, equal to one process validating every clip."""
    rank0, rank1 = ddp_run["ranks"]
    assert rank0["val"] and rank0["val"] == rank1["val"]
    cfg = make_cfg(ddp_run["tmp"] / "single", *ddp_run["overrides"])
    datamodule = instantiate(cfg.data, _convert_="all")
    module = instantiate(cfg.module, net=instantiate(cfg.model, _convert_="all"), _convert_="all")
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    (single,) = trainer.validate(
        module, datamodule=datamodule, ckpt_path=str(ddp_run["run_dir"] / "checkpoints" / "last.ckpt"),
        weights_only=True, verbose=False,
    )  # fmt: skip
    for key in ("val/loss", "val/psnr_yuv", "val/bpp_est"):
        assert rank0["val"][key] == pytest.approx(single[key], rel=1e-5), key
