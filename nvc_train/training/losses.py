"""Rate and distortion terms of the training loss, per batch item, on 4:2:0 planes in [0, 1].

Conventions (stated once, used by the RD module, its logs and the overhead bench alike):

- Pixels are float in [0, 1] (:meth:`YUVFrame.to_tensors`), whatever the source bit depth.
- Distortion ``D`` of one frame is a 6:1:1 (Y:U:V) weighted combination of per-plane values, the
  weighting the evaluation tables use for PSNR-YUV and MS-SSIM-YUV (:data:`YUV_WEIGHTS`):
  ``mse``: ``D = (6 MSE_Y + MSE_U + MSE_V) / 8``; ``msssim``: ``D = 1 - (6 S_Y + S_U + S_V) / 8``.
- ``mse_420`` is Cool-Chic's: the MSE over every sample of the 4:2:0 picture, so each plane weighs
  by its sample count (4:1:1, ``D = (4 MSE_Y + MSE_U + MSE_V) / 6``): chroma gets a third more
  weight than in ``mse``. Cool-Chic (``coolchic/training/loss.py``) trains and selects with it.
- ``mse_yuv_rgb`` mixes colour spaces as DCVC-RT trains: ``D = (1 - w) D_mse + w MSE_RGB`` with
  ``w`` = :data:`RGB_WEIGHT`, where ``MSE_RGB`` is the mean over R, G, B of both pictures converted
  with :func:`nvc_train.video.colour.ycbcr_to_rgb` (BT.709, limited range: the embedded clips' and
  HD sources' convention) after nearest-neighbour chroma upsampling, unclipped so the gradient
  reaches out-of-gamut values. The YUV term keeps the rate points comparable with the YUV tables;
  the RGB term weighs chroma by what it does to the displayed picture. DCVC-RT states the mix, not
  the weight: ``w = 0.5`` is ours.
- ``l1_msssim_rgb`` is HiNeRV's loss (github hmkx/HiNeRV, ``--loss 0.7 l1 0.3 ms-ssim_5x5``):
  ``D = 0.7 L1_RGB + 0.3 (1 - MS-SSIM_RGB)`` with a 5x5 window (pytorch_msssim, five scales, as the
  official code calls it), on both pictures converted to RGB as for ``mse_yuv_rgb``. HiNeRV trains
  on RGB; here its 4:2:0 output is what is compared, so the loss sees what the decoder shows.
- Rate ``R`` is estimated bits over *luma* pixels (bpp), as every NVC paper and our tables report.
- ``loss = R + lambda * D`` with ``lambda`` in the [0, 1]-pixel convention: the familiar
  [0, 255]^2 values (CompressAI's 0.0018 ... 0.0932, i.e. ``R + l * 255^2 * MSE_[0,1]``) multiply by
  255^2 = 65025 (0.0018 -> 117, 0.0932 -> 6060); MS-SSIM lambdas (CompressAI's 2.4 ... 115) carry
  over unchanged because ``1 - MS-SSIM`` does not depend on the pixel scale.

The MS-SSIM here is a *training surrogate*: random crops are far smaller than the 161+ samples the
standard five-scale window needs (chroma of a 128 crop is 64 wide), so the number of scales shrinks
with the plane (see :func:`msssim_levels`). Reported MS-SSIM always comes from
:mod:`nvc_train.metrics` on decoded files, never from this function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from nvc_train.metrics.aggregate import YUV_WEIGHTS
from nvc_train.metrics.psnr import PSNR_CAP_DB
from nvc_train.training.distortions import DISTORTIONS
from nvc_train.video.colour import ycbcr_to_rgb, yuv420_to_444

SAMPLE_WEIGHTS = (4 / 6, 1 / 6, 1 / 6)  # Y, U, V share of a 4:2:0 picture's samples (``mse_420``)
RGB_WEIGHT = 0.5  # share of the RGB MSE in ``mse_yuv_rgb``
# HiNeRV's loss: the L1 share (the rest is 1 - MS-SSIM) and MS-SSIM's window (official train config).
HINERV_L1_WEIGHT = 0.7
HINERV_MSSSIM_WINDOW = 5

# Standard MS-SSIM (Wang et al. 2003): 11-tap Gaussian window, sigma 1.5, five scales with these weights.
_MSSSIM_WIN = 11
_MSSSIM_SIGMA = 1.5
_MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_SSIM_C1 = 0.01**2
_SSIM_C2 = 0.03**2


def lambda_table(lambda_min: float, lambda_max: float, num_q: int) -> Tensor:
    """The lambda of each q_index, log-spaced from ``lambda_min`` (q 0, lowest rate) to ``lambda_max``.

    Log spacing gives rate points roughly evenly spaced in log-rate, like the QP ladder of a
    conventional codec. A single-rate model (``num_q == 1``) must say which lambda it is trained
    for, so a silent choice between the two ends is refused.
    """
    if lambda_min <= 0 or lambda_max <= 0:
        raise ValueError(f"lambdas must be positive, got lambda_min={lambda_min}, lambda_max={lambda_max}")
    if lambda_min > lambda_max:
        raise ValueError(f"lambda_min={lambda_min} exceeds lambda_max={lambda_max}")
    if num_q < 1:
        raise ValueError(f"num_q must be at least 1, got {num_q}")
    if num_q == 1:
        if not math.isclose(lambda_min, lambda_max):
            raise ValueError(
                "a single-rate model (num_q=1) is trained for one lambda: "
                f"set lambda_min = lambda_max (got {lambda_min} and {lambda_max})"
            )
        return torch.tensor([float(lambda_max)], dtype=torch.float32)
    return torch.logspace(math.log10(lambda_min), math.log10(lambda_max), num_q, dtype=torch.float64).float()


def _per_item_mean(x: Tensor) -> Tensor:
    return x.flatten(1).mean(dim=1)


def plane_mses(y_hat: Tensor, uv_hat: Tensor, y: Tensor, uv: Tensor) -> Tensor:
    """Per-item MSE of Y, U and V: a (B, 3) tensor (planes (B, 1, H, W) and (B, 2, H/2, W/2))."""
    mse_y = _per_item_mean((y_hat - y).square())
    mse_uv = (uv_hat - uv).square().flatten(2).mean(dim=2)  # (B, 2)
    return torch.cat([mse_y[:, None], mse_uv], dim=1)


def rgb_mse(y_hat: Tensor, uv_hat: Tensor, y: Tensor, uv: Tensor) -> Tensor:
    """Per-item MSE over R, G and B of the two 4:2:0 pictures (see ``mse_yuv_rgb`` above), (B,)."""

    return _per_item_mean((_to_rgb(y_hat, uv_hat) - _to_rgb(y, uv)).square())


def _to_rgb(luma: Tensor, chroma: Tensor) -> Tensor:
    """4:2:0 planes -> R'G'B' (B, 3, H, W): nearest chroma upsampling, BT.709 limited range, unclamped."""
    ycbcr = yuv420_to_444(luma, chroma[:, :1], chroma[:, 1:2], mode="nearest")
    return ycbcr_to_rgb(ycbcr, matrix="bt709", full_range=False, clamp=False)


