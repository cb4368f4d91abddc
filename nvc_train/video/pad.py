"""Pad frames to a size a network can take, and crop its output back: never resize.

Codecs downsample by a fixed factor (16, 64, ...), so a 1920x1080 or 416x240 frame must be padded
up to a multiple of that factor before coding and cropped back afterwards; metrics are then
computed on the cropped picture against the source, as CTC requires. Padding goes on the bottom and
right edges only, so cropping is a plain slice from the top-left corner.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from nvc_train.video.frame import YUVFrame

PAD_MODES = ("replicate", "reflect", "constant")
_NUMPY_MODES = {"replicate": "edge", "reflect": "reflect", "constant": "constant"}


def _padded_size(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


def _check_multiple(multiple: int) -> None:
    if multiple < 1:
        raise ValueError(f"pad multiple must be a positive integer, got {multiple}")


def _check_mode(mode: str) -> None:
    if mode not in PAD_MODES:
        raise ValueError(f"unknown pad mode {mode!r}; known: {', '.join(PAD_MODES)}")


def pad_to_multiple(
    tensor: torch.Tensor, multiple: int, mode: str = "replicate"
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (..., H, W) on the bottom and right so H and W are multiples of ``multiple``.

    Returns the padded tensor and the original (H, W) to hand to :func:`crop_to`. ``"replicate"``
    (the default) repeats the edge, which costs the fewest bits for a codec; ``"reflect"`` and
    ``"constant"`` (zeros) are there for models trained with them. A tensor already of the right
    size is returned as is.
    """
    _check_multiple(multiple)
    _check_mode(mode)
    if tensor.dim() < 2:
        raise ValueError(f"pad_to_multiple needs a (..., H, W) tensor, got shape {tuple(tensor.shape)}")
    height, width = tensor.shape[-2:]
    pad_h = _padded_size(height, multiple) - height
    pad_w = _padded_size(width, multiple) - width
    if pad_h == 0 and pad_w == 0:
        return tensor, (height, width)
    # F.pad's replicate/reflect want (N, C, H, W); fold every leading dimension into C.
    folded = tensor.reshape(1, -1, height, width)
    padded = F.pad(folded, (0, pad_w, 0, pad_h), mode=mode)
    return padded.reshape(*tensor.shape[:-2], height + pad_h, width + pad_w), (height, width)


def crop_to(tensor: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop (..., H, W) to ``size`` = (h, w) from the top-left: the inverse of :func:`pad_to_multiple`."""
    height, width = size
    if height > tensor.shape[-2] or width > tensor.shape[-1]:
        raise ValueError(
            f"cannot crop a {tensor.shape[-2]}x{tensor.shape[-1]} (HxW) tensor to a larger {height}x{width}"
        )
    return tensor[..., :height, :width]


def pad_yuv420(
    y: torch.Tensor, u: torch.Tensor, v: torch.Tensor, multiple: int, mode: str = "replicate"
) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], tuple[int, int]]:
    """Pad 4:2:0 planes: luma to a multiple of ``multiple``, chroma to ``multiple / 2``.

    ``multiple`` must be even so that the padded luma still has exactly twice the chroma size.
    Returns the padded planes and the original luma (H, W).
    """
    if multiple % 2:
        raise ValueError(f"4:2:0 padding needs an even multiple, got {multiple}")
    y_padded, size = pad_to_multiple(y, multiple, mode)
    u_padded, _ = pad_to_multiple(u, multiple // 2, mode)
    v_padded, _ = pad_to_multiple(v, multiple // 2, mode)
    return (y_padded, u_padded, v_padded), size


def crop_yuv420(
    y: torch.Tensor, u: torch.Tensor, v: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Crop 4:2:0 planes back to luma ``size`` (chroma to its rounded-up half)."""
    height, width = size
    chroma = ((height + 1) // 2, (width + 1) // 2)
    return crop_to(y, size), crop_to(u, chroma), crop_to(v, chroma)


def pad_frame(frame: YUVFrame, multiple: int, mode: str = "replicate") -> tuple[YUVFrame, tuple[int, int]]:
    """Pad a :class:`YUVFrame` like :func:`pad_yuv420` (code values, so padding is exact)."""
    _check_mode(mode)
    _check_multiple(multiple)
    if multiple % 2:
        raise ValueError(f"4:2:0 padding needs an even multiple, got {multiple}")
    height, width = frame.height, frame.width
    pad_h = _padded_size(height, multiple) - height
    pad_w = _padded_size(width, multiple) - width
    if pad_h == 0 and pad_w == 0:
        return frame, (height, width)

    def pad_plane(plane: np.ndarray, ph: int, pw: int) -> np.ndarray:
        return np.pad(plane, ((0, ph), (0, pw)), mode=_NUMPY_MODES[mode])

    padded = YUVFrame(
        pad_plane(frame.y, pad_h, pad_w),
        pad_plane(frame.u, pad_h // 2, pad_w // 2),
        pad_plane(frame.v, pad_h // 2, pad_w // 2),
        frame.bit_depth,
    )
    return padded, (height, width)


def crop_frame(frame: YUVFrame, size: tuple[int, int]) -> YUVFrame:
    """Crop a :class:`YUVFrame` back to luma ``size`` (even, as 4:2:0 frames are)."""
    height, width = size
    if height > frame.height or width > frame.width:
        raise ValueError(f"cannot crop a {frame.height}x{frame.width} frame to a larger {height}x{width}")
    if height % 2 or width % 2:
        raise ValueError(f"a 4:2:0 frame needs an even size, got {height}x{width}")
    return YUVFrame(
        frame.y[:height, :width].copy(),
        frame.u[: height // 2, : width // 2].copy(),
        frame.v[: height // 2, : width // 2].copy(),
        frame.bit_depth,
    )
