"""dcvc_dc: DCVC-DC (Li, Li and Lu, "Neural Video Compression with Diverse Contexts", CVPR 2023).

The published codec, intra (``IntraNoAR``) and inter (``DMC``) model, in this framework's model API,
with the official parameters: the same tensors under the same names and shapes (below ``intra.`` /
``inter.``), so the checkpoints ``cvpr2023_image_{psnr,ssim,yuv420_psnr}.pth.tar`` and
``cvpr2023_video_*.pth.tar`` load through ``python -m nvc_train.convert dcvc_dc``. The code is our
own; DCVC-FM (:mod:`models.dcvc_fm`) grew out of DCVC-DC, so the two share their building blocks,
motion alignment, context fusion, Laplace coder and coding loop, and this file holds what differs:

- **Rate**: four trained anchors per latent, as a per-channel basic vector times a scalar per
  anchor (``q_basic_enc`` (1, 128, 1, 1) x ``q_scale_enc`` (4, 1, 1, 1), and likewise for the
  decoder and the P model's motion and contextual coders); 64 levels log-interpolated between
  anchor 0 and anchor 3 in float64 (the official ``*_fine`` tables). q_index 0 is anchor 0 and 63
  anchor 3; the official 4-rate mode (``q_in_ckpt``) also uses anchors 1 and 2, which this model
  carries (they are official tensors) but does not code with.
- **Intra**: strided residual stages with gated depth-wise blocks, a hyperprior the width of y
  (256), and a fused prior ``[step | scales | means]``: ``y / max(step, 0.5)`` is coded in four 2x2
  steps (spatial context through 1x1 adaptors), Gaussian; a U-Net refinement with max-pooling.
- **Inter**: as DCVC-FM's, with a 4-level 7x7 SpyNet starting from zero flow at 1/16, plain-FFN
  blocks, convolutional hyper coders (no blocks), bottleneck residual units in the contextual
  coders, and the feature adaptor ``[0, 1, 0, 2][pos % 4]``; no refresh of the reference feature.
- **Colour**: one model per published file (RGB, YUV 4:2:0); here YCbCr 4:4:4 from 4:2:0 by
  nearest-neighbour upsampling (the ``yuv420_psnr`` checkpoints' input), as dcvc_fm.

Deliberate differences from the official code (symbol clamp to int8, scale-table index, one ANS
stream per frame, positions since the intra frame, training start): as :mod:`models.dcvc_fm`. The
training start has one more piece here: with zero biases an untrained prior predicts scale 0, the
coder's floor, where every non-zero symbol escapes the tables and the file outgrows the rate term
(measured, dcvc_dc_tiny with anchors 1/0.25 .. 1/0.03125, 320x256 intra frame at q_index 4: 2 %
over the estimate), so the scale channels of every prior head start at ``initial_scale`` (then
0.3 % over at q_index 0..7, I + 2 P, with those anchors and with the configured 1/0.25 .. 1/0.0625).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import CodecConfig, likelihood_bits
from models.dcvc_fm import (
    DCVCFM,
    Block,
    ContextualDecoder,
    ContextualEncoder,
    InterModel,
    IntraDecoder,
    MotionDecoder,
    MotionEncoder,
    ReconGeneration,
    StridedResidual,
    UNet,
    UpResidual,
    conv,
    crop_to,
    flow_warp,
    lrelu,
    masks_for,
    subpel,
    upsample2,
    zero_biases,
)
from models.dcvc_rt import LevelledDensity, NextParams, SpatialContextCoder, hyper_size, pad_for_hyper
from models.registry import register_network
from nvc_train.entropy import AnsDecoder, AnsEncoder

__all__ = ["DCVCDC", "DCVCDCConfig"]

ANCHORS = 4  # trained rate anchors per latent


@dataclass(frozen=True, kw_only=True)
class DCVCDCConfig(CodecConfig):
    """DCVC-DC's numbers (values: ``configs/model/dcvc_dc.yaml``, ``dcvc_dc_tiny.yaml``)."""

    intra_latent_channels: int  # N: y and z of the intra model
    intra_channels: tuple[int, int]  # widths at 1/2 (the rate vectors act here) and 1/4
    intra_out_channels: int
    unet_channels: tuple[int, int, int]
    unet_refine_blocks: int
    flow_channels: tuple[int, int, int, int]
    context_channels: tuple[int, int, int]
    latent_channels: int
    encoder_channels: int
    hyper_channels: int
    mv_channels: int
    mv_hyper_channels: int
    recon_channels: int
    offset_groups: int
    offsets_per_group: int
    max_offset: float
    spatial_blocks: int
    num_q: int
    adaptor_pattern: tuple[int, ...]
    gain_max: float  # initial anchors: the encoder's from 1 / gain_max (anchor 0) to 1 / gain_min (anchor 3)
    gain_min: float
    initial_scale: float  # every prior head's scale channels start here (our training start)
    intra_scale_min: float
    inter_scale_min: float
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
            object.__setattr__(self, key, tuple(int(v) for v in getattr(self, key)))
        if not self.adaptor_pattern or min(self.adaptor_pattern) < 0:
            raise ValueError(
                f"adaptor_pattern must be non-negative integers, got {list(self.adaptor_pattern)}"
            )
        if self.num_q < 2:
            raise ValueError(f"num_q must be >= 2, got {self.num_q}")
        for key in ("intra_latent_channels", "latent_channels", "mv_channels"):
            if getattr(self, key) % 4:
                raise ValueError(f"{key} must be a multiple of 4 (the four-step context)")

    @property
    def feature_adaptors(self) -> int:
        return max(self.adaptor_pattern) + 1

    @property
    def refresh_interval(self) -> int:
        """DCVC-DC never rebuilds the reference feature within an intra period."""
        return 0


