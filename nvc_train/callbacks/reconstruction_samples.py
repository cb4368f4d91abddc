"""``ReconstructionSamples``: what the network makes of a validation clip, as pictures in the run folder.

Source, reconstruction and luma error map per rate point, one PNG per validation under
``<run dir>/media``. It needs no W&B: the pictures are files in every run (CSV-only runs too), and
when a ``WandbLogger`` is attached they are also logged as ``samples/reconstructions``
(:func:`~nvc_train.callbacks.wandb_media.wandb_loggers`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from nvc_train.atomic import atomic_write_bytes
from nvc_train.callbacks.wandb_media import wandb_loggers


def error_map(y_hat: torch.Tensor, y: torch.Tensor, max_error: float) -> torch.Tensor:
    """|luma error| as an RGB heat map (3, H, W) in [0, 1], saturating at ``max_error``.

    A fixed scale (not per image) so that maps of different steps and rate points compare by eye.
    """
    from matplotlib import colormaps

    scaled = ((y_hat - y).abs() / max_error).clamp(0, 1).squeeze().cpu().numpy()
    rgb = colormaps["inferno"](scaled)[..., :3]
    return torch.from_numpy(rgb).permute(2, 0, 1).float()


def sample_grid(
    y: torch.Tensor,
    uv: torch.Tensor,
    recons: Mapping[int, list[tuple[torch.Tensor, torch.Tensor]]],
    max_error: float,
) -> tuple[torch.Tensor, list[str]]:
    """One image: a row per frame; columns source, then reconstruction and error map per rate point.

    ``y`` (T, 1, H, W) and ``uv`` (T, 2, H/2, W/2) of one clip; ``recons[q][t]`` is frame t's
    (y_hat, uv_hat). Returns the (3, rows*H, cols*W) image and its column titles.
    """
    from nvc_train.video.colour import yuv420_to_rgb

    def rgb(y_plane: torch.Tensor, uv_planes: torch.Tensor) -> torch.Tensor:
        return yuv420_to_rgb(y_plane[None], uv_planes[None, :1], uv_planes[None, 1:])[0].clamp(0, 1).cpu()

    titles = ["source"] + [f"{kind} q{q}" for q in recons for kind in ("decoded", "|error| Y")]
    rows = []
    for t in range(y.shape[0]):
        tiles = [rgb(y[t], uv[t])]
        for frames in recons.values():
            y_hat, uv_hat = frames[t]
            tiles += [rgb(y_hat, uv_hat), error_map(y_hat, y[t], max_error)]
        rows.append(torch.cat(tiles, dim=-1))
    return torch.cat(rows, dim=-2), titles


def grid_png(image: torch.Tensor) -> bytes:
    """(3, H, W) float in [0, 1] as PNG bytes."""
    from PIL import Image

    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


class ReconstructionSamples(Callback):
    """Source, reconstruction and error map of the first validation clip, every ``every_n_validations``.

    The reconstruction is the network's own decoder output in eval mode (rounded latents, what the
    decoder of a real bitstream returns; the entropy coder is lossless), coded as a chain: frame 0
    intra, the next ones predicted from the model's reconstructions. Runs on rank 0 only, on at
    most ``frames`` frames of one clip, so it costs a few forward passes per validation.

    Args:
        every_n_validations: log on every n-th validation (1: each one).
        frames: frames of the clip shown (rows of the grid).
        q_indices: rate points shown; None: the lowest and the highest.
        max_error: luma error (on [0, 1] pixels) at which the heat map saturates.
        out_dir: where the PNGs go; None: ``<trainer.default_root_dir>/media``.
    """

    def __init__(
        self,
        every_n_validations: int = 1,
        frames: int = 2,
        q_indices: Sequence[int] | None = None,
        max_error: float = 0.1,
        out_dir: str | Path | None = None,
    ) -> None:
        if every_n_validations < 1 or frames < 1 or max_error <= 0:
            raise ValueError(
                f"every_n_validations and frames must be >= 1 and max_error > 0, got "
                f"{every_n_validations}, {frames}, {max_error}"
            )
        self.every_n_validations = every_n_validations
        self.frames = frames
        self.q_indices = list(q_indices) if q_indices is not None else None
        self.max_error = max_error
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self._validations = 0
        #: Paths of the PNGs written (rank 0).
        self.written: list[Path] = []

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or dataloader_idx != 0 or trainer.sanity_checking:
            return
        self._validations += 1
        if (self._validations - 1) % self.every_n_validations or not trainer.is_global_zero:
            return
        self.log_samples(trainer, pl_module, batch["y"][0], batch["uv"][0])

    def log_samples(
        self, trainer: Trainer, pl_module: LightningModule, y: torch.Tensor, uv: torch.Tensor
    ) -> Path:
        """Code ``y`` (T,1,H,W), ``uv`` (T,2,H/2,W/2) at the rate points; write and log the grid."""
        y, uv = y[: self.frames].float(), uv[: self.frames].float()
        num_q = int(getattr(pl_module, "num_q", 1))
        q_indices = self.q_indices if self.q_indices is not None else sorted({0, num_q - 1})
        recons: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        captions = []
        for q in q_indices:
            recons[q], psnr, bpp = pl_module.reconstruct_chain(y[None], uv[None], q)
            captions.append(f"q{q}: PSNR-YUV {psnr:.2f} dB, {bpp:.4f} bpp (estimated)")
        image, titles = sample_grid(y, uv, recons, self.max_error)
        out_dir = self.out_dir or Path(trainer.default_root_dir) / "media"
        path = out_dir / f"samples_step{trainer.global_step:07d}.png"
        atomic_write_bytes(path, grid_png(image))
        self.written.append(path)
        caption = f"step {trainer.global_step}; columns: {', '.join(titles)}; " + "; ".join(captions)
        for logger in wandb_loggers(trainer):
            logger.log_image(
                "samples/reconstructions", [str(path)], step=trainer.global_step, caption=[caption]
            )
        return path
