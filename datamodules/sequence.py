"""One sequence as a LightningDataModule: what the overfitting loop of a scene-adaptive codec fits.

The frames live in memory (a CIF clip of 32 frames is 19 MB as float32 4:2:0), padded to the
network's multiple; a training batch is a random subset of frames with their indices, because a
scene-adaptive network is a function of the frame index::

    {"index": (B,) long, "y": (B, 1, H, W), "uv": (B, 2, H/2, W/2)}   floats in [0, 1]

An epoch visits every frame once in random order (``frames_per_step`` per batch); the loop stops on
a step count (``max_steps``), not on epochs.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from nvc_train.video.planes import load_planes

# load_planes lives in nvc_train.video.planes (generic frame loading); served here too for the
# callers that load a clip to build this data module from.
__all__ = ["SequenceDataModule", "load_planes"]


class _Frames(Dataset):
    def __init__(self, y: Tensor, uv: Tensor) -> None:
        self.y, self.uv = y, uv

    def __len__(self) -> int:
        return self.y.shape[0]

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"index": torch.tensor(index), "y": self.y[index], "uv": self.uv[index]}


class SequenceDataModule(pl.LightningDataModule):
    """Serves the frames of one sequence (already in memory) for a per-sequence ``fit``.

    Args:
        y, uv: the padded planes of every coded frame in display order.
        frames_per_step: frames in one training batch (the rest of the sequence is seen next steps).
        seed: the order in which frames are visited (reproducible encodes).
    """

    def __init__(self, y: Tensor, uv: Tensor, frames_per_step: int = 4, seed: int = 0) -> None:
        super().__init__()
        if y.ndim != 4 or uv.ndim != 4 or y.shape[0] != uv.shape[0]:
            raise ValueError(
                f"need y (T,1,H,W) and uv (T,2,H/2,W/2), got {tuple(y.shape)}, {tuple(uv.shape)}"
            )
        if frames_per_step < 1:
            raise ValueError(f"frames_per_step must be >= 1, got {frames_per_step}")
        self.y, self.uv = y, uv
        self.frames_per_step = min(int(frames_per_step), y.shape[0])
        self.seed = int(seed)

    @classmethod
    def from_path(
        cls, path: str | Path, frames: int | None = None, multiple: int = 1, **kwargs: int
    ) -> SequenceDataModule:
        """Read the first ``frames`` frames of a video file (y4m, raw yuv with its size in the name)."""
        y, uv, _ = load_planes(path, count=frames, multiple=multiple)
        return cls(y, uv, **kwargs)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            _Frames(self.y, self.uv),
            batch_size=self.frames_per_step,
            shuffle=True,
            drop_last=True,
            generator=generator,
            num_workers=0,  # frames are in memory: workers would only copy them
        )
