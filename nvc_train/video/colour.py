"""RGB <-> Y'CbCr conversion and 4:2:0 <-> 4:4:4 chroma resampling on float torch tensors.

Every metric in this project is computed in YUV 4:2:0 against the source, so the conversion a
model or a container reader goes through must be an explicit, tested choice, not whatever a library
defaults to. The matrix coefficients are derived here from the two luma weights (Kr, Kb) that each
standard publishes, so the numbers can be checked against the standard in one line.

Value conventions (tensors are float, shape ``(..., 3, H, W)``, channel order R, G, B or Y, Cb, Cr):

- RGB is non-linear (gamma-coded) R'G'B' in [0, 1].
- Y'CbCr values are *code values divided by the largest code value* ``2**n - 1``, the same
  normalisation as :meth:`nvc_train.video.frame.YUVFrame.to_tensors`, so rounding ``x * (2**n - 1)``
  gives the integer codes back exactly.
- Limited ("TV", "video") range, the default: Y' spans codes [16, 235] and Cb, Cr span [16, 240]
  around 128, scaled by ``2**(n - 8)`` for n-bit content (10-bit: [64, 940] and [64, 960] around
  512). For 8-bit that is Y' in [16, 235] / 255 and C in [16, 240] / 255.
- Full ("PC", "JPEG") range: Y' spans [0, 2**n - 1] and C is centred on ``2**(n - 1)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Luma weights (Kr, Kb) of each matrix; Kg = 1 - Kr - Kb. Source: ITU-R BT.601-7, BT.709-6, BT.2020-2.
LUMA_WEIGHTS: dict[str, tuple[float, float]] = {
    "bt601": (0.299, 0.114),
    "bt709": (0.2126, 0.0722),
    "bt2020": (0.2627, 0.0593),
}

UPSAMPLE_MODES = ("nearest", "bilinear")
DOWNSAMPLE_MODES = ("avgpool",)


def _rgb_to_ycbcr_matrix(matrix: str) -> torch.Tensor:
    """The 3x3 matrix taking R'G'B' to (Y', Cb, Cr) with Y' in [0, 1] and Cb, Cr in [-0.5, 0.5].

    Built from (Kr, Kb) as the standards define it: Y' = Kr R' + Kg G' + Kb B',
    Cb = (B' - Y') / (2 (1 - Kb)), Cr = (R' - Y') / (2 (1 - Kr)). Float64 so that the inverse is
    exact to well below one 10-bit code value.
    """
    if matrix not in LUMA_WEIGHTS:
        raise ValueError(f"unknown colour matrix {matrix!r}; known: {', '.join(LUMA_WEIGHTS)}")
    kr, kb = LUMA_WEIGHTS[matrix]
    luma = torch.tensor([kr, 1.0 - kr - kb, kb], dtype=torch.float64)
    blue = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    red = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    cb = (blue - luma) / (2.0 * (1.0 - kb))
    cr = (red - luma) / (2.0 * (1.0 - kr))
    return torch.stack([luma, cb, cr])


def _range_scale_offset(full_range: bool, bit_depth: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, offset) taking (Y' in [0,1], C in [-0.5,0.5]) to normalised code values.

    Derived from the code-value definitions (limited: 219 / 224 steps above 16 / around 128 at
    8 bits, times ``2**(n-8)``), then divided by ``2**n - 1`` so the result matches how frames are
    normalised everywhere else.
    """
    if bit_depth < 8:
        raise ValueError(f"bit depth must be at least 8, got {bit_depth}")
    max_code = float((1 << bit_depth) - 1)
    step = float(1 << (bit_depth - 8))
    half = float(1 << (bit_depth - 1))
    if full_range:
        scale = torch.tensor([max_code, max_code, max_code], dtype=torch.float64)
        offset = torch.tensor([0.0, half, half], dtype=torch.float64)
    else:
        scale = torch.tensor([219.0 * step, 224.0 * step, 224.0 * step], dtype=torch.float64)
        offset = torch.tensor([16.0 * step, half, half], dtype=torch.float64)
    return scale / max_code, offset / max_code


def _check_image(tensor: torch.Tensor, name: str) -> None:
    if not torch.is_floating_point(tensor):
        raise TypeError(f"{name} must be a floating-point tensor in [0, 1], got {tensor.dtype}")
    if tensor.dim() < 3 or tensor.shape[-3] != 3:
        raise ValueError(f"{name} must have shape (..., 3, H, W), got {tuple(tensor.shape)}")