def l1_msssim_rgb(
    y_hat: Tensor, uv_hat: Tensor, y: Tensor, uv: Tensor, l1_weight: float = HINERV_L1_WEIGHT,
    window: int = HINERV_MSSSIM_WINDOW,
) -> Tensor:  # fmt: skip
    """HiNeRV's distortion per item, (B,): ``l1_weight * L1 + (1 - l1_weight) * (1 - MS-SSIM)`` in RGB.

    MS-SSIM is pytorch_msssim's (five scales, Gaussian ``window`` x ``window``, data range 1), the
    function the official code calls; it needs pictures wider and taller than ``(window - 1) * 16``
    (64 for the 5x5 window: HiNeRV's 120 x 120 patches pass).
    """
    from pytorch_msssim import ms_ssim

    smallest = (window - 1) * 16
    if min(y.shape[-2:]) <= smallest:
        raise ValueError(
            f"l1_msssim_rgb needs pictures larger than {smallest} pixels a side for a {window}x{window} "
            f"window over five scales, got {tuple(y.shape[-2:])}"
        )
    rgb_hat, rgb = _to_rgb(y_hat, uv_hat), _to_rgb(y, uv)
    l1 = _per_item_mean((rgb_hat - rgb).abs())
    similarity = ms_ssim(rgb_hat, rgb, data_range=1.0, win_size=window, size_average=False)
    return l1_weight * l1 + (1.0 - l1_weight) * (1.0 - similarity)


def combine_planes(values: Tensor) -> Tensor:
    """6:1:1 combination of (B, 3) per-plane values into (B,).

    An elementwise product and a sum, not a matmul: autocast runs matmuls in bf16/fp16, which
    would round the loss to 2-3 significant digits.
    """
    return (values * values.new_tensor(YUV_WEIGHTS)).sum(dim=-1)


def psnr_from_mse(mse: Tensor) -> Tensor:
    """PSNR in dB for [0, 1] pixels, capped at :data:`PSNR_CAP_DB` like the evaluation metrics."""
    return (-10.0 * torch.log10(mse.clamp_min(1e-20))).clamp_max(PSNR_CAP_DB)


