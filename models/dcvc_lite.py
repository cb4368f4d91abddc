"""dcvc_lite: a compact conditional P-frame codec in the style of DCVC, with its intra codec; YUV 4:2:0.

What it is: the ideas of DCVC (Li, Li, Lu, NeurIPS 2021) at a size that trains on a CPU: conditional
coding (the encoder and the decoder of a P frame see a context computed from the previous decoded
frame, instead of coding a residual), an entropy model that fuses a hyperprior with a temporal prior
from that context, and DCVC-DC-style variable rate (per-channel quantization steps chosen by a
q_index, one set for intra and one for inter). Frames are coded in YUV 4:2:0 directly by packing
the four luma phases beside the chroma planes.

What it is not: not DCVC, DCVC-TCM, DCVC-DC, DCVC-FM or DCVC-RT (DCVC-RT has its own faithful
module and config). There is no motion estimation or motion coding, no multi-scale context, no
spatial auto-regressive or checkerboard context in the entropy model, no per-frame-type adaptive
quality, and no published numbers to match: its sizes are chosen for a quick first codec of the
framework. Motion is handled only implicitly, by the receptive field of the conditional transforms.

The file reads top to bottom: the typed architecture numbers (their values:
``configs/model/dcvc_lite.yaml`` and ``dcvc_lite_tiny.yaml``), the model's blocks, the model, and
reference numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from models.base import CodecConfig, FrameOutput, NeuralVideoCodec
from models.blocks import (
    HyperpriorLatentCodec,
    ResBlock,
    act,
    analysis_transform,
    conv3x3,
    down,
    pack_yuv420,
    synthesis_transform,
    unpack_yuv420,
)
from models.registry import register_network

__all__ = ["DCVCLite", "DCVCLiteConfig", "InterCodec", "IntraCodec", "Reference"]

PACKED_CHANNELS = 6  # 4 luma phases + U + V at chroma resolution
LATENT_STAGES = 3  # packed (1/2 of luma) -> latent at 1/16 of luma


# ---------------------------------------------------------------------------------------------------
# Architecture numbers


@dataclass(frozen=True, kw_only=True)
class DCVCLiteConfig(CodecConfig):
    """The architecture numbers of :class:`DCVCLite`.

    Their values live in ``configs/model/dcvc_lite.yaml`` and ``dcvc_lite_tiny.yaml``.
    """

    channels: int  # transform width
    latent_channels: int  # y, at 1/16 of the luma resolution
    hyper_channels: int  # width of the hyper transforms
    z_channels: int  # hyper latent, 2**hyper_stages smaller than y
    ref_channels: int  # decoder features kept for the next frame
    num_res: int  # residual blocks per resolution stage
    hyper_stages: int  # stride-2 layers between y and z
    num_q: int  # rate points (q_index) in one model
    q_max: float  # initial quantization step at q_index 0 (lowest rate)
    q_min: float  # initial quantization step at q_index num_q - 1 (highest rate)

    @property
    def pad_multiple(self) -> int:
        """Latents at 1/16 of the luma resolution, hyper latents a further 2**hyper_stages smaller."""
        return 2 ** (LATENT_STAGES + 1 + self.hyper_stages)


def latent_codec(config: DCVCLiteConfig, side_channels: int = 0) -> HyperpriorLatentCodec:
    """The hyperprior latent codec of one half (intra: no side prior; inter: the temporal prior)."""
    return HyperpriorLatentCodec(
        latent_channels=config.latent_channels,
        hyper_channels=config.hyper_channels,
        z_channels=config.z_channels,
        hyper_stages=config.hyper_stages,
        num_q=config.num_q,
        q_max=config.q_max,
        q_min=config.q_min,
        side_channels=side_channels,
    )


# ---------------------------------------------------------------------------------------------------
# Blocks


@dataclass
class Reference:
    """What a decoded frame leaves for the next P frame; both at packed (chroma) resolution.

    ``frame`` is the packed reconstruction clamped to [0, 1] (the picture the decoder shows) and
    ``feature`` the decoder's last features, which carry more than the picture (as in DCVC-TCM's
    feature propagation) at ``ref_channels`` channels, small enough to keep between frames.
    """

    frame: Tensor  # (B, 6, H/2, W/2)
    feature: Tensor  # (B, ref_channels, H/2, W/2)

    def detach(self) -> Reference:
        """Cut the graph here (cascaded training that stops gradients between frames)."""
        return Reference(self.frame.detach(), self.feature.detach())


class _Reconstruction(nn.Module):
    """Decoder tail: features at packed resolution -> packed frame, and -> reference features."""

    def __init__(self, channels: int, ref_channels: int) -> None:
        super().__init__()
        self.frame = conv3x3(channels, PACKED_CHANNELS)
        self.feature = conv3x3(channels, ref_channels)

    def forward(self, feature: Tensor) -> tuple[Tensor, Tensor]:
        return self.frame(feature), self.feature(feature)


class IntraCodec(nn.Module):
    """The I-frame codec: a mean-scale hyperprior image codec on the packed frame.

    ::

        x (6, H/2) ─g_a─► y (M, H/16) ─► HyperpriorLatentCodec ─► y_hat ─g_s─► features (C, H/2)
                                                                              │
                                                       ┌──────────────────────┤
                                                       ▼                      ▼
                                                 x_hat (6, H/2)      ref feature (R, H/2)
    """

    def __init__(self, config: DCVCLiteConfig) -> None:
        super().__init__()
        c, m, num_res = config.channels, config.latent_channels, config.num_res
        self.g_a = analysis_transform(PACKED_CHANNELS, c, m, LATENT_STAGES, num_res)
        self.g_s = synthesis_transform(m, c, LATENT_STAGES, num_res)
        self.tail = _Reconstruction(c, config.ref_channels)
        self.latent = latent_codec(config)

    def forward(self, x: Tensor, q_index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        out = self.latent(self.g_a(x), q_index)
        return *self.tail(self.g_s(out["y_hat"])), out["bits"]

    def compress(self, x: Tensor, q_index: int) -> tuple[bytes, Tensor, Tensor, Tensor]:
        out = self.latent.compress(self.g_a(x), q_index)
        return out["stream"], *self.tail(self.g_s(out["y_hat"])), out["bits"]

    def decompress(self, stream: bytes, q_index: int, latent_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        out = self.latent.decompress(stream, q_index, latent_size)
        return self.tail(self.g_s(out["y_hat"]))


class InterCodec(nn.Module):
    """The P-frame codec: conditional coding on a context from the reference, with a temporal prior.

    ::

        ref (frame 6 + feature R, H/2) ─ctx─► context (C, H/2) ──┬─────────────┬──────────────┐
                                                                  │             │ temporal     │
        x (6, H/2) ──────────── concat ◄──────────────────────────┘             │ prior (3x s2)│
                                  │                                             ▼              │
                                  └─g_a─► y (M, H/16) ─► HyperpriorLatentCodec(side = prior)   │
                                                               │                               │
                                                               ▼ y_hat                         │
                                           g_s ─► features (C, H/2) ── concat ◄────────────────┘
                                                                         │ fuse (conv, ResBlock)
                                                                         ▼
                                                         x_hat (6, H/2), ref feature (R, H/2)

    The context and the temporal prior depend only on the reference, which the decoder has, so the
    same functions serve both directions.
    """

    def __init__(self, config: DCVCLiteConfig) -> None:
        super().__init__()
        c, m, num_res = config.channels, config.latent_channels, config.num_res
        self.context = nn.Sequential(
            conv3x3(PACKED_CHANNELS + config.ref_channels, c), *[ResBlock(c) for _ in range(max(num_res, 1))]
        )
        self.temporal_prior = nn.Sequential(down(c, c), act(), down(c, c), act(), down(c, m))
        self.g_a = analysis_transform(PACKED_CHANNELS + c, c, m, LATENT_STAGES, num_res)
        self.g_s = synthesis_transform(m, c, LATENT_STAGES, num_res)
        self.fuse = nn.Sequential(conv3x3(2 * c, c), ResBlock(c))
        self.tail = _Reconstruction(c, config.ref_channels)
        self.latent = latent_codec(config, side_channels=m)

    def conditions(self, ref: Reference) -> tuple[Tensor, Tensor]:
        """(context, temporal prior) from the reference: the part shared by encoder and decoder."""
        context = self.context(torch.cat([ref.frame, ref.feature], dim=1))
        return context, self.temporal_prior(context)

    def _synthesis(self, y_hat: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        return self.tail(self.fuse(torch.cat([self.g_s(y_hat), context], dim=1)))

    def forward(self, x: Tensor, q_index: Tensor, ref: Reference) -> tuple[Tensor, Tensor, Tensor]:
        context, prior = self.conditions(ref)
        out = self.latent(self.g_a(torch.cat([x, context], dim=1)), q_index, prior)
        return *self._synthesis(out["y_hat"], context), out["bits"]

    def compress(self, x: Tensor, q_index: int, ref: Reference) -> tuple[bytes, Tensor, Tensor, Tensor]:
        context, prior = self.conditions(ref)
        out = self.latent.compress(self.g_a(torch.cat([x, context], dim=1)), q_index, prior)
        return out["stream"], *self._synthesis(out["y_hat"], context), out["bits"]

    def decompress(
        self, stream: bytes, q_index: int, latent_size: tuple[int, int], ref: Reference
    ) -> tuple[Tensor, Tensor]:
        context, prior = self.conditions(ref)
        out = self.latent.decompress(stream, q_index, latent_size, prior)
        return self._synthesis(out["y_hat"], context)


# ---------------------------------------------------------------------------------------------------
# Model


@register_network
class DCVCLite(NeuralVideoCodec):
    """dcvc_lite: intra hyperprior codec + conditional P-frame codec, variable rate, YUV 4:2:0.

    ::

        (Y, UV) ─pack─► x (6, H/2, W/2)
                          │
              ref None ───┼──► IntraCodec ────────────┐
              ref given ──┴──► InterCodec(x, ref) ────┤──► x_hat, ref feature, bits
                                                      ▼
        (Y_hat, UV_hat) ◄─unpack─ x_hat      Reference(clamp(x_hat, 0, 1), ref feature) ─► next frame

    Latents are at 1/16 of the luma resolution and hyper latents a further ``2**hyper_stages``
    smaller, hence ``pad_multiple = 16 * 2**hyper_stages``. ``q_index`` picks a row of per-channel
    quantization steps (separate for intra and inter), log-spaced from ``q_max`` to ``q_min`` at
    initialisation and learned afterwards.

    ``forward_frame`` returns unclamped pictures (the distortion sees what the network made);
    ``compress_frame`` and ``decompress_frame`` return them clamped to [0, 1], identical on both sides.
    The reference always holds the clamped frame, so training and coding see the same kind of input.

    A frame's payload is one type tag byte (``I`` or ``P``) and the frame's single entropy-coder
    stream (``z``, then ``y``); the container carries its length.

    Determinism: the encoder decodes its own stream and both sides compute the entropy
    parameters with the same functions in eval mode, so within one process, and between processes
    on the same machine and PyTorch build, the decoder reproduces the encoder's pictures bit for bit.
    Across devices or builds, float convolutions may differ in the last bits and move a scale across
    a table boundary; making the entropy parameters device-independent is left to a later issue.

    Keyword arguments only: the fields of :class:`DCVCLiteConfig` (``configs/model/dcvc_lite.yaml``).
    ``self.arch`` holds them typed, ``self.config`` as the plain dict a checkpoint carries.
    """

    def __init__(self, **numbers: Any) -> None:
        super().__init__()
        self.arch = DCVCLiteConfig(**numbers)
        self.config = self.arch.as_dict()
        self.num_q = self.arch.num_q
        self.pad_multiple = self.arch.pad_multiple
        self.intra = IntraCodec(self.arch)
        self.inter = InterCodec(self.arch)

    # Training / evaluation path

    def forward_frame(
        self, y: Tensor, uv: Tensor, q_index: Tensor | int, ref: Reference | None
    ) -> FrameOutput:
        self.check_frame(y, uv)
        q = self.q_tensor(q_index, y.shape[0], y.device)
        x = pack_yuv420(y, uv)
        if ref is None:
            x_hat, feature, bits = self.intra(x, q)
        else:
            self.check_reference(ref, Reference, x)
            x_hat, feature, bits = self.inter(x, q, ref)
        return self._output(x_hat, feature, bits, clamp=False)

    # Real coding

    def encode_frame(
        self, y: Tensor, uv: Tensor, q_index: int, ref: Reference | None
    ) -> tuple[bytes, FrameOutput]:
        x = pack_yuv420(y, uv)
        if ref is None:
            stream, x_hat, feature, bits = self.intra.compress(x, q_index)
        else:
            self.check_reference(ref, Reference, x)
            stream, x_hat, feature, bits = self.inter.compress(x, q_index, ref)
        return stream, self._output(x_hat, feature, bits, clamp=True)

    def decode_frame(
        self, stream: bytes, q_index: int, ref: Reference | None, height: int, width: int
    ) -> tuple[Tensor, Tensor, Reference]:
        latent_size = (height // 16, width // 16)
        if ref is None:
            x_hat, feature = self.intra.decompress(stream, q_index, latent_size)
        else:
            if ref.frame.shape[-2:] != (height // 2, width // 2):
                raise ValueError(
                    f"reference is {tuple(ref.frame.shape[-2:])} packed; a {height}x{width} frame "
                    f"needs {(height // 2, width // 2)}"
                )
            x_hat, feature = self.inter.decompress(stream, q_index, latent_size, ref)
        out = self._output(x_hat, feature, torch.zeros(1), clamp=True)
        return out.y_hat, out.uv_hat, out.ref

    def complexity(self) -> dict[str, float]:
        return self.split_parameters(intra=[self.intra], inter=[self.inter])

    # Helpers

    @staticmethod
    def _output(x_hat: Tensor, feature: Tensor, bits: Tensor, clamp: bool) -> FrameOutput:
        frame = x_hat.clamp(0.0, 1.0)
        y_hat, uv_hat = unpack_yuv420(frame if clamp else x_hat)
        return FrameOutput(y_hat=y_hat, uv_hat=uv_hat, bits=bits, ref=Reference(frame, feature))


# ---------------------------------------------------------------------------------------------------
# Reference numbers. No paper to match: measured on this code (kMAC per luma pixel of one frame's
# forward_frame, torch.utils.flop_counter, 256x256). Tests check the parameter counts exactly, so a
# change to the architecture is a deliberate one that updates this table.

REFERENCE: dict[str, dict[str, float]] = {
    "dcvc_lite": {"params": 6_268_236, "params_intra": 2_866_790, "params_inter": 3_401_446,
                  "kmac_px_intra": 122.4, "kmac_px_inter": 214.1},
    "dcvc_lite_tiny": {"params": 516_940, "params_intra": 229_038, "params_inter": 287_902,
                       "kmac_px_intra": 10.3, "kmac_px_inter": 20.6},
}  # fmt: skip
