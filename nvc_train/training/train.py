"""``train(cfg)``: the function behind ``train.py`` (and the tests, which call it directly).

Everything is built from the config's ``_target_`` entries: the data module (``data``), the codec
network (``model``), the RD module around it (``module``), the Trainer (``trainer``), and the
callbacks and loggers as dicts of named entries (``callbacks``, ``logger``) built in a loop, so
switching one off is a config edit (``~callbacks.lr_monitor`` or ``logger=csv``).
"""

from __future__ import annotations

import importlib.metadata
import logging
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from nvc_train.training.loggers import finish_wandb

log = logging.getLogger(__name__)

RESUME_OFF = (None, False, "never", "none", "")
HPC_CHECKPOINT_PREFIX = "hpc_ckpt_"  # Lightning's name for its SLURM requeue checkpoints
# The exit status of a run stopped by SIGTERM after saving its checkpoint: 128 + SIGTERM, what a
# shell reports for a process the signal ended, so a scheduler or script sees "stopped", not "done".
SIGTERM_EXIT_STATUS = 128 + int(signal.SIGTERM)


def instantiate_named(group: Mapping[str, Any] | None, what: str) -> list[Any]:
    """Build every named ``_target_`` entry of a config dict (callbacks, loggers), in order.

    An entry set to null is switched off (``callbacks.lr_monitor=null``); an entry without a
    ``_target_`` is a mistake worth an error, not a silent skip.
    """
    built: list[Any] = []
    if not group:
        return built
    for name, entry in group.items():
        if entry is None:
            log.info("%s %s switched off", what, name)
            continue
        if not isinstance(entry, Mapping) or "_target_" not in entry:
            raise ValueError(f"{what} {name!r} has no _target_: {entry!r}")
        built.append(instantiate(entry, _convert_="all"))
    return built


