"""Blocks shared by the codec networks: 4:2:0 packing, conv stages, rate gains, a hyperprior latent codec.

Each block exists here because more than one codec (or both the intra and the inter half of one
codec) needs it, and because the parts that touch the entropy coder must behave identically in the
encoder and the decoder, which is easiest to guarantee when there is exactly one copy of them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import LatentCodec, likelihood_bits, quantize_gaussian
from nvc_train.entropy import AnsDecoder, AnsEncoder, EntropyBottleneck, GaussianConditional

__all__ = [
    "HyperpriorLatentCodec",
    "RateGain",
    "ResBlock",
    "act",
    "analysis_transform",
    "conv3x3",
    "down",
    "pack_yuv420",
    "synthesis_transform",
    "unpack_yuv420",
    "up",
]


# ---------------------------------------------------------------------------------------------------
# 4:2:0 packing


def pack_yuv420(y: Tensor, uv: Tensor) -> Tensor:
    """(B,1,H,W) luma + (B,2,H/2,W/2) chroma -> (B,6,H/2,W/2): luma pixel-unshuffled by 2, then U, V.

    Every 2x2 luma block lands beside the chroma sample that covers it, so a 4:2:0 frame becomes one
    ordinary tensor at chroma resolution with no resampling: exact and invertible.
    """
    return torch.cat([F.pixel_unshuffle(y, 2), uv], dim=1)


def unpack_yuv420(x: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`pack_yuv420`: (B,6,H/2,W/2) -> ((B,1,H,W), (B,2,H/2,W/2))."""
    return F.pixel_shuffle(x[:, :4], 2), x[:, 4:6]


# ---------------------------------------------------------------------------------------------------
# Convolution stages


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1)


def act() -> nn.Module:
    """The one nonlinearity of these networks (LeakyReLU keeps gradients for negative latents)."""
    return nn.LeakyReLU(0.1, inplace=False)


