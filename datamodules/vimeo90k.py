"""``Vimeo90kDataModule``: Vimeo-90k septuplets (the published layout) as 4:2:0 training chains.

Expected layout (as unpacked from the dataset's page; nothing is downloaded here)::

    <root>/sep_trainlist.txt            lines like ``00001/0001``
    <root>/sep_testlist.txt
    <root>/sequences/00001/0001/im1.png .. im7.png    (448x256 RGB)

The PNGs are RGB; the framework trains and measures in Y'CbCr 4:2:0, so every frame is converted
with :func:`nvc_train.video.colour.rgb_to_yuv420` and rounded to 8-bit code values, exactly as
container files are (:class:`nvc_train.video.DecordReader`). The matrix is **BT.709, limited
range** by default: Vimeo-90k was cut from web video, which is HD content coded with BT.709, and the
evaluation sequences (CTC, UVG) are limited-range BT.709 too, so the model sees the same signal
statistics in training and in testing. ``matrix`` / ``full_range`` change it.

Each septuplet is one :class:`SeptupletReader` (a 7-frame :class:`~nvc_train.video.VideoReader`),
so the cropping, flipping and reversal of :mod:`datamodules.clips` apply unchanged. A root, list
file or septuplet that is not there raises :class:`MissingDataError` naming the path and the layout
expected, which ``train.py`` prints without a traceback.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from datamodules.clips import CentreClipCrops, ClipDataModule, RandomClipCrops
from nvc_train.training.errors import MissingDataError
from nvc_train.video import VideoFormatError, VideoInfo, VideoReader, YUVFrame

log = logging.getLogger(__name__)

SEPTUPLET_FRAMES = 7
TRAIN_LIST = "sep_trainlist.txt"
TEST_LIST = "sep_testlist.txt"
SEQUENCES = "sequences"
# Vimeo-90k gives no frame rate; VideoInfo needs one, and nothing in training uses it.
_NOMINAL_FPS = 30.0
_LISTED_MISSING = 10


def _layout_hint(root: Path) -> str:
    return (
        f"Vimeo-90k septuplet root expected at {root} ({TRAIN_LIST}, {TEST_LIST} and "
        f"{SEQUENCES}/<00001>/<0001>/im1.png..im7.png; download it from the dataset's page, "
        f"nothing is downloaded here)"
    )


class SeptupletReader(VideoReader):
    """The seven PNG frames of one septuplet folder as 8-bit 4:2:0 frames.

    Only paths are kept (no open file, no decoded frame), so tens of thousands of readers are
    cheap and DataLoader workers can share them; the frame size is read from ``im1.png``'s header
    on first use unless ``size`` (height, width) is given.
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        size: tuple[int, int] | None = None,
        matrix: str = "bt709",
        full_range: bool = False,
    ) -> None:
        self.path = Path(folder)
        self.matrix = matrix
        self.full_range = full_range
        self._size = size

    def frame_path(self, index: int) -> Path:
        return self.path / f"im{index + 1}.png"

    @property
    def info(self) -> VideoInfo:
        if self._size is None:
            from PIL import Image

            path = self.frame_path(0)
            if not path.is_file():
                raise MissingDataError(f"missing Vimeo-90k frame {path}")
            with Image.open(path) as image:  # header only
                width, height = image.size
            self._size = (height, width)
        height, width = self._size
        try:
            return VideoInfo(width, height, 8, _NOMINAL_FPS, SEPTUPLET_FRAMES)
        except ValueError as error:
            raise VideoFormatError(f"{self.path}: {error}") from error

    def _load(self, index: int) -> YUVFrame:
        import torch
        from PIL import Image

        from nvc_train.video.colour import rgb_to_yuv420

        path = self.frame_path(index)
        if not path.is_file():
            raise MissingDataError(f"missing Vimeo-90k frame {path} (a septuplet has im1.png..im7.png)")
        with Image.open(path) as image:
            rgb = np.array(image.convert("RGB"))  # a writable copy for torch
        info = self.info
        if rgb.shape[:2] != (info.height, info.width):
            raise VideoFormatError(
                f"{path} is {rgb.shape[1]}x{rgb.shape[0]}, "
                f"the septuplet's frames are {info.width}x{info.height}"
            )
        tensor = torch.from_numpy(rgb).permute(2, 0, 1).to(torch.float32) / 255.0
        y, u, v = rgb_to_yuv420(tensor, self.matrix, self.full_range, bit_depth=8)
        return YUVFrame.from_tensors(y, u, v, bit_depth=8)

    def _read_range(self, start: int, count: int) -> Iterator[YUVFrame]:
        for index in range(start, start + count):
            yield self._load(index)


def read_septuplet_list(root: Path, name: str) -> list[str]:
    """The ``00001/0001`` entries of a list file; a missing or empty file is a layout error."""
    path = root / name
    if not path.is_file():
        raise MissingDataError(f"no {name} in {root}: {_layout_hint(root)}")
    entries = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not entries:
        raise MissingDataError(f"{path} lists no septuplets: {_layout_hint(root)}")
    return entries


