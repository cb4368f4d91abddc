"""``RDModule``: the rate-distortion LightningModule that trains any :class:`NeuralVideoCodec`.

The codec network is a plain ``nn.Module`` that works without a Trainer; this module adds what
training needs around it (loss, cascaded frames, optimizer, logging, robust steps, checkpoints)
and nothing codec-specific, so a new codec trains with no new training code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.optim import Optimizer

from nvc_train.training.losses import DISTORTIONS, FrameTerms, frame_terms, lambda_table
from nvc_train.video.pad import crop_to, pad_to_multiple

log = logging.getLogger(__name__)

OptimizerFactory = Callable[..., Optimizer]
SchedulerFactory = Callable[[Optimizer], Any]


def zero_loss(module: torch.nn.Module) -> Tensor:
    """A loss of exactly zero connected to every trainable parameter (finite zero gradients): what a
    step whose loss is not finite returns, so that backward and the hooks still run."""
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.stack([p.sum() for p in params]).sum() * 0.0


def gradients_are_finite(parameters: Iterable[torch.nn.Parameter]) -> bool:
    """Whether every gradient of ``parameters`` is finite (one norm over all of them)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return True
    return bool(torch.isfinite(torch.nn.utils.get_total_norm(grads, norm_type=2.0, error_if_nonfinite=False)))


