"""HiNeRV's published training schedule, as a per-sequence fit (``method: hinerv`` presets).

The official trainer (github hmkx/HiNeRV, ``hinerv_main.py`` with ``cfgs/train/hinerv_1920x1080.txt``)
fits the network in three stages, each with its own Adam and learning-rate schedule::

    float   300 epochs  lr 2e-3, linear warm-up from 2e-5 over 30 epochs, cosine to 2e-5
    prune    60 epochs  on entering: 15% of all parameters pruned (global score |w| / sqrt(alive));
                        lr 2e-3 cosine to 2e-5, no warm-up
    quant    30 epochs  Quant-Noise at 6 bits, 90% of entries replaced; lr x 0.1 (2e-4 cosine to 2e-6)

An epoch is every 120 x 120 patch of every frame once, 144 patches a step (600 steps at 1080p, 600
frames); gradients are clipped to a global norm of 1; the loss is 0.7 L1 + 0.3 (1 - MS-SSIM 5x5)
on RGB and has no rate term. The file is then the pruned network quantized at 6 bits and
arithmetic coded (:mod:`models.hinerv_compression`).

Here the stages are the preset's ``phases`` (:class:`~nvc_train.training.presets.HiNeRVPhase`, in
steps, scaled by ``total_steps`` like every preset) and run as ONE Lightning fit of the framework's
:class:`~nvc_train.training.overfit.OverfitModule` over :class:`datamodules.patches.PatchDataModule`
(the data module is a config ``_target_``): :class:`HiNeRVStages` switches the weights' mode and
resets Adam at each stage, and sets the learning rate of every update. With ``lambda = 1`` the
module's loss is exactly HiNeRV's (the weights' bits are not differentiable and HiNeRV has no rate
term), so gradient clipping acts on the same gradients as the official trainer's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn

from nvc_train.training.overfit_module import (
    OverfitModule,
    SequenceFit,
    build_fit_trainer,
    build_sequence_data,
)
from nvc_train.training.presets import FitSettings, HiNeRVPhase, OverfitPreset

log = logging.getLogger(__name__)

#: The data module serving patches; a preset with ``method: hinerv`` uses it unless ``codec.data``
#: names another (``_target_`` plus the preset's patch keys).
PATCH_DATA_TARGET = "datamodules.patches.PatchDataModule"


@dataclass
class HiNeRVSchedule:
    """The stages of one HiNeRV fit, with their learning rates already scaled."""

    phases: list[HiNeRVPhase]
    prune_weight: float

    @property
    def starts(self) -> list[int]:
        starts, step = [], 0
        for phase in self.phases:
            starts.append(step)
            step += phase.steps
        return starts

    @property
    def total_steps(self) -> int:
        return sum(phase.steps for phase in self.phases)

    def locate(self, step: int) -> tuple[int, int]:
        """(stage index, update index inside it) of global ``step``."""
        for index, start in reversed(list(enumerate(self.starts))):
            if step >= start:
                return index, step - start
        return 0, 0


class HiNeRVStages(Callback):
    """Applies a :class:`HiNeRVSchedule` to an ``OverfitModule`` holding a HiNeRV network.

    On entering a stage: a fresh Adam state (the official trainer builds one optimiser per stage),
    then the weights' mode (``prune``: the masks are computed now and stay; ``noise``: Quant-Noise).
    Before every update: the stage's learning rate at that update. At each stage's end the whole
    sequence is measured as the decoder sees it (for the record; HiNeRV keeps the last state).
    """

    def __init__(self, schedule: HiNeRVSchedule, y: Tensor, uv: Tensor) -> None:
        super().__init__()
        self.schedule = schedule
        self.y, self.uv = y, uv
        self.current = -1
        self.history: list[dict[str, Any]] = []
        self.sparsity: tuple[int, int] = (0, 0)
        self.train_seconds = 0.0  # wall time of the updates alone (data, forward, backward, step)
        self._step_started = 0.0

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rows = [f"{p.name:<8} {p.steps:>7} lr {p.warmup_lr:.3g}->{p.lr:.3g}->{p.min_lr:.3g} "
                f"(warm-up {p.warmup_steps}) weights {p.weights}" for p in self.schedule.phases]  # fmt: skip
        log.info("HiNeRV schedule (%d steps):\n%s", self.schedule.total_steps, "\n".join(rows))

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int):
        index, update = self.schedule.locate(trainer.global_step)
        if index != self.current:
            self._enter(index, trainer, pl_module)
        lr = self.schedule.phases[index].lr_at(update)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
        self._step_started = time.perf_counter()

    def _enter(self, index: int, trainer: Trainer, pl_module: LightningModule) -> None:
        phase = self.schedule.phases[index]
        net = pl_module.net
        for optimizer in trainer.optimizers:
            optimizer.state.clear()  # a new stage's Adam starts without moments
        coder = net.parameter_coder()
        if phase.weights == "prune":
            self.sparsity = coder.prune(
                net.network_parameters(), phase.prune_ratio, self.schedule.prune_weight
            )
            log.info("HiNeRV: pruned %d of %d parameters", *self.sparsity)
            net.quantize_parameters("prune")
        elif phase.weights == "noise":
            coder.noise_ratio = phase.quant_noise
            net.quantize_parameters("noise", init_bits=phase.quant_bits)
        else:
            net.quantize_parameters(None)
        self.current = index
        log.info("HiNeRV stage %s (%d steps)", phase.name, phase.steps)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        self.train_seconds += time.perf_counter() - self._step_started
        step = trainer.global_step
        index, _ = self.schedule.locate(step - 1)
        if step == self.schedule.starts[index] + self.schedule.phases[index].steps:
            terms = pl_module.sequence_terms(self.y, self.uv)
            name = self.schedule.phases[index].name
            self.history.append({"step": step, "phase": name, "bpp": float(terms.bpp),
                                 "psnr": float(terms.psnr), "loss": float(terms.loss)})  # fmt: skip

    def summary(self) -> dict[str, Any]:
        """What the fit did, for the codec's result extras."""
        steps = self.schedule.total_steps
        return {"evaluations": list(self.history), "total_steps": steps, "pruned": self.sparsity[0],
                "coded_parameters": self.sparsity[1],
                "ms_per_step": 1e3 * self.train_seconds / steps}  # fmt: skip


