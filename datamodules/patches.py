"""One sequence served as patches: HiNeRV's sampling for the per-sequence fit.

HiNeRV (github hmkx/HiNeRV) cuts every frame into a grid of 120 x 120 patches and trains on random
batches of them drawn from the whole sequence (144 a step at 1080p: one frame's worth of pixels),
each patch once an epoch. A patch is computed by the network alone (its ``frames_forward`` takes
``crop``), so a step costs the patches' pixels, not whole frames'. A batch::

    {"index": (B,) long, "y": (B, 1, P, P), "uv": (B, 2, P/2, P/2), "crop": (B, 4) long}

``crop`` rows are ``(top, left, P, P)`` in pixels of the coded (padded) frame. When a side is not a
multiple of P, the last row / column of patches is moved back to end on the frame's edge (it
overlaps its neighbour), so every pixel is in some patch. Selected with
``codec.data._target_=datamodules.patches.PatchDataModule`` (extra keys: ``patch_size``,
``patches_per_step``); the fit must pass ``crop=batch["crop"]`` to the network.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

__all__ = ["PatchDataModule", "patch_origins"]


def patch_origins(size: int, patch: int) -> list[int]:
    """Top (or left) offsets of a grid of ``patch``-wide tiles covering ``size``; the last one flush
    with the edge. ``patch`` must be even and at most ``size`` (4:2:0 patches start on even pixels)."""
    if patch < 2 or patch % 2:
        raise ValueError(f"patch_size must be an even number >= 2 (4:2:0 chroma), got {patch}")
    if patch > size:
        raise ValueError(f"patch_size {patch} exceeds the frame's side of {size} pixels")
    origins = list(range(0, size - patch + 1, patch))
    if origins[-1] + patch < size:
        origins.append(size - patch)
    return origins


class _Patches(Dataset):
    def __init__(self, y: Tensor, uv: Tensor, patch: int) -> None:
        self.y, self.uv, self.patch = y, uv, patch
        self.rows = patch_origins(y.shape[-2], patch)
        self.cols = patch_origins(y.shape[-1], patch)

    @property
    def per_frame(self) -> int:
        return len(self.rows) * len(self.cols)

    def __len__(self) -> int:
        return self.y.shape[0] * self.per_frame

    def __getitem__(self, item: int) -> dict[str, Tensor]:
        frame, tile = divmod(item, self.per_frame)
        top, left = self.rows[tile // len(self.cols)], self.cols[tile % len(self.cols)]
        size = self.patch
        return {
            "index": torch.tensor(frame),
            "y": self.y[frame, :, top : top + size, left : left + size],
            "uv": self.uv[frame, :, top // 2 : (top + size) // 2, left // 2 : (left + size) // 2],
            "crop": torch.tensor([top, left, size, size]),
        }


class PatchDataModule(pl.LightningDataModule):
    """Serves random square patches of one sequence (in memory) for a per-sequence ``fit``.

    Args:
        y, uv: the padded planes of every coded frame in display order.
        frames_per_step: the framework's batch size in frames; unless ``patches_per_step`` is set, a
            step takes as many patches as cover that many frames (HiNeRV at 1080p: 1 frame = 144).
        seed: the order in which patches are visited (reproducible encodes).
        patch_size: side of a patch in luma pixels (HiNeRV: 120; even).
        patches_per_step: patches in one batch (overrides ``frames_per_step``).
    """

    def __init__(
        self, y: Tensor, uv: Tensor, frames_per_step: int = 1, seed: int = 0, patch_size: int = 120,
        patches_per_step: int | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if y.ndim != 4 or uv.ndim != 4 or y.shape[0] != uv.shape[0]:
            raise ValueError(
                f"need y (T,1,H,W) and uv (T,2,H/2,W/2), got {tuple(y.shape)}, {tuple(uv.shape)}"
            )
        if frames_per_step < 1 or (patches_per_step is not None and patches_per_step < 1):
            raise ValueError(
                "frames_per_step and patches_per_step must be >= 1, "
                f"got {frames_per_step}, {patches_per_step}"
            )
        self.patches = _Patches(y, uv, int(patch_size))
        wanted = (
            patches_per_step if patches_per_step is not None else frames_per_step * self.patches.per_frame
        )
        self.patches_per_step = min(int(wanted), len(self.patches))
        self.seed = int(seed)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.patches,
            batch_size=self.patches_per_step,
            shuffle=True,
            drop_last=True,
            generator=generator,
            num_workers=0,  # frames are in memory: workers would only copy them
        )
