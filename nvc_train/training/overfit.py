"""``OverfitModule``: fit one scene-adaptive network to one sequence with ``R + lambda * D``.

Generic over :class:`models.adaptive.SceneAdaptiveNet` (duck-typed: the framework never imports
``models``): a latent-grid codec and an INR train with the same module, the same data module
(:class:`datamodules.sequence.SequenceDataModule`) and the same stage callbacks
(:class:`nvc_train.callbacks.overfit_stages.OverfitStages`), which switch quantization proxies and
learning rates along one schedule config.

The rate of a batch of B frames out of T is its latents' estimated bits plus B/T of the weights'
bits (the weights are sent once for the whole sequence), per luma pixel; D is the 6:1:1 MSE::

    loss = (latent_bits + parameter_bits * B / T) / (B * H * W) + lambda * D_611
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from nvc_train.training.losses import combine_planes, plane_mses, psnr_from_mse

log = logging.getLogger(__name__)


@dataclass
class RDTerms:
    """Loss terms of a batch (scalars): what the loss, the logs and the keep-best choice use."""

    loss: Tensor
    bpp: Tensor
    mse: Tensor
    psnr: Tensor


def rd_terms(net: nn.Module, batch: dict[str, Tensor], lmbda: float) -> RDTerms:
    """Forward ``batch`` through ``net`` and combine rate and 6:1:1 MSE into the RD loss."""
    out = net(batch["index"])
    y, uv = batch["y"], batch["uv"]
    frames = y.shape[0]
    mses = plane_mses(out.y.float(), out.uv.float(), y.float(), uv.float())  # (B, 3)
    mse = combine_planes(mses).mean()
    bits = out.latent_bits + out.parameter_bits * (frames / net.num_frames)
    bpp = bits / float(frames * y.shape[-2] * y.shape[-1])
    psnr = combine_planes(psnr_from_mse(mses.detach())).mean()
    return RDTerms(bpp + lmbda * mse, bpp, mse, psnr)


class OverfitModule(LightningModule):
    """Train ``net`` on one sequence; the stage callback sets quantizers and learning rates.

    Args:
        net: a scene-adaptive network (``forward(indices)``, ``parameter_coder()``, ``num_frames``).
        lmbda: the rate point's lambda for D on [0, 1] pixels (the training losses' convention).
        lr: the starting learning rate (the stage callback overrides it per phase).
        parameter_lr_ratio: learning rate of the weights' quantization steps relative to ``lr``.
        weight_decay: Adam's weight decay of the network (0: none).
    """

    def __init__(
        self, net: nn.Module, lmbda: float, lr: float = 1e-2, parameter_lr_ratio: float = 0.1,
        weight_decay: float = 0.0,
    ) -> None:  # fmt: skip
        super().__init__()
        if lmbda <= 0:
            raise ValueError(f"lambda must be positive, got {lmbda}")
        self.net = net
        self.lmbda = float(lmbda)
        self.lr = float(lr)
        self.parameter_lr_ratio = float(parameter_lr_ratio)
        self.weight_decay = float(weight_decay)

    def forward(self, frame_indices: Tensor) -> Any:
        return self.net(frame_indices)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        terms = rd_terms(self.net, batch, self.lmbda)
        self.log_dict(
            {"train/loss": terms.loss, "train/bpp": terms.bpp, "train/psnr": terms.psnr},
            prog_bar=True, on_step=True, on_epoch=False, batch_size=batch["y"].shape[0],
        )  # fmt: skip
        return terms.loss

    @torch.no_grad()
    def sequence_terms(self, y: Tensor, uv: Tensor, chunk: int = 8) -> RDTerms:
        """RD terms of the WHOLE sequence with hard-rounded latents (what the decoder will see).

        Frames go through in chunks (memory); the weights' bits are counted once.
        """
        net = self.net
        saved = net.quantizer
        param_mode = net.parameter_mode
        from dataclasses import replace

        net.quantizer = replace(saved, mode="hard")
        if param_mode is not None:
            net.quantize_parameters("dequantize")
        try:
            total_bits, total_mse, total_psnr = 0.0, 0.0, 0.0
            parameter_bits = 0.0
            count = y.shape[0]
            for start in range(0, count, chunk):
                index = torch.arange(start, min(start + chunk, count), device=y.device)
                out = net(index)
                mses = plane_mses(out.y.clamp(0, 1), out.uv.clamp(0, 1), y[index], uv[index])
                total_bits += float(out.latent_bits)
                parameter_bits = float(out.parameter_bits)
                total_mse += float(combine_planes(mses).sum())
                total_psnr += float(combine_planes(psnr_from_mse(mses)).sum())
        finally:
            net.quantizer = saved
            if param_mode is not None:
                net.quantize_parameters(param_mode)
        pixels = float(count * y.shape[-2] * y.shape[-1])
        bpp = torch.tensor((total_bits + parameter_bits) / pixels)
        mse = torch.tensor(total_mse / count)
        return RDTerms(bpp + self.lmbda * mse, bpp, mse, torch.tensor(total_psnr / count))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = [{"params": list(self.net.parameters()), "lr": self.lr, "weight_decay": self.weight_decay}]
        coder = self.net.parameter_coder()
        steps = list(coder.parameters())
        if steps:
            groups.append({"params": steps, "lr": self.lr * self.parameter_lr_ratio, "weight_decay": 0.0})
        return torch.optim.Adam(groups)
