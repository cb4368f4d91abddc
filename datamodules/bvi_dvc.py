"""``BVIDVCDataModule``: BVI-DVC (mp4 or raw .yuv) as random T-frame crops in 4:2:0.

BVI-DVC is 800 sequences of 64 frames at four resolutions (3840x2176 down to 480x272), published
as mp4 files and convertible to raw 10-bit 4:2:0; file names carry size, rate and depth, e.g.
``AAdvertisingMassagesBangkokVidevo_1920x1088_25fps_10bit_420.yuv``. ``root`` is searched
recursively (the classes may sit in sub-folders).

- ``.yuv`` files are read exactly with the raw reader (10-bit code values, normalised by 1023).
- ``.mp4`` files go through decord, which decodes to 8-bit RGB; frames are converted back to
  Y'CbCr 4:2:0 (BT.709 limited range by default, see :class:`nvc_train.video.DecordReader`). Use
  the raw files when the exact 10-bit signal matters.

decord is never opened in ``__init__`` and no decoder is kept open: :class:`ScopedDecordReader`
opens the container for one read and closes it, inside whichever process reads (a DataLoader
worker, environment note R4), so 800 files do not hold 800 decoders in every worker.

A root that is unset, absent or holds no video files raises :class:`MissingDataError`, which
``train.py`` prints without a traceback.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from datamodules.clips import ClipDataModule, ClipSource
from nvc_train.training.errors import MissingDataError
from nvc_train.video import DecordReader, RawYUVReader, VideoFormatError, VideoInfo, VideoReader, YUVFrame
from nvc_train.video.readers import raw_name_fields

log = logging.getLogger(__name__)

CONTAINER_SUFFIXES = (".mp4",)
RAW_SUFFIXES = (".yuv",)
SOURCES = ("auto", "mp4", "yuv")


class ScopedDecordReader(DecordReader):
    """A :class:`DecordReader` that opens the container per read and closes it afterwards.

    Metadata needs no decoded frame when the name gives the size (BVI-DVC names do): the frame
    count and rate come from the container index, which keeps ``setup`` over 800 files quick.
    """

    def _release(self) -> None:
        self._handles.pop(os.getpid(), None)

    @property
    def info(self) -> VideoInfo:
        if self._info is None:
            try:
                decoder = self._decoder()
                fields = raw_name_fields(self.path.name)
                if fields is not None:
                    width, height = fields[0], fields[1]
                else:
                    height, width = decoder[0].shape[:2]
                try:
                    info = VideoInfo(width, height, 8, float(decoder.get_avg_fps()), len(decoder))
                except ValueError as error:
                    raise VideoFormatError(f"{self.path}: {error}") from error
            finally:
                self._release()
            self._info = info
        return self._info

    def _to_frame(self, rgb: np.ndarray) -> YUVFrame:
        info = self.info
        if rgb.shape[:2] != (info.height, info.width):
            raise VideoFormatError(
                f"{self.path} decodes to {rgb.shape[1]}x{rgb.shape[0]}, "
                f"its name says {info.width}x{info.height}"
            )
        return super()._to_frame(rgb)

    def _read_range(self, start: int, count: int, batch: int = 8) -> Iterator[YUVFrame]:
        try:
            yield from super()._read_range(start, count, batch)
        finally:
            self._release()


def find_bvi_dvc_files(root: Path, source: str = "auto") -> list[Path]:
    """The video files under ``root`` (recursive, sorted); ``auto`` prefers raw .yuv when there are any."""
    if source not in SOURCES:
        raise ValueError(f"data.source must be one of {', '.join(SOURCES)}, got {source!r}")
    if not root.is_dir():
        raise MissingDataError(
            f"BVI-DVC root not found: {root} is not a folder (expected the BVI-DVC .mp4 files or raw "
            f"*_<W>x<H>_*.yuv files under it; download them from the dataset's page, "
            f"nothing is downloaded here)"
        )
    files = sorted(p for p in root.rglob("*") if p.is_file())
    raw = [p for p in files if p.suffix.lower() in RAW_SUFFIXES]
    mp4 = [p for p in files if p.suffix.lower() in CONTAINER_SUFFIXES]
    chosen = {"yuv": raw, "mp4": mp4, "auto": raw or mp4}[source]
    if not chosen:
        wanted = {"yuv": "*.yuv", "mp4": "*.mp4", "auto": "*.mp4 or *.yuv"}[source]
        raise MissingDataError(
            f"no BVI-DVC video files ({wanted}) under {root} ({len(files)} other file(s) found); "
            f"expected names like AAdvertisingMassagesBangkokVidevo_1920x1088_25fps_10bit_420.yuv"
        )
    return chosen


class BVIDVCDataModule(ClipDataModule):
    """:class:`ClipDataModule` over the BVI-DVC files under ``root``.

    Args:
        root: folder holding the BVI-DVC files (searched recursively).
        source: ``mp4``, ``yuv`` or ``auto`` (raw files when present, else mp4): one copy of each
            sequence, never both.
        matrix, full_range: RGB -> Y'CbCr conversion of decoded mp4 frames.
        **kwargs: the crop, frame, validation and loader settings of :class:`ClipDataModule`
            (validation uses the first ``val_max_clips`` files: BVI-DVC has no test split).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        source: str = "auto",
        matrix: str = "bt709",
        full_range: bool = False,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("clips") or kwargs.get("folder"):
            raise ValueError("BVI-DVC finds its own files under data.root; use data=folder for others")
        if source not in SOURCES:
            raise ValueError(f"data.source must be one of {', '.join(SOURCES)}, got {source!r}")
        super().__init__(**kwargs)
        if root in (None, "", "???"):
            raise MissingDataError("data.root is not set: pass the BVI-DVC folder (or set BVI_DVC_ROOT)")
        self.root = Path(root).expanduser()
        self.source = source
        self.matrix = matrix
        self.full_range = full_range

    def describe_source(self) -> str:
        return f"BVI-DVC files ({self.source}) under {self.root}"

    def find_clips(self) -> list[ClipSource]:
        return [(path, None) for path in find_bvi_dvc_files(self.root, self.source)]

    def _open(self) -> list[VideoReader]:
        readers: list[VideoReader] = []
        for path, _ in self.find_clips():
            if path.suffix.lower() in RAW_SUFFIXES:
                readers.append(RawYUVReader(path))
            else:
                readers.append(ScopedDecordReader(path, None, self.matrix, self.full_range))
        return readers