def _gaussian_window(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> Tensor:
    taps = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    return kernel / kernel.sum()


def msssim_levels(height: int, width: int, max_levels: int = len(_MSSSIM_WEIGHTS)) -> int:
    """Number of scales (1..5) whose coarsest plane still holds a whole 11-tap window."""
    side = min(height, width)
    levels = 0
    while levels < max_levels and side >= _MSSSIM_WIN:
        levels += 1
        side //= 2
    if levels == 0:
        raise ValueError(f"a {height}x{width} plane is smaller than the {_MSSSIM_WIN}-tap MS-SSIM window")
    return levels


def msssim(x_hat: Tensor, x: Tensor) -> Tensor:
    """Differentiable MS-SSIM per item and channel, (B, C), of [0, 1] images (B, C, H, W).

    Valid (unpadded) Gaussian filtering as in the reference implementation; the number of scales is
    :func:`msssim_levels` of the input size and the weights of the scales kept are renormalised to
    sum to one, so small crops still give a value on the usual [0, 1] scale.
    """
    channels = x.shape[1]
    levels = msssim_levels(*x.shape[-2:])
    weights = x.new_tensor(_MSSSIM_WEIGHTS[:levels])
    weights = weights / weights.sum()
    g = _gaussian_window(_MSSSIM_WIN, _MSSSIM_SIGMA, x.device, x.dtype)
    win_h = g.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    win_w = g.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, win_h, groups=channels), win_w, groups=channels)

    factors = []
    for level in range(levels):
        mu_x, mu_y = blur(x_hat), blur(x)
        var_x = blur(x_hat * x_hat) - mu_x.square()
        var_y = blur(x * x) - mu_y.square()
        cov = blur(x_hat * x) - mu_x * mu_y
        cs_map = (2 * cov + _SSIM_C2) / (var_x + var_y + _SSIM_C2)
        if level < levels - 1:
            factors.append(torch.relu(cs_map.flatten(2).mean(dim=2)))
            x_hat = F.avg_pool2d(x_hat, 2, ceil_mode=True)
            x = F.avg_pool2d(x, 2, ceil_mode=True)
        else:
            lum = (2 * mu_x * mu_y + _SSIM_C1) / (mu_x.square() + mu_y.square() + _SSIM_C1)
            factors.append(torch.relu((lum * cs_map).flatten(2).mean(dim=2)))
    stacked = torch.stack(factors)  # (levels, B, C)
    # clamp_min keeps 0 ** w differentiable (its gradient is inf at 0).
    return torch.prod(stacked.clamp_min(1e-8) ** weights.view(-1, 1, 1), dim=0)


def plane_msssims(y_hat: Tensor, uv_hat: Tensor, y: Tensor, uv: Tensor) -> Tensor:
    """Per-item MS-SSIM of Y, U and V: a (B, 3) tensor."""
    return torch.cat([msssim(y_hat, y), msssim(uv_hat, uv)], dim=1)


@dataclass
class FrameTerms:
    """Rate and distortion of one coded frame, each (B,): what the loss and the logs are made of."""

    bpp: Tensor  # estimated bits / luma pixels
    distortion: Tensor  # the D of the loss (mse or 1 - msssim, 6:1:1)
    mse: Tensor  # 6:1:1 weighted MSE on [0, 1] pixels (always computed: cheap, and it is what PSNR shows)
    psnr: Tensor  # 6:1:1 combination of per-plane PSNR (the evaluation tables' PSNR-YUV rule)


def frame_terms(
    y_hat: Tensor, uv_hat: Tensor, bits: Tensor, y: Tensor, uv: Tensor, distortion: str = "mse"
) -> FrameTerms:
    """Rate and distortion of one frame from the reconstruction and the estimated bits."""
    if distortion not in DISTORTIONS:
        raise ValueError(f"unknown distortion {distortion!r}; known: {', '.join(DISTORTIONS)}")
    # The loss is always float32: under mixed precision, autocast would run MS-SSIM's convolutions
    # in bf16/fp16 and round the distortion to 2-3 significant digits.
    with torch.autocast(device_type=y.device.type, enabled=False):
        y_hat, uv_hat, bits, y, uv = (t.float() for t in (y_hat, uv_hat, bits, y, uv))
        mses = plane_mses(y_hat, uv_hat, y, uv)
        mse = combine_planes(mses)
        psnr = combine_planes(psnr_from_mse(mses.detach()))
        if distortion == "mse":
            dist = mse
        elif distortion == "mse_420":
            dist = (mses * mses.new_tensor(SAMPLE_WEIGHTS)).sum(dim=-1)
        elif distortion == "mse_yuv_rgb":
            dist = (1.0 - RGB_WEIGHT) * mse + RGB_WEIGHT * rgb_mse(y_hat, uv_hat, y, uv)
        elif distortion == "l1_msssim_rgb":
            dist = l1_msssim_rgb(y_hat, uv_hat, y, uv)
        else:
            dist = 1.0 - combine_planes(plane_msssims(y_hat, uv_hat, y, uv))
        bpp = bits / float(y.shape[-2] * y.shape[-1])
    return FrameTerms(bpp=bpp, distortion=dist, mse=mse, psnr=psnr)