def anchor_scales(first: float, last: float) -> nn.Parameter:
    """(4, 1, 1, 1) anchor scalars, log-spaced from ``first`` (anchor 0) to ``last`` (anchor 3)."""
    return nn.Parameter(torch.logspace(math.log10(first), math.log10(last), ANCHORS).view(ANCHORS, 1, 1, 1))


def fine_scales(anchors: Tensor, q: Tensor, num_q: int) -> Tensor:
    """(B,) rate scalars of ``q``: ``num_q`` values log-spaced from anchor 0 to anchor 3.

    Without gradients (coding, evaluation) the table is computed exactly as the official code does
    (numpy float32: ``exp(linspace(log a0, log a3, num_q))``), so the multipliers are bit-identical to
    the official ones; in training the same formula in torch carries the anchors' gradients (equal to
    the last bit or so). The meta device (complexity counting) takes the torch formula.
    """
    if (torch.is_grad_enabled() and anchors.requires_grad) or anchors.is_meta:
        low, high = torch.log(anchors[0].reshape(())), torch.log(anchors[ANCHORS - 1].reshape(()))
        exponent = q.to(anchors.dtype) * ((high - low) / (num_q - 1)) + low
        return torch.exp(torch.where(q >= num_q - 1, high, exponent))
    ends = anchors.detach().cpu().reshape(-1).numpy()
    table = np.exp(np.linspace(np.log(ends[0]), np.log(ends[ANCHORS - 1]), num_q))
    return torch.from_numpy(np.ascontiguousarray(table))[q.cpu()].to(anchors.device)


def rate_multiplier(basic: Tensor, anchors: Tensor, q: Tensor, num_q: int) -> Tensor:
    """``basic * fine[q]`` per item: (B, C, 1, 1) multipliers of a latent's features."""
    return basic * fine_scales(anchors, q, num_q).to(basic.dtype).view(-1, 1, 1, 1)


