"""dcvc_rt: DCVC-RT (Jia et al., "Towards Practical Real-Time Neural Video Compression", CVPR 2025).

The published codec, intra and inter model, in this framework's model API. Its parameters ARE the
official ones: the same tensors with the same shapes, so Microsoft's checkpoints
(``cvpr2025_image.pth.tar``, ``cvpr2025_video.pth.tar``) load through one rename table
(:mod:`nvc_train.convert.dcvc_rt`, ``python -m nvc_train.convert dcvc_rt``), and on the same weights
the reconstructions and ideal bits equal the official code's (tests/test_official_dcvc_rt.py, on
fixtures made with the official code). Every number below (channels, block counts, scale table,
quality levels, offsets, refresh interval) is a published fact of DCVC-RT; the code is our own.

What makes DCVC-RT what it is:

- **One resolution for the heavy work.** A frame (YUV 4:4:4: 4:2:0 chroma upsampled by nearest
  neighbour before coding, 2x2 average-pooled back after), replicate-padded to a multiple of 16, is
  pixel-unshuffled by 8 into 192 channels; every heavy transform runs at 1/8 resolution with 256
  channels (the reconstruction branch with 320); the latent ``y`` (128 channels) is one 3x3 stride-2
  convolution further, at 1/16. For the hyper path only, ``y`` is replicate-padded to a multiple of
  4; the hyper latent ``z`` (128 channels) is at 1/64 and the hyper decoder's output is cropped back
  to ``y``'s size.
- **One block.** :class:`DepthConvBlock`: a depth-wise convolution unit (1x1, ``x * sigmoid(4x)``,
  depth-wise 3x3, 1x1) and a gated feed-forward unit (1x1 to 4C, the same activation, halves added,
  1x1 back), each residual; no normalisation anywhere.
- **Implicit temporal context.** No motion estimation or motion coding: the only reference is the
  previous frame's 256-channel 1/8 decoder feature. A feature extractor turns it into a temporal
  prior for the entropy model and a context concatenated into the encoder and the decoder. After an
  intra frame (and every ``refresh_interval`` frames, to stop error propagation) the reference
  feature is rebuilt from the decoded picture instead (``feature_adaptor_i``).
- **Entropy model.** ``z_hat = clamp(round(z), -128, 127)`` (no median), with a factorized density
  per quality level and channel (:class:`LevelledDensity`, a 1-1-1-1 chain). ``y`` is Gaussian with
  mean and scale from the hyperprior (fused with the temporal prior in P frames) and a spatial
  context coded in two checkerboard steps (P) or four 2x2 steps (intra); per step
  ``symbol = clamp(round(y - mean), -128, 127)``, ``y_hat = symbol + mean``. The intra model scales
  ``y`` by a predicted per-pixel ``sigmoid(q) * 1.5 + 0.5`` before rounding (and ``y_hat`` by its
  decoder twin after); the P model divides by a predicted step ``max(q, 0.5)`` and multiplies
  back. Scales are clamped to [0.11, 16] and coded with 128 log-spaced tables. With
  ``force_zero_thres`` set, an element whose predicted scale is not above it is not coded at all
  (its ``y_hat`` is the mean): the official README runs with 0.12.
- **64 quality levels in one model**, by learned per-level channel vectors that multiply the
  transforms' features (``q_enc``, ``q_dec``; P model also ``q_feature``, ``q_recon``; shape
  (levels, C, 1, 1), unconstrained, as the official ``q_*``). P frames add a hierarchical offset to
  their level over a period of 8 (``[0, 8, 0, 4, 0, 4, 0, 4]``), so the P model has 64 + 8 levels.

Where we deliberately differ from the official code (none of it changes a reconstruction):

- **Scale-table index.** The official coder takes ``floor`` of the scale's log position in the
  table; ours (:meth:`nvc_train.entropy.GaussianConditional.scale_indexes`) picks the level whose
  table codes ``N(0, s)`` at the least expected cost, by comparisons with stored bounds (no ``log``
  at coding time, so equal scales give equal indexes on every machine). File size only: for a
  true Gaussian the floor always picks the narrower table, which costs more for values in the tail.
- **Offsets and refreshes by position since the intra frame**, not by ``frame_idx % 8`` from the
  start of the sequence: the same whenever the intra period is a multiple of 8 (and for every
  single-intra sequence), and with any other period a P frame right after an intra frame still
  gets the coarse first offset that the training saw. The position travels in the
  :class:`Reference` state, so neither the adapter nor the bitstream carries it.
- **The coder.** Every frame's latents share one ANS stream of our coder (``z``, then each step of
  ``y``; payload: a tag byte and that stream, :func:`models.base.pack_stream`) with 16-bit integer
  tables built once by ``update()`` and stored in the checkpoint; values outside a table escape
  losslessly. The official rANS coder and its SPS / NAL headers are not reproduced.
- **Training**, which the official code does not publish: additive noise for the likelihoods and
  straight-through rounding (with the same clamps) for the values the next context step and the
  synthesis see (the framework's convention, as in ``dcvc_lite``); ``force_zero_thres`` acts in
  evaluation and coding only. The per-level vectors start log-spaced (``q_enc`` from
  ``1 / gain_max`` at level 0 to ``1 / gain_min`` at the top, ``q_dec`` the inverse) so that a higher
  ``q_index`` costs more bits from the first step of training; the official ones start at one.

The file reads top to bottom: the typed architecture numbers (:class:`DCVCRTConfig`; their values:
``configs/model/dcvc_rt.yaml`` and ``dcvc_rt_tiny.yaml``), blocks, the entropy-model parts, the intra
model, the inter model, the codec, and reference numbers.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import CodecConfig, FrameOutput, NeuralVideoCodec, likelihood_bits, update_entropy_tables
from models.registry import register_network
from nvc_train.entropy import (
    PRECISION,
    AnsDecoder,
    AnsEncoder,
    EntropyCoderError,
    GaussianConditional,
    lower_bound,
    quantize,
)
from nvc_train.entropy.base import TableEntropyModel
from nvc_train.entropy.coder import _cdf_tables
from nvc_train.video.colour import yuv420_to_444, yuv444_to_420

__all__ = [
    "DCVCRT",
    "DCVCRTConfig",
    "DepthConvBlock",
    "InterModel",
    "IntraModel",
    "LevelledDensity",
    "Reference",
]

UNSHUFFLE = 8  # pixel-unshuffle factor: the heavy transforms run at 1/8 resolution
SOURCE_CHANNELS = 3 * UNSHUFFLE * UNSHUFFLE  # 192: a 4:4:4 frame pixel-unshuffled by 8
PAD_MULTIPLE = 16  # the frame is replicate-padded to this; y (1/16) to 4 more for the hyper path only
HYPER_PAD = 4  # y -> z is two halvings
SYMBOL_MIN, SYMBOL_MAX = -128, 127  # z and y symbols are clamped to the int8 range
# The coder gives every symbol of a table (the escape symbol included) a count of at least 1 in
# 2**PRECISION, so no symbol costs more than PRECISION bits there (an escaped value adds a sign and a
# short length code). Flooring the likelihoods at 2**-PRECISION (instead of the model's default 1e-9,
# 30 bits) keeps the estimate at the file size for the improbable values an untrained or young
# entropy model produces often (measured, untrained dcvc_rt_tiny, 320x256 intra frame: y estimated
# 16599 bits for 16600 coded, against 18743 with the default floor). The floor passes the gradients
# that raise a likelihood, so the rate term still pulls such values in.
ESCAPE_LIKELIHOOD = 2.0**-PRECISION


# ---------------------------------------------------------------------------------------------------
# Architecture numbers


@dataclass(frozen=True, kw_only=True)
class DCVCRTConfig(CodecConfig):
    """DCVC-RT's 27 architecture and coding numbers: the one place in code that names them.

    Their values live in ``configs/model/dcvc_rt.yaml`` (the published DCVC-RT) and
    ``dcvc_rt_tiny.yaml`` (the same classes at CPU-test size); :class:`IntraModel` and
    :class:`InterModel` read what they need from this object. Widths are channels, ``*_blocks``
    counts of :class:`DepthConvBlock`.
    """

    # P-frame model: everything heavy at 1/8 resolution
    channels: int  # transform width at 1/8 (and the reference feature's)
    recon_channels: int  # width of the reconstruction branch
    latent_channels: int  # y, at 1/16 (one 3x3 stride-2 conv below the transforms); even
    hyper_channels: int  # z, at 1/64
    prior_feature_blocks: int  # feature extractor blocks before the temporal-prior tap
    context_blocks: int  # further blocks from that tap to the context for encoder and decoder
    encoder_blocks: int  # >= 1
    decoder_blocks: int  # >= 1
    recon_blocks: int  # >= 1
    fusion_blocks: int  # hyperprior + temporal prior fusion (3 * latent_channels wide)
    spatial_blocks: int  # step 2 of the two-step checkerboard context; >= 1
    # Intra model
    intra_channels: int  # transform width at 1/8
    intra_latent_channels: int  # y, at 1/16; a multiple of 4 (four context steps)
    intra_hyper_channels: int  # z, at 1/64
    intra_encoder_blocks: int
    intra_decoder_blocks: int
    intra_fusion_blocks: int  # hyperprior fusion (2 * intra_latent_channels wide)
    intra_spatial_blocks: int  # shared by steps 2..4 of the four-step context
    # Rate control
    num_q: int  # quality levels, q_index 0 = lowest rate
    qp_offsets: tuple[int, ...]  # P-frame level offset by position since the intra frame, mod len
    refresh_interval: int  # rebuild the reference feature from the picture when position % it == 1; 0: never
    gain_max: float  # initial quantization step (q_enc = 1 / it, q_dec = it) at level 0
    gain_min: float  # ... at the highest level (P model: num_q + max(qp_offsets) levels)
    # Gaussian coder: scales clamp to [scale_min, scale_max] and snap to num_scales log-spaced levels
    scale_min: float
    scale_max: float
    num_scales: int
    force_zero_thres: float | None  # y elements with scale <= this are not coded (y_hat = mean); null: off

    def __post_init__(self) -> None:
        offsets = tuple(int(v) for v in self.qp_offsets)
        if not offsets or min(offsets) < 0:
            raise ValueError(
                f"qp_offsets must be a non-empty list of non-negative integers, got {list(offsets)}"
            )
        object.__setattr__(self, "qp_offsets", offsets)  # a tuple: the config is frozen
        if self.refresh_interval < 0:
            raise ValueError(f"refresh_interval must be >= 0 (0: never), got {self.refresh_interval}")
        if self.latent_channels % 2 or self.intra_latent_channels % 4:
            raise ValueError(
                "the two-step context needs an even latent_channels, the four-step one a multiple of 4"
            )
        if min(self.encoder_blocks, self.decoder_blocks, self.recon_blocks, self.spatial_blocks) < 1:
            raise ValueError("the inter model needs at least one encoder, decoder, recon and spatial block")
        if self.force_zero_thres is not None:
            object.__setattr__(self, "force_zero_thres", float(self.force_zero_thres))

    @property
    def inter_levels(self) -> int:
        """Quality levels of the P model: every q_index plus every hierarchical offset."""
        return self.num_q + max(self.qp_offsets)


# ---------------------------------------------------------------------------------------------------
# Blocks. Sub-module names (``adaptor``, ``dc``, ``ffn``; ``down`` / ``up`` + ``conv``) are the
# official ones, so the rename table of nvc_train/convert/dcvc_rt.py only maps the top levels.


class WSiLU(nn.Module):
    """``x * sigmoid(4x)``: DCVC-RT's activation, a SiLU with a sharper knee (closer to ReLU)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(4.0 * x) * x


