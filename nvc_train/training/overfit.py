"""The per-sequence fit: one scene-adaptive network fitted to one sequence with ``R + lambda * D``.

:func:`fit_sequence` is the overfitting loop every scene-adaptive codec goes through (the codec
adapter, :mod:`nvc_train.codecs.adaptive`, calls it and owns only files and structure)::

    preset (configs/overfit) --Schedule--> OverfitStages ----------------+
    y, uv (padded planes) --codec.data._target_--> data module ----------+--> Trainer(codec.trainer).fit
    net, lambda, preset.parameter_lr_ratio --> OverfitModule -------------+

Generic over :class:`models.adaptive.SceneAdaptiveNet` (duck-typed: the framework never imports
``models``, nor ``datamodules`` by name: the data module is a config ``_target_``, by default
:class:`datamodules.sequence.SequenceDataModule`): a latent-grid codec and an INR train with the
same module, the same data module and the same stage callbacks
(:class:`nvc_train.callbacks.overfit_stages.OverfitStages`), which switch quantization proxies and
learning rates along one schedule config.

The rate of a batch of B frames out of T is its latents' estimated bits plus B/T of the weights'
bits (the weights are sent once for the whole sequence), per luma pixel; D is the 6:1:1 MSE::

    loss = (latent_bits + parameter_bits * B / T) / (B * H * W) + lambda * D_611
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from nvc_train.callbacks.overfit_stages import OverfitStages, Schedule
from nvc_train.training.overfit_module import (
    OverfitModule,
    RDTerms,
    SequenceFit,
    build_fit_trainer,
    build_sequence_data,
    rd_terms,
)
from nvc_train.training.presets import FitSettings, OverfitPreset
from nvc_train.training.step_search import quantize_network, refine_parameters

__all__ = [
    "OverfitModule", "RDTerms", "SequenceFit", "build_fit_trainer", "build_sequence_data", "fit_sequence",
    "rd_terms", "warm_up",
]  # fmt: skip

log = logging.getLogger(__name__)


def fit_sequence(
    net: nn.Module,
    y: Tensor,
    uv: Tensor,
    lmbda: float,
    overfit: OverfitPreset | Mapping[str, Any],
    settings: FitSettings | None = None,
    seed: int = 0,
) -> SequenceFit:
    """Fit ``net`` to the sequence ``y`` (T,1,H,W), ``uv`` (T,2,H/2,W/2) at ``lmbda``; one Lightning fit.

    ``overfit`` is the preset (``configs/overfit/<model>.yaml``; every number required, see
    :class:`~nvc_train.training.presets.OverfitPreset`), ``settings`` the Trainer and data module
    (``codec.trainer`` / ``codec.data``; None: one CPU process in float32 over
    ``datamodules.sequence.SequenceDataModule``). ``seed`` fixes the order in which frames are
    visited. The network is initialised by the caller (``init_from_frames``, pretrained weights);
    with a preset ``warmup``, it is the first of the candidates and ends up holding the winner.

    The module is back on the CPU in float32 when this returns, whatever the accelerator and
    precision: the bitstream is coded as the decoder runs (a float32 network built on the CPU), so
    the encoder's entropy-coding probabilities are the decoder's.
    """
    preset = overfit if isinstance(overfit, OverfitPreset) else OverfitPreset.from_config(overfit)
    settings = settings or FitSettings()
    if hasattr(net, "frame_view"):  # fitted one frame at a time, in coding order (Cool-Chic's video)
        return _fit_frame_by_frame(net, y, uv, lmbda, preset, settings, seed)
    if preset.method == "hinerv":  # HiNeRV's published schedule: its stages, patches and compression
        from nvc_train.training.hinerv_schedule import fit_hinerv

        return fit_hinerv(net, y, uv, lmbda, preset, settings, seed)
    started = time.perf_counter()
    if preset.warmup is not None:
        warm_up(net, y, uv, lmbda, preset, settings, seed)
    # The preset scales its own phases (steps_scale, or total_steps: exactly N optimiser steps).
    schedule = Schedule.from_config(preset.scaled_phases(), preset.scaled_eval_every, preset.keep_best)
    module, trainer, stages = _run_schedule(net, y, uv, lmbda, schedule, preset, settings, seed)
    if preset.parameter_search is not None and not any(phase.step_search for phase in schedule.phases):
        stages.search, rdoq = quantize_network(
            module, y, uv, preset.parameter_search, preset.parameter_rdoq, seed
        )
        stages.rdoq = rdoq or {}
    elif preset.parameter_rdoq is not None:
        stages.rdoq = refine_parameters(module, y, uv, preset.parameter_rdoq, seed)
    return SequenceFit(module, trainer, stages, schedule, time.perf_counter() - started)


@dataclass
class _FramesStages:
    """The stage records of a frame-by-frame fit, one per frame (what ``summary()`` reports)."""

    frames: list[Any]

    def summary(self) -> dict[str, Any]:
        return {"frames": [stages.summary() for stages in self.frames]}


@dataclass
class _FramesSchedule:
    total_steps: int


def _fit_frame_by_frame(
    net: Any, y: Tensor, uv: Tensor, lmbda: float, preset: OverfitPreset, settings: FitSettings, seed: int
) -> SequenceFit:
    """Cool-Chic's video fit: each frame in coding order (``net.coding_order``) is a one-frame fit
    of its own cores (``net.frame_view``) with the I preset or, for a P or B frame,
    ``preset.inter``, from its references as the decoder will have them. A P or B frame first gets
    a global translation per reference and, with ``motion_pretrain``, a motion core pulled towards
    the classical flow to each (shifted) reference; after each fit the frame is quantized and
    decoded (a reference of later frames) and its weights' steps are kept for the sequence's one
    weights payload."""
    from nvc_train.video.motion import estimate_flow, global_translation, warp

    started = time.perf_counter()
    inter = preset.inter or preset
    fits: list[SequenceFit] = []
    net.decoded.clear()
    for poc in net.coding_order:
        view = net.frame_view(poc)
        frame_y, frame_uv = y[poc : poc + 1], uv[poc : poc + 1]
        frame_preset = preset if net.frame_types[poc] == "I" else inter
        references = [net.decoded[ref][0] for ref in net.references[poc]]
        net.shifts[poc] = tuple(global_translation(frame_y, ref_y) for ref_y in references)
        if references and frame_preset.motion_pretrain is not None:
            targets = []
            for ref_y, (dx, dy) in zip(references, net.shifts[poc], strict=True):
                shift = torch.tensor([float(dx), float(dy)]).view(1, 2, 1, 1).expand(1, 2, *ref_y.shape[-2:])
                # the motion core draws the flow left after the shift (the frame adds the shift)
                targets.append(estimate_flow(frame_y, warp(ref_y, shift, taps=2)))
            motion = view.cores[f"m{poc}"]
            _pretrain_motion(motion, torch.cat(targets, 1), lmbda, frame_preset.motion_pretrain)
        fit = fit_sequence(view, frame_y, frame_uv, lmbda, frame_preset, settings, seed + poc)
        view.compress()  # weights and latents as they will be sent: the reference the decoder will have
        _keep_steps(net, view)
        net.decode_frame(poc)
        fits.append(fit)
        log.info("frame %d (%s): fit %.1f s", poc, net.frame_types[poc], fit.fit_s)
    net.quantize_parameters("dequantize")  # the sequence's estimate counts every frame's weights
    module = OverfitModule(net, lmbda, lr=fits[0].module.lr, parameter_lr_ratio=preset.parameter_lr_ratio,
                           distortion=preset.distortion)  # fmt: skip
    schedule = _FramesSchedule(sum(fit.schedule.total_steps for fit in fits))
    stages = _FramesStages([fit.stages for fit in fits])
    return SequenceFit(module, fits[-1].trainer, stages, schedule, time.perf_counter() - started)


def _keep_steps(net: Any, view: Any) -> None:
    """Copy the quantization steps a frame's fit chose into the sequence's parameter coder (same names)."""
    chosen = dict(zip((spec.name for spec in view.parameter_coder().specs), view.parameter_coder().log2_step,
                      strict=True))  # fmt: skip
    coder = net.parameter_coder()
    with torch.no_grad():
        for spec, step in zip(coder.specs, coder.log2_step, strict=True):
            if spec.name in chosen:
                step.copy_(chosen[spec.name])


def _pretrain_motion(core: nn.Module, target: Tensor, lmbda: float, pretrain: Any) -> None:
    """Pull a P frame's motion core towards ``target`` (a flow, pixels): ``R + lambda / rate_scale *
    MSE`` with Adam, latents soft-rounded twice (:class:`~nvc_train.training.presets.MotionPretrain`)."""
    core.quantizer = replace(core.quantizer, mode="soft_twice", temperature=pretrain.temperature,
                             noise=pretrain.noise)  # fmt: skip
    optimizer = torch.optim.Adam(core.parameters(), lr=pretrain.lr)
    index = torch.zeros(1, dtype=torch.long)
    pixels = target.shape[-2] * target.shape[-1]
    core.train()
    for _ in range(pretrain.steps):
        optimizer.zero_grad(set_to_none=True)
        flow, bits = core.frames_raw(index)
        loss = bits / pixels + lmbda / pretrain.rate_scale * (flow - target).pow(2).mean()
        loss.backward()
        optimizer.step()


def _run_schedule(
    net: nn.Module, y: Tensor, uv: Tensor, lmbda: float, schedule: Schedule, preset: OverfitPreset,
    settings: FitSettings, seed: int,
) -> tuple[OverfitModule, pl.Trainer, OverfitStages]:  # fmt: skip
    """One Lightning fit of ``net`` along ``schedule``; the module comes back on the CPU in float32."""
    module = OverfitModule(net, lmbda, lr=schedule.phases[0].lr, parameter_lr_ratio=preset.parameter_lr_ratio,
                           optimizer=preset.optimizer, distortion=preset.distortion)  # fmt: skip
    data = build_sequence_data(settings, y, uv, preset.frames_per_step, seed)
    stages = OverfitStages(schedule, y, uv, preset.parameter_search)
    trainer = build_fit_trainer(settings, schedule.total_steps, [stages])
    trainer.fit(module, datamodule=data)
    module.to(device="cpu", dtype=torch.float32)  # e.g. 64-true leaves float64 weights behind
    return module, trainer, stages


def warm_up(
    net: nn.Module, y: Tensor, uv: Tensor, lmbda: float, preset: OverfitPreset, settings: FitSettings,
    seed: int,
) -> list[dict[str, float]]:  # fmt: skip
    """Cool-Chic's warm-up: train several initial networks briefly, keep the best, load it into ``net``.

    Why: a network of a few thousand parameters fitted for a few thousand iterations lands in very
    different places from different random starts; a few short trials pick a good start for far
    less than a longer fit costs. Candidates of the first stage: ``net`` itself (it may carry the
    caller's initialisation) and fresh builds of its architecture under seeds ``seed + k``; each stage
    keeps the best of the stage before by the RD loss with hard-rounded latents. Returns the
    trials (stage, candidate, loss) for the record.
    """
    warmup = preset.warmup
    assert warmup is not None
    schedule = Schedule.from_config([warmup.phase_at(lmbda)], eval_every=warmup.steps, keep_best=False)
    preset = replace(preset, optimizer=warmup.fit_optimizer(preset.optimizer))
    candidates: list[nn.Module] = [net]
    for k in range(1, warmup.candidates[0]):
        torch.manual_seed(seed + k)
        fresh = net.fresh()
        fresh.init_from_frames(y, uv)
        candidates.append(fresh)
    trials: list[dict[str, float]] = []
    for stage, count in enumerate(warmup.candidates):
        scored = []
        for index, candidate in enumerate(candidates[:count]):
            module, _, _ = _run_schedule(candidate, y, uv, lmbda, schedule, preset, settings, seed)
            loss = float(module.sequence_terms(y, uv).loss)
            trials.append({"stage": stage, "candidate": index, "loss": loss})
            scored.append((loss if math.isfinite(loss) else math.inf, index, candidate))
        scored.sort(key=lambda row: (row[0], row[1]))
        candidates = [candidate for _, _, candidate in scored]
        log.info("warm-up stage %d: losses %s", stage, ", ".join(f"{row[0]:.5f}" for row in scored))
    best = candidates[0]
    if best is not net:
        net.load_state_dict(best.state_dict())
    return trials