def check_sequence_folders(root: Path, entries: Sequence[str], list_name: str) -> list[Path]:
    """The septuplet folders of ``entries``; all missing ones are named in one error (first few + count)."""
    sequences = root / SEQUENCES
    if not sequences.is_dir():
        raise MissingDataError(f"no {SEQUENCES}/ folder in {root}: {_layout_hint(root)}")
    folders = [sequences / entry for entry in entries]
    missing = [entry for entry, folder in zip(entries, folders, strict=True) if not folder.is_dir()]
    if missing:
        shown = ", ".join(missing[:_LISTED_MISSING])
        more = f" and {len(missing) - _LISTED_MISSING} more" if len(missing) > _LISTED_MISSING else ""
        raise MissingDataError(
            f"{len(missing)} of {len(entries)} septuplets listed in {root / list_name} have no folder "
            f"under {sequences}: {shown}{more} (incomplete download or unpacking?)"
        )
    return folders


class Vimeo90kDataModule(ClipDataModule):
    """Random crops of T consecutive frames of the training septuplets; centre crops of the test ones.

    Args:
        root: the Vimeo-90k septuplet folder (the one holding ``sep_trainlist.txt``).
        frames: T, consecutive frames per training item, at most 7 (the start is random).
        crop: training crop, int (square) or ``[height, width]``; even, at most 256x448. Use a
            multiple of the model's pad multiple so no padding enters the loss.
        samples_per_epoch: training items per epoch; null: one pass over ``sep_trainlist.txt``
            (each septuplet once, shuffled).
        val_frames, val_crop: validation takes the first ``val_frames`` frames of each test
            septuplet, centre-cropped (fixed, the same at every validation).
        val_max_clips: validate on the first N test septuplets (the full list is 7824).
        matrix, full_range: the RGB -> Y'CbCr conversion (module docstring: why BT.709 limited).
        Others: as :class:`ClipDataModule`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        frames: int = 3,
        crop: int | Sequence[int] = 256,
        batch_size: int = 8,
        samples_per_epoch: int | None = None,
        flip_p: float = 0.5,
        reverse_p: float = 0.5,
        val_frames: int = 3,
        val_crop: int | Sequence[int] | None = 256,
        val_max_clips: int | None = 64,
        val_batch_size: int = 4,
        num_workers: int = 4,
        pin_memory: bool = False,
        matrix: str = "bt709",
        full_range: bool = False,
    ) -> None:
        if not 1 <= frames <= SEPTUPLET_FRAMES or not 1 <= val_frames <= SEPTUPLET_FRAMES:
            raise ValueError(
                f"a septuplet has {SEPTUPLET_FRAMES} frames; got frames={frames}, val_frames={val_frames}"
            )
        super().__init__(
            frames=frames,
            crop=crop,
            batch_size=batch_size,
            samples_per_epoch=samples_per_epoch if samples_per_epoch is not None else batch_size,
            flip_p=flip_p,
            reverse_p=reverse_p,
            val_frames=val_frames,
            val_crop=val_crop,
            val_max_clips=val_max_clips,
            val_batch_size=val_batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
        )
        if root in (None, "", "???"):
            raise MissingDataError(
                "data.root is not set: pass the Vimeo-90k septuplet folder (or set VIMEO90K_ROOT)"
            )
        self.root = Path(root).expanduser()
        self.epoch_samples = samples_per_epoch
        self.matrix = matrix
        self.full_range = full_range

    def describe_source(self) -> str:
        return f"Vimeo-90k septuplets in {self.root}"

    def _readers(self, list_name: str, limit: int | None = None) -> list[SeptupletReader]:
        entries = read_septuplet_list(self.root, list_name)[:limit]
        folders = check_sequence_folders(self.root, entries, list_name)
        return [SeptupletReader(folder, None, self.matrix, self.full_range) for folder in folders]

    def _share_size(self, readers: list[SeptupletReader], crop: tuple[int, int] | None, purpose: str) -> None:
        """Read one header, check the crop fits, and give every reader that size (the set is uniform)."""
        info = readers[0].info
        if crop is not None and (crop[0] > info.height or crop[1] > info.width):
            raise ValueError(
                f"{purpose} crop {crop[1]}x{crop[0]} is larger than the Vimeo-90k frames "
                f"({info.width}x{info.height}, {readers[0].path})"
            )
        for reader in readers:
            reader._size = (info.height, info.width)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if not self.root.is_dir():
            raise MissingDataError(
                f"Vimeo-90k root not found: {self.root} is not a folder; {_layout_hint(self.root)}"
            )
        train_readers = self._readers(TRAIN_LIST)
        val_readers = self._readers(TEST_LIST, self.val_max_clips)
        self._share_size(train_readers, self.crop, "training")
        self._share_size(val_readers, self.val_crop, "validation")
        length = self.epoch_samples if self.epoch_samples is not None else len(train_readers)
        if length < self.batch_size:
            raise ValueError(f"{length} training items per epoch is less than one batch ({self.batch_size})")
        self.samples_per_epoch = length
        self.train_set = RandomClipCrops(
            train_readers, self.frames, self.crop, length, self.flip_p, self.reverse_p
        )
        self.val_set = CentreClipCrops(val_readers, self.val_frames, self.val_crop)
        log.info(
            "Vimeo-90k: %d training septuplets (%d %dx%d crops of %d frames per epoch), %d for validation",
            len(train_readers),
            length,
            self.crop[0],
            self.crop[1],
            self.frames,
            len(val_readers),
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        # One item per septuplet (index % count), so shuffling gives each epoch a new order.
        return self._loader(self.train_set, self.batch_size, drop_last=True, shuffle=True)
