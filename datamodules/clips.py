"""``ClipDataModule``: random crops of consecutive frames from a list of 4:2:0 clips, for training.

Any clip :func:`nvc_train.video.open_video` reads works: raw ``.yuv`` (size in the name, or from
the folder scan), ``.y4m``, and containers through decord. Frames stay in YUV 4:2:0, the way the
codecs consume and the metrics measure them; no colour conversion happens here.

A batch is ``{"y": (B, T, 1, H, W), "uv": (B, T, 2, H/2, W/2)}`` float in [0, 1]: T consecutive
frames of one clip per item, the chain the RD module codes as I, P, P, ...
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from nvc_train.training.errors import MissingDataError
from nvc_train.video import VideoInfo, VideoReader, YUVFrame, open_video

log = logging.getLogger(__name__)

ClipSource = tuple[Path, VideoInfo | None]


def _size(value: int | Sequence[int] | None, what: str) -> tuple[int, int] | None:
    """``(height, width)`` from an int (square) or a pair; 4:2:0 needs both even."""
    if value is None:
        return None
    if isinstance(value, int):
        height = width = value
    else:
        height, width = (int(v) for v in value)
    if height <= 0 or width <= 0 or height % 2 or width % 2:
        raise ValueError(f"{what} must be positive and even (4:2:0), got {height}x{width}")
    return height, width


def _crop_frame(frame: YUVFrame, top: int, left: int, height: int, width: int) -> YUVFrame:
    """A 4:2:0 crop at an even offset (so chroma samples stay co-sited with their luma)."""
    ct, cl, ch, cw = top // 2, left // 2, height // 2, width // 2
    return YUVFrame(
        frame.y[top : top + height, left : left + width],
        frame.u[ct : ct + ch, cl : cl + cw],
        frame.v[ct : ct + ch, cl : cl + cw],
        frame.bit_depth,
    )


def _to_item(frames: Sequence[YUVFrame]) -> dict[str, torch.Tensor]:
    """``{"y": (T, 1, H, W), "uv": (T, 2, H/2, W/2)}`` float in [0, 1] from cropped frames."""
    ys, uvs = [], []
    for frame in frames:
        y, u, v = frame.to_tensors()
        ys.append(y[0])
        uvs.append(torch.cat([u[0], v[0]], dim=0))
    return {"y": torch.stack(ys), "uv": torch.stack(uvs)}


class RandomClipCrops(Dataset):
    """``length`` random (clip, start frame, crop position, flip, order) draws per epoch.

    Item ``i`` comes from clip ``i % len(readers)`` so every clip is seen equally often however
    long it is. Randomness comes from a generator owned by the process that reads (the main
    process or a DataLoader worker), seeded from torch's seed of that process and the distributed
    rank: runs repeat under ``seed_everything``, while workers and DDP ranks draw different crops.
    """

    def __init__(
        self,
        readers: Sequence[VideoReader],
        frames: int,
        crop: tuple[int, int],
        length: int,
        flip_p: float = 0.5,
        reverse_p: float = 0.0,
    ) -> None:
        self.readers = list(readers)
        self.frames = frames
        self.crop = crop
        self.length = length
        self.flip_p = flip_p
        self.reverse_p = reverse_p
        self._generator: torch.Generator | None = None
        self._generator_pid = -1

    def __len__(self) -> int:
        return self.length

    def _rng(self) -> torch.Generator:
        pid = os.getpid()
        if self._generator is None or self._generator_pid != pid:
            rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
            seed = (torch.initial_seed() + 1_000_003 * rank) % (2**63)
            self._generator = torch.Generator().manual_seed(seed)
            self._generator_pid = pid
        return self._generator

    def _randint(self, high: int) -> int:
        """Uniform integer in [0, high]."""
        return int(torch.randint(0, high + 1, (1,), generator=self._rng()))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        reader = self.readers[index % len(self.readers)]
        info = reader.info
        height, width = self.crop
        start = self._randint(len(reader) - self.frames)
        top = 2 * self._randint((info.height - height) // 2)
        left = 2 * self._randint((info.width - width) // 2)
        frames = [_crop_frame(f, top, left, height, width) for f in reader.read(start, self.frames)]
        rng = self._rng()
        if self.reverse_p > 0 and float(torch.rand((), generator=rng)) < self.reverse_p:
            frames.reverse()
        item = _to_item(frames)
        if self.flip_p > 0 and float(torch.rand((), generator=rng)) < self.flip_p:
            item = {key: value.flip(-1) for key, value in item.items()}
        return item


class CentreClipCrops(Dataset):
    """The first ``frames`` frames of each clip, centre-cropped: a fixed set, the same at every validation."""

    def __init__(self, readers: Sequence[VideoReader], frames: int, crop: tuple[int, int] | None) -> None:
        self.readers = list(readers)
        self.frames = frames
        self.crop = crop

    def __len__(self) -> int:
        return len(self.readers)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        reader = self.readers[index]
        info = reader.info
        height, width = self.crop or (info.height, info.width)
        top = 2 * ((info.height - height) // 4)
        left = 2 * ((info.width - width) // 4)
        return _to_item([_crop_frame(f, top, left, height, width) for f in reader.read(0, self.frames)])


class ClipDataModule(LightningDataModule):
    """Training crops and fixed validation crops from 4:2:0 clips (files and/or one folder).

    Clips that are absent or none usable raise :class:`MissingDataError`: the user must fix the
    data or the config, so ``train.py`` prints the message alone, without a traceback.

    Args:
        clips: video files (raw ``.yuv`` with ``_WxH`` in the name, ``.y4m``, containers).
        folder: a folder whose ``.y4m`` and ``*_WxH*.yuv`` files are added (not recursive; the
            same scan as ``ctc=folder``); ``fps`` / ``bit_depth`` for raw names that give none.
        frames: T, consecutive frames per training item (the length of the coded chain).
        crop: training crop, an int (square) or ``[height, width]``; even.
        batch_size: training items per batch.
        samples_per_epoch: training items per epoch (clips are few and long, so an epoch is a
            number of random draws, not a pass over a list).
        flip_p: probability of a horizontal flip of the whole item.
        reverse_p: probability of reversing the frame order (motion played backwards).
        val_frames: frames per validation item, from the start of each clip.
        val_crop: centre crop for validation (null: whole frames; then all clips must share a size
            or ``val_batch_size`` must be 1).
        val_max_clips: validate on the first N clips only (null: all).
        val_batch_size, num_workers, pin_memory: DataLoader settings.
    """

    def __init__(
        self,
        clips: Sequence[str | os.PathLike[str]] | None = None,
        folder: str | os.PathLike[str] | None = None,
        fps: float | None = None,
        bit_depth: int = 8,
        frames: int = 3,
        crop: int | Sequence[int] = 128,
        batch_size: int = 8,
        samples_per_epoch: int = 256,
        flip_p: float = 0.5,
        reverse_p: float = 0.0,
        val_frames: int = 3,
        val_crop: int | Sequence[int] | None = 256,
        val_max_clips: int | None = None,
        val_batch_size: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        if frames < 1 or val_frames < 1:
            raise ValueError(f"frames and val_frames must be >= 1, got {frames} and {val_frames}")
        if not (0.0 <= flip_p <= 1.0 and 0.0 <= reverse_p <= 1.0):
            raise ValueError(f"flip_p and reverse_p are probabilities, got {flip_p} and {reverse_p}")
        if samples_per_epoch < batch_size:
            raise ValueError(f"samples_per_epoch ({samples_per_epoch}) is less than one batch ({batch_size})")
        self.clips = [Path(c).expanduser() for c in (clips or [])]
        self.folder = Path(folder).expanduser() if folder not in (None, "") else None
        self.fps = fps
        self.bit_depth = bit_depth
        self.frames = frames
        self.crop = _size(crop, "crop")
        self.batch_size = batch_size
        self.samples_per_epoch = samples_per_epoch
        self.flip_p = flip_p
        self.reverse_p = reverse_p
        self.val_frames = val_frames
        self.val_crop = _size(val_crop, "val_crop")
        self.val_max_clips = val_max_clips
        self.val_batch_size = val_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.train_set: RandomClipCrops | None = None
        self.val_set: CentreClipCrops | None = None

    def describe_source(self) -> str:
        """Where clips were looked for, for the error message when none is usable."""
        parts = []
        if self.clips:
            parts.append(f"{len(self.clips)} listed file(s)")
        if self.folder is not None:
            parts.append(f"folder {self.folder} (its .y4m and *_<W>x<H>*.yuv files)")
        return " and ".join(parts) or "no clips and no folder configured (set data.clips or data.folder)"

    def find_clips(self) -> list[ClipSource]:
        """(path, metadata or None) of every configured clip; subclasses supply their own set."""
        found: list[ClipSource] = [(path, None) for path in self.clips]
        if self.folder is not None:
            from nvc_train.ctc import scan_folder

            if not self.folder.is_dir():
                raise MissingDataError(f"data.folder is not a folder: {self.folder}")
            try:
                sequences = scan_folder(self.folder, self.fps, self.bit_depth)
            except FileNotFoundError:  # its message speaks of ctc.path; this is data.folder
                sequences = []
            found += [(seq.path, seq.info) for seq in sequences]
        return found

    def _open(self) -> list[VideoReader]:
        """Readers (metadata only: they keep no open handle) for every configured clip."""
        readers = [open_video(path, info) for path, info in self.find_clips()]
        if not readers:
            raise MissingDataError(f"no training clips found: {self.describe_source()}")
        return readers

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        readers = self._open()
        train_readers = self._usable(readers, self.frames, self.crop, "training")
        val_readers = readers[: self.val_max_clips] if self.val_max_clips else readers
        val_readers = self._usable(val_readers, self.val_frames, self.val_crop, "validation")
        self.train_set = RandomClipCrops(
            train_readers, self.frames, self.crop, self.samples_per_epoch, self.flip_p, self.reverse_p
        )
        self.val_set = CentreClipCrops(val_readers, self.val_frames, self.val_crop)
        log.info(
            "%d training clips (%d random %dx%d crops of %d frames per epoch), %d validation clips",
            len(train_readers),
            self.samples_per_epoch,
            self.crop[0],
            self.crop[1],
            self.frames,
            len(val_readers),
        )

    def _usable(
        self, readers: list[VideoReader], frames: int, crop: tuple[int, int] | None, purpose: str
    ) -> list[VideoReader]:
        """Clips long and large enough; the others are named in a warning, none left is an error."""
        keep, skipped = [], []
        for reader in readers:
            info = reader.info
            short = len(reader) < frames
            small = crop is not None and (info.height < crop[0] or info.width < crop[1])
            if short or small:
                skipped.append(f"{reader.path.name} ({info.width}x{info.height}, {len(reader)} frames)")
            else:
                keep.append(reader)
        if not keep:
            need = f"{frames} frames" + (f" of at least {crop[1]}x{crop[0]}" if crop else "")
            raise MissingDataError(
                f"no clip usable for {purpose} ({need}) in {self.describe_source()}: " + ", ".join(skipped)
            )
        if skipped:
            log.warning("%d clip(s) skipped for %s: %s", len(skipped), purpose, ", ".join(skipped))
        return keep

    def _loader(
        self, dataset: Dataset, batch_size: int, drop_last: bool, shuffle: bool = False
    ) -> DataLoader:
        """A DataLoader with this module's worker settings.

        ``shuffle`` stays off for clip crops (items are random draws already) and validation (a
        fixed order); data sets with one item per sample (Vimeo-90k) turn it on for training.
        """
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            drop_last=drop_last,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        return self._loader(self.train_set, self.batch_size, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.setup("validate")
        assert self.val_set is not None
        return self._loader(self.val_set, self.val_batch_size, drop_last=False)
