"""dcvc_fm: DCVC-FM (Li, Li and Lu, "Neural Video Compression with Feature Modulation", CVPR 2024).

The published codec, intra and inter model, in this framework's model API. Its parameters ARE the
official ones: the same tensors with the same names and shapes (below ``intra.`` / ``inter.``), so
Microsoft's checkpoints (``cvpr2024_image.pth.tar``, ``cvpr2024_video.pth.tar``) load through
:mod:`nvc_train.convert.dcvc_fm` (``python -m nvc_train.convert dcvc_fm``), and on the same weights
the reconstructions and ideal bits equal the official code's (tests/test_official_dcvc_fm.py, on
fixtures made with the official code). Every number of the full variant (channels, block counts,
scale tables, 64 quality levels, the feature-adaptor pattern, the refresh interval) is a published
fact of DCVC-FM; the code is our own.

What makes DCVC-FM what it is:

- **YCbCr 4:4:4 in one model.** 4:2:0 chroma is upsampled by nearest neighbour before coding and
  2x2 average-pooled after; the frame is replicate-padded to a multiple of 16; the latents are at
  1/16, the hyper latents at 1/64 (``y`` replicate-padded to a multiple of 4 for the hyper path,
  the hyper decoder's output cropped back).
- **Intra model** (``DMCI``): residual stride-2 stages and depth-wise blocks down to ``y`` (256
  channels), a hyperprior (128 channels) whose fused output also predicts a per-pixel quantization
  scale pair (``sigmoid(q) * 1.5 + 0.5``), a four-step 2x2 spatial context, a sub-pixel decoder and
  a U-Net refinement. 64 quality levels by learned per-level channel vectors (``q_scale_enc``,
  ``q_scale_dec``: (64, 128, 1, 1)) and a factorized density per level for ``z``. Gaussian ``y``.
- **Inter model** (``DMC``): explicit motion. A light SpyNet (4 levels) estimates the flow to the
  previous decoded frame; a motion coder conditioned on the previous frame's motion feature and
  motion latent codes it; the decoded flow warps a multi-scale feature of the reference (48 / 64 /
  96 channels at 1, 1/2, 1/4) with offset diversity at full resolution (16 groups x 2 offsets, flow
  + 40 tanh, sigmoid masks); a contextual coder codes the frame conditioned on those contexts, on a
  temporal prior and on the previous frame's latent. Both latents use a hyperprior fused with these
  priors, a four-step 2x2 spatial context and a predicted quantization step ``max(step, 0.5)``;
  ``y`` is Laplace. Rate: one scalar pair per latent (index 0: q_index 0, index 1: the top),
  log-interpolated over the 64 levels.
- **Feature modulation over long sequences**: the reference feature passes through one of three
  1x1 adaptors chosen by the frame's position (``[0, 1, 0, 2, 0, 2, 0, 2][pos % 8]``), and every 32
  frames (``pos % 32 == 1``) it is dropped and rebuilt from the decoded picture, as after an intra
  frame (``feature_adaptor_I``); the motion feature and the two latents are kept.

Where we deliberately differ from the official code (none of it changes a reconstruction on the
fixtures):

- **Symbols are clamped to the int8 range** (``z`` and ``y - mean``): the shared parts of
  :mod:`models.dcvc_rt` (:class:`~models.dcvc_rt.LevelledDensity`,
  :class:`~models.dcvc_rt.SpatialContextCoder`) do so; the official FM code rounds without a
  clamp and its coder escapes large values. Only a value beyond +-127 would differ.
- **Scale-table index**: our coder picks the level of least expected cost by stored bounds (no
  ``log`` at coding time); the official coder floors the log position. File size only.
- **Positions since the intra frame**, not the frame index from the start of the sequence, select
  the adaptor and the refreshes (the same whenever the intra period is a multiple of 8 and of 32,
  as in every published setting); the position travels in :class:`Reference`.
- **The coder**: every frame's latents share one ANS stream of ours (P frames: motion ``z``, motion
  ``y`` in 4 steps, ``z``, ``y`` in 4 steps); the official rANS coder and its headers are not
  reproduced.
- **Training**, which the official repository does not publish: additive noise for the likelihoods,
  straight-through rounding for the values the next step and the synthesis see (as in dcvc_rt).
  The per-level vectors and the rate scalars start log-spaced (encoder multipliers from
  ``1 / gain_max`` at q_index 0 to ``1 / gain_min`` at the top, decoder ones the inverse; the
  official ones start at one), and every convolution bias starts at zero: the untrained paths are
  then positively homogeneous up to their gates, so the latents scale with the rate multiplier
  instead of being bias-dominated. Measured (dcvc_fm_tiny, seed 0, a 128x128 crop of astronaut_pan,
  intra bits at q_index 0 / 4 / 7): 132 / 1955 / 10859 with zero biases, 2197 / 5539 / 12079 with
  PyTorch's default biases (both rise with q_index at these gains, 1 .. 1/16); with default biases
  and the gains first tried (4 .. 1/4) 2353 / 2236 / 4509, not monotone: mean ``|y|`` 0.17 at
  q_index 0 and 0.27 at 7 for a 16x multiplier range.

The file reads top to bottom: the typed architecture numbers (:class:`DCVCFMConfig`, values in
``configs/model/dcvc_fm.yaml`` and ``dcvc_fm_tiny.yaml``), blocks, the Laplace coder, the intra
model, the motion and context networks, the inter model, the codec, and reference numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import CodecConfig, FrameOutput, NeuralVideoCodec, likelihood_bits, update_entropy_tables
from models.dcvc_rt import (
    ESCAPE_LIKELIHOOD,
    LevelledDensity,
    NextParams,
    SpatialContextCoder,
    context_masks,
    hyper_size,
    pad_for_hyper,
)
from models.registry import register_network
from nvc_train.entropy import AnsDecoder, AnsEncoder, GaussianConditional, lower_bound
from nvc_train.entropy.coder import MAX_HALF_RANGE, _cdf_tables
from nvc_train.video.colour import yuv420_to_444, yuv444_to_420

__all__ = [
    "DCVCFM",
    "DCVCFMConfig",
    "InterModel",
    "IntraModel",
    "LaplaceConditional",
    "Reference",
    "flow_warp",
]

PAD_MULTIPLE = 16  # the frame is replicate-padded to this; y (1/16) to 4 more for the hyper path only
CONTEXT_STEPS = 4  # both models code their latents in four 2x2 steps


# ---------------------------------------------------------------------------------------------------
# Architecture numbers


@dataclass(frozen=True, kw_only=True)
class DCVCFMConfig(CodecConfig):
    """DCVC-FM's architecture and coding numbers: the one place in code that names them.

    Values: ``configs/model/dcvc_fm.yaml`` (the published model) and ``dcvc_fm_tiny.yaml``. Widths
    are channels; lists of three are the widths of a U-Net's three scales.
    """

    # Intra model
    intra_latent_channels: int  # N: y at 1/16; a multiple of 4
    intra_hyper_channels: int  # z at 1/64
    intra_channels: tuple[int, int]  # widths at 1/2 (where the per-level vectors act) and 1/4
    intra_out_channels: int  # channels of the full-resolution output before the U-Net refinement
    intra_spatial_blocks: int  # blocks of the spatial-context network (steps 2..4)
    unet_channels: tuple[int, int, int]  # U-Net widths at 1, 1/2, 1/4 (intra refine, inter recon)
    unet_refine_blocks: int  # blocks at the U-Net's coarsest scale
    # Inter model
    flow_channels: tuple[int, int, int, int]  # SpyNet level widths (conv1..conv4)
    context_channels: tuple[int, int, int]  # reference feature / contexts at 1, 1/2, 1/4
    latent_channels: int  # y at 1/16
    encoder_channels: int  # contextual encoder width at 1/8
    hyper_channels: int  # z at 1/64
    mv_channels: int  # motion latent and motion-coder width
    mv_hyper_channels: int  # motion z
    recon_channels: int  # contextual decoder output at full resolution
    offset_groups: int  # offset diversity: groups of the 48-channel feature
    offsets_per_group: int
    max_offset: float  # offsets are flow + max_offset * tanh(.)
    spatial_blocks: int  # blocks of each spatial-context network
    # Rate control
    num_q: int  # quality levels, q_index 0 = lowest rate
    adaptor_pattern: tuple[int, ...]  # feature adaptor by position since the intra frame, mod len
    refresh_interval: int  # rebuild the reference feature from the picture when position % it == 1; 0: never
    gain_max: float  # initial quantization step (enc = 1 / it, dec = it) at q_index 0
    gain_min: float  # ... at the highest q_index
    # Coders: scales clamp to [min, max] and snap to num_scales log-spaced levels
    intra_scale_min: float  # Gaussian y of the intra model
    inter_scale_min: float  # Laplace y and motion y of the inter model
    scale_max: float
    num_scales: int

    def __post_init__(self) -> None:
        for key in (
            "intra_channels",
            "unet_channels",
            "flow_channels",
            "context_channels",
            "adaptor_pattern",
        ):
            object.__setattr__(self, key, tuple(int(v) for v in getattr(self, key)))  # frozen: tuples
        if not self.adaptor_pattern or min(self.adaptor_pattern) < 0:
            raise ValueError(
                f"adaptor_pattern must be non-negative integers, got {list(self.adaptor_pattern)}"
            )
        if self.refresh_interval < 0:
            raise ValueError(f"refresh_interval must be >= 0 (0: never), got {self.refresh_interval}")
        for key in ("intra_latent_channels", "latent_channels", "mv_channels"):
            if getattr(self, key) % CONTEXT_STEPS:
                raise ValueError(f"{key} must be a multiple of {CONTEXT_STEPS} (the four-step context)")
        if self.context_channels[0] % self.offset_groups:
            raise ValueError("context_channels[0] must be a multiple of offset_groups")
        if self.num_q < 2:
            raise ValueError(
                f"num_q must be >= 2 (the rate scalars interpolate between two ends), got {self.num_q}"
            )

    @property
    def feature_adaptors(self) -> int:
        """How many 1x1 reference-feature adaptors the pattern uses."""
        return max(self.adaptor_pattern) + 1


# ---------------------------------------------------------------------------------------------------
# Blocks. Attribute names (``conv1``, ``depth_conv``, ``block``, ``subpel_conv``, ...) are the
# official ones, so parameter names equal the official state_dict's.


def lrelu(slope: float = 0.01) -> nn.LeakyReLU:
    return nn.LeakyReLU(negative_slope=slope)


def conv(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """A 'same'-padded convolution (odd kernels) or a k x k stride-k one (``kernel == stride``)."""
    return nn.Conv2d(
        in_ch, out_ch, kernel, stride=stride, padding=0 if kernel == stride else kernel // 2, groups=groups
    )


def subpel(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    """Double the resolution: a convolution to 4x channels, then a pixel shuffle."""
    return nn.Sequential(conv(in_ch, 4 * out_ch, kernel), nn.PixelShuffle(2))


class DepthConv(nn.Module):
    """Depth-wise unit: ``conv2(dw3x3(lrelu(conv1(x)))) + x`` (1x1 adaptor on x when widths differ)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(conv(in_ch, in_ch, 1), lrelu())
        self.depth_conv = conv(in_ch, in_ch, 3, groups=in_ch)
        self.conv2 = conv(in_ch, out_ch, 1)
        self.adaptor = conv(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.adaptor is None else self.adaptor(x)
        return self.conv2(self.depth_conv(self.conv1(x))) + identity


class GatedDepthConv(nn.Module):
    """Depth-wise unit with a multiplicative gate: ``out_conv(dw(lrelu(1x1 x)) * (1x1 x)) + x``."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(conv(in_ch, out_ch, 1), lrelu(), conv(out_ch, out_ch, 3, groups=out_ch))
        self.conv2 = conv(in_ch, out_ch, 1)
        self.out_conv = conv(out_ch, out_ch, 1)
        self.adaptor = conv(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.adaptor is None else self.adaptor(x)
        return identity + self.out_conv(self.conv1(x) * self.conv2(x))


class PlainFFN(nn.Module):
    """``x + lrelu(1x1(lrelu(1x1 x)))``, hidden width ``max(min(4C, 1024), 2C)``, slopes 0.1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(min(4 * channels, 1024), 2 * channels)
        self.conv = nn.Sequential(
            conv(channels, hidden, 1), lrelu(0.1), conv(hidden, channels, 1), lrelu(0.1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x)


class HalvesFFN(nn.Module):
    """``x + conv_out(combine(halves of 1x1 x to 4C))``: ``gate`` multiplies ``a * lrelu(b)``, else
    ``lrelu_0.1(a) + lrelu_0.01(b)`` is added."""

    def __init__(self, channels: int, gate: bool) -> None:
        super().__init__()
        self.gate = gate
        self.conv = conv(channels, 4 * channels, 1)
        self.conv_out = conv(2 * channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.conv(x).chunk(2, dim=1)
        mixed = a * F.leaky_relu(b, 0.1) if self.gate else F.leaky_relu(a, 0.1) + F.leaky_relu(b, 0.01)
        return x + self.conv_out(mixed)


class Block(nn.Module):
    """A depth-wise unit then a feed-forward unit (``block.0``, ``block.1``): DCVC-FM's four kinds.

    ``kind`` 1: DepthConv + PlainFFN; 2: DepthConv + gated FFN; 3: GatedDepthConv + gated FFN;
    4: DepthConv + two-slope FFN (the official ``DepthConvBlock``, ``...Block2``, ``3``, ``4``).
    """

    def __init__(self, in_ch: int, out_ch: int, kind: int) -> None:
        super().__init__()
        spatial = GatedDepthConv(in_ch, out_ch) if kind == 3 else DepthConv(in_ch, out_ch)
        ffn = PlainFFN(out_ch) if kind == 1 else HalvesFFN(out_ch, gate=kind in (2, 3))
        self.block = nn.Sequential(spatial, ffn)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class DownResidual(nn.Module):
    """Halve by a 2x2 stride-2 conv, then ``x + lrelu(1x1(lrelu(3x3 x)))`` (intra encoder stages)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.down = conv(in_ch, out_ch, 2, stride=2)
        self.conv = nn.Sequential(conv(out_ch, out_ch, 3), lrelu(), conv(out_ch, out_ch, 1), lrelu())

    def forward(self, x: Tensor) -> Tensor:
        x = self.down(x)
        return x + self.conv(x)


class StridedResidual(nn.Module):
    """Halve by a 3x3 stride-2 conv pair with a 1x1 stride-2 shortcut (motion encoder stages)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = conv(in_ch, out_ch, 3, stride=2)
        self.leaky_relu = lrelu()
        self.conv2 = conv(out_ch, out_ch, 3)
        self.leaky_relu2 = lrelu(0.1)
        self.downsample = nn.Conv2d(in_ch, out_ch, 1, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.leaky_relu2(self.conv2(self.leaky_relu(self.conv1(x)))) + self.downsample(x)


class UpResidual(nn.Module):
    """Double by a 1x1 sub-pixel conv, then 3x3; plus a second sub-pixel shortcut."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.subpel_conv = subpel(in_ch, out_ch, 1)
        self.leaky_relu = lrelu()
        self.conv = conv(out_ch, out_ch, 3)
        self.leaky_relu2 = lrelu(0.1)
        self.upsample = subpel(in_ch, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        out = self.leaky_relu2(self.conv(self.leaky_relu(self.subpel_conv(x))))
        return out + self.upsample(x)


class ResBlock(nn.Module):
    """Pre-activation residual block: ``x + conv2(lrelu(conv1(lrelu(x))))`` (feature extractor)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv(channels, channels)
        self.conv2 = conv(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x, 0.01)), 0.01))


class UNet(nn.Module):
    """Three-scale U-Net of blocks; ``pooled``: max-pool down (inter recon, kind-4 blocks) instead of
    2x2 stride-2 convs (intra refine, kind-2 blocks). ``kind`` overrides the block kind (DCVC-DC)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        widths: tuple[int, int, int],
        refine: int,
        pooled: bool,
        kind: int | None = None,
    ) -> None:
        super().__init__()
        kind = kind if kind is not None else (4 if pooled else 2)
        c1, c2, c3 = widths
        self.pooled = pooled
        self.conv1 = Block(in_ch, c1, kind)
        self.conv2 = Block(c1, c2, kind)
        self.conv3 = Block(c2, c3, kind)
        if not pooled:
            self.down1 = conv(c1, c1, 2, stride=2)
            self.down2 = conv(c2, c2, 2, stride=2)
        self.context_refine = nn.Sequential(*[Block(c3, c3, kind) for _ in range(refine)])
        self.up3 = subpel(c3, c2, 1)
        self.up_conv3 = Block(2 * c2, c2, kind)
        self.up2 = subpel(c2, c1, 1)
        self.up_conv2 = Block(2 * c1, out_ch, kind)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.conv1(x)
        x2 = self.conv2(F.max_pool2d(x1, 2) if self.pooled else self.down1(x1))
        x3 = self.conv3(F.max_pool2d(x2, 2) if self.pooled else self.down2(x2))
        x3 = self.context_refine(x3)
        d3 = self.up_conv3(torch.cat([x2, self.up3(x3)], dim=1))
        return self.up_conv2(torch.cat([x1, self.up2(d3)], dim=1))


def hyper_encoder(latent_ch: int, hyper_ch: int, kind: int = 4) -> nn.Sequential:
    """y (padded to a multiple of 4) -> z at 1/4 of it: a block, then two 3x3 stride-2 convs."""
    return nn.Sequential(
        Block(latent_ch, hyper_ch, kind),
        conv(hyper_ch, hyper_ch, 3, 2),
        lrelu(),
        conv(hyper_ch, hyper_ch, 3, 2),
    )


def hyper_decoder(hyper_ch: int, out_ch: int, kind: int = 4) -> nn.Sequential:
    """z_hat -> hyperprior features at y's resolution (before the crop): two doublings, a block."""
    return nn.Sequential(
        UpResidual(hyper_ch, hyper_ch), UpResidual(hyper_ch, hyper_ch), Block(hyper_ch, out_ch, kind)
    )


def crop_to(t: Tensor, size: tuple[int, int]) -> Tensor:
    """``t`` cropped on the right and bottom to ``size`` (the hyper path padded y there)."""
    return t[:, :, : size[0], : size[1]].contiguous()


def zero_biases(module: nn.Module) -> None:
    """Start every convolution bias of ``module`` at zero (our training start: module docstring)."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d) and layer.bias is not None:
            nn.init.zeros_(layer.bias)


def level_vectors(levels: int, channels: int, first: float, last: float) -> nn.Parameter:
    """(levels, C, 1, 1) multipliers log-spaced from ``first`` (q_index 0) to ``last`` (the top)."""
    values = torch.logspace(math.log10(first), math.log10(last), levels)
    return nn.Parameter(values[:, None, None, None].repeat(1, channels, 1, 1))


def rate_scalars(first: float, last: float) -> nn.Parameter:
    """The official (2, 1, 1, 1) rate pair: the multiplier at q_index 0, then at the top."""
    return nn.Parameter(torch.tensor([first, last]).view(2, 1, 1, 1))


def interpolate_rate(pair: Tensor, q: Tensor, num_q: int) -> Tensor:
    """(B, 1, 1, 1) multipliers: ``exp(log p0 + (log p1 - log p0) / (num_q - 1) * q)``, per item."""
    low, high = pair[0:1], pair[1:2]
    step = (torch.log(high) - torch.log(low)) / (num_q - 1)
    return torch.exp(torch.log(low) + step * q.to(pair.dtype).view(-1, 1, 1, 1))


# ---------------------------------------------------------------------------------------------------
# Warping: bilinear, positions clamped to the frame (the official CUDA kernel's grid_sample fallback)


def flow_warp(feature: Tensor, flow: Tensor) -> Tensor:
    """``feature`` sampled at ``position + flow`` (pixels), bilinear, outside positions clamped.

    The encoder and the decoder call this one function on identical tensors, so their warps agree
    bit for bit on one machine; normalised coordinates as the official fallback computes them.
    """
    b, _, h, w = flow.shape
    xs = (
        torch.linspace(-1.0, 1.0, w, device=flow.device, dtype=flow.dtype)
        .view(1, 1, 1, w)
        .expand(b, -1, h, -1)
    )
    ys = (
        torch.linspace(-1.0, 1.0, h, device=flow.device, dtype=flow.dtype)
        .view(1, 1, h, 1)
        .expand(b, -1, -1, w)
    )
    shift = torch.cat(
        [flow[:, 0:1] / ((feature.shape[3] - 1.0) / 2.0), flow[:, 1:2] / ((feature.shape[2] - 1.0) / 2.0)], 1
    )
    grid = (torch.cat([xs, ys], 1) + shift).permute(0, 2, 3, 1)
    return F.grid_sample(feature, grid, mode="bilinear", padding_mode="border", align_corners=True)


def upsample2(x: Tensor) -> Tensor:
    return F.interpolate(x, (2 * x.shape[2], 2 * x.shape[3]), mode="bilinear", align_corners=False)


def downsample2(x: Tensor) -> Tensor:
    return F.interpolate(x, (x.shape[2] // 2, x.shape[3] // 2), mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------------------------------
# The Laplace coder of the inter model


def laplace_bin_mass(distance: Tensor, scales: Tensor) -> Tensor:
    """Mass of ``Laplace(0, scale)`` on ``[d - 0.5, d + 0.5]``, folded to ``|d|``, tails exact."""
    d = distance.abs()
    outer = torch.exp(-(d + 0.5) / scales)
    far = 0.5 * torch.exp(-(d - 0.5).clamp_min(0.0) / scales) - 0.5 * outer  # d >= 0.5: both in one tail
    near = 1.0 - 0.5 * torch.exp(-(0.5 - d).clamp_min(0.0) / scales) - 0.5 * outer  # the bin holds 0
    return torch.where(d >= 0.5, far, near)


class LaplaceConditional(GaussianConditional):
    """:class:`~nvc_train.entropy.GaussianConditional` with a Laplace density (DCVC-FM's inter ``y``).

    Same tables, coding calls and scale levels; the bin mass, the table tails and the decision
    bounds between levels are the Laplace ones (coding ``Laplace(s)`` with level ``t`` costs
    ``ln 2t + s / t`` nats, so neighbours ``t1 < t2`` break even at ``s = ln(t2/t1) / (1/t1 - 1/t2)``).
    """

    def __init__(self, scale_min: float, scale_max: float, num_scales: int, likelihood_bound: float) -> None:
        super().__init__(scale_min, scale_max, num_scales, likelihood_bound)
        t = self.scale_table.double()
        bounds = torch.log(t[1:] / t[:-1]) / (1.0 / t[:-1] - 1.0 / t[1:])
        self.scale_bounds = bounds.float()

    def likelihood(self, y_hat: Tensor, scales: Tensor, means: Tensor | None = None) -> Tensor:
        scales = lower_bound(scales, self.scale_min)
        mass = laplace_bin_mass(y_hat if means is None else y_hat - means, scales)
        return lower_bound(mass, self.likelihood_bound) if self.likelihood_bound > 0 else mass

    def update(self) -> None:
        levels = self.scale_table.detach().cpu().to(torch.float64)
        half = torch.clamp(torch.ceil(levels * math.log(1.0 / self.tail_mass)), 1, MAX_HALF_RANGE).to(
            torch.int64
        )
        lengths = 2 * half + 1
        entry = torch.arange(int(lengths.max()), dtype=torch.int64)[None, :]
        symbols = (entry - half[:, None]).to(torch.float64)
        pmf = laplace_bin_mass(symbols, levels[:, None])
        pmf = torch.where(entry < lengths[:, None], pmf, torch.zeros_like(pmf))
        tails = torch.exp(-(half.to(torch.float64) + 0.5) / levels)  # both tails beyond the table
        cdf, cdf_length = _cdf_tables(pmf.numpy(), lengths.numpy(), tails.numpy())
        self._set_tables(cdf, cdf_length, (-half).numpy())


class LaplaceContextCoder(SpatialContextCoder):
    """dcvc_rt's step-by-step context coder with the Laplace model in place of the Gaussian one.

    (The attribute keeps dcvc_rt's name ``gaussian``: the loop calls it by that name.)
    """

    def __init__(self, scale_min: float, scale_max: float, num_scales: int) -> None:
        super().__init__(scale_min, scale_max, num_scales)
        self.gaussian = LaplaceConditional(scale_min, scale_max, num_scales, ESCAPE_LIKELIHOOD)


def masks_for(channels: int, size: tuple[int, int], device: torch.device) -> list[Tensor]:
    """The four 2x2 context steps (the official four-part masks, channel quarters rotating)."""
    return context_masks(channels, size[0], size[1], CONTEXT_STEPS, device)


# ---------------------------------------------------------------------------------------------------
# The intra model


class IntraEncoder(nn.Module):
    def __init__(self, n: int, widths: tuple[int, int]) -> None:
        super().__init__()
        c1, c2 = widths
        self.enc_1 = nn.Sequential(DownResidual(3, c1), Block(c1, c1, 3))
        self.enc_2 = nn.Sequential(
            DownResidual(c1, c2), Block(c2, c2, 3), DownResidual(c2, n), Block(n, n, 3), conv(n, n, 3, 2)
        )

    def forward(self, x: Tensor, q_scale: Tensor) -> Tensor:
        return self.enc_2(self.enc_1(x) * q_scale)


class IntraDecoder(nn.Module):
    """y_hat -> full-resolution features: blocks and sub-pixel doublings; ``kind`` 3 (FM), 2 (DC)."""

    def __init__(self, n: int, widths: tuple[int, int], out_ch: int, kind: int = 3) -> None:
        super().__init__()
        c1, c2 = widths
        self.dec_1 = nn.Sequential(
            Block(n, n, kind),
            UpResidual(n, n),
            Block(n, n, kind),
            UpResidual(n, c2),
            Block(c2, c2, kind),
            UpResidual(c2, c1),
        )
        self.dec_2 = nn.Sequential(Block(c1, c1, kind), UpResidual(c1, out_ch))

    def forward(self, y_hat: Tensor, q_scale: Tensor) -> Tensor:
        return self.dec_2(self.dec_1(y_hat) * q_scale)


class IntraModel(nn.Module):
    """DCVC-FM's intra codec (``DMCI``): per-level vectors, hyperprior with a predicted q, 4 steps.

    ::

        x ─enc_1─► × q_scale_enc[q] ─enc_2─► y (N, H/16) ─pad 4─hyper_enc─► z ─round─► z_hat
        z_hat ─hyper_dec─y_prior_fusion─crop─► params (2N + 2): q_enc, q_dec maps; scales, means
        y * q_enc coded in 4 steps (steps 2..4: y_spatial_prior(adaptor_k([y_hat, reduction(params)])))
        y_hat * q_dec ─dec_1─► × q_scale_dec[q] ─dec_2─refine (U-Net, 3x3)─► x_hat
    """

    def __init__(self, config: DCVCFMConfig) -> None:
        super().__init__()
        n, h = config.intra_latent_channels, config.intra_hyper_channels
        c1 = config.intra_channels[0]
        self.latent_channels = n
        self.enc = IntraEncoder(n, config.intra_channels)
        self.hyper_enc = hyper_encoder(n, h)
        self.hyper_dec = hyper_decoder(h, n)
        self.y_prior_fusion = nn.Sequential(Block(n, 2 * n, 4), Block(2 * n, 2 * n + 2, 4))
        self.y_spatial_prior_reduction = conv(2 * n + 2, n, 1)
        self.y_spatial_prior_adaptor_1 = Block(2 * n, 2 * n, 2)
        self.y_spatial_prior_adaptor_2 = Block(2 * n, 2 * n, 2)
        self.y_spatial_prior_adaptor_3 = Block(2 * n, 2 * n, 2)
        self.y_spatial_prior = nn.Sequential(
            *[Block(2 * n, 2 * n, 2) for _ in range(config.intra_spatial_blocks)]
        )
        self.dec = IntraDecoder(n, config.intra_channels, config.intra_out_channels)
        self.refine = nn.Sequential(
            UNet(
                config.intra_out_channels,
                config.intra_out_channels,
                config.unet_channels,
                config.unet_refine_blocks,
                pooled=False,
            ),
            conv(config.intra_out_channels, 3),
        )
        self.q_scale_enc = level_vectors(config.num_q, c1, 1.0 / config.gain_max, 1.0 / config.gain_min)
        self.q_scale_dec = level_vectors(config.num_q, c1, config.gain_max, config.gain_min)
        self.bit_estimator_z = LevelledDensity(config.num_q, h)
        self.coder = SpatialContextCoder(config.intra_scale_min, config.scale_max, config.num_scales)
        zero_biases(self)

    def adaptors(self) -> list[nn.Module]:
        return [
            self.y_spatial_prior_adaptor_1,
            self.y_spatial_prior_adaptor_2,
            self.y_spatial_prior_adaptor_3,
        ]

    def entropy_parameters(
        self, z_hat: Tensor, size: tuple[int, int]
    ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor], NextParams]:
        """``(q_enc, q_dec, (scales, means) of step 1, next_params)`` from z_hat alone."""
        params = crop_to(self.y_prior_fusion(self.hyper_dec(z_hat)), size)
        q_enc, q_dec = (torch.sigmoid(params[:, :2]) * 1.5 + 0.5).chunk(2, dim=1)
        scales, means = params[:, 2:].chunk(2, dim=1)
        common = self.y_spatial_prior_reduction(params)
        adaptors = self.adaptors()

        def next_params(step: int, y_hat: Tensor) -> tuple[Tensor, Tensor]:
            step_scales, step_means = self.y_spatial_prior(
                adaptors[step - 1](torch.cat([y_hat, common], 1))
            ).chunk(2, 1)
            return step_scales, step_means

        return q_enc, q_dec, (scales, means), next_params

    def synthesis(self, y_hat: Tensor, q: Tensor) -> Tensor:
        return self.refine(self.dec(y_hat, self.q_scale_dec.index_select(0, q)))

    def forward(self, x: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_hat, bits)`` of a batch of 4:4:4 frames (x_hat not clamped)."""
        y = self.enc(x, self.q_scale_enc.index_select(0, q))
        size = (y.shape[-2], y.shape[-1])
        z_hat, z_likelihoods = self.bit_estimator_z.forward_level(
            self.hyper_enc(pad_for_hyper(y)), q, "noise" if self.training else "dequantize"
        )
        q_enc, q_dec, first, next_params = self.entropy_parameters(z_hat, size)
        y_s_hat, y_bits = self.coder(
            y * q_enc, first, next_params, masks_for(self.latent_channels, size, y.device)
        )
        return self.synthesis(y_s_hat * q_dec, q), likelihood_bits(z_likelihoods) + y_bits

    def compress(self, x: Tensor, q: int) -> tuple[bytes, Tensor, Tensor]:
        q_t = torch.tensor([q], device=x.device)
        y = self.enc(x, self.q_scale_enc.index_select(0, q_t))
        size = (y.shape[-2], y.shape[-1])
        z = self.hyper_enc(pad_for_hyper(y))
        encoder = AnsEncoder()
        z_hat = self.bit_estimator_z.encode_level_into(encoder, z, q)
        _, z_likelihoods = self.bit_estimator_z.forward_level(z, q_t, "dequantize")
        q_enc, q_dec, first, next_params = self.entropy_parameters(z_hat, size)
        y_s_hat, y_bits = self.coder.encode_into(
            encoder, y * q_enc, first, next_params, masks_for(self.latent_channels, size, y.device)
        )
        x_hat = self.synthesis(y_s_hat * q_dec, q_t)
        return encoder.to_bytes(), x_hat, likelihood_bits(z_likelihoods) + y_bits

    def decompress(self, stream: bytes, q: int, size: tuple[int, int]) -> Tensor:
        device = self.q_scale_enc.device
        decoder = AnsDecoder(stream)
        z_hat = self.bit_estimator_z.decode_level_from(decoder, hyper_size(size), q)
        _, q_dec, first, next_params = self.entropy_parameters(z_hat, size)
        y_s_hat = self.coder.decode_from(
            decoder, first, next_params, masks_for(self.latent_channels, size, device)
        )
        decoder.finish()
        return self.synthesis(y_s_hat * q_dec, torch.tensor([q], device=device))


# ---------------------------------------------------------------------------------------------------
# Motion and context networks of the inter model


class FlowLevel(nn.Module):
    """One SpyNet level: five convolutions (ReLU between) from [frame, warped ref, flow] to a flow update."""

    def __init__(self, widths: tuple[int, int, int, int], kernel: int) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths
        self.conv1 = conv(8, w1, kernel)
        self.conv2 = conv(w1, w2, kernel)
        self.conv3 = conv(w2, w3, kernel)
        self.conv4 = conv(w3, w4, kernel)
        self.conv5 = conv(w4, 2, kernel)

    def forward(self, x: Tensor) -> Tensor:
        for layer in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = F.relu(layer(x))
        return self.conv5(x)


class FlowNet(nn.Module):
    """A light SpyNet: flow at 1/8 from scratch, refined at 1/4, 1/2 and 1 (7x7 coarse, 5x5 fine)."""

    def __init__(self, widths: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.me_8x = FlowLevel(widths, 7)
        self.me_4x = FlowLevel(widths, 7)
        self.me_2x = FlowLevel(widths, 5)
        self.me_1x = FlowLevel(widths, 5)

    def forward(self, frame: Tensor, ref: Tensor) -> Tensor:
        frames, refs = [frame], [ref]
        for _ in range(3):
            frames.append(F.avg_pool2d(frames[-1], 2))
            refs.append(F.avg_pool2d(refs[-1], 2))
        coarse = frames[3]
        flow = torch.zeros(
            coarse.shape[0], 2, coarse.shape[2], coarse.shape[3], dtype=frame.dtype, device=frame.device
        )
        flow = self.me_8x(torch.cat([frames[3], refs[3], flow], 1))
        for level, net in ((2, self.me_4x), (1, self.me_2x), (0, self.me_1x)):
            flow = upsample2(flow) * 2.0
            flow = flow + net(torch.cat([frames[level], flow_warp(refs[level], flow), flow], 1))
        return flow


class MotionEncoder(nn.Module):
    """Flow -> motion latent (1/16), conditioned on the previous frame's motion feature (1/4) if any."""

    def __init__(self, channels: int, kind: int = 4) -> None:
        super().__init__()
        c = channels
        self.enc_1 = nn.Sequential(StridedResidual(2, c), Block(c, c, kind))
        self.enc_2 = StridedResidual(c, c)
        self.adaptor_0 = Block(c, c, kind)
        self.adaptor_1 = Block(2 * c, c, kind)
        self.enc_3 = nn.Sequential(StridedResidual(c, c), Block(c, c, kind), conv(c, c, 3, 2))

    def forward(self, flow: Tensor, context: Tensor | None, q_scale: Tensor) -> Tensor:
        out = self.enc_2(self.enc_1(flow) * q_scale)
        out = self.adaptor_0(out) if context is None else self.adaptor_1(torch.cat([out, context], 1))
        return self.enc_3(out)


class MotionDecoder(nn.Module):
    """Motion latent -> (flow, motion feature at 1/4 for the next frame)."""

    def __init__(self, channels: int, kind: int = 4) -> None:
        super().__init__()
        c = channels
        self.dec_1 = nn.Sequential(
            Block(c, c, kind), UpResidual(c, c), Block(c, c, kind), UpResidual(c, c), Block(c, c, kind)
        )
        self.dec_2 = UpResidual(c, c)
        self.dec_3 = nn.Sequential(Block(c, c, kind), subpel(c, 2, 1))

    def forward(self, y_hat: Tensor, q_scale: Tensor) -> tuple[Tensor, Tensor]:
        feature = self.dec_1(y_hat)
        return self.dec_3(self.dec_2(feature) * q_scale), feature


class OffsetDiversity(nn.Module):
    """Warp the full-resolution feature with several learned offsets per channel group, then fuse.

    Offsets are ``flow + max_offset * tanh(.)`` predicted at half resolution (bilinearly doubled);
    each warped copy is weighted by a sigmoid mask; a grouped 1x1 conv fuses the copies.
    """

    def __init__(self, channels: int, hidden: int, groups: int, offsets: int, max_offset: float) -> None:
        super().__init__()
        self.groups, self.offsets, self.max_offset = groups, offsets, float(max_offset)
        self.conv_offset = nn.Sequential(
            conv(channels + 3 + 2, hidden, 3, 2), lrelu(0.1), conv(hidden, hidden), lrelu(0.1),
            conv(hidden, 3 * groups * offsets),
        )  # fmt: skip
        self.fusion = conv(channels * offsets, channels, 1, groups=groups)

    def forward(self, feature: Tensor, aux: Tensor, flow: Tensor) -> Tensor:
        b, c, h, w = feature.shape
        copies = self.groups * self.offsets
        o1, o2, mask = upsample2(self.conv_offset(aux)).chunk(3, dim=1)
        offset = self.max_offset * torch.tanh(torch.cat([o1, o2], 1)) + flow.repeat(1, copies, 1, 1)
        grouped = feature.repeat(1, self.offsets, 1, 1).view(b * copies, c // self.groups, h, w)
        warped = flow_warp(grouped, offset.view(b * copies, 2, h, w)) * torch.sigmoid(mask).view(
            b * copies, 1, h, w
        )
        return self.fusion(warped.view(b, c * self.offsets, h, w))


class FeatureExtractor(nn.Module):
    """Reference feature -> features at 1, 1/2, 1/4."""

    def __init__(self, widths: tuple[int, int, int]) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.conv1 = conv(c1, c1)
        self.res_block1 = ResBlock(c1)
        self.conv2 = conv(c1, c2, 3, 2)
        self.res_block2 = ResBlock(c2)
        self.conv3 = conv(c2, c3, 3, 2)
        self.res_block3 = ResBlock(c3)

    def forward(self, feature: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f1 = self.res_block1(self.conv1(feature))
        f2 = self.res_block2(self.conv2(f1))
        return f1, f2, self.res_block3(self.conv3(f2))


class ContextFusion(nn.Module):
    """Coarse-to-fine fusion of the three warped contexts (each gets a residual update)."""

    def __init__(self, widths: tuple[int, int, int]) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.conv3_up = subpel(c3, c2, 3)
        self.res_block3_up = ResBlock(c2)
        self.conv3_out = conv(c3, c3)
        self.res_block3_out = ResBlock(c3)
        self.conv2_up = subpel(2 * c2, c1, 3)
        self.res_block2_up = ResBlock(c1)
        self.conv2_out = conv(2 * c2, c2)
        self.res_block2_out = ResBlock(c2)
        self.conv1_out = conv(2 * c1, c1)
        self.res_block1_out = ResBlock(c1)

    def forward(self, c1: Tensor, c2: Tensor, c3: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        up3 = self.res_block3_up(self.conv3_up(c3))
        out3 = self.res_block3_out(self.conv3_out(c3))
        mid = torch.cat([up3, c2], 1)
        up2 = self.res_block2_up(self.conv2_up(mid))
        out2 = self.res_block2_out(self.conv2_out(mid))
        out1 = self.res_block1_out(self.conv1_out(torch.cat([up2, c1], 1)))
        return c1 + out1, c2 + out2, c3 + out3


def kind4_block(channels: int) -> nn.Module:
    """The contextual coders' residual unit in DCVC-FM: a kind-4 block."""
    return Block(channels, channels, 4)


class ContextualEncoder(nn.Module):
    def __init__(
        self,
        widths: tuple[int, int, int],
        mid: int,
        latent: int,
        residual: Callable[[int], nn.Module] = kind4_block,
    ) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.conv1 = conv(c1 + 3, c2, 3, 2)
        self.res1 = residual(2 * c2)
        self.conv2 = conv(2 * c2, c3, 3, 2)
        self.res2 = residual(2 * c3)
        self.conv3 = conv(2 * c3, mid, 3, 2)
        self.conv4 = conv(mid, latent, 3, 2)

    def forward(self, x: Tensor, c1: Tensor, c2: Tensor, c3: Tensor, q_scale: Tensor) -> Tensor:
        feature = self.res1(torch.cat([self.conv1(torch.cat([x, c1], 1)), c2], 1)) * q_scale
        feature = self.res2(torch.cat([self.conv2(feature), c3], 1))
        return self.conv4(self.conv3(feature))


class ContextualDecoder(nn.Module):
    def __init__(
        self,
        widths: tuple[int, int, int],
        mid: int,
        latent: int,
        out_ch: int,
        residual: Callable[[int], nn.Module] = kind4_block,
    ) -> None:
        super().__init__()
        _, c2, c3 = widths
        self.up1 = subpel(latent, mid, 3)
        self.up2 = subpel(mid, c3, 3)
        self.res1 = residual(2 * c3)
        self.up3 = subpel(2 * c3, c2, 3)
        self.res2 = residual(2 * c2)
        self.up4 = subpel(2 * c2, out_ch, 3)

    def forward(self, y_hat: Tensor, c2: Tensor, c3: Tensor, q_scale: Tensor) -> Tensor:
        feature = self.res1(torch.cat([self.up2(self.up1(y_hat)), c3], 1))
        feature = self.res2(torch.cat([self.up3(feature) * q_scale, c2], 1))
        return self.up4(feature)


class ReconGeneration(nn.Module):
    """[decoded feature, context] -> two U-Nets -> (feature for the next frame, picture)."""

    def __init__(
        self, context: int, decoded: int, widths: tuple[int, int, int], refine: int, kind: int = 4
    ) -> None:
        super().__init__()
        self.first_conv = conv(decoded + context, context)
        self.unet_1 = UNet(context, context, widths, refine, pooled=True, kind=kind)
        self.unet_2 = UNet(context, context, widths, refine, pooled=True, kind=kind)
        self.recon_conv = conv(context, 3)

    def forward(self, decoded: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        feature = self.unet_2(self.unet_1(self.first_conv(torch.cat([decoded, context], 1))))
        return feature, self.recon_conv(feature)


# ---------------------------------------------------------------------------------------------------
# The inter model


@dataclass
class Reference:
    """What a decoded frame leaves for the next P frame (the official decoded-picture buffer).

    After an intra frame only ``frame`` is set. ``position`` counts frames since the intra frame and
    selects the next frame's feature adaptor and whether its reference feature is rebuilt.
    """

    frame: Tensor  # (B, 3, H, W) decoded picture, clamped to [0, 1]
    feature: Tensor | None  # (B, context_channels[0], H, W)
    mv_feature: Tensor | None  # (B, mv_channels, H/4, W/4)
    y_hat: Tensor | None  # (B, latent_channels, H/16, W/16)
    mv_y_hat: Tensor | None  # (B, mv_channels, H/16, W/16)
    position: int

    def detach(self) -> Reference:
        """Cut the graph here (cascaded training that stops gradients between frames)."""

        def cut(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.detach()

        return Reference(
            self.frame.detach(),
            cut(self.feature),
            cut(self.mv_feature),
            cut(self.y_hat),
            cut(self.mv_y_hat),
            self.position,
        )


class InterModel(nn.Module):
    """DCVC-FM's P-frame codec (``DMC``).

    ::

        flow = optic_flow(x, ref.frame)
        mv_y = mv_encoder(flow, ref.mv_feature, q_mv_enc) ─► mv z, prior (+ ref.mv_y_hat) ─► mv_y_hat
        mv_hat, mv_feature = mv_decoder(mv_y_hat, q_mv_dec)
        ref feature (adaptor[pattern[pos % 8]], or feature_adaptor_I(ref.frame) after I / at a refresh)
            ─feature_extractor─► warp by mv_hat (offset diversity at full res) ─context fusion─► c1, c2, c3
        y = contextual_encoder(x, c1, c2, c3, q_enc) ─► z, prior (+ temporal prior(c3), ref.y_hat) ─► y_hat
        x_hat, feature = recon_generation_net(contextual_decoder(y_hat, c2, c3, q_dec), c1); x_hat clamped
    """

    def __init__(self, config: DCVCFMConfig) -> None:
        super().__init__()
        c1, c2, c3 = config.context_channels
        m, mv, mvz, z = (
            config.latent_channels,
            config.mv_channels,
            config.mv_hyper_channels,
            config.hyper_channels,
        )
        self.num_q = config.num_q
        self.latent_channels, self.mv_channels = m, mv
        self.optic_flow = FlowNet(config.flow_channels)
        self.align = OffsetDiversity(
            c1, c2, config.offset_groups, config.offsets_per_group, config.max_offset
        )
        self.mv_encoder = MotionEncoder(mv)
        self.mv_hyper_prior_encoder = hyper_encoder(mv, mvz)
        self.mv_hyper_prior_decoder = hyper_decoder(mvz, mv)
        self.mv_y_prior_fusion_adaptor_0 = Block(mv, 2 * mv, 1)
        self.mv_y_prior_fusion_adaptor_1 = Block(2 * mv, 2 * mv, 1)
        self.mv_y_prior_fusion = nn.Sequential(Block(2 * mv, 3 * mv, 1), Block(3 * mv, 3 * mv, 1))
        self.mv_y_spatial_prior_adaptor_1 = conv(4 * mv, 3 * mv, 1)
        self.mv_y_spatial_prior_adaptor_2 = conv(4 * mv, 3 * mv, 1)
        self.mv_y_spatial_prior_adaptor_3 = conv(4 * mv, 3 * mv, 1)
        self.mv_y_spatial_prior = spatial_network(mv, config.spatial_blocks)
        self.mv_decoder = MotionDecoder(mv)
        self.feature_adaptor_I = conv(3, c1)
        self.feature_adaptor = nn.ModuleList([conv(c1, c1, 1) for _ in range(config.feature_adaptors)])
        self.feature_extractor = FeatureExtractor(config.context_channels)
        self.context_fusion_net = ContextFusion(config.context_channels)
        self.contextual_encoder = ContextualEncoder(config.context_channels, config.encoder_channels, m)
        self.contextual_hyper_prior_encoder = hyper_encoder(m, z)
        self.contextual_hyper_prior_decoder = hyper_decoder(z, m)
        self.temporal_prior_encoder = nn.Sequential(
            conv(c3, config.encoder_channels, 3, 2), lrelu(0.1), conv(config.encoder_channels, m, 3, 2)
        )
        self.y_prior_fusion_adaptor_0 = Block(2 * m, 3 * m, 1)
        self.y_prior_fusion_adaptor_1 = Block(3 * m, 3 * m, 1)
        self.y_prior_fusion = nn.Sequential(Block(3 * m, 3 * m, 1), Block(3 * m, 3 * m, 1))
        self.y_spatial_prior_adaptor_1 = conv(4 * m, 3 * m, 1)
        self.y_spatial_prior_adaptor_2 = conv(4 * m, 3 * m, 1)
        self.y_spatial_prior_adaptor_3 = conv(4 * m, 3 * m, 1)
        self.y_spatial_prior = spatial_network(m, config.spatial_blocks)
        self.contextual_decoder = ContextualDecoder(
            config.context_channels, config.encoder_channels, m, config.recon_channels
        )
        self.recon_generation_net = ReconGeneration(
            c1, config.recon_channels, config.unet_channels, config.unet_refine_blocks
        )
        self.mv_y_q_enc = rate_scalars(1.0 / config.gain_max, 1.0 / config.gain_min)
        self.mv_y_q_dec = rate_scalars(config.gain_max, config.gain_min)
        self.y_q_enc = rate_scalars(1.0 / config.gain_max, 1.0 / config.gain_min)
        self.y_q_dec = rate_scalars(config.gain_max, config.gain_min)
        self.bit_estimator_z = LevelledDensity(1, z)
        self.bit_estimator_z_mv = LevelledDensity(1, mvz)
        self.coder = LaplaceContextCoder(config.inter_scale_min, config.scale_max, config.num_scales)
        zero_biases(self)

    # -- the parts both directions share

    def rates(self, q: Tensor) -> dict[str, Tensor]:
        """The four rate multipliers of the frames' q_index (B,), log-interpolated per item."""
        names = ("mv_y_q_enc", "mv_y_q_dec", "y_q_enc", "y_q_dec")
        return {name: interpolate_rate(getattr(self, name), q, self.num_q) for name in names}

    @staticmethod
    def video_params(
        params: Tensor, adaptors: list[nn.Module], spatial: nn.Module
    ) -> tuple[Tensor, tuple[Tensor, Tensor], NextParams]:
        """``(step, (scales, means) of step 1, next_params)`` of a fused prior (3C: step, scales, means)."""
        step, scales, means = params.chunk(3, dim=1)

        def next_params(index: int, y_hat: Tensor) -> tuple[Tensor, Tensor]:
            step_scales, step_means = spatial(adaptors[index - 1](torch.cat([y_hat, params], 1))).chunk(2, 1)
            return step_scales, step_means

        return torch.clamp(step, min=0.5), (scales, means), next_params

    def motion_params(
        self, mv_z_hat: Tensor, ref: Reference, size: tuple[int, int]
    ) -> tuple[Tensor, tuple[Tensor, Tensor], NextParams]:
        params = crop_to(self.mv_hyper_prior_decoder(mv_z_hat), size)
        if ref.mv_y_hat is None:
            params = self.mv_y_prior_fusion_adaptor_0(params)
        else:
            params = self.mv_y_prior_fusion_adaptor_1(torch.cat([params, ref.mv_y_hat], 1))
        adaptors = [
            self.mv_y_spatial_prior_adaptor_1,
            self.mv_y_spatial_prior_adaptor_2,
            self.mv_y_spatial_prior_adaptor_3,
        ]
        return self.video_params(self.mv_y_prior_fusion(params), adaptors, self.mv_y_spatial_prior)

    def contextual_params(
        self, z_hat: Tensor, ref: Reference, c3: Tensor, size: tuple[int, int]
    ) -> tuple[Tensor, tuple[Tensor, Tensor], NextParams]:
        hierarchical = crop_to(self.contextual_hyper_prior_decoder(z_hat), size)
        temporal = self.temporal_prior_encoder(c3)
        if ref.y_hat is None:
            params = self.y_prior_fusion_adaptor_0(torch.cat([temporal, hierarchical], 1))
        else:
            params = self.y_prior_fusion_adaptor_1(torch.cat([temporal, hierarchical, ref.y_hat], 1))
        adaptors = [
            self.y_spatial_prior_adaptor_1,
            self.y_spatial_prior_adaptor_2,
            self.y_spatial_prior_adaptor_3,
        ]
        return self.video_params(self.y_prior_fusion(params), adaptors, self.y_spatial_prior)

    def contexts(
        self, ref: Reference, mv_hat: Tensor, adaptor: int, refresh: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The three motion-compensated, fused contexts at 1, 1/2, 1/4."""
        if ref.feature is None or refresh:
            feature = self.feature_adaptor_I(ref.frame)
        else:
            feature = self.feature_adaptor[adaptor](ref.feature)
        f1, f2, f3 = self.feature_extractor(feature)
        mv2 = downsample2(mv_hat) / 2
        mv3 = downsample2(mv2) / 2
        warped_frame = flow_warp(ref.frame, mv_hat)
        c1 = self.align(f1, torch.cat([flow_warp(f1, mv_hat), warped_frame, mv_hat], 1), mv_hat)
        return self.context_fusion_net(c1, flow_warp(f2, mv2), flow_warp(f3, mv3))

    def reconstruct(
        self, y_hat: Tensor, contexts: tuple[Tensor, Tensor, Tensor], q_dec: Tensor
    ) -> tuple[Tensor, Tensor]:
        c1, c2, c3 = contexts
        feature, x_hat = self.recon_generation_net(self.contextual_decoder(y_hat, c2, c3, q_dec), c1)
        return x_hat.clamp(0.0, 1.0), feature

    def masks(self, channels: int, size: tuple[int, int]) -> list[Tensor]:
        return masks_for(channels, size, self.feature_adaptor_I.weight.device)

    @staticmethod
    def to_step_units(y: Tensor, step: Tensor) -> Tensor:
        """``y`` in units of the predicted step, as the official FM code computes it (``y * (1 / step)``)."""
        return y * (1.0 / step)

    # -- training / evaluation, and real coding: one body, ``coding`` selects the latent path

    def run(
        self, x: Tensor, q: Tensor, ref: Reference, adaptor: int, refresh: bool, encoder: AnsEncoder | None
    ) -> tuple[Tensor, Reference, Tensor]:
        """``(x_hat, new reference, bits)``; with ``encoder`` the latents are coded into it (batch 1)."""
        rates = self.rates(q)
        mv_y = self.mv_encoder(self.optic_flow(x, ref.frame), ref.mv_feature, rates["mv_y_q_enc"])
        mv_size = (mv_y.shape[-2], mv_y.shape[-1])
        mv_z = self.mv_hyper_prior_encoder(pad_for_hyper(mv_y))
        mv_y_hat, mv_bits = self.code_latent(
            mv_y,
            mv_z,
            self.bit_estimator_z_mv,
            lambda z_hat: self.motion_params(z_hat, ref, mv_size),
            self.mv_channels,
            encoder,
        )
        mv_hat, mv_feature = self.mv_decoder(mv_y_hat, rates["mv_y_q_dec"])
        contexts = self.contexts(ref, mv_hat, adaptor, refresh)
        y = self.contextual_encoder(x, *contexts, rates["y_q_enc"])
        size = (y.shape[-2], y.shape[-1])
        z = self.contextual_hyper_prior_encoder(pad_for_hyper(y))
        y_hat, y_bits = self.code_latent(
            y,
            z,
            self.bit_estimator_z,
            lambda z_hat: self.contextual_params(z_hat, ref, contexts[2], size),
            self.latent_channels,
            encoder,
        )
        x_hat, feature = self.reconstruct(y_hat, contexts, rates["y_q_dec"])
        return (
            x_hat,
            Reference(x_hat, feature, mv_feature, y_hat, mv_y_hat, ref.position + 1),
            mv_bits + y_bits,
        )

    def code_latent(
        self,
        y: Tensor,
        z: Tensor,
        density: LevelledDensity,
        prior: Callable[[Tensor], tuple[Tensor, tuple[Tensor, Tensor], NextParams]],
        channels: int,
        encoder: AnsEncoder | None,
    ) -> tuple[Tensor, Tensor]:
        """``(y_hat, bits)`` of one latent and its hyper latent: training path or into ``encoder``.

        ``prior(z_hat)`` gives ``(step, first, next_params)``; ``y_hat`` is returned scaled back by
        the step (the official ``ref_y`` / ``ref_mv_y``).
        """
        size = (y.shape[-2], y.shape[-1])
        level = torch.zeros(y.shape[0], dtype=torch.long, device=y.device)
        if encoder is None:
            z_hat, z_likelihoods = density.forward_level(z, level, "noise" if self.training else "dequantize")
            step, first, next_params = prior(z_hat)
            y_s_hat, y_bits = self.coder(
                self.to_step_units(y, step), first, next_params, self.masks(channels, size)
            )
        else:
            z_hat = density.encode_level_into(encoder, z, 0)
            _, z_likelihoods = density.forward_level(z, level, "dequantize")
            step, first, next_params = prior(z_hat)
            y_s_hat, y_bits = self.coder.encode_into(
                encoder, self.to_step_units(y, step), first, next_params, self.masks(channels, size)
            )
        return y_s_hat * step, likelihood_bits(z_likelihoods) + y_bits

    def decode(
        self, decoder: AnsDecoder, q: int, ref: Reference, adaptor: int, refresh: bool, size: tuple[int, int]
    ) -> tuple[Tensor, Reference]:
        """The decoder's half of :meth:`run`: the same functions on the decoded symbols."""
        rates = self.rates(torch.tensor([q], device=ref.frame.device))
        mv_z_hat = self.bit_estimator_z_mv.decode_level_from(decoder, hyper_size(size), 0)
        step, first, next_params = self.motion_params(mv_z_hat, ref, size)
        mv_y_hat = (
            self.coder.decode_from(decoder, first, next_params, self.masks(self.mv_channels, size)) * step
        )
        mv_hat, mv_feature = self.mv_decoder(mv_y_hat, rates["mv_y_q_dec"])
        contexts = self.contexts(ref, mv_hat, adaptor, refresh)
        z_hat = self.bit_estimator_z.decode_level_from(decoder, hyper_size(size), 0)
        step, first, next_params = self.contextual_params(z_hat, ref, contexts[2], size)
        y_hat = (
            self.coder.decode_from(decoder, first, next_params, self.masks(self.latent_channels, size)) * step
        )
        x_hat, feature = self.reconstruct(y_hat, contexts, rates["y_q_dec"])
        return x_hat, Reference(x_hat, feature, mv_feature, y_hat, mv_y_hat, ref.position + 1)


def spatial_network(channels: int, blocks: int) -> nn.Sequential:
    """Steps 2..4 of a P-frame latent: ``blocks`` blocks at 3C, the last one down to 2C (scales, means)."""
    layers = [Block(3 * channels, 3 * channels, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers, Block(3 * channels, 2 * channels, 1))


# ---------------------------------------------------------------------------------------------------
# The codec


@register_network
class DCVCFM(NeuralVideoCodec):
    """DCVC-FM: intra model + inter model behind the framework's 4:2:0 model API.

    ::

        (Y, UV) ─nearest-upsample UV─► x (3, H, W) YCbCr 4:4:4
                  ref None ──► IntraModel(x, q) ─────────────────────────────► x_hat, bits
                  ref given ─► InterModel(x, q, ref, adaptor[pos % 8], refresh) ► x_hat, Reference, bits
        (Y_hat, UV_hat) ◄─ 2x2 average-pool UV ─ x_hat

    ``refresh`` is true when ``pos % refresh_interval == 1`` (pos: frames since the intra frame):
    the reference feature is then rebuilt from the decoded picture. The encoder rebuilds every
    latent from its symbols with the decoder's functions, so the decoder reproduces the encoder's
    pictures bit for bit on one machine.

    ``complexity()`` reports ``params_m``, ``params_intra_m`` and ``params_inter_m`` (the P model:
    DCVC-FM's 18.3 M).
    """

    pad_multiple = PAD_MULTIPLE

    def __init__(self, **numbers: Any) -> None:
        super().__init__()
        self.arch = DCVCFMConfig(**numbers)
        self.config = self.arch.as_dict()
        self.num_q = int(self.arch.num_q)
        self.intra = IntraModel(self.arch)
        self.inter = InterModel(self.arch)

    def position_rules(self, ref: Reference) -> tuple[int, bool]:
        """``(feature adaptor, refresh)`` of the P frame coded against ``ref`` (same on both sides)."""
        position = ref.position + 1
        pattern = self.arch.adaptor_pattern
        refresh = self.arch.refresh_interval > 0 and position % self.arch.refresh_interval == 1
        return pattern[position % len(pattern)], refresh

    def forward_frame(
        self, y: Tensor, uv: Tensor, q_index: Tensor | int, ref: Reference | None
    ) -> FrameOutput:
        self.check_frame(y, uv)
        q = self.q_tensor(q_index, y.shape[0], y.device)
        x = self._to_444(y, uv)
        if ref is None:
            x_hat, bits = self.intra(x, q)
            return self._output(x_hat, self._intra_reference(x_hat), bits)
        self.check_reference(ref, Reference, x)
        x_hat, new_ref, bits = self.inter.run(x, q, ref, *self.position_rules(ref), encoder=None)
        return self._output(x_hat, new_ref, bits)

    def encode_frame(
        self, y: Tensor, uv: Tensor, q_index: int, ref: Reference | None
    ) -> tuple[bytes, FrameOutput]:
        x = self._to_444(y, uv)
        if ref is None:
            stream, x_hat, bits = self.intra.compress(x, q_index)
            return stream, self._output(x_hat.clamp(0.0, 1.0), self._intra_reference(x_hat), bits)
        self.check_reference(ref, Reference, x)
        encoder = AnsEncoder()
        q = torch.tensor([q_index], device=x.device)
        x_hat, new_ref, bits = self.inter.run(x, q, ref, *self.position_rules(ref), encoder=encoder)
        return encoder.to_bytes(), self._output(x_hat, new_ref, bits)

    def decode_frame(
        self, stream: bytes, q_index: int, ref: Reference | None, height: int, width: int
    ) -> tuple[Tensor, Tensor, Reference]:
        size = (height // PAD_MULTIPLE, width // PAD_MULTIPLE)
        if ref is None:
            x_hat = self.intra.decompress(stream, q_index, size)
            out = self._output(x_hat.clamp(0.0, 1.0), self._intra_reference(x_hat), torch.zeros(1))
            return out.y_hat, out.uv_hat, out.ref
        if not isinstance(ref, Reference) or tuple(ref.frame.shape[-2:]) != (height, width):
            shape = tuple(ref.frame.shape) if isinstance(ref, Reference) else type(ref).__name__
            raise ValueError(f"reference {shape} does not fit a {height}x{width} frame")
        decoder = AnsDecoder(stream)
        x_hat, new_ref = self.inter.decode(decoder, q_index, ref, *self.position_rules(ref), size)
        decoder.finish()
        out = self._output(x_hat, new_ref, torch.zeros(1))
        return out.y_hat, out.uv_hat, out.ref

    def update(self, force: bool = False) -> None:
        """Build every coder table; ``force`` also rebuilds the learned z densities' tables."""
        for density in (
            self.intra.bit_estimator_z,
            self.inter.bit_estimator_z,
            self.inter.bit_estimator_z_mv,
        ):
            density.update(force=force)
        update_entropy_tables(self, force=force)

    def complexity(self) -> dict[str, float]:
        return self.split_parameters(intra=[self.intra], inter=[self.inter])

    @staticmethod
    def _intra_reference(x_hat: Tensor) -> Reference:
        return Reference(x_hat.clamp(0.0, 1.0), None, None, None, None, 0)

    @staticmethod
    def _to_444(y: Tensor, uv: Tensor) -> Tensor:
        """4:2:0 planes -> (B, 3, H, W) with chroma repeated 2x2 (the official nearest-neighbour zoom)."""
        return yuv420_to_444(y, uv[:, :1], uv[:, 1:2], mode="nearest")

    @staticmethod
    def _output(x_hat: Tensor, ref: Reference, bits: Tensor) -> FrameOutput:
        y_hat, u_hat, v_hat = yuv444_to_420(x_hat, mode="avgpool")
        return FrameOutput(y_hat=y_hat, uv_hat=torch.cat([u_hat, v_hat], dim=1), bits=bits, ref=ref)


# ---------------------------------------------------------------------------------------------------
# Reference numbers: the official parameter counts (microsoft/DCVC DCVC-FM, counted on the official
# code: tests/fixtures/official/dcvc_fm/meta.json) and the review's Table 5.

PUBLISHED = {"params_inter_m": 18.3, "kmac_per_px_inter": 1274.1}  # DCVC-FM P model, review Table 5
OFFICIAL_PARAMS = {"params_intra": 26_587_561, "params_inter": 18_336_187}  # DMCI(N=256, z=128), DMC()
# kMAC/px at 1920x1080 (padded to 1088) counted on the official code (issue 15: FlopCounterMode, MACs =
# FLOPs / 2, steady-state P frame); ``python -m nvc_train.complexity dcvc_fm --device meta`` counts
# 525.1 and 1137.0 on this code. The review's 1274.1 is not reproduced by the released code.
OFFICIAL_KMAC_PER_PX = {"I": 525.1, "P": 1137.0}

REFERENCE: dict[str, dict[str, int]] = {
    "dcvc_fm": {"params": 44_923_748, "params_inter": 18_336_187, "params_intra": 26_587_561},
    "dcvc_fm_tiny": {"params": 487_288, "params_inter": 382_799, "params_intra": 104_489},
}  # fmt: skip