def conv_hyper_encoder(latent_ch: int, hyper_ch: int, short: bool) -> nn.Sequential:
    """DCVC-DC's convolutional hyper encoder: 3 convs (``short``, the contextual coder) or 5."""
    if short:
        return nn.Sequential(
            conv(latent_ch, hyper_ch),
            lrelu(),
            conv(hyper_ch, hyper_ch, 3, 2),
            lrelu(),
            conv(hyper_ch, hyper_ch, 3, 2),
        )
    return nn.Sequential(
        conv(latent_ch, hyper_ch), lrelu(), conv(hyper_ch, hyper_ch), lrelu(), conv(hyper_ch, hyper_ch, 3, 2),
        lrelu(), conv(hyper_ch, hyper_ch), lrelu(), conv(hyper_ch, hyper_ch, 3, 2),
    )  # fmt: skip


def conv_hyper_decoder(hyper_ch: int, latent_ch: int) -> nn.Sequential:
    """z_hat -> hyperprior features: 3x3, two 1x1 sub-pixel doublings, 3x3s between (leaky ReLUs)."""
    return nn.Sequential(
        conv(hyper_ch, latent_ch), lrelu(), subpel(latent_ch, latent_ch, 1), lrelu(),
        conv(latent_ch, latent_ch), lrelu(), subpel(latent_ch, latent_ch, 1), lrelu(),
        conv(latent_ch, latent_ch),
    )  # fmt: skip


class BottleneckResidual(nn.Module):
    """``x + lrelu(conv2(lrelu(conv1(lrelu(x)))))``, conv1 halving the width, slopes 0.1 (DC's ResBlock)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv(channels, channels // 2)
        self.conv2 = conv(channels // 2, channels)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x, 0.1)), 0.1))
        return x + F.leaky_relu(out, 0.1)


class FlowLevel7(nn.Module):
    """One level of DCVC-DC's SpyNet: five 7x7 convolutions with ReLUs."""

    def __init__(self, widths: tuple[int, int, int, int]) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths
        self.conv1 = conv(8, w1, 7)
        self.conv2 = conv(w1, w2, 7)
        self.conv3 = conv(w2, w3, 7)
        self.conv4 = conv(w3, w4, 7)
        self.conv5 = conv(w4, 2, 7)

    def forward(self, x: Tensor) -> Tensor:
        for layer in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = F.relu(layer(x))
        return self.conv5(x)