class RDModule(LightningModule):
    """Train a neural video codec on ``R + lambda * D`` over chains of frames it codes itself.

    Data flow of one training step (batch ``{"y": (B,T,1,H,W), "uv": (B,T,2,H/2,W/2)}`` in [0, 1])::

        q ~ U{0 .. num_q-1} per item          lambda = lambdas[q]   (log-spaced, lambda_min..lambda_max)
        frame 0     --net.forward_frame(y0, uv0, q, ref=None)----> y_hat0, uv_hat0, bits0, ref0
        frame 1     --net.forward_frame(y1, uv1, q, ref=ref0)----> ...                     , ref1
        ...           (each P frame references the model's own reconstruction state, not the source)
        frame T-1   --net.forward_frame(.., ref=ref_{T-2})-------> ...
        loss = mean over frames and items of  bits_t / (H W)  +  lambda * D_t     (D: 6:1:1 MSE or 1-MS-SSIM)

    Frames whose index is a multiple of ``intra_period`` are intra (``0``: only the first one).
    Gradients flow through the whole chain (cascaded training: the loss of frame t reaches the
    coding of the frames before it through their reconstructions).

    Robust steps: a non-finite loss or gradient skips the optimizer step (the gradients are dropped
    so the optimizer leaves every parameter and its state untouched), on every rank at once under
    DDP, and ``train/skipped_steps`` counts such steps. Checkpoints carry the resolved run config
    (``nvc_config``, plain Python types, loadable with ``weights_only=True``) and entropy tables
    rebuilt by ``net.update(force=True)`` just before saving.

    Args:
        net: the codec network (``forward_frame``, ``update``, ``num_q``, ``pad_multiple``).
        optimizer: partial that takes the parameters (Hydra ``_partial_: true``).
        scheduler: partial that takes the optimizer, or None for a constant learning rate.
        lambda_min, lambda_max: lambda of q_index 0 and num_q-1, for D on [0, 1] pixels
            (see :mod:`nvc_train.training.losses` for the convention).
        distortion: ``mse`` or ``msssim``.
        intra_period: code frame t as intra when ``t % intra_period == 0``; 0: only frame 0.
        scheduler_interval: ``step`` or ``epoch``: when the scheduler steps.
        val_q_indices: rate points validated; None: the lowest, the middle and the highest.
        pad_mode: how frames are padded to ``net.pad_multiple`` (outputs are cropped back).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        *,
        lambda_min: float,
        lambda_max: float,
        distortion: str = "mse",
        intra_period: int = 0,
        scheduler_interval: str = "step",
        val_q_indices: Sequence[int] | None = None,
        pad_mode: str = "replicate",
    ) -> None:
        super().__init__()
        if distortion not in DISTORTIONS:
            raise ValueError(f"unknown distortion {distortion!r}; known: {', '.join(DISTORTIONS)}")
        if intra_period < 0:
            raise ValueError(f"intra_period must be >= 0 (0: only the first frame), got {intra_period}")
        if scheduler_interval not in ("step", "epoch"):
            raise ValueError(f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
        num_q = int(getattr(net, "num_q", 1))
        pad_multiple = int(getattr(net, "pad_multiple", 1))
        if pad_multiple > 1 and pad_multiple % 2:
            raise ValueError(f"4:2:0 frames need an even pad_multiple, the net declares {pad_multiple}")
        if val_q_indices is None:
            val_q_indices = sorted({0, (num_q - 1) // 2, num_q - 1})
        val_q = [int(q) for q in val_q_indices]
        bad = [q for q in val_q if not 0 <= q < num_q]
        if bad:
            raise ValueError(f"val_q_indices {bad} out of range [0, {num_q}) of the model")

        # Plain numbers only: they go into the checkpoint, which must load with weights_only=True.
        self.save_hyperparameters(
            {
                "lambda_min": float(lambda_min),
                "lambda_max": float(lambda_max),
                "distortion": str(distortion),
                "intra_period": int(intra_period),
                "scheduler_interval": str(scheduler_interval),
                "val_q_indices": val_q,
                "pad_mode": str(pad_mode),
            }
        )
        self.net = net
        self.num_q = num_q
        self.pad_multiple = pad_multiple
        self.distortion = distortion
        self.intra_period = int(intra_period)
        self.val_q_indices = val_q
        self.pad_mode = pad_mode
        self.scheduler_interval = scheduler_interval
        self._optimizer_factory = optimizer
        self._scheduler_factory = scheduler
        # Not persistent: the numbers are in the config the checkpoint carries.
        self.register_buffer("lambdas", lambda_table(lambda_min, lambda_max, num_q), persistent=False)

        #: Resolved run config (plain types) that :meth:`on_save_checkpoint` stores; set by ``train``.
        self.nvc_config: dict[str, Any] | None = None
        #: Optimizer steps skipped because the loss or a gradient was not finite (restored on resume).
        self.skipped_steps = 0
        self._nonfinite_loss = False
        self._val_sums: dict[int, dict[str, Any]] = {}

    # ------------------------------------------------------------------------------------------
    # The cascade

    def is_intra(self, t: int) -> bool:
        """Whether frame ``t`` of a chain is coded intra (no reference)."""
        return t == 0 or (self.intra_period > 0 and t % self.intra_period == 0)

    def code_chain(self, y: Tensor, uv: Tensor, q_index: Tensor, clamp: bool = False) -> list[FrameTerms]:
        """Code the T frames of each item in order, each P frame against the previous output's ``ref``.

        ``clamp`` measures the reconstruction clipped to [0, 1], as a decoder outputs it (validation);
        training measures what the network produced, so out-of-range values are penalised.
        """
        return [
            frame_terms(y_hat, uv_hat, bits, y[:, t], uv[:, t], self.distortion)  # float32 inside
            for t, (y_hat, uv_hat, bits) in enumerate(self._run_chain(y, uv, q_index, clamp))
        ]

    def _run_chain(
        self, y: Tensor, uv: Tensor, q_index: Tensor, clamp: bool
    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """The cascade itself: per frame, the cropped reconstruction and the estimated bits."""
        if y.dim() != 5 or uv.dim() != 5:
            raise ValueError(
                f"expected y (B,T,1,H,W) and uv (B,T,2,H/2,W/2), got {tuple(y.shape)}, {tuple(uv.shape)}"
            )
        height, width = y.shape[-2:]
        chroma = uv.shape[-2:]
        ref: Any = None
        for t in range(y.shape[1]):
            y_in, uv_in = y[:, t], uv[:, t]
            if self.pad_multiple > 1:
                y_in, _ = pad_to_multiple(y_in, self.pad_multiple, self.pad_mode)
                uv_in, _ = pad_to_multiple(uv_in, self.pad_multiple // 2, self.pad_mode)
            out = self.net.forward_frame(y_in, uv_in, q_index, None if self.is_intra(t) else ref)
            ref = out.ref
            y_hat = crop_to(out.y_hat, (height, width))
            uv_hat = crop_to(out.uv_hat, tuple(chroma))
            if clamp:
                y_hat, uv_hat = y_hat.clamp(0.0, 1.0), uv_hat.clamp(0.0, 1.0)
            yield y_hat, uv_hat, out.bits

    def reconstruct_chain(
        self, y: Tensor, uv: Tensor, q_index: int
    ) -> tuple[list[tuple[Tensor, Tensor]], float, float]:
        """The first item's decoded frames at one rate point (eval mode, no gradients), for pictures.

        Returns ``[(y_hat, uv_hat) per frame]`` of item 0 (clamped to [0, 1], as a decoder outputs
        them) and the mean PSNR-YUV (6:1:1) and estimated bpp over the frames and items.
        """
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                q = torch.full((y.shape[0],), int(q_index), dtype=torch.long, device=y.device)
                frames, psnrs, bpps = [], [], []
                for t, (y_hat, uv_hat, bits) in enumerate(self._run_chain(y, uv, q, clamp=True)):
                    terms = frame_terms(y_hat, uv_hat, bits, y[:, t], uv[:, t], "mse")
                    frames.append((y_hat[0], uv_hat[0]))
                    psnrs.append(terms.psnr.mean())
                    bpps.append(terms.bpp.mean())
        finally:
            self.train(was_training)
        return frames, float(torch.stack(psnrs).mean()), float(torch.stack(bpps).mean())

    def rd_loss(self, terms: Sequence[FrameTerms], q_index: Tensor) -> Tensor:
        """``mean over frames and items of bpp + lambda[q] * D``: the training objective."""
        lam = self.lambdas[q_index]
        per_frame = [t.bpp + lam * t.distortion for t in terms]
        return torch.stack(per_frame).mean()

    def forward(self, y: Tensor, uv: Tensor, q_index: Tensor) -> list[FrameTerms]:
        return self.code_chain(y, uv, q_index)

    # ------------------------------------------------------------------------------------------
    # Training

    def sample_q_index(self, batch_size: int) -> Tensor:
        """One rate point per item, uniform over the model's q_index range."""
        return torch.randint(0, self.num_q, (batch_size,), device=self.device)

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        y, uv = batch["y"], batch["uv"]
        q_index = self.sample_q_index(y.shape[0])
        terms = self.code_chain(y, uv, q_index)
        loss = self.rd_loss(terms, q_index)
        if not torch.isfinite(loss):
            # Keep the step (every rank must run backward and the same hooks under DDP) but make it
            # harmless; on_before_optimizer_step drops the gradients and counts the skip.
            self._nonfinite_loss = True
            return self._zero_loss()
        batch_size = y.shape[0]
        with torch.no_grad():
            values = {
                "train/loss": loss,
                "train/bpp_est": torch.stack([t.bpp for t in terms]).mean(),
                "train/mse": torch.stack([t.mse for t in terms]).mean(),
                "train/psnr_yuv": torch.stack([t.psnr for t in terms]).mean(),
                "train/lambda": self.lambdas[q_index].mean(),
            }
            if self.distortion == "msssim":
                values["train/msssim_yuv"] = 1.0 - torch.stack([t.distortion for t in terms]).mean()
        self.log_dict(values, batch_size=batch_size)
        self.log("train/loss_bar", loss, prog_bar=True, logger=False, batch_size=batch_size)
        self.log("train/lr", self._current_lr(), batch_size=batch_size)
        return loss

    def _zero_loss(self) -> Tensor:
        return zero_loss(self)

    def _current_lr(self) -> float:
        trainer = self._trainer
        if trainer is None or not trainer.optimizers:
            return float("nan")
        return float(trainer.optimizers[0].param_groups[0]["lr"])

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Skip the step when the loss or any gradient is not finite, on every rank together.

        Dropping the gradients (``None``) makes every torch optimizer leave the parameters, their
        moments and step counts untouched; zeroing them would not (Adam's momentum, weight decay).
        Runs before gradient clipping, so a NaN never reaches the clipping norm.
        """
        bad = self._nonfinite_loss or not gradients_are_finite(self.parameters())
        bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        self._nonfinite_loss = False
        if bad:
            optimizer.zero_grad(set_to_none=True)
            self.skipped_steps += 1
            log.warning(
                "non-finite loss or gradient at step %d: optimizer step skipped (%d so far)",
                self.global_step,
                self.skipped_steps,
            )
        self.log("train/skipped_steps", float(self.skipped_steps), reduce_fx="max")

    def configure_optimizers(self) -> Any:
        params = [p for p in self.net.parameters() if p.requires_grad]
        optimizer = self._optimizer_factory(params)
        if self._scheduler_factory is None:
            return optimizer
        scheduler = self._scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.scheduler_interval, "frequency": 1},
        }

    # ------------------------------------------------------------------------------------------
    # Validation: fixed clips, fixed rate points

    def on_validation_epoch_start(self) -> None:
        self._val_sums = {}

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        y, uv = batch["y"], batch["uv"]
        batch_size = y.shape[0]
        losses, psnrs, bpps = [], [], []
        for q in self.val_q_indices:
            q_index = torch.full((batch_size,), q, dtype=torch.long, device=self.device)
            terms = self.code_chain(y, uv, q_index, clamp=True)
            psnr = torch.stack([t.psnr for t in terms])  # (T, B)
            bpp = torch.stack([t.bpp for t in terms])
            losses.append(self.rd_loss(terms, q_index))
            psnrs.append(psnr.mean())
            bpps.append(bpp.mean())
            self.log(f"val/psnr_yuv_q{q}", psnr.mean(), batch_size=batch_size, sync_dist=True)
            self.log(f"val/bpp_est_q{q}", bpp.mean(), batch_size=batch_size, sync_dist=True)
            sums = self._val_sums.setdefault(q, {"psnr": 0.0, "bpp": 0.0, "n": 0})
            sums["psnr"] = sums["psnr"] + psnr.sum(dim=1).detach()
            sums["bpp"] = sums["bpp"] + bpp.sum(dim=1).detach()
            sums["n"] = sums["n"] + batch_size
        self.log("val/loss", torch.stack(losses).mean(), batch_size=batch_size, sync_dist=True)
        self.log("val/psnr_yuv", torch.stack(psnrs).mean(), batch_size=batch_size, sync_dist=True)
        self.log("val/bpp_est", torch.stack(bpps).mean(), batch_size=batch_size, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        """Print per-frame PSNR-YUV and bpp of each rate point: shows error propagation along the chain."""
        if self.trainer.sanity_checking or not self._val_sums:
            return
        lines = [f"validation at step {self.global_step} (this rank's clips), per frame of the chain:"]
        for q, sums in sorted(self._val_sums.items()):
            psnr = (sums["psnr"] / sums["n"]).tolist()
            bpp = (sums["bpp"] / sums["n"]).tolist()
            lines.append(f"  q{q}: PSNR-YUV " + " ".join(f"{v:6.2f}" for v in psnr))
            lines.append(f"  q{q}: bpp est  " + " ".join(f"{v:6.4f}" for v in bpp))
        if self.global_rank == 0:
            log.info("\n".join(lines))

    # ------------------------------------------------------------------------------------------
    # Checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Rebuild the entropy tables, then store the state dict, the config and the skip counter.

        Lightning collects ``state_dict`` before this hook; ``update`` may replace table buffers
        (new sizes), so the state dict is collected again afterwards.
        """
        with torch.no_grad():
            self.net.update(force=True)
        checkpoint["state_dict"] = self.state_dict()
        checkpoint["nvc_skipped_steps"] = int(self.skipped_steps)
        if self.nvc_config is not None:
            checkpoint["nvc_config"] = self.nvc_config

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skipped_steps = int(checkpoint.get("nvc_skipped_steps", 0))