class ResBlock(nn.Module):
    """conv3x3 - LeakyReLU - conv3x3, plus the input: depth without a harder optimisation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv3x3(channels, channels), act(), conv3x3(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def down(in_ch: int, out_ch: int) -> nn.Module:
    """Halve the resolution with a strided conv (learned, unlike pooling)."""
    return conv3x3(in_ch, out_ch, stride=2)


def up(in_ch: int, out_ch: int) -> nn.Module:
    """Double the resolution by sub-pixel convolution (conv to 4x channels, pixel shuffle).

    Used instead of transposed convolutions, whose uneven kernel overlap draws checkerboards.
    """
    return nn.Sequential(conv3x3(in_ch, out_ch * 4), nn.PixelShuffle(2))


def analysis_transform(in_ch: int, channels: int, out_ch: int, stages: int, num_res: int) -> nn.Sequential:
    """in_ch -> out_ch at 1/2**stages resolution: a stem, then per stage ``num_res`` ResBlocks, a stride 2."""
    layers: list[nn.Module] = [conv3x3(in_ch, channels)]
    for i in range(stages):
        layers += [ResBlock(channels) for _ in range(num_res)]
        layers.append(down(channels, out_ch if i == stages - 1 else channels))
    return nn.Sequential(*layers)


def synthesis_transform(in_ch: int, channels: int, stages: int, num_res: int) -> nn.Sequential:
    """in_ch -> ``channels`` features at 2**stages the resolution: per stage an upsampling and ResBlocks."""
    layers: list[nn.Module] = []
    for i in range(stages):
        layers.append(up(in_ch if i == 0 else channels, channels))
        layers += [ResBlock(channels) for _ in range(num_res)]
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------------------------------
# Variable rate


class RateGain(nn.Module):
    """Per-q_index, per-channel quantization step sizes: the variable-rate mechanism of one latent.

    The latent is divided by the step before rounding and multiplied by it after, so the step is
    the quantization step size per channel. Steps are stored as logarithms (always positive, and
    gradient steps act multiplicatively) and initialised log-spaced from ``q_max`` at q_index 0 to
    ``q_min`` at ``num_q - 1``: a higher q_index quantizes more finely and costs more bits, which
    holds from the first step of training, before anything is learned.
    """

    def __init__(self, num_q: int, channels: int, q_max: float, q_min: float) -> None:
        super().__init__()
        if num_q < 1:
            raise ValueError(f"num_q must be >= 1, got {num_q}")
        if not 0 < q_min <= q_max:
            raise ValueError(f"need 0 < q_min <= q_max, got q_min={q_min}, q_max={q_max}")
        steps = (
            torch.logspace(math.log10(q_max), math.log10(q_min), num_q)
            if num_q > 1
            else torch.tensor([q_max])
        )
        self.log_step = nn.Parameter(steps.log()[:, None].repeat(1, channels))

    @property
    def num_q(self) -> int:
        return self.log_step.shape[0]

    def forward(self, q_index: Tensor) -> Tensor:
        """Step sizes for a batch of rate points: (B,) long -> (B, C, 1, 1)."""
        return self.log_step[q_index].exp()[:, :, None, None]


# ---------------------------------------------------------------------------------------------------
# Hyperprior latent codec


class HyperpriorLatentCodec(LatentCodec):
    """Codes a latent ``y`` with a mean-scale hyperprior, optionally fused with a side prior.

    ::

        y ──h_a──► z ──Q──► EntropyBottleneck ──► z_hat ──h_s──┐
        │                                                       ├─ fuse ─► (mu, sigma)   [y units]
        │                           side (e.g. temporal prior) ─┘                │
        │                                                                        ▼ / step
        └── / step ──► y_s ──Q──► GaussianConditional(means=mu/step, scales=sigma/step) ──► y_s_hat
                                                                                       │ * step
                                                                                       ▼
                                                                                     y_hat

    ``step`` comes from :class:`RateGain` for the frame's q_index. The hyper analysis sees ``y``
    before the step is applied and the fused prior predicts ``mu`` and ``sigma`` in the units of
    ``y``; dividing both by the step gives the coder's parameters. So the step acts purely as a
    quantization step size on a distribution that does not depend on the rate point: a smaller
    step (higher q_index) can only cost more bits for ``y``, and ``z`` costs the same at every rate.

    :meth:`entropy_parameters` is the single function that turns what the decoder has (``z_hat``,
    the side prior, the step) into coder parameters; :meth:`compress` and :meth:`decompress` both
    call it, and :meth:`compress` decodes its own stream with the decoder's own code to obtain
    ``y_hat``, so the encoder's reconstruction is the decoder's by construction, not by
    floating-point luck.

    ``z`` and ``y`` share ONE entropy-coder stream (the ``z`` block first: the decoder needs
    ``z_hat`` before it can read ``y``), so a frame pays the coder's flush and word alignment once
    and needs no lengths between its parts.

    It keeps the :class:`models.base.LatentCodec` interface: every method returns a dict (``y_hat``
    always, ``bits`` per item when encoding, ``stream`` from compress).
    """

    def __init__(
        self,
        latent_channels: int,
        hyper_channels: int,
        z_channels: int,
        hyper_stages: int,
        num_q: int,
        q_max: float,
        q_min: float,
        side_channels: int = 0,
    ) -> None:
        super().__init__()
        m, h = latent_channels, hyper_channels
        self.hyper_stages = hyper_stages
        self.side_channels = side_channels
        ha: list[nn.Module] = [conv3x3(m, h), act()]
        for i in range(hyper_stages):
            ha += [down(h, z_channels if i == hyper_stages - 1 else h)]
            if i < hyper_stages - 1:
                ha.append(act())
        if hyper_stages == 0:
            ha.append(conv3x3(h, z_channels))
        self.h_a = nn.Sequential(*ha)
        hs: list[nn.Module] = []
        for i in range(hyper_stages):
            hs += [up(z_channels if i == 0 else h, h), act()]
        hs.append(conv3x3(h if hyper_stages else z_channels, m))
        self.h_s = nn.Sequential(*hs)
        # The fusion sees the hyperprior and the side prior side by side; 1x1 first keeps it cheap at
        # full latent width, one 3x3 gives it a little spatial context.
        fused = m + side_channels
        self.fuse = nn.Sequential(
            nn.Conv2d(fused, 2 * m, 1), act(), conv3x3(2 * m, 2 * m), act(), nn.Conv2d(2 * m, 2 * m, 1)
        )
        self.gain = RateGain(num_q, m, q_max, q_min)
        self.entropy_bottleneck = EntropyBottleneck(z_channels)
        self.gaussian_conditional = GaussianConditional()

    @property
    def downsampling(self) -> int:
        """Resolution ratio between ``y`` and ``z``."""
        return 2**self.hyper_stages

    def entropy_parameters(self, z_hat: Tensor, side: Tensor | None, step: Tensor) -> tuple[Tensor, Tensor]:
        """(scales, means) of the Gaussian for ``y / step``, from what encoder and decoder both have.

        ``sigma`` is made positive with softplus (smooth, and linear for large values, so the scale
        table's upper range stays reachable); the coder clamps it to its table range.
        """
        params = self.h_s(z_hat)
        if self.side_channels:
            if side is None:
                raise ValueError("this latent codec was built with a side prior; pass side features")
            params = torch.cat([params, side], dim=1)
        mu, sigma = self.fuse(params).chunk(2, dim=1)
        return F.softplus(sigma) / step, mu / step

    def forward(self, y: Tensor, q_index: Tensor, side: Tensor | None = None) -> dict[str, Tensor]:
        """Differentiable path: ``y_hat`` and estimated bits (``z`` and ``y``).

        In training the likelihoods see additive uniform noise (a smooth proxy of rounding) while
        ``y_hat`` is rounded with a straight-through gradient, so the synthesis learns on the values
        it will really decode; ``z_hat`` keeps the noise, as usual for hyper latents. In eval mode
        both are rounded and the bits are those of the symbols actually coded.
        """
        step = self.gain(q_index)
        z = self.h_a(y)
        z_hat, z_lik = self.entropy_bottleneck(z, quantizer="noise" if self.training else "dequantize")
        scales, means = self.entropy_parameters(z_hat, side, step)
        y_s_hat, y_lik = quantize_gaussian(self.gaussian_conditional, y / step, scales, means, self.training)
        return {"y_hat": y_s_hat * step, "bits": likelihood_bits(z_lik) + likelihood_bits(y_lik)}

    def encode_into(
        self, encoder: AnsEncoder, y: Tensor, q_index: int, side: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Write ``z`` then ``y`` (batch 1) into ``encoder``; ``bits`` are the estimate of those symbols."""
        step = self.gain(torch.tensor([q_index], device=y.device))
        z = self.h_a(y)
        # z_hat as the decoder will rebuild it (same symbols, same function): y's parameters need it
        # before the stream is finished, so it cannot be decoded from the stream yet.
        z_hat = self.entropy_bottleneck.encode_into(encoder, z)
        scales, means = self.entropy_parameters(z_hat, side, step)
        y_s = y / step
        y_s_hat = self.gaussian_conditional.encode_into(encoder, y_s, scales, means)
        # Estimated bits of the same symbols, logged beside the real size so the coding overhead shows.
        _, z_lik = self.entropy_bottleneck(z, quantizer="dequantize")
        _, y_lik = self.gaussian_conditional(y_s, scales, means=means, quantizer="dequantize")
        return {"y_hat": y_s_hat * step, "bits": likelihood_bits(z_lik) + likelihood_bits(y_lik)}

    def decode_from(
        self, decoder: AnsDecoder, q_index: int, latent_size: tuple[int, int], side: Tensor | None = None
    ) -> dict[str, Tensor]:
        """THE decoding, which :meth:`compress` runs too: z, its parameters, y of size ``latent_size``."""
        step = self.gain(torch.tensor([q_index], device=self.gain.log_step.device))
        z_size = (latent_size[0] // self.downsampling, latent_size[1] // self.downsampling)
        z_hat = self.entropy_bottleneck.decode_from(decoder, z_size)
        scales, means = self.entropy_parameters(z_hat, side, step)
        return {"y_hat": self.gaussian_conditional.decode_from(decoder, scales, means) * step}
