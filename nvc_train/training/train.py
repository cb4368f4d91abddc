"""``train(cfg)``: the function behind ``train.py`` (and the tests, which call it directly).

Everything is built from the config's ``_target_`` entries: the data module (``data``), the codec
network (``model``), the RD module around it (``module``), the Trainer (``trainer``), and the
callbacks and loggers as dicts of named entries (``callbacks``, ``logger``) built in a loop, so
switching one off is a config edit (``~callbacks.lr_monitor`` or ``logger=csv``).

A run that ends without a usable result fails with a :class:`TrainingError` that says why and what
to change (``train.py`` prints it as one line and exits with status 1): config values never set,
no optimisation step made, a loss or weights that are no longer finite, or more skipped steps than
``max_skipped_share``. Checkpoints of a diverged model are renamed ``*.nonfinite.ckpt`` so that
neither ``resume: auto`` nor ``evaluate.py ckpt=.../last.ckpt`` takes them for a trained model.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import re
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
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from nvc_train.networks import load_checkpoint
from nvc_train.training.errors import TrainingError
from nvc_train.training.loggers import finish_wandb

log = logging.getLogger(__name__)

RESUME_OFF = (None, False, "never", "none", "")
HPC_CHECKPOINT_PREFIX = "hpc_ckpt_"  # Lightning's name for its SLURM requeue checkpoints
# The exit status of a run stopped by SIGTERM after saving its checkpoint: 128 + SIGTERM, what a
# shell reports for a process the signal ended, so a scheduler or script sees "stopped", not "done".
SIGTERM_EXIT_STATUS = 128 + int(signal.SIGTERM)
# The RD module's validation loss: what checkpoints are ranked by and what says a run still learns.
VAL_LOSS = "val/loss"
# A checkpoint of a diverged model keeps its step in the name but not a name resume or evaluation takes.
NONFINITE_TAG = ".nonfinite"


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
        if not ranked:
            return None
        chosen = max(ranked)[2]
    else:
        chosen = Path(str(resume)).expanduser()
        if not chosen.is_file():
            raise FileNotFoundError(f"resume checkpoint not found: {chosen}")
    # Lightning builds nothing from the file's config, but a file naming a foreign class is hostile:
    # refuse it here, as evaluate.py and InitWeights do, before the fit restores anything from it.
    load_checkpoint(chosen, mmap=True, require_weights=False)
    return str(chosen)


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


def unset_config_values(cfg: DictConfig | ListConfig, prefix: str = "") -> list[str]:
    """The dotted keys of every ``???`` value left in the config, each with its environment variable.

    Hydra only notices a ``???`` when something reads it, deep inside instantiation, and then
    prints a traceback; asking before anything is built names all of them at once, and a value
    that reads ``${oc.env:VIMEO90K_ROOT,???}`` also names the variable that would set it.
    Values that fail for another reason are left to fail where they are used.
    """
    unset: list[str] = []
    is_dict = isinstance(cfg, DictConfig)
    for key in list(cfg.keys()) if is_dict else range(len(cfg)):
        path = f"{prefix}[{key}]" if not is_dict else f"{prefix}.{key}" if prefix else str(key)
        try:
            value = cfg[key]
        except MissingMandatoryValue:
            value = MISSING
        except OmegaConfBaseException:
            continue
        if isinstance(value, str) and value == MISSING:  # also ${oc.env:NAME,???} with NAME unset
            raw = OmegaConf.to_container(cfg, resolve=False)[key]  # type: ignore[index]
            env = re.search(r"oc\.env:\s*([A-Za-z_]\w*)", str(raw))
            unset.append(f"{path} (or set {env.group(1)})" if env else path)
        elif isinstance(value, (DictConfig, ListConfig)):
            unset += unset_config_values(value, path)
    return unset


def check_config(cfg: DictConfig) -> float | None:
    """Refuse, before anything is built, a config that cannot train; return ``max_skipped_share``.

    A mistake found here costs the user seconds, not the hours of a run that fails at its end.
    """
    unset = unset_config_values(cfg)
    if unset:
        example = unset[0].split(" ")[0]
        raise TrainingError(
            f"config value(s) not set: {', '.join(unset)}; give each on the command line, "
            f"e.g. python train.py {example}=/path/to/it"
        )
    share = cfg.get("max_skipped_share")
    if share is not None and not 0.0 <= float(share) <= 1.0:
        raise TrainingError(f"max_skipped_share must be a share in [0, 1] or null (no limit), got {share}")
    return None if share is None else float(share)


def nonfinite_tensors(module: torch.nn.Module) -> list[str]:
    """Names of the floating-point parameters and buffers that hold a NaN or an infinity.

    The module's state dict is what a checkpoint stores, so this is what would be saved.
    """
    return [
        name
        for name, tensor in module.state_dict().items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]


def check_steps_made(trainer: pl.Trainer) -> None:
    """A run that made no optimisation step learned nothing and saved nothing: say so, do not exit 0.

    Counted over the whole run, so the same command run again after a finished run (resumed at
    ``max_steps``, nothing left to do) still succeeds.
    """
    if trainer.global_step > 0:
        return
    raise TrainingError(
        "no optimisation step was made "
        f"(trainer.max_steps={trainer.max_steps}, trainer.max_epochs={trainer.max_epochs}, "
        f"trainer.limit_train_batches={trainer.limit_train_batches}), so nothing was learned and no "
        "checkpoint was written; set trainer.max_steps to a positive number (e.g. trainer.max_steps=900) "
        "and make sure an epoch holds at least one full batch (data.samples_per_epoch >= data.batch_size)"
    )


def set_aside(path: Path) -> Path:
    """Rename ``NAME.ckpt`` to ``NAME.nonfinite.ckpt`` (replacing an older one) and return the new path."""
    target = path.with_name(f"{path.stem}{NONFINITE_TAG}{path.suffix}")
    path.replace(target)
    return target


def set_aside_diverged_checkpoints(trainer: pl.Trainer) -> tuple[list[str], str | None]:
    """Rename the checkpoints of a diverged model; return what was renamed and the best one kept.

    ``last.ckpt`` always goes: it holds the diverged weights (Lightning wrote it at the last
    validation, :func:`save_last_if_behind` after it), and leaving it would make ``resume: auto``
    continue the divergence and ``evaluate.py`` measure NaN. A top-k checkpoint goes when its
    ``val/loss`` was not finite (Lightning ranks a NaN as the worst score but still keeps it while
    fewer than k are saved); one with a finite score is an earlier, healthy model and stays.
    Only global rank 0 touches files.
    """
    renamed: list[str] = []
    kept: str | None = None
    for callback in trainer.checkpoint_callbacks:
        last = getattr(callback, "last_model_path", "")
        top_k = getattr(callback, "best_k_models", {})
        paths = [Path(last)] if last else []
        paths += [Path(path) for path, score in top_k.items() if not math.isfinite(float(score))]
        best, score = getattr(callback, "best_model_path", ""), getattr(callback, "best_model_score", None)
        if best and score is not None and math.isfinite(float(score)):
            kept = f"{best} ({VAL_LOSS}={float(score):.4g})"
        for path in dict.fromkeys(paths):
            if trainer.is_global_zero and (path.is_file() or path.is_symlink()):
                renamed.append(f"{path.name} -> {set_aside(path).name}")
    return renamed, kept


def check_outcome(
    trainer: pl.Trainer, module: pl.LightningModule, cfg: DictConfig, max_skipped_share: float | None
) -> None:
    """Fail a run whose result cannot be trusted, with every reason and what to change.

    Diverged: the last validation's ``val/loss`` is not finite (a model whose bits or
    reconstructions are NaN cannot be evaluated) or a weight is not finite; its checkpoints are
    set aside (:func:`set_aside_diverged_checkpoints`). Too many skipped steps (the RD module skips
    a step whose loss or gradient is not finite): the weights are finite and ``last.ckpt`` stays,
    but the model learned from only part of its batches, which usually means a learning rate or
    data problem that a plain "done" would hide.
    """
    check_steps_made(trainer)
    problems: list[str] = []
    val_loss = trainer.callback_metrics.get(VAL_LOSS)  # present only when this fit validated
    if val_loss is not None and not math.isfinite(float(val_loss)):
        problems.append(f"the last validation's loss ({VAL_LOSS}) is {float(val_loss)}")
    bad = nonfinite_tensors(module)
    if bad:
        total = sum(1 for t in module.state_dict().values() if t.is_floating_point())
        problems.append(f"{len(bad)} of {total} weight tensors are not finite (first: {bad[0]})")
    diverged = bool(problems)
    skipped = int(getattr(module, "skipped_steps", 0))
    share = skipped / trainer.global_step
    too_many = max_skipped_share is not None and share > max_skipped_share
    if too_many:
        problems.append(
            f"{skipped} of {trainer.global_step} optimizer steps ({share:.0%}) were skipped because the loss "
            f"or a gradient was not finite, more than max_skipped_share={max_skipped_share}"
        )
    if not problems:
        return
    lines = [("training diverged" if diverged else "training skipped too many steps") + ":"]
    lines += [f"  - {problem}" for problem in problems]
    if diverged:
        renamed, kept = set_aside_diverged_checkpoints(trainer)
        if renamed:
            lines.append(
                "The diverged model's checkpoints were renamed so that resume: auto and evaluate.py do not "
                f"take them: {', '.join(renamed)}."
            )
        lines.append(
            f"The best checkpoint by {VAL_LOSS} is kept: {kept}."
            if kept
            else f"No checkpoint of this run has a finite {VAL_LOSS}."
        )
    else:
        lines.append(
            "The weights are finite and the checkpoints are kept, but the model learned from only "
            f"{trainer.global_step - skipped} of {trainer.global_step} batches."
        )
    lr = OmegaConf.select(cfg, "module.optimizer.lr", default=None)
    lr_text = f"{lr:g}" if isinstance(lr, (int, float)) else str(lr)
    lines.append(
        f"Lower the learning rate (module.optimizer.lr={lr_text}), keep gradient clipping on "
        "(trainer.gradient_clip_val) and check the data for broken clips, then start again in a new "
        "hydra.run.dir"
        + ("" if diverged else "; or accept the skips with a higher max_skipped_share (null: no limit)")
        + "."
    )
    raise TrainingError("\n".join(lines))


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

    Raises :class:`TrainingError` (printed by ``train.py`` as one message, exit status 1) for a
    config value left unset, a run that made no optimisation step, a diverged run (its checkpoints
    renamed ``*.nonfinite.ckpt``) and more skipped steps than ``max_skipped_share``
    (:func:`check_outcome`): a run that returns has a usable ``last.ckpt``.
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
    from nvc_train.cli import user_errors

    max_skipped_share = check_config(cfg)
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
        check_outcome(trainer, module, cfg, max_skipped_share)
        failed = False
    except SIGTERMException:
        log.warning(
            "stopped by SIGTERM at step %d (checkpoint in %s); the same command resumes",
            trainer.global_step,
            trainer.default_root_dir,
        )
        raise SystemExit(SIGTERM_EXIT_STATUS) from None
    except BaseException as error:
        if isinstance(error, user_errors()):  # its message is the whole story: the caller prints it
            log.error("training stopped; run folder: %s", run_dir)
        else:  # a bug: keep the traceback
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