class GatedHalves(nn.Module):
    """The gate of the feed-forward unit: activate, split the channels in halves, add them."""

    def __init__(self) -> None:
        super().__init__()
        self.act = WSiLU()

    def forward(self, x: Tensor) -> Tensor:
        first, second = self.act(x).chunk(2, dim=1)
        return first + second


class DepthConvBlock(nn.Module):
    """DCVC-RT's one building block: depth-wise conv unit + gated FFN, both residual, no norm.

    ::

        x ─[1x1 adaptor if in != out]─► a ──► 1x1 ─ WSiLU ─ dw3x3 ─ 1x1 ──(+a)──► b
                                                                                   │
                            out ◄──(+b)── 1x1 (2C -> C) ◄─ halves added ◄─ WSiLU ◄─ 1x1 (C -> 4C)
                            (+a again when ``shortcut``)

    Depth-wise 3x3 gives the spatial mixing at a ninth of a full 3x3's cost; the 1x1 layers carry
    the channel mixing, which is where the parameters and MACs go.
    """

    def __init__(self, in_ch: int, out_ch: int, shortcut: bool = False, force_adaptor: bool = False) -> None:
        super().__init__()
        self.adaptor = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch or force_adaptor else None
        self.shortcut = shortcut
        self.dc = nn.Sequential(
            nn.Conv2d(out_ch, out_ch, 1),
            WSiLU(),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, groups=out_ch),
            nn.Conv2d(out_ch, out_ch, 1),
        )
        self.ffn = nn.Sequential(
            nn.Conv2d(out_ch, 4 * out_ch, 1), GatedHalves(), nn.Conv2d(2 * out_ch, out_ch, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        if not torch.is_grad_enabled():
            return self.forward_inference(x)
        if self.adaptor is not None:
            x = self.adaptor(x)
        out = self.dc(x) + x
        out = self.ffn(out) + out
        return out + x if self.shortcut else out

    def forward_inference(self, x: Tensor) -> Tensor:
        """The same block without autograd, in fewer passes over the activations (coding speed).

        ``x * sigmoid(4x)`` is ``silu(4x) / 4``: the 4 is the GEMM's ``alpha`` / ``beta`` of the 1x1
        layer before it and the 1/4 the weights of the layer after it (scaling by a power of two is
        exact in floating point), so each activation is one in-place ``silu_`` instead of three
        passes with two new tensors; the residual adds and the gate's halves are added in place, and
        the 1x1 layers are one GEMM on the (C, H*W) view. Only the activation's rounding differs from
        :meth:`forward` (about 1e-7 on a block's output); encoder and decoder both run this one.
        """
        if self.adaptor is not None:
            x = pointwise(x, self.adaptor)
        depthwise = self.dc[2]
        hidden = F.silu(pointwise(x, self.dc[0], scale=4.0), inplace=True)
        hidden = F.conv2d(hidden, depthwise.weight * 0.25, depthwise.bias, padding=1, groups=depthwise.groups)
        out = pointwise(hidden, self.dc[3]).add_(x)
        first, second = F.silu(pointwise(out, self.ffn[0], scale=4.0), inplace=True).chunk(2, dim=1)
        out = pointwise(first.add_(second), self.ffn[2], input_scale=0.25).add_(out)
        return out.add_(x) if self.shortcut else out


def pointwise(x: Tensor, conv: nn.Conv2d, scale: float = 1.0, input_scale: float = 1.0) -> Tensor:
    """``scale * conv(input_scale * x)`` of a 1x1 convolution, without autograd.

    Batch 1 (coding) is one GEMM ``addmm(bias, W, x as (C, H*W))``, the scales its ``alpha`` and
    ``beta`` (no pass over the activations); other batches run the convolution with scaled weights.
    Scales must be powers of two, so the result is the unscaled one times them exactly.
    """
    weight, bias = conv.weight, conv.bias
    batch, channels, height, width = x.shape
    if batch == 1 and x.is_contiguous() and bias is not None:
        return torch.addmm(
            bias[:, None],
            weight.view(weight.shape[0], channels),
            x.view(channels, height * width),
            beta=scale,
            alpha=scale * input_scale,
        ).view(1, -1, height, width)
    bias = None if bias is None else bias * scale
    return F.conv2d(x, weight * (scale * input_scale), bias)


def blocks(in_ch: int, out_ch: int, count: int) -> list[nn.Module]:
    """``count`` DepthConvBlocks, the first mapping ``in_ch`` to ``out_ch`` (an empty list for 0)."""
    return [DepthConvBlock(in_ch if i == 0 else out_ch, out_ch) for i in range(count)]


class SubpelConv(nn.Module):
    """Double the resolution by sub-pixel convolution (conv to 4x channels, pixel shuffle)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_ch, 4 * out_ch, kernel, padding=kernel // 2), nn.PixelShuffle(2)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class DownBlock(nn.Module):
    """Halve the resolution: a 2x2 stride-2 convolution, then a DepthConvBlock with a shortcut."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.down = nn.Conv2d(in_ch, out_ch, 2, stride=2)
        self.conv = DepthConvBlock(out_ch, out_ch, shortcut=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.down(x))


class UpBlock(nn.Module):
    """Double the resolution: a 1x1 sub-pixel convolution, then a DepthConvBlock with a shortcut."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.up = SubpelConv(in_ch, out_ch, 1)
        self.conv = DepthConvBlock(out_ch, out_ch, shortcut=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.up(x))


def hyper_encoder(latent_ch: int, hyper_ch: int) -> nn.Sequential:
    """y (1/16, padded to a multiple of 4) -> z (1/64): one block, then two halvings."""
    return nn.Sequential(
        DepthConvBlock(latent_ch, hyper_ch), DownBlock(hyper_ch, hyper_ch), DownBlock(hyper_ch, hyper_ch)
    )


def hyper_decoder(hyper_ch: int, out_ch: int) -> nn.Sequential:
    """z_hat (1/64) -> hyperprior features (1/16, before the crop to y's size): two doublings, one block."""
    return nn.Sequential(
        UpBlock(hyper_ch, hyper_ch), UpBlock(hyper_ch, hyper_ch), DepthConvBlock(hyper_ch, out_ch)
    )


def pad_for_hyper(y: Tensor) -> Tensor:
    """``y`` replicate-padded on the right and bottom to a multiple of 4: the hyper path's input.

    The frame is padded to 16 only (a latent per 16x16 block), so ``y`` need not be a multiple of
    4; padding ``y`` itself, not the frame, keeps the coded area of ``y`` at the frame's.
    """
    pad_b, pad_r = -y.shape[-2] % HYPER_PAD, -y.shape[-1] % HYPER_PAD
    return F.pad(y, (0, pad_r, 0, pad_b), mode="replicate") if pad_b or pad_r else y


def hyper_size(latent_size: tuple[int, int]) -> tuple[int, int]:
    """z's spatial size for a y of ``latent_size``: the decoder derives it, nothing is transmitted."""
    return -(-latent_size[0] // HYPER_PAD), -(-latent_size[1] // HYPER_PAD)


def level_vectors(levels: int, channels: int, first: float, last: float) -> nn.Parameter:
    """Per-level channel vectors (levels, C, 1, 1), log-spaced from ``first`` at level 0 to ``last``.

    The official ``q_*`` layout and meaning (a plain multiplier, any sign), so a published value
    loads exactly; only the starting values are ours (see the module docstring).
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    if min(first, last) <= 0:
        raise ValueError(f"initial per-level values must be positive, got {first} and {last}")
    values = (
        torch.logspace(math.log10(first), math.log10(last), levels) if levels > 1 else torch.tensor([first])
    )
    return nn.Parameter(values[:, None, None, None].repeat(1, channels, 1, 1))


def _full_precision(tensor: Tensor) -> contextlib.AbstractContextManager:
    """Autocast off on ``tensor``'s device: likelihoods (erfc, the density) and bits are computed in
    float32 even under mixed precision, where bf16 would round the rate to 2-3 digits. The meta
    device (complexity counting) has no autocast and needs none."""
    if tensor.is_meta:
        return contextlib.nullcontext()
    return torch.autocast(device_type=tensor.device.type, enabled=False)


def _clamped_round(x: Tensor) -> Tensor:
    """``clamp(round(x), -128, 127)``: the symbols DCVC-RT codes for z and for ``y - mean``."""
    return torch.clamp(torch.round(x), SYMBOL_MIN, SYMBOL_MAX)


# ---------------------------------------------------------------------------------------------------
# Entropy-model parts: the per-level density of z and the spatial-context steps of y


class DensityStage(nn.Module):
    """One stage of the 1-1-1-1 chain, one scalar each per (level, channel): ``x * softplus(h) + b``,
    then (not in the last stage) ``+ tanh(x) * tanh(a)``. Every stage is non-decreasing in x."""

    def __init__(self, levels: int, channels: int, final: bool = False) -> None:
        super().__init__()
        shape = (levels, channels, 1, 1)
        # The official initialisation: N(0, 0.01) for each parameter.
        self.h = nn.Parameter(torch.randn(shape) * 0.01)
        self.b = nn.Parameter(torch.randn(shape) * 0.01)
        self.a = None if final else nn.Parameter(torch.randn(shape) * 0.01)

    def forward(self, x: Tensor, level: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        def pick(p: Tensor) -> Tensor:
            p = p.index_select(0, level)
            return p if dtype is None else p.detach().to("cpu", dtype)

        x = x * F.softplus(pick(self.h)) + pick(self.b)
        return x if self.a is None else x + torch.tanh(x) * torch.tanh(pick(self.a))


class LevelledDensity(TableEntropyModel):
    """z's factorized density: one learned CDF per (quality level, channel), DCVC-RT's ``BitEstimator``.

    ``CDF(x) = sigmoid(f4(f3(f2(f1(x)))))`` with the stages of :class:`DensityStage`, parameters
    ``f1..f4.{h, b, a}`` of shape (levels, C, 1, 1) (``f4`` has no ``a``): the official layout.
    ``z_hat = clamp(round(z), -128, 127)`` (no median: the density is not re-centred), so the
    likelihood of ``z_hat`` is ``CDF(z_hat + 0.5) - CDF(z_hat - 0.5)``. In training ``z + U(-0.5, 0.5)``
    stands for ``z_hat`` and the density learns from its likelihoods.

    Coding: ``update()`` builds one integer table per (level, channel) over the int8 range, each
    trimmed to the symbols outside ``tail_mass`` (values there take the escape path). Tables are a
    snapshot of the learned density, kept until ``update(force=True)``, like every bottleneck here.
    """

    def __init__(
        self, levels: int, channels: int, tail_mass: float = 1e-9, likelihood_bound: float = ESCAPE_LIKELIHOOD
    ) -> None:
        super().__init__()
        if levels < 1 or channels < 1:
            raise ValueError(f"need levels >= 1 and channels >= 1, got {levels=}, {channels=}")
        self.levels, self.channels = int(levels), int(channels)
        self.tail_mass = float(tail_mass)
        self.likelihood_bound = float(likelihood_bound)
        self.f1 = DensityStage(levels, channels)
        self.f2 = DensityStage(levels, channels)
        self.f3 = DensityStage(levels, channels)
        self.f4 = DensityStage(levels, channels, final=True)

    def logits(self, x: Tensor, level: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """Cumulative logits of x (B, C, ...) under each item's level (B,) long.

        With ``dtype`` the parameters are detached CPU copies in that dtype (for the tables, which
        must not depend on the device the model lives on).
        """
        for stage in (self.f1, self.f2, self.f3, self.f4):
            x = stage(x, level, dtype)
        return x

    def bin_likelihood(self, values: Tensor, level: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """``CDF(v + 0.5) - CDF(v - 0.5)``, computed on the side of the median where both sigmoids are
        small (a sign flip), so tail masses keep their relative precision."""
        if dtype is not None:
            values = values.to("cpu", dtype)
        lower = self.logits(values - 0.5, level, dtype)
        upper = self.logits(values + 0.5, level, dtype)
        sign = torch.where(lower + upper > 0, -1.0, 1.0).to(lower.dtype).detach()
        return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))

    def forward_level(self, z: Tensor, level: Tensor, quantizer: str) -> tuple[Tensor, Tensor]:
        """``(z_hat, likelihoods)`` of z (B, C, H, W), item ``b`` under the density of ``level[b]``.

        ``quantizer``: ``"noise"`` (training) or ``"dequantize"`` (``clamp(round(z))``, as coded).
        """
        if z.dim() != 4 or z.shape[1] != self.channels:
            raise ValueError(f"z must be (B, {self.channels}, H, W), got {tuple(z.shape)}")
        if quantizer not in ("noise", "dequantize"):
            raise ValueError(f"quantizer must be 'noise' or 'dequantize', got {quantizer!r}")
        with _full_precision(z):
            z = z.float()
            z_hat = quantize(z, "noise") if quantizer == "noise" else _clamped_round(z)
            likelihoods = self.bin_likelihood(z_hat, level.to(z.device))
            if self.likelihood_bound > 0:
                likelihoods = lower_bound(likelihoods, self.likelihood_bound)
        return z_hat, likelihoods

    # -- tables

    def update(self, force: bool = False) -> bool:
        """Build the integer tables of every (level, channel); False if built and not ``force``."""
        if self.tables_built and not force:
            return False
        with torch.no_grad():
            levels = torch.arange(self.levels)
            symbols = torch.arange(SYMBOL_MIN, SYMBOL_MAX + 1, dtype=torch.float64)
            edges = torch.cat([symbols - 0.5, symbols[-1:] + 0.5])
            grid = edges.view(1, 1, 1, -1).expand(self.levels, self.channels, 1, -1)
            logit = self.logits(grid, levels, torch.float64).reshape(self.levels * self.channels, -1)
            below, above = torch.sigmoid(logit), torch.sigmoid(-logit)  # mass under / over each edge
            half = self.tail_mass / 2
            count = len(symbols)
            # first symbol whose upper edge has more than half the tail mass below it; last likewise
            lo = (below[:, 1:] < half).sum(dim=1).clamp(max=count - 1)
            hi = torch.maximum(count - 1 - (above[:, :-1] < half).sum(dim=1), lo)
            lengths = hi - lo + 1
            entry = torch.arange(int(lengths.max()))[None, :]
            index = (lo[:, None] + entry).clamp(max=count - 1)
            centres = symbols[index]
            rows = torch.arange(self.levels * self.channels)
            pmf = self.bin_likelihood(
                centres.view(self.levels, self.channels, 1, -1), levels, torch.float64
            ).reshape(len(rows), -1)
            pmf = torch.where(entry < lengths[:, None], pmf, torch.zeros_like(pmf))
            tails = below[rows, lo] + above[rows, hi + 1]
        cdf, cdf_length = _cdf_tables(pmf.numpy(), lengths.numpy(), tails.numpy())
        self._set_tables(cdf, cdf_length, (lo + SYMBOL_MIN).numpy())
        return True

    # -- coding (batch 1): the frame's level only, with that level's rows

    def _rows(self, level: int, spatial: int) -> np.ndarray:
        if not 0 <= level < self.levels:
            raise EntropyCoderError(f"level {level} out of range [0, {self.levels})")
        first = level * self.channels
        return np.repeat(np.arange(first, first + self.channels, dtype=np.int64), spatial)

    def encode_level_into(self, encoder: AnsEncoder, z: Tensor, level: int) -> Tensor:
        """Code ``clamp(round(z))`` of z (1, C, H, W) with ``level``'s tables; returns that z_hat."""
        if z.dim() != 4 or z.shape[0] != 1 or z.shape[1] != self.channels:
            raise EntropyCoderError(f"z must be (1, {self.channels}, H, W), got {tuple(z.shape)}")
        z_hat = _clamped_round(z.detach().float())
        symbols = self._symbols(z_hat, None)  # also refuses NaN
        self._encode_into(
            encoder, symbols, self._rows(level, z.shape[2] * z.shape[3]), self.levels * self.channels
        )
        return z_hat

    def decode_level_from(self, decoder: AnsDecoder, size: tuple[int, int], level: int) -> Tensor:
        """z_hat (1, C, H, W) of the next block, equal to what :meth:`encode_level_into` returned."""
        h, w = (int(s) for s in size)
        symbols = self._decode_from(decoder, self._rows(level, h * w), self.levels * self.channels)
        values = torch.from_numpy(np.ascontiguousarray(symbols, dtype=np.int64))
        return values.view(1, self.channels, h, w).to(device=self.f1.h.device, dtype=torch.float32)


def context_masks(channels: int, height: int, width: int, steps: int, device: torch.device) -> list[Tensor]:
    """The spatial-context partition of a latent (1, C, H, W): one boolean mask per coding step.

    Two steps (P frames): a checkerboard; the first half of the channels starts on one colour and
    the second half on the other, so each step codes half of every channel group and every step
    sees decoded neighbours in both halves. Four steps (intra frames): the four positions of each
    2x2 block; the channels fall into four groups whose positions rotate from step to step (group
    ``g`` codes position ``g xor key`` with keys 0, 3, 2, 1), so each step mixes all positions.
    """
    if steps not in (2, 4) or channels % steps:
        raise ValueError(f"need 2 or 4 steps dividing the {channels} channels, got {steps}")
    rows = torch.arange(height, device=device)[:, None]
    cols = torch.arange(width, device=device)[None, :]
    if steps == 2:
        position, keys = (rows + cols) % 2, (0, 1)
    else:
        position, keys = 2 * (rows % 2) + cols % 2, (0, 3, 2, 1)
    group = torch.arange(channels, device=device) // (channels // steps)
    return [(position[None] == (group[:, None, None] ^ key))[None] for key in keys]


NextParams = Callable[[int, Tensor], tuple[Tensor, Tensor]]  # (step, y_hat so far) -> (scales, means)


class SpatialContextCoder(nn.Module):
    """Codes a latent in context steps; the parameters of step k see what steps 0..k-1 decoded.

    The same loop serves training and evaluation (:meth:`forward`: every step on the whole tensor,
    masked) and real coding (:meth:`code`: per step only the masked elements, through the shared
    ANS stream). :meth:`code` is THE loop both the encoder and the decoder run, with only the
    per-step call to the coder differing, so the parameters of every step are computed identically
    on both sides. Symbols are ``clamp(round(y - mean), -128, 127)`` and ``y_hat = symbol + mean``;
    with ``force_zero_thres`` set, elements whose scale is not above it are skipped (symbol 0, not
    written, 0 bits).
    """

    def __init__(
        self, scale_min: float, scale_max: float, num_scales: int, force_zero_thres: float | None = None
    ) -> None:
        super().__init__()
        self.scale_max = float(scale_max)
        self.force_zero_thres = None if force_zero_thres is None else float(force_zero_thres)
        self.gaussian = GaussianConditional(
            scale_min=scale_min,
            scale_max=scale_max,
            num_scales=num_scales,
            likelihood_bound=ESCAPE_LIKELIHOOD,
        )

    @classmethod
    def for_config(cls, config: DCVCRTConfig) -> SpatialContextCoder:
        """The coder with the scale table of ``config`` (intra and inter model share the numbers)."""
        return cls(config.scale_min, config.scale_max, config.num_scales, config.force_zero_thres)

    def _capped(self, params: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """Scales above the table's largest level are coded with that level; the likelihoods (the
        rate the training sees and the estimate logged beside the file size) cap them the same way.
        Below the smallest level the Gaussian model's own lower bound does the same."""
        scales, means = params
        return scales.clamp(max=self.scale_max), means

    def _coded(self, scales: Tensor) -> Tensor | None:
        """Where ``force_zero_thres`` lets an element be coded (None: everywhere)."""
        return None if self.force_zero_thres is None else scales > self.force_zero_thres

    def forward(
        self, y: Tensor, first: tuple[Tensor, Tensor], next_params: NextParams, masks: Sequence[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """``(y_hat, bits per item)``: noise for the likelihoods in training, rounding otherwise."""
        y_hat = torch.zeros_like(y, dtype=torch.float32)
        bits = y.new_zeros(y.shape[0], dtype=torch.float32)
        scales, means = self._capped(first)
        for step, mask in enumerate(masks):
            if step:
                scales, means = self._capped(next_params(step, y_hat))
            with _full_precision(y):
                y32, scales, means = y.float(), scales.float(), means.float()
                m = mask.to(y32.dtype)
                symbols = _clamped_round(y32 - means)
                if self.training:
                    likelihoods = self.gaussian.likelihood(quantize(y32, "noise"), scales, means)
                    values = y32 + ((symbols + means) - y32).detach()  # straight through
                else:
                    coded = self._coded(scales)
                    if coded is not None:
                        symbols = symbols * coded
                        m = m * coded
                    likelihoods = self.gaussian.likelihood(symbols, scales)
                    values = symbols + means
                y_hat = y_hat + values * mask
                bits = bits + likelihood_bits(likelihoods, m)
        return y_hat, bits

    def code(
        self,
        first: tuple[Tensor, Tensor],
        next_params: NextParams,
        masks: Sequence[Tensor],
        take: Callable[[Tensor, Tensor, Tensor], Tensor],
    ) -> Tensor:
        """Run the steps; ``take(where, scales, means)`` codes (or decodes) the symbols of the
        elements of ``where`` (this step's, less any force-zeroed ones) and returns them."""
        y_hat: Tensor | None = None
        scales, means = self._capped(first)
        for step, mask in enumerate(masks):
            if step:
                scales, means = self._capped(next_params(step, y_hat))
            # float32 from here on whatever precision the transforms ran in (fp16 / bf16 autocast):
            # the coder's table choice, the symbols and y_hat are decided in one precision
            scales, means = scales.float(), means.float()
            coded = self._coded(scales)
            where = mask if coded is None else mask & coded
            symbols = torch.zeros_like(means)
            if bool(where.any()):
                symbols = symbols.masked_scatter(where, take(where, scales[where], means[where]))
            part = (symbols + means) * mask
            y_hat = part if y_hat is None else y_hat + part
        assert y_hat is not None
        return y_hat

    def encode_into(
        self,
        encoder: AnsEncoder,
        y: Tensor,
        first: tuple[Tensor, Tensor],
        next_params: NextParams,
        masks: Sequence[Tensor],
    ) -> tuple[Tensor, Tensor]:
        """Code y (batch 1) step by step; returns ``(y_hat, estimated bits)`` of the coded symbols."""
        y = y.float()
        bits = y.new_zeros(1)

        def take(where: Tensor, scales: Tensor, means: Tensor) -> Tensor:
            nonlocal bits
            symbols = _clamped_round(y[where] - means)
            self.gaussian.encode_into(encoder, symbols, scales)
            bits = bits + likelihood_bits(self.gaussian.likelihood(symbols, scales)[None])
            return symbols

        return self.code(first, next_params, masks, take), bits

    def decode_from(
        self,
        decoder: AnsDecoder,
        first: tuple[Tensor, Tensor],
        next_params: NextParams,
        masks: Sequence[Tensor],
    ) -> Tensor:
        def take(where: Tensor, scales: Tensor, means: Tensor) -> Tensor:
            return self.gaussian.decode_from(decoder, scales)

        return self.code(first, next_params, masks, take)


# ---------------------------------------------------------------------------------------------------
# The intra model


class IntraModel(nn.Module):
    """DCVC-RT's intra codec (its ``DMCI``): pixel-unshuffle, 1/8 transforms, four-step context.

    ::

        x (3, H) ─unshuffle 8─► (192, H/8) ─block─► × q_enc[q] ─blocks─► conv3x3 s2 ─► y (N, H/16)
        y ─pad to 4─hyper_enc─► z (Z, H/64) ─clamp(round)─► z_hat ─hyper_dec─ prior fusion ─crop─► params
        params ─► (q_enc, q_dec: one spatial map each; scales, means)   y * q_enc coded in 4 steps
        y_hat * q_dec ─up─blocks─► × q_dec[q] ─block─► (192, H/8) ─shuffle 8─► x_hat (3, H)

    Step k >= 1 of the spatial context takes ``spatial_prior(adaptor_k([y_hat so far, context]))``
    with ``context`` a 1x1 reduction of the fused parameters. (Official names: see
    :mod:`nvc_train.convert.dcvc_rt`.)
    """

    def __init__(self, config: DCVCRTConfig) -> None:
        super().__init__()
        c, n, h = config.intra_channels, config.intra_latent_channels, config.intra_hyper_channels
        self.latent_channels = n
        self.enc_in = DepthConvBlock(SOURCE_CHANNELS, c)
        self.enc = nn.Sequential(
            *blocks(c, c, config.intra_encoder_blocks), nn.Conv2d(c, n, 3, stride=2, padding=1)
        )
        self.hyper_enc = hyper_encoder(n, h)
        self.hyper_dec = hyper_decoder(h, n)
        self.prior_fusion = nn.Sequential(
            *blocks(n, 2 * n, config.intra_fusion_blocks), nn.Conv2d(2 * n, 2 * n + 2, 1)
        )
        self.context_reduction = nn.Conv2d(2 * n + 2, n, 1)
        self.context_adaptors = nn.ModuleList(
            [DepthConvBlock(2 * n, 2 * n, force_adaptor=True) for _ in range(3)]
        )
        self.spatial_prior = nn.Sequential(
            *blocks(2 * n, 2 * n, config.intra_spatial_blocks), nn.Conv2d(2 * n, 2 * n, 1)
        )
        self.dec = nn.Sequential(UpBlock(n, c), *blocks(c, c, config.intra_decoder_blocks))
        self.dec_out = DepthConvBlock(c, SOURCE_CHANNELS)
        self.q_enc = level_vectors(config.num_q, c, 1.0 / config.gain_max, 1.0 / config.gain_min)
        self.q_dec = level_vectors(config.num_q, c, config.gain_max, config.gain_min)
        self.z_prior = LevelledDensity(config.num_q, h)
        self.context = SpatialContextCoder.for_config(config)

    # -- the parts both directions share

    def analysis(self, x: Tensor, q: Tensor) -> Tensor:
        return self.enc(self.enc_in(F.pixel_unshuffle(x, UNSHUFFLE)) * self.q_enc[q])

    def synthesis(self, y_hat: Tensor, q: Tensor) -> Tensor:
        return F.pixel_shuffle(self.dec_out(self.dec(y_hat) * self.q_dec[q]), UNSHUFFLE)

    def entropy_parameters(
        self, z_hat: Tensor, latent_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor], NextParams]:
        """``(q_enc, q_dec, (scales, means) of step 0, next_params)`` from z_hat alone."""
        h, w = latent_size
        params = self.prior_fusion(self.hyper_dec(z_hat))[:, :, :h, :w].contiguous()
        q_enc, q_dec = (torch.sigmoid(params[:, :2]) * 1.5 + 0.5).chunk(2, dim=1)
        scales, means = params[:, 2:].chunk(2, dim=1)
        context = self.context_reduction(params)

        def next_params(step: int, y_hat: Tensor) -> tuple[Tensor, Tensor]:
            adapted = self.context_adaptors[step - 1](torch.cat([y_hat, context], dim=1))
            step_scales, step_means = self.spatial_prior(adapted).chunk(2, dim=1)
            return step_scales, step_means

        return q_enc, q_dec, (scales, means), next_params

    def masks(self, size: tuple[int, int]) -> list[Tensor]:
        return context_masks(self.latent_channels, size[0], size[1], 4, self.q_enc.device)

    # -- training / evaluation

    def forward(self, x: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_hat, bits)`` of a batch of 4:4:4 frames."""
        y = self.analysis(x, q)
        size = (y.shape[-2], y.shape[-1])
        z_hat, z_likelihoods = self.z_prior.forward_level(
            self.hyper_enc(pad_for_hyper(y)), q, "noise" if self.training else "dequantize"
        )
        q_enc, q_dec, first, next_params = self.entropy_parameters(z_hat, size)
        y_s_hat, y_bits = self.context(y * q_enc, first, next_params, self.masks(size))
        return self.synthesis(y_s_hat * q_dec, q), likelihood_bits(z_likelihoods) + y_bits

    # -- real coding (batch 1)

    def compress(self, x: Tensor, q: int) -> tuple[bytes, Tensor, Tensor]:
        q_t = torch.tensor([q], device=x.device)
        y = self.analysis(x, q_t)
        size = (y.shape[-2], y.shape[-1])
        z = self.hyper_enc(pad_for_hyper(y))
        encoder = AnsEncoder()
        z_hat = self.z_prior.encode_level_into(encoder, z, q)
        _, z_likelihoods = self.z_prior.forward_level(z, q_t, "dequantize")
        q_enc, q_dec, first, next_params = self.entropy_parameters(z_hat, size)
        y_s_hat, y_bits = self.context.encode_into(encoder, y * q_enc, first, next_params, self.masks(size))
        return (
            encoder.to_bytes(),
            self.synthesis(y_s_hat * q_dec, q_t),
            likelihood_bits(z_likelihoods) + y_bits,
        )

    def decompress(self, stream: bytes, q: int, latent_size: tuple[int, int]) -> Tensor:
        q_t = torch.tensor([q], device=self.q_enc.device)
        decoder = AnsDecoder(stream)
        z_hat = self.z_prior.decode_level_from(decoder, hyper_size(latent_size), q)
        _, q_dec, first, next_params = self.entropy_parameters(z_hat, latent_size)
        y_s_hat = self.context.decode_from(decoder, first, next_params, self.masks(latent_size))
        decoder.finish()
        return self.synthesis(y_s_hat * q_dec, q_t)


# ---------------------------------------------------------------------------------------------------
# The inter model


@dataclass
class Reference:
    """What a decoded frame leaves for the next P frame.

    ``frame`` is the decoded 4:4:4 picture clamped to [0, 1]; ``feature`` the decoder's 1/8 feature
    (None after an intra frame, which leaves pixels only); ``position`` the frame's distance from the
    last intra frame (0 for the intra frame), which selects the next frame's quality offset and
    whether its reference feature is refreshed from the picture.
    """

    frame: Tensor  # (B, 3, H, W)
    feature: Tensor | None  # (B, channels, H/8, W/8)
    position: int

    def detach(self) -> Reference:
        """Cut the graph here (cascaded training that stops gradients between frames)."""
        feature = None if self.feature is None else self.feature.detach()
        return Reference(self.frame.detach(), feature, self.position)


class InterModel(nn.Module):
    """DCVC-RT's P-frame codec (its ``DMC``): implicit temporal context, two-step context.

    ::

        ref feature ─1x1 adaptor─┐  (after an intra frame or at a refresh:
        ref frame ─unshuffle 8─block adaptor─┘   the picture, not the feature)
                  └─► f ─2 blocks─► f1 ─× q_feature[l]─► ctx_t ─down─► temporal prior (2M, H/16)
                               f1 ─4 blocks─► ctx (C, H/8)
        x ─unshuffle─1x1─► [ , ctx] ─3 blocks─► × q_enc[l] ─conv3x3 s2─► y (M, H/16)
        y ─pad to 4─hyper_enc─► z ─clamp(round)─► z_hat ─hyper_dec─crop─┐
                                             temporal prior ───────────┴─ fusion ─► (step, scales, means)
        y / max(step, 0.5) coded in 2 checkerboard steps (step 1: spatial_prior([y_hat_0, fused params]))
        y_hat * max(step, 0.5) ─subpel up─► [ , ctx] ─3 blocks─1x1─► × q_dec[l] ─► feature (next reference)
        feature ─4 blocks (R)─► × q_recon[l] ─1x1─► (192, H/8) ─shuffle 8─► x_hat

    ``l`` is the frame's level: its q_index plus the hierarchical offset of its position.
    (Official names: see :mod:`nvc_train.convert.dcvc_rt`.)
    """

    def __init__(self, config: DCVCRTConfig) -> None:
        super().__init__()
        c, m, r, h = config.channels, config.latent_channels, config.recon_channels, config.hyper_channels
        levels = config.inter_levels
        self.latent_channels = m
        self.feature_adaptor_i = DepthConvBlock(SOURCE_CHANNELS, c)
        self.feature_adaptor_p = nn.Conv2d(c, c, 1)
        self.prior_feature = nn.Sequential(*blocks(c, c, config.prior_feature_blocks))
        self.context = nn.Sequential(*blocks(c, c, config.context_blocks))
        self.enc_in = nn.Conv2d(SOURCE_CHANNELS, c, 1)
        self.enc = nn.Sequential(*blocks(2 * c, c, config.encoder_blocks))
        self.enc_down = nn.Conv2d(c, m, 3, stride=2, padding=1)
        self.hyper_enc = hyper_encoder(m, h)
        self.hyper_dec = hyper_decoder(h, m)
        self.temporal_prior = DownBlock(c, 2 * m)
        self.prior_fusion = nn.Sequential(
            *blocks(3 * m, 3 * m, config.fusion_blocks), nn.Conv2d(3 * m, 3 * m, 1)
        )
        self.spatial_prior = nn.Sequential(
            *blocks(4 * m, 3 * m, config.spatial_blocks), nn.Conv2d(3 * m, 2 * m, 1)
        )
        self.dec_up = SubpelConv(m, c, 3)
        self.dec = nn.Sequential(*blocks(2 * c, c, config.decoder_blocks), nn.Conv2d(c, c, 1))
        self.recon = nn.Sequential(*blocks(c, r, config.recon_blocks))
        self.recon_head = nn.Conv2d(r, SOURCE_CHANNELS, 1)
        self.q_enc = level_vectors(levels, c, 1.0 / config.gain_max, 1.0 / config.gain_min)
        self.q_dec = level_vectors(levels, c, config.gain_max, config.gain_min)
        self.q_feature = level_vectors(levels, c, 1.0, 1.0)
        self.q_recon = level_vectors(levels, r, 1.0, 1.0)
        self.z_prior = LevelledDensity(levels, h)
        self.coder = SpatialContextCoder.for_config(config)

    # -- the parts both directions share

    def conditions(self, ref: Reference, refresh: bool, level: Tensor) -> tuple[Tensor, Tensor]:
        """``(ctx, ctx_t)`` from the reference: the context and the temporal-prior feature."""
        if ref.feature is None or refresh:
            feature = self.feature_adaptor_i(F.pixel_unshuffle(ref.frame, UNSHUFFLE))
        else:
            feature = self.feature_adaptor_p(ref.feature)
        f1 = self.prior_feature(feature)
        return self.context(f1), f1 * self.q_feature[level]

    def analysis(self, x: Tensor, ctx: Tensor, level: Tensor) -> Tensor:
        feature = self.enc_in(F.pixel_unshuffle(x, UNSHUFFLE))
        return self.enc_down(self.enc(torch.cat([feature, ctx], dim=1)) * self.q_enc[level])

    def synthesis(self, y_hat: Tensor, ctx: Tensor, level: Tensor) -> tuple[Tensor, Tensor]:
        """``(x_hat, feature)``: the picture and the decoder feature the next frame references."""
        feature = self.dec(torch.cat([self.dec_up(y_hat), ctx], dim=1)) * self.q_dec[level]
        x_hat = F.pixel_shuffle(self.recon_head(self.recon(feature) * self.q_recon[level]), UNSHUFFLE)
        return x_hat, feature

    def entropy_parameters(
        self, z_hat: Tensor, ctx_t: Tensor
    ) -> tuple[Tensor, tuple[Tensor, Tensor], NextParams]:
        """``(step, (scales, means) of step 0, next_params)`` from z_hat and the temporal prior.

        The hyper decoder's output is cropped to the temporal prior's size (y's) before the fusion.
        """
        temporal = self.temporal_prior(ctx_t)
        hierarchical = self.hyper_dec(z_hat)[:, :, : temporal.shape[-2], : temporal.shape[-1]].contiguous()
        params = self.prior_fusion(torch.cat([hierarchical, temporal], dim=1))
        step, scales, means = params.chunk(3, dim=1)

        def next_params(index: int, y_hat: Tensor) -> tuple[Tensor, Tensor]:
            step_scales, step_means = self.spatial_prior(torch.cat([y_hat, params], dim=1)).chunk(2, dim=1)
            return step_scales, step_means

        return torch.clamp_min(step, 0.5), (scales, means), next_params

    def masks(self, size: tuple[int, int]) -> list[Tensor]:
        return context_masks(self.latent_channels, size[0], size[1], 2, self.q_enc.device)

    # -- training / evaluation

    def forward(
        self, x: Tensor, level: Tensor, ref: Reference, refresh: bool
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(x_hat, feature, bits)`` of a batch of 4:4:4 frames."""
        ctx, ctx_t = self.conditions(ref, refresh, level)
        y = self.analysis(x, ctx, level)
        size = (y.shape[-2], y.shape[-1])
        z_hat, z_likelihoods = self.z_prior.forward_level(
            self.hyper_enc(pad_for_hyper(y)), level, "noise" if self.training else "dequantize"
        )
        step, first, next_params = self.entropy_parameters(z_hat, ctx_t)
        y_s_hat, y_bits = self.coder(y * torch.reciprocal(step), first, next_params, self.masks(size))
        return *self.synthesis(y_s_hat * step, ctx, level), likelihood_bits(z_likelihoods) + y_bits

    # -- real coding (batch 1)

    def compress(
        self, x: Tensor, level: int, ref: Reference, refresh: bool
    ) -> tuple[bytes, Tensor, Tensor, Tensor]:
        level_t = torch.tensor([level], device=x.device)
        ctx, ctx_t = self.conditions(ref, refresh, level_t)
        y = self.analysis(x, ctx, level_t)
        size = (y.shape[-2], y.shape[-1])
        z = self.hyper_enc(pad_for_hyper(y))
        encoder = AnsEncoder()
        z_hat = self.z_prior.encode_level_into(encoder, z, level)
        _, z_likelihoods = self.z_prior.forward_level(z, level_t, "dequantize")
        step, first, next_params = self.entropy_parameters(z_hat, ctx_t)
        y_s_hat, y_bits = self.coder.encode_into(
            encoder, y * torch.reciprocal(step), first, next_params, self.masks(size)
        )
        x_hat, feature = self.synthesis(y_s_hat * step, ctx, level_t)
        return encoder.to_bytes(), x_hat, feature, likelihood_bits(z_likelihoods) + y_bits

    def decompress(
        self, stream: bytes, level: int, latent_size: tuple[int, int], ref: Reference, refresh: bool
    ) -> tuple[Tensor, Tensor]:
        level_t = torch.tensor([level], device=ref.frame.device)
        ctx, ctx_t = self.conditions(ref, refresh, level_t)
        decoder = AnsDecoder(stream)
        z_hat = self.z_prior.decode_level_from(decoder, hyper_size(latent_size), level)
        step, first, next_params = self.entropy_parameters(z_hat, ctx_t)
        y_s_hat = self.coder.decode_from(decoder, first, next_params, self.masks(latent_size))
        decoder.finish()
        return self.synthesis(y_s_hat * step, ctx, level_t)


# ---------------------------------------------------------------------------------------------------
# The codec


@register_network
class DCVCRT(NeuralVideoCodec):
    """DCVC-RT: intra model + inter model behind the framework's 4:2:0 model API.

    ::

        (Y, UV) ─nearest-upsample UV─► x (3, H, W) 4:4:4
                  ref None ──► IntraModel(x, q) ──────────────────────────────► x_hat, bits
                  ref given ─► InterModel(x, q + offset[pos % 8], ref, refresh) ► x_hat, feature, bits
        (Y_hat, UV_hat) ◄─ 2x2 average-pool UV ─ x_hat
        Reference(clamp(x_hat, 0, 1), feature, pos) ─► next frame    (pos: frames since the intra frame)

    ``refresh`` is true when ``pos % refresh_interval == 1``: the reference feature is then rebuilt
    from the decoded picture, as after an intra frame (0 switches refreshes off). ``forward_frame``
    returns unclamped pictures; ``compress_frame`` / ``decompress_frame`` return them clamped,
    identical on both sides: the encoder rebuilds every latent from the symbols with the decoder's
    own functions (one context loop for both directions), so within one machine and PyTorch build
    the decoder reproduces the encoder's pictures bit for bit.

    ``complexity()`` reports ``params_m`` (everything), ``params_inter_m`` (the P-frame model: the
    figure DCVC-RT and the NVC review's Table 5 quote, 20.7 M) and ``params_intra_m``.

    Keyword arguments only: the fields of :class:`DCVCRTConfig` (``configs/model/dcvc_rt.yaml``).
    ``self.arch`` holds them typed, ``self.config`` as the plain dict a checkpoint carries.
    """

    pad_multiple = PAD_MULTIPLE

    def __init__(self, **numbers: Any) -> None:
        super().__init__()
        self.arch = DCVCRTConfig(**numbers)
        self.config = self.arch.as_dict()
        self.num_q = int(self.arch.num_q)
        self.qp_offsets = list(self.arch.qp_offsets)
        self.refresh_interval = int(self.arch.refresh_interval)
        self.intra = IntraModel(self.arch)
        self.inter = InterModel(self.arch)

    # Frame-type rules (the same on both sides: they depend on the reference state only)

    def position_rules(self, ref: Reference) -> tuple[int, int, bool]:
        """``(position, level offset, refresh)`` of the P frame coded against ``ref``."""
        position = ref.position + 1
        offset = self.qp_offsets[position % len(self.qp_offsets)]
        refresh = self.refresh_interval > 0 and position % self.refresh_interval == 1
        return position, offset, refresh

    # Training / evaluation path

    def forward_frame(
        self, y: Tensor, uv: Tensor, q_index: Tensor | int, ref: Reference | None
    ) -> FrameOutput:
        self.check_frame(y, uv)
        q = self.q_tensor(q_index, y.shape[0], y.device)
        x = self._to_444(y, uv)
        if ref is None:
            x_hat, bits = self.intra(x, q)
            return self._output(x_hat, None, 0, bits, clamp=False)
        self.check_reference(ref, Reference, x)
        position, offset, refresh = self.position_rules(ref)
        x_hat, feature, bits = self.inter(x, q + offset, ref, refresh)
        return self._output(x_hat, feature, position, bits, clamp=False)

    # Real coding

    def encode_frame(
        self, y: Tensor, uv: Tensor, q_index: int, ref: Reference | None
    ) -> tuple[bytes, FrameOutput]:
        x = self._to_444(y, uv)
        if ref is None:
            stream, x_hat, bits = self.intra.compress(x, q_index)
            return stream, self._output(x_hat, None, 0, bits, clamp=True)
        self.check_reference(ref, Reference, x)
        position, offset, refresh = self.position_rules(ref)
        stream, x_hat, feature, bits = self.inter.compress(x, q_index + offset, ref, refresh)
        return stream, self._output(x_hat, feature, position, bits, clamp=True)

    def decode_frame(
        self, stream: bytes, q_index: int, ref: Reference | None, height: int, width: int
    ) -> tuple[Tensor, Tensor, Reference]:
        latent_size = (height // 16, width // 16)
        if ref is None:
            x_hat = self.intra.decompress(stream, q_index, latent_size)
            out = self._output(x_hat, None, 0, torch.zeros(1), clamp=True)
        else:
            if not isinstance(ref, Reference) or tuple(ref.frame.shape[-2:]) != (height, width):
                shape = tuple(ref.frame.shape) if isinstance(ref, Reference) else type(ref).__name__
                raise ValueError(f"reference {shape} does not fit a {height}x{width} frame")
            position, offset, refresh = self.position_rules(ref)
            x_hat, feature = self.inter.decompress(stream, q_index + offset, latent_size, ref, refresh)
            out = self._output(x_hat, feature, position, torch.zeros(1), clamp=True)
        return out.y_hat, out.uv_hat, out.ref

    def update(self, force: bool = False) -> None:
        """Build every coder table; ``force`` also rebuilds the learned z densities' tables.

        The generic walk (:func:`models.base.update_entropy_tables`) rebuilds a table model it does
        not know as a bottleneck without ``force``; the z densities are learned, so they get it here.
        """
        for density in (self.intra.z_prior, self.inter.z_prior):
            density.update(force=force)
        update_entropy_tables(self, force=force)

    def complexity(self) -> dict[str, float]:
        return self.split_parameters(intra=[self.intra], inter=[self.inter])

    def compile_transforms(self, **options: Any) -> list[str]:
        """``torch.compile(**options)`` every transform the coding path calls; returns their names.

        The sub-networks (not ``compress`` / ``decompress`` themselves) are compiled: the context
        loop, the coder and the picture conversions stay eager Python between them, and each
        compiled piece sees one fixed shape per frame size (what CUDA graphs, ``mode=
        "reduce-overhead"``, need). The entropy models (z density, context coder) stay eager: their
        float32 arithmetic decides the symbols. Names are the official parts' (see the converter).
        """
        compiled: list[str] = []
        parts_to_compile: list[tuple[str, nn.Module]] = []
        for half_name, half in (("intra", self.intra), ("inter", self.inter)):
            for name, child in half.named_children():
                if isinstance(child, LevelledDensity | SpatialContextCoder):
                    continue
                parts = list(child.named_children()) if isinstance(child, nn.ModuleList) else [("", child)]
                for index, part in parts:
                    parts_to_compile.append((f"{half_name}.{name}" + (f".{index}" if index else ""), part))
        # Every compiled module enters dynamo through the same wrapper code, so each is a
        # "recompilation" of it: allow one per part (and its grad-mode variant), or dynamo would
        # fall back to eager after its default of 8.
        dynamo_config = torch._dynamo.config
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 4 * len(parts_to_compile))
        for name, part in parts_to_compile:
            part.compile(**options)
            compiled.append(name)
        return compiled

    # Helpers

    @staticmethod
    def _to_444(y: Tensor, uv: Tensor) -> Tensor:
        """4:2:0 planes -> (B, 3, H, W) with chroma repeated 2x2 (exactly undone by average pooling)."""
        return yuv420_to_444(y, uv[:, :1], uv[:, 1:2], mode="nearest")

    @staticmethod
    def _output(
        x_hat: Tensor, feature: Tensor | None, position: int, bits: Tensor, clamp: bool
    ) -> FrameOutput:
        x_hat = x_hat.float()  # float32 pictures whatever precision the synthesis ran in (autocast)
        frame = x_hat.clamp(0.0, 1.0)
        y_hat, u_hat, v_hat = yuv444_to_420(frame if clamp else x_hat, mode="avgpool")
        return FrameOutput(
            y_hat=y_hat,
            uv_hat=torch.cat([u_hat, v_hat], dim=1),
            bits=bits,
            ref=Reference(frame, feature, position),
        )


# ---------------------------------------------------------------------------------------------------
# Reference numbers. DCVC-RT (CVPR 2025) and the NVC review's Table 5: P-frame model 20.7 M
# parameters, 185.7 kMAC/px at 1920x1080. The parameter counts of the full variant are the official
# models' exactly (DMC 20,691,456, DMCI 45,651,314: counted on the official code, see
# tests/fixtures/official/README.md); MACs are measured on this code (nvc_train.complexity, MACs =
# FLOPs / 2, 1920x1080 padded to 1088, meta device): see tests/test_dcvc_rt.py, which checks the
# full variant against the published figures within 10% and the parameter counts here exactly.

PUBLISHED = {"params_inter_m": 20.7, "kmac_per_px_inter": 185.7}  # DCVC-RT P model, review Table 5
OFFICIAL_PARAMS = {"params_inter": 20_691_456, "params_intra": 45_651_314}  # microsoft/DCVC DMC, DMCI

REFERENCE: dict[str, dict[str, int]] = {
    "dcvc_rt": {"params": 66_342_770, "params_inter": 20_691_456, "params_intra": 45_651_314},
    "dcvc_rt_tiny": {"params": 610_514, "params_inter": 187_856, "params_intra": 422_658},
}  # fmt: skip