class SpyNet(nn.Module):
    """Four levels from 1/8 to 1; the flow starts as zeros at 1/16 (doubled before level 0)."""

    def __init__(self, widths: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.moduleBasic = nn.ModuleList([FlowLevel7(widths) for _ in range(4)])  # noqa: N815 (official name)

    def forward(self, frame: Tensor, ref: Tensor) -> Tensor:
        frames, refs = [frame], [ref]
        for _ in range(3):
            frames.append(F.avg_pool2d(frames[-1], 2))
            refs.append(F.avg_pool2d(refs[-1], 2))
        coarse = refs[3]
        flow = torch.zeros(
            frame.shape[0],
            2,
            coarse.shape[2] // 2,
            coarse.shape[3] // 2,
            dtype=frame.dtype,
            device=frame.device,
        )
        for level, net in enumerate(self.moduleBasic):
            up = upsample2(flow) * 2.0
            index = 3 - level
            flow = up + net(torch.cat([frames[index], flow_warp(refs[index], up), up], 1))
        return flow


class IntraEncoder(nn.Module):
    def __init__(self, n: int, widths: tuple[int, int]) -> None:
        super().__init__()
        c1, c2 = widths
        self.enc_1 = nn.Sequential(StridedResidual(3, c1), Block(c1, c1, 2))
        self.enc_2 = nn.Sequential(
            StridedResidual(c1, c2),
            Block(c2, c2, 2),
            StridedResidual(c2, n),
            Block(n, n, 2),
            conv(n, n, 3, 2),
        )

    def forward(self, x: Tensor, q_scale: Tensor) -> Tensor:
        return self.enc_2(self.enc_1(x) * q_scale)


def step_params(
    params: Tensor, adaptors: list[nn.Module], spatial: nn.Module
) -> tuple[Tensor, tuple[Tensor, Tensor], NextParams]:
    """``(max(step, 0.5), (scales, means) of step 1, next_params)`` of a prior ``[step | scales | means]``."""
    step, scales, means = params.chunk(3, dim=1)

    def next_params(index: int, y_hat: Tensor) -> tuple[Tensor, Tensor]:
        step_scales, step_means = spatial(adaptors[index - 1](torch.cat([y_hat, params], 1))).chunk(2, 1)
        return step_scales, step_means

    return torch.clamp_min(step, 0.5), (scales, means), next_params


class IntraModel(nn.Module):
    """DCVC-DC's intra codec (``IntraNoAR``)::

    x ─enc_1─► × q_basic_enc q_scale(q) ─enc_2─► y ─pad 4─hyper_enc─► z ─round─► z_hat
    z_hat ─hyper_dec─y_prior_fusion─crop─► [step | scales | means]; y / step coded in 4 steps
    y_hat * step ─dec_1─► × q_basic_dec q_scale(q) ─dec_2─refine─► x_hat
    """

    def __init__(self, config: DCVCDCConfig) -> None:
        super().__init__()
        n, c1 = config.intra_latent_channels, config.intra_channels[0]
        self.num_q, self.latent_channels = config.num_q, n
        self.enc = IntraEncoder(n, config.intra_channels)
        self.hyper_enc = nn.Sequential(Block(n, n, 2), conv(n, n, 3, 2), lrelu(), conv(n, n, 3, 2))
        self.hyper_dec = nn.Sequential(UpResidual(n, n), UpResidual(n, n), Block(n, n, 2))
        self.y_prior_fusion = nn.Sequential(Block(n, 2 * n, 2), Block(2 * n, 3 * n, 2))
        self.y_spatial_prior_adaptor_1 = conv(4 * n, 3 * n, 1)
        self.y_spatial_prior_adaptor_2 = conv(4 * n, 3 * n, 1)
        self.y_spatial_prior_adaptor_3 = conv(4 * n, 3 * n, 1)
        self.y_spatial_prior = nn.Sequential(
            Block(3 * n, 3 * n, 2), Block(3 * n, 2 * n, 2), Block(2 * n, 2 * n, 2)
        )
        self.dec = IntraDecoder(n, config.intra_channels, config.intra_out_channels, kind=2)
        out = config.intra_out_channels
        self.refine = nn.Sequential(
            UNet(out, out, config.unet_channels, config.unet_refine_blocks, pooled=True, kind=2), conv(out, 3)
        )
        self.q_basic_enc = nn.Parameter(torch.ones(1, c1, 1, 1))
        self.q_scale_enc = anchor_scales(1.0 / config.gain_max, 1.0 / config.gain_min)
        self.q_basic_dec = nn.Parameter(torch.ones(1, c1, 1, 1))
        self.q_scale_dec = anchor_scales(config.gain_max, config.gain_min)
        self.bit_estimator_z = LevelledDensity(1, n)
        self.coder = SpatialContextCoder(config.intra_scale_min, config.scale_max, config.num_scales)
        zero_biases(self)
        # With zero biases an untrained prior predicts scale 0 (z_hat = 0 at the start), the coder's
        # floor 0.11, where every non-zero symbol escapes the tables and costs more than the rate
        # term says; the scale channels of the two heads start at ``initial_scale`` instead (measured,
        # dcvc_dc_tiny, anchors 1/0.25 .. 1/0.03125, 320x256 intra frame at q_index 4: file 0.4 % over
        # the estimate, 2 % from scale 0).
        with torch.no_grad():
            self.y_prior_fusion[-1].block[0].adaptor.bias[n : 2 * n] = config.initial_scale
            self.y_spatial_prior[1].block[0].adaptor.bias[:n] = config.initial_scale

    def rates(self, q: Tensor) -> tuple[Tensor, Tensor]:
        return (
            rate_multiplier(self.q_basic_enc, self.q_scale_enc, q, self.num_q),
            rate_multiplier(self.q_basic_dec, self.q_scale_dec, q, self.num_q),
        )

    def entropy_parameters(
        self, z_hat: Tensor, size: tuple[int, int]
    ) -> tuple[Tensor, tuple[Tensor, Tensor], NextParams]:
        params = crop_to(self.y_prior_fusion(self.hyper_dec(z_hat)), size)
        adaptors = [
            self.y_spatial_prior_adaptor_1,
            self.y_spatial_prior_adaptor_2,
            self.y_spatial_prior_adaptor_3,
        ]
        return step_params(params, adaptors, self.y_spatial_prior)

    def code(self, x: Tensor, q: Tensor, encoder: AnsEncoder | None) -> tuple[Tensor, Tensor]:
        """``(x_hat, bits)``; with ``encoder`` the latents are coded into it (batch 1)."""
        q_enc, q_dec = self.rates(q)
        y = self.enc(x, q_enc)
        size = (y.shape[-2], y.shape[-1])
        z = self.hyper_enc(pad_for_hyper(y))
        level = torch.zeros_like(q)
        masks = masks_for(self.latent_channels, size, y.device)
        if encoder is None:
            z_hat, z_likelihoods = self.bit_estimator_z.forward_level(
                z, level, "noise" if self.training else "dequantize"
            )
            step, first, next_params = self.entropy_parameters(z_hat, size)
            y_s_hat, y_bits = self.coder(y / step, first, next_params, masks)
        else:
            z_hat = self.bit_estimator_z.encode_level_into(encoder, z, 0)
            _, z_likelihoods = self.bit_estimator_z.forward_level(z, level, "dequantize")
            step, first, next_params = self.entropy_parameters(z_hat, size)
            y_s_hat, y_bits = self.coder.encode_into(encoder, y / step, first, next_params, masks)
        return self.refine(self.dec(y_s_hat * step, q_dec)), likelihood_bits(z_likelihoods) + y_bits

    def forward(self, x: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
        return self.code(x, q, None)

    def compress(self, x: Tensor, q: int) -> tuple[bytes, Tensor, Tensor]:
        encoder = AnsEncoder()
        x_hat, bits = self.code(x, torch.tensor([q], device=x.device), encoder)
        return encoder.to_bytes(), x_hat, bits

    def decompress(self, stream: bytes, q: int, size: tuple[int, int]) -> Tensor:
        device = self.q_basic_enc.device
        _, q_dec = self.rates(torch.tensor([q], device=device))
        decoder = AnsDecoder(stream)
        z_hat = self.bit_estimator_z.decode_level_from(decoder, hyper_size(size), 0)
        step, first, next_params = self.entropy_parameters(z_hat, size)
        y_s_hat = self.coder.decode_from(
            decoder, first, next_params, masks_for(self.latent_channels, size, device)
        )
        decoder.finish()
        return self.refine(self.dec(y_s_hat * step, q_dec))


class DCInterModel(InterModel):
    """DCVC-DC's P-frame codec (``DMC``): DCVC-FM's inter model with DC's parts swapped in.

    The same data flow and coding loop (:meth:`InterModel.run`, :meth:`InterModel.decode`); what
    differs is built here: the 7x7 SpyNet, plain-FFN blocks, convolutional hyper coders, bottleneck
    residual units in the contextual coders, the U-Nets of plain blocks, and the anchor rates.
    """

    def __init__(self, config: DCVCDCConfig) -> None:
        super().__init__(config)  # type: ignore[arg-type]  (the fields InterModel reads are DC's too)
        c = config
        mv, m = c.mv_channels, c.latent_channels
        self.optic_flow = SpyNet(c.flow_channels)
        self.mv_encoder = MotionEncoder(mv, kind=1)
        self.mv_hyper_prior_encoder = conv_hyper_encoder(mv, c.mv_hyper_channels, short=False)
        self.mv_hyper_prior_decoder = conv_hyper_decoder(c.mv_hyper_channels, mv)
        self.mv_decoder = MotionDecoder(mv, kind=1)
        self.contextual_encoder = ContextualEncoder(
            c.context_channels, c.encoder_channels, m, BottleneckResidual
        )
        self.contextual_hyper_prior_encoder = conv_hyper_encoder(m, c.hyper_channels, short=True)
        self.contextual_hyper_prior_decoder = conv_hyper_decoder(c.hyper_channels, m)
        self.contextual_decoder = ContextualDecoder(
            c.context_channels, c.encoder_channels, m, c.recon_channels, BottleneckResidual
        )
        self.recon_generation_net = ReconGeneration(
            c.context_channels[0], c.recon_channels, c.unet_channels, c.unet_refine_blocks, kind=1
        )
        for name in ("mv_y_q_enc", "mv_y_q_dec", "y_q_enc", "y_q_dec"):
            delattr(self, name)  # DCVC-FM's rate pairs; DC has anchors
        c2 = c.context_channels[1]
        self.mv_y_q_basic_enc = nn.Parameter(torch.ones(1, mv, 1, 1))
        self.mv_y_q_scale_enc = anchor_scales(1.0 / c.gain_max, 1.0 / c.gain_min)
        self.mv_y_q_basic_dec = nn.Parameter(torch.ones(1, mv, 1, 1))
        self.mv_y_q_scale_dec = anchor_scales(c.gain_max, c.gain_min)
        self.y_q_basic_enc = nn.Parameter(torch.ones(1, 2 * c2, 1, 1))
        self.y_q_scale_enc = anchor_scales(1.0 / c.gain_max, 1.0 / c.gain_min)
        self.y_q_basic_dec = nn.Parameter(torch.ones(1, c2, 1, 1))
        self.y_q_scale_dec = anchor_scales(c.gain_max, c.gain_min)
        zero_biases(self)
        # As the intra model's: the scale channels of both latents' fused and spatial priors start at
        # ``initial_scale`` (on top of the residual path), not at the coder's floor.
        with torch.no_grad():
            for prefix, width in (("", m), ("mv_", mv)):
                fused = getattr(self, f"{prefix}y_prior_fusion")[-1].block[0].conv2.bias
                fused[width : 2 * width] = c.initial_scale
                getattr(self, f"{prefix}y_spatial_prior")[-1].block[0].adaptor.bias[:width] = c.initial_scale

    def rates(self, q: Tensor) -> dict[str, Tensor]:
        return {
            name: rate_multiplier(
                getattr(self, f"{prefix}_basic_{end}"), getattr(self, f"{prefix}_scale_{end}"), q, self.num_q
            )
            for name, prefix, end in (
                ("mv_y_q_enc", "mv_y_q", "enc"),
                ("mv_y_q_dec", "mv_y_q", "dec"),
                ("y_q_enc", "y_q", "enc"),
                ("y_q_dec", "y_q", "dec"),
            )
        }

    @staticmethod
    def to_step_units(y: Tensor, step: Tensor) -> Tensor:
        """``y / step``, as the official DC code divides."""
        return y / step


@register_network
class DCVCDC(DCVCFM):
    """DCVC-DC behind the framework's 4:2:0 model API (the codec logic is DCVC-FM's, :class:`DCVCFM`).

    ``complexity()`` reports the P model (``params_inter_m``: DCVC-DC's 19.8 M) beside the intra model.
    """

    def __init__(self, **numbers: Any) -> None:
        nn.Module.__init__(self)
        self.arch = DCVCDCConfig(**numbers)  # type: ignore[assignment]
        self.config = self.arch.as_dict()
        self.num_q = int(self.arch.num_q)
        self.intra = IntraModel(self.arch)  # type: ignore[assignment]
        self.inter = DCInterModel(self.arch)


PUBLISHED = {"params_inter_m": 19.8}  # DCVC-DC P model (DCVC-RT's complexity table)
OFFICIAL_PARAMS = {"params_intra": 30_998_187, "params_inter": 19_778_563}  # IntraNoAR(), DMC()
OFFICIAL_KMAC_PER_PX = {"I": 553.2, "P": 1345.5}  # issue 15, counted on the official code at 1080p

REFERENCE: dict[str, dict[str, int]] = {
    "dcvc_dc": {"params": 50_776_750, "params_inter": 19_778_563, "params_intra": 30_998_187},
    "dcvc_dc_tiny": {"params": 549_098, "params_inter": 412_363, "params_intra": 136_735},
}  # fmt: skip
