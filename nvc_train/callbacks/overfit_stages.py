"""The stages of a per-sequence fit, driven by ONE schedule config (``configs/overfit/<name>.yaml``).

A scene-adaptive codec is trained in phases (C3 / COOL-CHIC practice): soft-rounding with uniform
noise, both annealed towards hard rounding; then a straight-through (STE) stage with a small
learning rate; then a stage with quantized network weights whose learnable steps and rate come from
:class:`nvc_train.entropy.param_coding.ParameterCoder`. Each phase is a row of the schedule::

    phases:
      - {name: soft, steps: 600, lr: 0.01, quantizer: soft, temperature: [0.3, 0.1], noise: [1.0, 0.3]}
      - {name: ste, steps: 100, lr: 0.001, quantizer: ste}
      - {name: weights, steps: 60, lr: 0.0005, quantizer: ste, parameters: ste, parameter_bits: 8}

``temperature`` and ``noise`` anneal geometrically / linearly from the first to the second value
across the phase; ``lr_decay: cosine`` decays the phase's learning rate to ``lr * lr_floor``.
A phase with ``step_search: true`` first chooses the weights' quantization steps by measured RD
cost (:mod:`nvc_train.training.step_search`, the preset's ``parameter_search``), then trains on with
them: the latents and the network adapt to the quantized weights within the same effort.
Keep-best-RD: every ``eval_every`` steps and at the end of each phase the WHOLE sequence is coded
with hard-rounded latents (and the quantized weights, when on) and its ``bpp + lambda * MSE`` is
compared with the phase's best; at the end of a phase the best state is restored, so a phase never
leaves the network worse than it found it by the measure the decoder sees.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from nvc_train.training.presets import StepSearch
from nvc_train.training.step_search import quantize_network

log = logging.getLogger(__name__)

QUANTIZERS = ("soft", "soft_twice", "ste", "hard")  # models.adaptive.QuantizerState.mode
PARAMETER_MODES = (None, "noise", "ste")


@dataclass(frozen=True)
class Phase:
    """One stage of the schedule (numbers from the config; see the module docstring)."""

    name: str
    steps: int
    lr: float
    quantizer: str = "soft"
    temperature: tuple[float, float] = (0.3, 0.3)
    noise: tuple[float, float] = (1.0, 1.0)
    lr_decay: str = "none"  # none | cosine
    lr_floor: float = 0.0
    parameters: str | None = None  # None: float weights; noise / ste: quantized weights
    parameter_bits: int = 8  # initial steps of the weights' quantizer (first phase that quantizes)
    step_search: bool = False  # on entering: the weights' steps by measured RD cost (preset's search)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.lr <= 0:
            raise ValueError(
                f"phase {self.name!r}: steps and lr must be positive, got {self.steps}, {self.lr}"
            )
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"phase {self.name!r}: quantizer must be one of {QUANTIZERS}")
        if self.parameters not in PARAMETER_MODES:
            raise ValueError(f"phase {self.name!r}: parameters must be one of {PARAMETER_MODES}")
        if self.lr_decay not in ("none", "cosine"):
            raise ValueError(f"phase {self.name!r}: lr_decay must be none or cosine")
        if self.step_search and self.parameters is None:
            raise ValueError(f"phase {self.name!r}: step_search needs quantized weights (parameters: ste)")

    @classmethod
    def from_config(cls, entry: Mapping[str, Any]) -> Phase:
        entry = dict(entry)
        for key in ("temperature", "noise"):
            if key in entry:
                value = entry[key]
                entry[key] = (float(value), float(value)) if isinstance(value, (int, float)) else tuple(value)
        unknown = set(entry) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"phase {entry.get('name')!r}: unknown keys {sorted(unknown)}")
        return cls(**entry)

    def at(self, fraction: float) -> tuple[float, float, float]:
        """(learning rate, temperature, noise) at ``fraction`` in [0, 1] of the phase."""
        t0, t1 = self.temperature
        temperature = t0 * (t1 / t0) ** fraction if t0 > 0 and t1 > 0 else t0 + (t1 - t0) * fraction
        noise = self.noise[0] + (self.noise[1] - self.noise[0]) * fraction
        lr = self.lr
        if self.lr_decay == "cosine":
            lr = self.lr * (self.lr_floor + (1 - self.lr_floor) * 0.5 * (1 + math.cos(math.pi * fraction)))
        return lr, temperature, noise


@dataclass
class Schedule:
    """The phases of one fit in order; ``total_steps`` is the Trainer's ``max_steps``."""

    phases: list[Phase]
    eval_every: int = 100
    keep_best: bool = True
    starts: list[int] = field(init=False)

    def __post_init__(self) -> None:
        if not self.phases:
            raise ValueError("an overfit schedule needs at least one phase")
        self.starts = []
        step = 0
        for phase in self.phases:
            self.starts.append(step)
            step += phase.steps

    @classmethod
    def from_config(
        cls,
        phases: Sequence[Mapping[str, Any]],
        eval_every: int = 100,
        keep_best: bool = True,
        steps_scale: float = 1.0,
    ) -> Schedule:
        """Phases from config rows; ``steps_scale`` stretches every phase (e.g. 0.02 for a smoke test)."""
        if steps_scale <= 0:
            raise ValueError(f"steps_scale must be positive, got {steps_scale}")
        rows = [{**p, "steps": max(1, round(int(p["steps"]) * steps_scale))} for p in phases]
        every = max(1, round(int(eval_every) * steps_scale))
        return cls([Phase.from_config(p) for p in rows], every, bool(keep_best))

    @property
    def total_steps(self) -> int:
        return self.starts[-1] + self.phases[-1].steps

    def locate(self, step: int) -> tuple[int, float]:
        """(phase index, fraction of it done) at global ``step``."""
        for index in reversed(range(len(self.phases))):
            if step >= self.starts[index]:
                phase = self.phases[index]
                return index, min(1.0, (step - self.starts[index]) / max(phase.steps, 1))
        return 0, 0.0

    def table(self) -> str:
        """The schedule as a text table (logged at fit start)."""
        rows = ["phase      steps    lr       quantizer  temperature    noise        weights"]
        for p in self.phases:
            rows.append(
                f"{p.name:<10} {p.steps:<8} {p.lr:<8.2g} {p.quantizer:<10} "
                f"{p.temperature[0]:.3g}->{p.temperature[1]:<7.3g} {p.noise[0]:.3g}->{p.noise[1]:<7.3g} "
                f"{p.parameters or 'float'}"
            )
        return "\n".join(rows)