def checkpoint_step(path: Path) -> int | None:
    """The global step stored in a checkpoint, or None when the file cannot be read.

    ``mmap`` reads the pickled metadata without loading the tensors, so ranking a few large
    checkpoints costs milliseconds. A file that does not load (a copy cut short by a crash) is
    reported and ranked out rather than stopping the resume.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(checkpoint["global_step"])
    except Exception as error:  # any unreadable file: skip it, say why
        log.warning("ignoring unreadable checkpoint %s: %s", path, error)
        return None


def resume_checkpoint(resume: Any, checkpoint_dir: Path, hpc_dir: Path | None = None) -> str | None:
    """The checkpoint to continue from.

    ``auto`` takes the furthest of ``<checkpoint_dir>/last.ckpt`` and the ``hpc_ckpt_N.ckpt`` files
    that a SLURM requeue signal (Lightning) or a SIGTERM (:class:`CheckpointOnSigterm`) left in
    ``hpc_dir`` (the Trainer's ``default_root_dir``): the highest global step, the newest file on a
    tie. Either may be ahead: a preemption saves between validations, a validation after a resume
    saves past an old preemption. A path must exist; ``never`` / null starts afresh.
    """
    if resume in RESUME_OFF:
        return None
    if resume == "auto":
        candidates = [checkpoint_dir / "last.ckpt"]
        if hpc_dir is not None:
            candidates += sorted(hpc_dir.glob(f"{HPC_CHECKPOINT_PREFIX}*.ckpt"))
        ranked = []
        for path in candidates:
            if path.is_file() and (step := checkpoint_step(path)) is not None:
                ranked.append((step, path.stat().st_mtime_ns, path))
        return str(max(ranked)[2]) if ranked else None
    path = Path(str(resume)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"resume checkpoint not found: {path}")
    return str(path)


class CheckpointOnSigterm(Callback):
    """On SIGTERM, save ``hpc_ckpt_N.ckpt`` (model, optimizer, scheduler, loops) before exiting.

    SLURM preemption, ``scancel``, a requeue and the end of a time limit all send SIGTERM, with a
    grace period (KillWait / GraceTime) before SIGKILL. Lightning notes the signal and raises
    ``SIGTERMException`` at the end of the current batch, on every rank at once under DDP; this
    hook runs then, before the Trainer tears down, so the checkpoint is a whole step. The name
    and folder are those of Lightning's SIGUSR1 auto-requeue checkpoint, so that
    :func:`resume_checkpoint` ranks both kinds together.
    """

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.global_step == 0:
            return
        path = trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir)
        trainer.save_checkpoint(path, weights_only=False)
        log.warning("SIGTERM: saved %s at step %d", path, trainer.global_step)


@rank_zero_only
def record_run(run_dir: Path) -> None:
    """Write what is needed to reproduce the run beside it: git commit and diff, installed packages.

    (Hydra already writes the composed config to ``.hydra/``; the checkpoint carries it too.)
    """
    info_dir = run_dir / "run_info"
    info_dir.mkdir(parents=True, exist_ok=True)
    repo = Path(__file__).resolve().parents[2]
    for name, args in (("git_commit.txt", ["rev-parse", "HEAD"]), ("git_diff.patch", ["diff", "HEAD"])):
        try:
            out = subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=20, check=False
            ).stdout
        except (OSError, subprocess.TimeoutExpired) as error:
            out = f"unavailable: {error}\n"
        (info_dir / name).write_text(out)
    packages = sorted(f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions())
    (info_dir / "packages.txt").write_text("\n".join(packages) + "\n")


def save_last_if_behind(trainer: pl.Trainer) -> None:
    """Make ``last.ckpt`` the state at the end of training, also when the last steps came after the
    last validation (``max_steps`` not a multiple of ``val_check_interval``): Lightning writes
    ``last.ckpt`` only together with a monitored checkpoint, so those steps would be lost on resume."""
    if trainer.fast_dev_run or trainer.global_step == 0:
        return
    for callback in trainer.checkpoint_callbacks:
        saved_at = getattr(callback, "_last_global_step_saved", None)
        if not callback.save_last or not callback.dirpath or saved_at == trainer.global_step:
            continue
        names = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        path = callback.format_checkpoint_name(names, filename=callback.CHECKPOINT_NAME_LAST)
        trainer.save_checkpoint(path, weights_only=False)
        callback.last_model_path = path
        log.info("saved %s at the final step %d", path, trainer.global_step)


def run_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python types (what checkpoints carry), with ``model_name`` set.

    ``model_name`` names the model in evaluation tables; null means the name of the ``model``
    config chosen (``dcvc_lite_tiny``), known only under Hydra's entry point.
    """
    config = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(config, dict)
    if not config.get("model_name"):
        from hydra.core.hydra_config import HydraConfig

        choice = HydraConfig.get().runtime.choices.get("model") if HydraConfig.initialized() else None
        config["model_name"] = choice
    return config


def _plain_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items()}


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train the configured codec; return metrics, checkpoint paths and the built objects.

    Returns a dict with ``run_dir`` (Path), ``ckpt_path`` (the ``last.ckpt`` written, or None, e.g.
    under ``fast_dev_run``), ``best_ckpt_path``, ``metrics`` (the last logged value of every metric,
    as floats), ``global_step``, ``skipped_steps``, ``resumed_from``, ``fit_s`` (seconds in ``fit``)
    and the ``trainer``, ``module`` and ``datamodule``.

    ``resume: auto`` continues from the furthest of ``<run_dir>/checkpoints/last.ckpt`` and the
    ``hpc_ckpt_N.ckpt`` that a SLURM requeue or a SIGTERM left (:func:`resume_checkpoint`). A
    SIGTERM saves such a checkpoint and exits with status 143. However the run ends, an open W&B
    run is closed and the run folder is logged.
    """
    run_dir = Path(cfg.paths.run_dir)
    checkpoint_dir = Path(cfg.paths.checkpoint_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    threads_before = torch.get_num_threads()
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    try:
        return _train(cfg, run_dir, checkpoint_dir)
    finally:
        torch.set_num_threads(threads_before)  # a test process calling train() keeps its own setting


def _train(cfg: DictConfig, run_dir: Path, checkpoint_dir: Path) -> dict[str, Any]:
    if cfg.get("seed") is not None:
        pl.seed_everything(int(cfg.seed), workers=True)
    record_run(run_dir)

    datamodule = instantiate(cfg.data, _convert_="all")
    net = instantiate(cfg.model, _convert_="all")
    module = instantiate(cfg.module, net=net, _convert_="all")
    module.nvc_config = run_config(cfg)
    callbacks = [*instantiate_named(cfg.get("callbacks"), "callback"), CheckpointOnSigterm()]
    loggers = instantiate_named(cfg.get("logger"), "logger")
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, _convert_="all"
    )

    for logger in trainer.loggers:  # the whole run config beside the metrics (W&B config, hparams.yaml)
        logger.log_hyperparams(module.nvc_config)

    hpc_dir = Path(trainer.default_root_dir)
    ckpt_path = resume_checkpoint(cfg.get("resume"), checkpoint_dir, hpc_dir)
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    elif SLURMEnvironment.detect() and any(hpc_dir.glob(f"{HPC_CHECKPOINT_PREFIX}*.ckpt")):
        log.warning(  # Lightning's own rule under SLURM, which a null ckpt_path cannot switch off
            "resume=%s, but under SLURM Lightning continues from the %s*.ckpt in %s; "
            "give the run a new folder to start afresh",
            cfg.get("resume"),
            HPC_CHECKPOINT_PREFIX,
            hpc_dir,
        )
    failed = True
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        save_last_if_behind(trainer)
        failed = False
    except SIGTERMException:
        log.warning(
            "stopped by SIGTERM at step %d (checkpoint in %s); the same command resumes",
            trainer.global_step,
            trainer.default_root_dir,
        )
        raise SystemExit(SIGTERM_EXIT_STATUS) from None
    except BaseException:
        log.exception("training failed; run folder: %s", run_dir)
        raise
    finally:
        finish_wandb(failed)
    fit_s = time.perf_counter() - start

    checkpoint = trainer.checkpoint_callback
    last = getattr(checkpoint, "last_model_path", "") or None
    best = getattr(checkpoint, "best_model_path", "") or None
    log.info("run folder: %s; last checkpoint: %s", run_dir, last)
    return {
        "run_dir": run_dir,
        "ckpt_path": last,
        "best_ckpt_path": best,
        "metrics": _plain_metrics(trainer.callback_metrics),
        "global_step": trainer.global_step,
        "skipped_steps": module.skipped_steps,
        "resumed_from": ckpt_path,
        "fit_s": fit_s,
        "trainer": trainer,
        "module": module,
        "datamodule": datamodule,
    }