def hinerv_schedule(preset: OverfitPreset, steps_pixels: int, frame_pixels: int) -> HiNeRVSchedule:
    """The preset's phases, learning rates scaled by the pixels of a step over a frame's when the
    preset says so (the official ``--auto-lr-scaling``)."""
    assert preset.hinerv is not None
    phases = preset.hinerv_phases()
    if preset.hinerv.lr_pixel_scaling:
        factor = steps_pixels / frame_pixels
        phases = [replace(p, lr=p.lr * factor, min_lr=p.min_lr * factor, warmup_lr=p.warmup_lr * factor)
                  for p in phases]  # fmt: skip
    return HiNeRVSchedule(phases, preset.hinerv.prune_weight)


def fit_hinerv(
    net: nn.Module,
    y: Tensor,
    uv: Tensor,
    lmbda: float,
    preset: OverfitPreset,
    settings: FitSettings,
    seed: int,
) -> Any:
    """One HiNeRV fit of ``net`` to ``y``, ``uv``: a :class:`~nvc_train.training.overfit.SequenceFit`."""
    assert preset.hinerv is not None
    options = preset.hinerv
    started = time.perf_counter()
    data_settings = dict(settings.data)
    if data_settings.get("_target_") in (None, "datamodules.sequence.SequenceDataModule"):
        data_settings = {"_target_": PATCH_DATA_TARGET, "patch_size": options.patch_size,
                         "patches_per_step": options.patches_per_step}  # fmt: skip
    data = build_sequence_data(replace(settings, data=data_settings), y, uv, preset.frames_per_step, seed)
    patches_per_step = int(getattr(data, "patches_per_step", options.patches_per_step))
    patch = int(data_settings.get("patch_size", options.patch_size))
    schedule = hinerv_schedule(preset, patches_per_step * patch * patch, y.shape[-2] * y.shape[-1])
    phases = schedule.phases
    module = OverfitModule(net, lmbda, lr=phases[0].lr_at(0), parameter_lr_ratio=preset.parameter_lr_ratio,
                           distortion=preset.distortion)  # fmt: skip
    stages = HiNeRVStages(schedule, y, uv)
    trainer_settings = replace(
        settings, trainer={**settings.trainer, "gradient_clip_val": options.gradient_clip}
    )
    trainer = build_fit_trainer(trainer_settings, schedule.total_steps, [stages])
    trainer.fit(module, datamodule=data)
    module.to(device="cpu", dtype=torch.float32)
    return SequenceFit(module, trainer, stages, schedule, time.perf_counter() - started)