class OverfitStages(Callback):
    """Applies a :class:`Schedule` to an :class:`~nvc_train.training.overfit.OverfitModule`.

    Needs the whole sequence for keep-best evaluation: ``y`` and ``uv`` (padded planes, display
    order) are given by whoever builds the fit (:func:`nvc_train.training.overfit.fit_sequence`), or
    taken from the data module.
    """

    def __init__(
        self, schedule: Schedule, y: torch.Tensor | None = None, uv: torch.Tensor | None = None,
        step_search: StepSearch | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if step_search is None and any(phase.step_search for phase in schedule.phases):
            raise ValueError("a phase has step_search: true but the preset has no parameter_search")
        self.schedule = schedule
        self.step_search = step_search
        self.y, self.uv = y, uv
        self.current = -1
        self.best_loss = math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, float]] = []  # keep-best evaluations: step, phase, bpp, psnr, loss
        self.search: list[dict[str, Any]] = []  # candidates of the weights' step search (preset's)
        self.rdoq: dict[str, float] = {}  # the weights' RDOQ after the fit: losses, forwards, weights moved

    # ---- phase switching ------------------------------------------------------------------------

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.y is None:
            datamodule = trainer.datamodule
            self.y, self.uv = datamodule.y, datamodule.uv
        log.info("overfit schedule (%d steps):\n%s", self.schedule.total_steps, self.schedule.table())

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int):
        index, fraction = self.schedule.locate(trainer.global_step)
        phase = self.schedule.phases[index]
        net = pl_module.net
        if index != self.current:
            if self.current >= 0:
                self._finish_phase(pl_module)
                fitting = getattr(pl_module, "optimizer", None)
                if fitting is not None and fitting.fresh_per_phase:
                    for optimizer in trainer.optimizers:
                        optimizer.state.clear()  # a new optimizer for the phase (Cool-Chic's practice)
            self._enter_phase(index, pl_module)
        lr, temperature, noise = phase.at(fraction)
        net.quantizer.mode = phase.quantizer
        net.quantizer.temperature = temperature
        net.quantizer.noise = noise
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)

    def _enter_phase(self, index: int, pl_module: LightningModule) -> None:
        phase = self.schedule.phases[index]
        net = pl_module.net
        if phase.step_search:
            assert self.step_search is not None and self.y is not None and self.uv is not None
            self.search, _ = quantize_network(pl_module, self.y, self.uv, self.step_search, rdoq=None)
            net.quantize_parameters(phase.parameters)  # train on with the chosen steps
        elif phase.parameters is not None and net.parameter_mode is None:
            net.quantize_parameters(phase.parameters, init_bits=phase.parameter_bits)
        elif phase.parameters != net.parameter_mode:
            net.quantize_parameters(phase.parameters)
        self.current = index
        self.best_loss, self.best_state = math.inf, None
        log.info("overfit phase %s (%d steps)", phase.name, phase.steps)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        step = trainer.global_step  # already counts this batch
        index, _ = self.schedule.locate(step - 1)
        at_phase_end = step == self.schedule.starts[index] + self.schedule.phases[index].steps
        if self.schedule.keep_best and (at_phase_end or step % self.schedule.eval_every == 0):
            self._evaluate(pl_module, step)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._finish_phase(pl_module)

    # ---- keep-best ---------------------------------------------------------------------------------

    def _evaluate(self, pl_module: LightningModule, step: int) -> None:
        terms = pl_module.sequence_terms(self.y, self.uv)
        loss = float(terms.loss)
        phase = self.schedule.phases[self.current].name
        self.history.append(
            {"step": step, "phase": phase, "bpp": float(terms.bpp), "psnr": float(terms.psnr), "loss": loss}
        )
        if loss < self.best_loss:
            self.best_loss = loss
            self.best_state = self._state(pl_module)

    def _state(self, pl_module: LightningModule) -> dict[str, torch.Tensor]:
        state = {f"net.{k}": v.detach().clone() for k, v in pl_module.net.state_dict().items()}
        if pl_module.net.parameter_mode is not None:
            coder = pl_module.net.parameter_coder()
            state.update({f"coder.{k}": v.detach().clone() for k, v in coder.state_dict().items()})
        return state

    def _finish_phase(self, pl_module: LightningModule) -> None:
        """Restore the phase's best hard-quantized RD state (when keep-best evaluated any)."""
        if self.best_state is None:
            return
        net = pl_module.net
        net.load_state_dict({k[4:]: v for k, v in self.best_state.items() if k.startswith("net.")})
        coder_state = {k[6:]: v for k, v in self.best_state.items() if k.startswith("coder.")}
        if coder_state:
            net.parameter_coder().load_state_dict(coder_state)
        log.info("phase %s: restored its best RD state (loss %.5f)", self.schedule.phases[self.current].name,
                 self.best_loss)  # fmt: skip
        self.best_state = None

    def summary(self) -> dict[str, Any]:
        """What the fit did, for the codec's result extras: the evaluations and the last best loss."""
        summary = {"evaluations": copy.deepcopy(self.history), "total_steps": self.schedule.total_steps}
        if self.search:
            summary["step_search_candidates"] = len(self.search)
        return summary