def _apply_matrix(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Multiply the channel dimension (-3) of ``image`` by a 3x3 matrix."""
    return torch.einsum("ij,...jhw->...ihw", matrix.to(image), image)


def rgb_to_ycbcr(
    rgb: torch.Tensor, matrix: str = "bt709", full_range: bool = False, bit_depth: int = 8
) -> torch.Tensor:
    """Convert R'G'B' in [0, 1], shape (..., 3, H, W), to normalised Y'CbCr 4:4:4.

    ``matrix`` is ``"bt709"`` (HD content, the default), ``"bt601"`` (SD sources that say so) or
    ``"bt2020"``. ``full_range=False`` gives limited range (8-bit: Y' in [16, 235] / 255, C in
    [16, 240] / 255); ``bit_depth`` only changes where the limited-range levels fall after
    normalisation (10-bit: Y' in [64, 940] / 1023), so that rounding ``x * (2**n - 1)`` yields the
    right codes. No clamping: in-gamut RGB always lands inside the range.
    """
    _check_image(rgb, "rgb")
    scale, offset = _range_scale_offset(full_range, bit_depth)
    forward = _rgb_to_ycbcr_matrix(matrix) * scale[:, None]
    out = _apply_matrix(forward, rgb)
    return out + offset.to(out)[:, None, None]


def ycbcr_to_rgb(
    ycbcr: torch.Tensor,
    matrix: str = "bt709",
    full_range: bool = False,
    bit_depth: int = 8,
    clamp: bool = True,
) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr`: normalised Y'CbCr (..., 3, H, W) to R'G'B' in [0, 1].

    The inverse matrix is computed from the same (Kr, Kb), so a round trip is exact up to float
    error. ``clamp`` (default on) clips to [0, 1] because decoded or filtered Y'CbCr can leave the
    RGB cube, and RGB consumers (LPIPS, RGB models, image files) expect [0, 1]; turn it off to
    check a conversion exactly.
    """
    _check_image(ycbcr, "ycbcr")
    scale, offset = _range_scale_offset(full_range, bit_depth)
    inverse = torch.linalg.inv(_rgb_to_ycbcr_matrix(matrix) * scale[:, None])
    rgb = _apply_matrix(inverse, ycbcr - offset.to(ycbcr)[:, None, None])
    return rgb.clamp(0.0, 1.0) if clamp else rgb


def _check_plane(plane: torch.Tensor, name: str) -> None:
    if not torch.is_floating_point(plane):
        raise TypeError(f"{name} must be a floating-point tensor, got {plane.dtype}")
    if plane.dim() < 3 or plane.shape[-3] != 1:
        raise ValueError(f"{name} must have shape (..., 1, H, W), got {tuple(plane.shape)}")


def yuv420_to_444(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    """Upsample 4:2:0 planes to one (..., 3, H, W) Y'CbCr 4:4:4 tensor.

    ``y`` is (..., 1, H, W), ``u`` and ``v`` are (..., 1, ceil(H/2), ceil(W/2)). ``"nearest"``
    repeats each chroma sample 2x2 (exactly invertible by :func:`yuv444_to_420`'s average, the
    cheap choice for models that take 4:4:4 input); ``"bilinear"`` interpolates with chroma sited
    between the luma samples (JPEG / MPEG-1 siting), the smoother choice for display and RGB
    conversion.
    """
    for plane, name in ((y, "y"), (u, "u"), (v, "v")):
        _check_plane(plane, name)
    if mode not in UPSAMPLE_MODES:
        raise ValueError(f"unknown chroma upsampling mode {mode!r}; known: {', '.join(UPSAMPLE_MODES)}")
    height, width = y.shape[-2:]
    chroma_shape = ((height + 1) // 2, (width + 1) // 2)
    if u.shape[-2:] != chroma_shape or v.shape[-2:] != chroma_shape:
        raise ValueError(
            f"chroma planes {tuple(u.shape[-2:])}, {tuple(v.shape[-2:])} "
            f"are not 4:2:0 of luma {(height, width)}"
        )
    lead = y.shape[:-3]
    uv = torch.cat([u, v], dim=-3).reshape(-1, 2, *chroma_shape)
    if mode == "nearest":
        up = uv.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    else:
        up = F.interpolate(uv, scale_factor=2.0, mode="bilinear", align_corners=False)
    up = up[..., :height, :width].reshape(*lead, 2, height, width)
    return torch.cat([y, up.to(y)], dim=-3)


def yuv444_to_420(
    yuv: torch.Tensor, mode: str = "avgpool"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split (..., 3, H, W) Y'CbCr 4:4:4 into 4:2:0 planes (y, u, v), each (..., 1, h, w).

    ``"avgpool"`` averages each 2x2 block of chroma (chroma sited at the block centre, matching
    ``yuv420_to_444(mode="bilinear")`` and the inverse of its ``"nearest"``). Odd sizes are
    padded by edge replication first, so the chroma planes are ceil(H/2) x ceil(W/2).
    """
    _check_image(yuv, "yuv")
    if mode not in DOWNSAMPLE_MODES:
        raise ValueError(f"unknown chroma downsampling mode {mode!r}; known: {', '.join(DOWNSAMPLE_MODES)}")
    height, width = yuv.shape[-2:]
    lead = yuv.shape[:-3]
    uv = yuv[..., 1:3, :, :].reshape(-1, 2, height, width)
    if height % 2 or width % 2:
        uv = F.pad(uv, (0, width % 2, 0, height % 2), mode="replicate")
    uv = F.avg_pool2d(uv, kernel_size=2)
    uv = uv.reshape(*lead, 2, *uv.shape[-2:])
    return yuv[..., 0:1, :, :], uv[..., 0:1, :, :], uv[..., 1:2, :, :]


def rgb_to_yuv420(
    rgb: torch.Tensor, matrix: str = "bt709", full_range: bool = False, bit_depth: int = 8
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """R'G'B' (..., 3, H, W) in [0, 1] to normalised 4:2:0 planes: the path of RGB sources into the
    framework (container files, the embedded clips, RGB models' outputs)."""
    return yuv444_to_420(rgb_to_ycbcr(rgb, matrix, full_range, bit_depth))


def yuv420_to_rgb(
    y: torch.Tensor,
    u: torch.Tensor,
    v: torch.Tensor,
    matrix: str = "bt709",
    full_range: bool = False,
    bit_depth: int = 8,
    upsample: str = "bilinear",
) -> torch.Tensor:
    """Normalised 4:2:0 planes to R'G'B' (..., 3, H, W) in [0, 1], for models that consume RGB."""
    return ycbcr_to_rgb(yuv420_to_444(y, u, v, mode=upsample), matrix, full_range, bit_depth)
