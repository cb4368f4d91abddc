"""The CTC sequence registry behind ``configs/ctc``: which sequences, where, and their metadata."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nvc_train.video.frame import VideoInfo


@dataclass(frozen=True)
class Sequence:
    """One test sequence: where it is and what it is (metadata is data, never parsed from names).

    ``info.num_frames`` is the number of frames *to code* (the registry's count, capped by
    ``frames=``), counted from ``start_frame``.
    """

    name: str
    test_set: str
    path: Path
    info: VideoInfo
    start_frame: int = 0
