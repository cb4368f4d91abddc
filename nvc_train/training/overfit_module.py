"""The per-sequence fit's LightningModule and the builders of its Trainer and data module.

Its own module so that every fit schedule (:func:`nvc_train.training.overfit.fit_sequence`, HiNeRV's
:mod:`nvc_train.training.hinerv_schedule`) builds on the same pieces without importing the other:
``overfit`` dispatches to the HiNeRV schedule, and both import from here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from nvc_train.callbacks.overfit_stages import OverfitStages, Schedule
from nvc_train.training.losses import DISTORTIONS, frame_terms
from nvc_train.training.presets import FitOptimizer, FitSettings, OverfitConfigError
from nvc_train.training.rd_module import gradients_are_finite, zero_loss

log = logging.getLogger(__name__)


@dataclass
class RDTerms:
    """Loss terms of a batch (scalars): what the loss, the logs and the keep-best choice use."""

    loss: Tensor
    bpp: Tensor
    mse: Tensor
    psnr: Tensor


def rd_terms(net: nn.Module, batch: dict[str, Tensor], lmbda: float, distortion: str = "mse") -> RDTerms:
    """Forward ``batch`` through ``net`` and combine rate and the preset's distortion into the RD loss.

    ``distortion`` is one of :data:`~nvc_train.training.losses.DISTORTIONS` (the 6:1:1 MSE by
    default; HiNeRV's ``l1_msssim_rgb``); MSE and PSNR are reported whatever the loss uses.
    """
    # A patch data module (datamodules/patches.py) adds the crop its planes were cut at; the network
    # then computes only that patch (HiNeRV trains on patches).
    out = net(batch["index"], **({"crop": batch["crop"]} if "crop" in batch else {}))
    y, uv = batch["y"], batch["uv"]
    frames = y.shape[0]
    terms = frame_terms(out.y, out.uv, out.latent_bits.new_zeros(frames), y, uv, distortion)
    bits = out.latent_bits + out.parameter_bits * (frames / net.num_frames)
    bpp = bits / float(frames * y.shape[-2] * y.shape[-1])
    return RDTerms(bpp + lmbda * terms.distortion.mean(), bpp, terms.mse.mean(), terms.psnr.mean())


class OverfitModule(LightningModule):
    """Train ``net`` on one sequence; the stage callback sets quantizers and learning rates.

    Args:
        net: a scene-adaptive network (``forward(indices)``, ``parameter_coder()``, ``num_frames``).
        lmbda: the rate point's lambda for D on [0, 1] pixels (the training losses' convention).
        lr: the starting learning rate (the stage callback overrides it per phase).
        parameter_lr_ratio: learning rate of the weights' quantization steps relative to ``lr``.
            Required, like ``lr``: the preset's number (``configs/overfit``), never a code default.
        weight_decay: Adam's weight decay of the network (0: none).
        optimizer: the preset's optimizer (None: Adam over everything).
        distortion: the D of the loss (the preset's ``distortion``; the 6:1:1 MSE by default).
    """

    def __init__(
        self, net: nn.Module, lmbda: float, *, lr: float, parameter_lr_ratio: float,
        weight_decay: float = 0.0, optimizer: FitOptimizer | None = None, distortion: str = "mse",
    ) -> None:  # fmt: skip
        super().__init__()
        if lmbda <= 0:
            raise ValueError(f"lambda must be positive, got {lmbda}")
        self.net = net
        self.lmbda = float(lmbda)
        self.lr = float(lr)
        self.parameter_lr_ratio = float(parameter_lr_ratio)
        self.weight_decay = float(weight_decay)
        self.optimizer = optimizer or FitOptimizer("adam")
        if distortion not in DISTORTIONS:
            raise ValueError(f"unknown distortion {distortion!r}; known: {', '.join(DISTORTIONS)}")
        self.distortion = distortion
        self.skipped_steps = 0  # optimizer steps skipped for a non-finite loss or gradient
        self._nonfinite_loss = False

    def forward(self, frame_indices: Tensor) -> Any:
        return self.net(frame_indices)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        terms = rd_terms(self.net, batch, self.lmbda, self.distortion)
        if not torch.isfinite(terms.loss):  # the step is skipped below (as the scene-agnostic trainer does)
            self._nonfinite_loss = True
            return zero_loss(self)
        self.log_dict(
            {"train/loss": terms.loss, "train/bpp": terms.bpp, "train/psnr": terms.psnr},
            prog_bar=True, on_step=True, on_epoch=False, batch_size=batch["y"].shape[0],
        )  # fmt: skip
        return terms.loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Skip a step whose loss or gradients are not finite: one NaN in a network of a couple of
        thousand weights would otherwise spread to all of them and the fit would end unusable."""
        if self._nonfinite_loss or not gradients_are_finite(self.parameters()):
            optimizer.zero_grad(set_to_none=True)  # the optimizer leaves parameters and moments alone
            self.skipped_steps += 1
            log.warning("overfit: non-finite loss or gradient at step %d, step skipped (%d so far)",
                        self.global_step, self.skipped_steps)  # fmt: skip
        elif self.optimizer.gradient_clip > 0:  # the network's gradient only, in Cool-Chic's loss units
            network = [p for n, p in self.net.named_parameters() if self.net.is_network_parameter(n)]
            torch.nn.utils.clip_grad_norm_(network, self.optimizer.gradient_clip * self.lmbda)
        self._nonfinite_loss = False

    @torch.no_grad()
    def sequence_terms(self, y: Tensor, uv: Tensor, chunk: int = 8) -> RDTerms:
        """RD terms of the WHOLE sequence with hard-rounded latents (what the decoder will see).

        Frames go through in chunks (memory); the weights' bits are counted once. The planes are
        moved to the network's device (a fit on a GPU keeps the sequence on the CPU).
        """
        net = self.net
        y, uv = y.to(self.device), uv.to(self.device)
        saved = net.quantizer
        param_mode = net.parameter_mode
        net.quantizer = replace(saved, mode="hard")
        if param_mode is not None:
            net.quantize_parameters("dequantize")
        try:
            total_bits, total_mse, total_psnr, total_distortion = 0.0, 0.0, 0.0, 0.0
            parameter_bits = 0.0
            count = y.shape[0]
            for start in range(0, count, chunk):
                index = torch.arange(start, min(start + chunk, count), device=y.device)
                out = net(index)
                zero_bits = out.latent_bits.new_zeros(len(index))
                terms = frame_terms(out.y.clamp(0, 1), out.uv.clamp(0, 1), zero_bits, y[index], uv[index],
                                    self.distortion)  # fmt: skip
                total_bits += float(out.latent_bits)
                parameter_bits = float(out.parameter_bits)
                total_mse += float(terms.mse.sum())
                total_psnr += float(terms.psnr.sum())
                total_distortion += float(terms.distortion.sum())
        finally:
            net.quantizer = saved
            if param_mode is not None:
                net.quantize_parameters(param_mode)
        pixels = float(count * y.shape[-2] * y.shape[-1])
        bpp = torch.tensor((total_bits + parameter_bits) / pixels)
        mse = torch.tensor(total_mse / count)
        loss = bpp + self.lmbda * torch.tensor(total_distortion / count)
        return RDTerms(loss, bpp, mse, torch.tensor(total_psnr / count))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam over everything, or SOAP on the network with Adam-like groups for the latents and
        the quantization steps. Each group's ``lr_scale`` is what the stage callback multiplies the
        phase's learning rate by."""
        coder_steps = list(self.net.parameter_coder().parameters())
        steps_group = {"params": coder_steps, "lr": self.lr * self.parameter_lr_ratio, "weight_decay": 0.0,
                       "lr_scale": self.parameter_lr_ratio}  # fmt: skip
        if self.optimizer.name == "adam":
            groups = [{"params": list(self.net.parameters()), "lr": self.lr,
                       "weight_decay": self.weight_decay, "lr_scale": 1.0}]  # fmt: skip
            return torch.optim.Adam(groups + ([steps_group] if coder_steps else []))
        from nvc_train.training.soap import SOAP

        named = list(self.net.named_parameters())
        network = [p for n, p in named if self.net.is_network_parameter(n)]
        latents = [p for n, p in named if not self.net.is_network_parameter(n)]
        option = self.optimizer
        groups = [
            {"params": network, "betas": option.network_betas, "weight_decay": option.weight_decay,
             "precondition_frequency": option.precondition_frequency,
             "max_precond_dim": option.max_precond_dim},
            {"params": latents, "betas": option.latent_betas, "weight_decay": 0.0, "max_precond_dim": 0},
        ]  # fmt: skip
        groups = [{**group, "lr": self.lr, "lr_scale": 1.0} for group in groups if group["params"]]
        if coder_steps:
            groups.append({**steps_group, "betas": option.latent_betas, "max_precond_dim": 0})
        return SOAP(groups)


# ---- the fit ----------------------------------------------------------------------------------------


@dataclass
class SequenceFit:
    """What :func:`fit_sequence` leaves: the fitted module (on the CPU), the Trainer that ran the fit,
    the stage callback (keep-best history; ``summary()``), the schedule (``total_steps``) and the fit's
    wall-clock seconds. A ``method: hinerv`` fit leaves HiNeRV's callback and schedule
    (:mod:`nvc_train.training.hinerv_schedule`)."""

    module: OverfitModule
    trainer: pl.Trainer
    stages: OverfitStages | Any
    schedule: Schedule | Any
    fit_s: float


def build_fit_trainer(settings: FitSettings, max_steps: int, callbacks: Sequence[pl.Callback]) -> pl.Trainer:
    """The Trainer of one per-sequence fit: ``settings.trainer`` (accelerator, devices, precision, ...)
    plus what the fit owns: the step count of the schedule, its callbacks, no logger, no checkpoint,
    no progress bar (a run codes many sequences and rate points; each fit would print its own)."""
    return pl.Trainer(
        **dict(settings.trainer), max_steps=int(max_steps), callbacks=list(callbacks), logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0,
    )  # fmt: skip


def build_sequence_data(
    settings: FitSettings, y: Tensor, uv: Tensor, frames_per_step: int, seed: int
) -> pl.LightningDataModule:
    """The data module ``settings.data`` names (``_target_``), serving ``y`` and ``uv``.

    Bound by its config ``_target_`` (:func:`hydra.utils.get_class`), never imported here by name;
    the class takes ``(y, uv, frames_per_step=, seed=)`` and any extra keys of ``codec.data``.
    """
    from hydra.utils import get_class

    options = dict(settings.data)
    target = str(options.pop("_target_"))
    try:
        cls = get_class(target)
    except Exception as error:  # noqa: BLE001 - Hydra wraps import failures in several types
        raise OverfitConfigError(f"codec.data._target_ {target!r} cannot be imported: {error}") from None
    return cls(y, uv, frames_per_step=int(frames_per_step), seed=int(seed), **options)
