"""Multi-stage training: start a stage from the previous stage's weights; optional ``torch.compile``.

A staged recipe (``configs/experiment/dcvc_rt_s*.yaml``) is one ``train.py`` fit per stage, each in
its own run folder with its own checkpoints, never writing into a folder it did not make. A later
stage needs the earlier stage's *network weights* but not its optimizer, learning-rate schedule or
step counter (those belong to the earlier stage's objective): that is :class:`InitWeights`. Resuming
a stage that was interrupted is a different thing, handled by ``resume: auto`` (the stage's own
``last.ckpt`` with its full training state); :class:`InitWeights` steps aside when a fit resumes,
so that the weights trained in this stage are never replaced by the previous stage's.

Both are Lightning callbacks, configured as named entries of ``callbacks`` like every other.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

from nvc_train.networks import CheckpointError, is_resizable_table, load_checkpoint, network_state

__all__ = ["CompileNet", "InitWeights", "InitWeightsError"]

log = logging.getLogger(__name__)


class InitWeightsError(CheckpointError):
    """The checkpoint to start from is missing, unreadable, hostile, or does not fit the network."""


class InitWeights(Callback):
    """Load the codec network's weights from ``path`` when a fit starts afresh (not when it resumes).

    Only the network (``net.*`` of a train.py checkpoint, entropy tables included) is loaded; the
    optimizer, scheduler and step counter start new. The load runs at ``on_fit_start``, after
    Lightning restored the modules of a resumed fit and before its training loop: a fit that
    resumes (``trainer.ckpt_path`` set, or a step counter above zero) keeps its own weights.

    Args:
        path: a checkpoint written by ``train.py`` (``.../checkpoints/last.ckpt``).
        strict: every network tensor must be in the checkpoint with the same shape. ``False``
            loads the tensors whose names and shapes match and logs the rest (e.g. a stage that
            adds a module); a checkpoint that matches nothing is still an error.
        allow_missing_in_dev_run: under ``fast_dev_run`` (a smoke test of the recipe that ran no
            earlier stage) a missing file only warns. A real run always refuses it.
    """

    def __init__(self, path: str | Path, strict: bool = True, allow_missing_in_dev_run: bool = True) -> None:
        super().__init__()
        if path in (None, ""):
            raise InitWeightsError("InitWeights needs the path of the previous stage's checkpoint")
        self.path = Path(str(path)).expanduser()
        self.strict = bool(strict)
        self.allow_missing_in_dev_run = bool(allow_missing_in_dev_run)
        self.loaded = False  # whether this fit started from ``path`` (tests and logs read it)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.ckpt_path is not None or trainer.global_step > 0:
            log.info("resuming from %s: initial weights %s not loaded", trainer.ckpt_path, self.path)
            return
        if not self.path.is_file():
            message = (
                f"initial weights not found: {self.path} (train the previous stage first, or set the "
                "path of its checkpoints/last.ckpt)"
            )
            if trainer.fast_dev_run and self.allow_missing_in_dev_run:
                log.warning("fast_dev_run: %s; continuing from random weights", message)
                return
            raise InitWeightsError(message)
        net = getattr(pl_module, "net", None)
        if not isinstance(net, torch.nn.Module):
            raise InitWeightsError(f"{type(pl_module).__name__} has no codec network `net` to initialise")
        state = self._network_state(self.path)
        self._load(net, state)
        self.loaded = True
        log.info(
            "initial weights of the network loaded from %s (optimizer and schedule start afresh)", self.path
        )

    @staticmethod
    def _network_state(path: Path) -> dict[str, torch.Tensor]:
        """The network tensors of a train.py checkpoint, read the one way every loader reads them
        (:func:`nvc_train.networks.load_checkpoint`: weights only, a foreign ``_target_`` refused)."""
        try:
            return network_state(load_checkpoint(path), str(path))
        except InitWeightsError:
            raise
        except CheckpointError as error:
            raise InitWeightsError(str(error)) from None

    def _load(self, net: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        own = net.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        # Entropy tables (CDF buffers) change shape with training and are resized on load.
        mismatched = sorted(
            key
            for key in set(own) & set(state)
            if own[key].shape != state[key].shape and not is_resizable_table(key)
        )
        if self.strict and (missing or unexpected or mismatched):
            raise InitWeightsError(
                f"{self.path} does not fit this network ({type(net).__name__}): "
                + _summary(missing=missing, unexpected=unexpected, shape=mismatched)
                + " (is it another model or size? InitWeights(strict=false) loads the matching part)"
            )
        if self.strict:
            net.load_state_dict(state)
            return
        usable = {k: v for k, v in state.items() if k in own and k not in mismatched}
        if not usable:
            raise InitWeightsError(f"{self.path}: no tensor fits this network ({type(net).__name__})")
        net.load_state_dict(usable, strict=False)
        log.warning(
            "partial initialisation from %s: %d of %d tensors; %s",
            self.path,
            len(usable),
            len(own),
            _summary(missing=missing, unexpected=unexpected, shape=mismatched),
        )


def _summary(**groups: list[str]) -> str:
    parts = []
    for name, keys in groups.items():
        if keys:
            shown = ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
            parts.append(f"{name}: {shown}")
    return "; ".join(parts) or "no differences"


class CompileNet(Callback):
    """``torch.compile`` the codec network's sub-networks in place when a fit starts (optional).

    Each direct child module of ``pl_module.net`` is compiled with :meth:`torch.nn.Module.compile`,
    which keeps parameter names unchanged, so checkpoints stay loadable by modules that were never
    compiled (evaluation, :class:`InitWeights`). The codec's own Python (frame loop, q_index
    checks, entropy-coder calls) stays eager; the convolution stacks are what gain.

    Args:
        mode, dynamic, backend: passed to ``torch.compile`` (``backend="eager"`` only traces: a
            quick check that the graphs capture, used by the tests).
    """

    def __init__(
        self, mode: str | None = None, dynamic: bool | None = None, backend: str = "inductor"
    ) -> None:
        super().__init__()
        self.options: dict[str, Any] = {"mode": mode, "dynamic": dynamic, "backend": backend}
        self.compiled: list[str] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        net = getattr(pl_module, "net", None)
        if not isinstance(net, torch.nn.Module):
            raise TypeError(f"{type(pl_module).__name__} has no codec network `net` to compile")
        for name, child in net.named_children():
            child.compile(**self.options)
            self.compiled.append(name)
        log.info("torch.compile(%s) on %s", self.options, ", ".join(self.compiled))
