"""The in-memory picture types every other module agrees on.

A :class:`YUVFrame` keeps the *integer code values* of a 4:2:0 picture (uint8 for 8-bit content,
uint16 for 10-bit), so that reading, writing and measuring a frame is exact: PSNR on code values
matches ffmpeg's psnr filter, and a frame written back is byte-identical to the one read.
Models consume float tensors in [0, 1]; :meth:`YUVFrame.to_tensors` / :meth:`YUVFrame.from_tensors`
are the one place where that conversion (and its rounding) happens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VideoInfo:
    """What must be known about a 4:2:0 sequence to read, code or measure it.

    Sequence metadata is data (from a y4m header, a CTC registry entry or explicit arguments),
    never guessed: ``fps`` in particular is not assumed to be 30.
    """

    width: int
    height: int
    bit_depth: int = 8
    fps: float = 30.0
    num_frames: int = 0

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"frame size must be positive, got {self.width}x{self.height}")
        if self.width % 2 or self.height % 2:
            raise ValueError(f"4:2:0 needs an even frame size, got {self.width}x{self.height}")
        if self.bit_depth not in (8, 10):
            raise ValueError(f"bit depth must be 8 or 10, got {self.bit_depth}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")

    @property
    def max_value(self) -> int:
        """Largest code value (255 or 1023): the data range of PSNR."""
        return (1 << self.bit_depth) - 1

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.bit_depth == 8 else np.dtype("<u2")

    @property
    def bytes_per_sample(self) -> int:
        return 1 if self.bit_depth == 8 else 2

    @property
    def frame_bytes(self) -> int:
        """Size of one raw 4:2:0 frame on disk (Y + U + V)."""
        luma = self.width * self.height
        return (luma + 2 * (luma // 4)) * self.bytes_per_sample

    @property
    def pix_fmt(self) -> str:
        """ffmpeg's name for this raw layout."""
        return "yuv420p" if self.bit_depth == 8 else "yuv420p10le"

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass
class YUVFrame:
    """One 4:2:0 picture as integer code values: y is (H, W), u and v are (H/2, W/2)."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    bit_depth: int = 8

    def __post_init__(self) -> None:
        h, w = self.y.shape
        if self.u.shape != (h // 2, w // 2) or self.v.shape != (h // 2, w // 2):
            raise ValueError(
                f"chroma planes {self.u.shape}, {self.v.shape} do not match 4:2:0 of luma {self.y.shape}"
            )

    @property
    def height(self) -> int:
        return self.y.shape[0]

    @property
    def width(self) -> int:
        return self.y.shape[1]

    @property
    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.y, self.u, self.v

    @property
    def max_value(self) -> int:
        return (1 << self.bit_depth) - 1

    def to_tensors(self):
        """Float32 torch tensors in [0, 1], each (1, 1, H, W) or (1, 1, H/2, W/2)."""
        import torch

        scale = float(self.max_value)
        return tuple(torch.from_numpy(p.astype(np.float32) / scale)[None, None] for p in self.planes)

    @classmethod
    def from_tensors(cls, y, u, v, bit_depth: int = 8) -> YUVFrame:
        """Round float [0, 1] planes (tensors or arrays, any leading singleton dims) to code values."""
        max_value = (1 << bit_depth) - 1
        dtype = np.uint8 if bit_depth == 8 else np.uint16

        def to_codes(plane) -> np.ndarray:
            array = plane.detach().cpu().float().numpy() if hasattr(plane, "detach") else np.asarray(plane)
            array = np.squeeze(array)
            return np.clip(np.rint(array * max_value), 0, max_value).astype(dtype)

        return cls(to_codes(y), to_codes(u), to_codes(v), bit_depth)
