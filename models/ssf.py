"""ssf: Scale-Space Flow (Agustsson et al., CVPR 2020), the residual-coding baseline; YUV 4:2:0 in and out.

What it is: the classic motion-compensated *residual* codec, so that conditional coding (dcvc_lite,
dcvc_rt) can be compared with it in one framework. Per P frame:

1. a flow autoencoder codes a **scale-space flow** field (flow x, flow y, scale) from the current
   frame and the previous reconstruction;
2. the previous reconstruction is warped by it: a Gaussian scale-space volume of the reference
   (the picture and ``num_levels`` blurred copies, sigma0 * 2**k) is sampled trilinearly at
   (x + flow x, y + flow y, scale), so where motion cannot be predicted the network asks for a
   blurred prediction instead of a wrong sharp one;
3. a residual autoencoder codes ``x - warped``; its decoder also sees the flow latent, and the
   reconstruction is ``warped + decoded residual``.

Intra frames use a mean-scale hyperprior image codec. All three autoencoders have the paper's
shape: four 5x5 stride-2 convolutions (128 channels, ReLU between) down to a 192-channel latent at
1/16, transposed convolutions back up, and a hyperprior of three 5x5 stride-2 convolutions (192
channels) to a 192-channel hyper latent at 1/128 with separate mean and scale hyper decoders. The
paper's numbers: 5 scale-space levels, sigma0 = 1.5.

Adapted to this framework (not in the paper): frames are 4:2:0; the networks see a 3-channel 4:4:4
tensor at luma resolution (chroma repeated 2x2, nearest neighbour) and their output's chroma is
2x2-averaged back, as DCVC-RT handles 4:2:0. The reference is the decoded 4:2:0 picture brought back
to 4:4:4 the same way. Variable rate, as in dcvc_lite: one model, ``q_index`` picks per-channel
quantization steps (:class:`models.blocks.RateGain`) for each of the three latents. Real coding
runs the entropy parameters through :func:`nvc_train.entropy.coding_parameters` (float64, CPU); the
parameters of every latent depend only on its own hyper latent, so the decoder's probabilities are
a function of the decoded symbols alone.

The file reads top to bottom: the typed architecture numbers (their values: ``configs/model/ssf.yaml``
and ``ssf_tiny.yaml``), the model's blocks (transforms, hyperprior, scale space), the model, and
reference numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.base import (
    CodecConfig,
    FrameOutput,
    LatentCodec,
    NeuralVideoCodec,
    likelihood_bits,
    quantize_gaussian,
)
from models.blocks import RateGain
from models.registry import register_network
from nvc_train.entropy import (
    AnsDecoder,
    AnsEncoder,
    EntropyBottleneck,
    GaussianConditional,
    coding_parameters,
)

__all__ = [
    "Reference",
    "ScaleSpaceFlow",
    "ScaleSpaceFlowConfig",
    "ScaleSpaceHyperprior",
    "ScaleSpaceWarp",
    "to_420",
    "to_444",
]

COLOUR_CHANNELS = 3  # Y, U, V at luma resolution inside the networks
FLOW_CHANNELS = 3  # flow x, flow y (luma pixels), scale (scale-space level)


# ---------------------------------------------------------------------------------------------------
# Architecture numbers


@dataclass(frozen=True, kw_only=True)
class ScaleSpaceFlowConfig(CodecConfig):
    """The architecture numbers of :class:`ScaleSpaceFlow`.

    Their values live in ``configs/model/ssf.yaml`` (the paper's) and ``ssf_tiny.yaml``.
    """

    channels: int  # transform width of the three autoencoders
    latent_channels: int  # y (intra, flow, residual), at 1/2**stages of the luma resolution
    hyper_channels: int  # z, a further 2**hyper_stages smaller
    stages: int  # stride-2 layers of each autoencoder
    hyper_stages: int  # stride-2 layers of each hyper analysis
    kernel_size: int  # of every (transposed) convolution
    num_levels: int  # blurred levels of the scale-space volume (level 0 is the picture itself)
    sigma0: float  # blur of level 1; level k has sigma0 * 2**(k-1)
    num_q: int  # rate points (q_index) in one model
    q_max: float  # initial quantization step at q_index 0 (lowest rate)
    q_min: float  # initial quantization step at q_index num_q - 1 (highest rate)

    @property
    def pad_multiple(self) -> int:
        """Latents at 1/2**stages, hyper latents a further 2**hyper_stages smaller."""
        return 2 ** (self.stages + self.hyper_stages)


# ---------------------------------------------------------------------------------------------------
# Blocks: 4:2:0 <-> 4:4:4


def to_444(y: Tensor, uv: Tensor) -> Tensor:
    """(B,1,H,W) + (B,2,H/2,W/2) -> (B,3,H,W), chroma repeated 2x2: exact, and :func:`to_420` inverts it."""
    return torch.cat([y, F.interpolate(uv, scale_factor=2, mode="nearest")], dim=1)


def to_420(x: Tensor) -> tuple[Tensor, Tensor]:
    """(B,3,H,W) -> luma and 2x2-averaged chroma: the 4:2:0 picture a 4:4:4 network output stands for."""
    return x[:, :1], F.avg_pool2d(x[:, 1:], 2)


# ---------------------------------------------------------------------------------------------------
# Blocks: transforms


def analysis(in_ch: int, channels: int, out_ch: int, stages: int, kernel: int) -> nn.Sequential:
    """``stages`` stride-2 convolutions, ReLU between (none after the last: the latent is signed)."""
    layers: list[nn.Module] = []
    for i in range(stages):
        layers.append(
            nn.Conv2d(
                in_ch if i == 0 else channels, out_ch if i == stages - 1 else channels, kernel, 2, kernel // 2
            )
        )
        if i < stages - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def synthesis(in_ch: int, channels: int, out_ch: int, stages: int, kernel: int) -> nn.Sequential:
    """``stages`` stride-2 transposed convolutions (exact 2x upsampling), ReLU between."""
    layers: list[nn.Module] = []
    for i in range(stages):
        c_in, c_out = in_ch if i == 0 else channels, out_ch if i == stages - 1 else channels
        layers.append(nn.ConvTranspose2d(c_in, c_out, kernel, 2, kernel // 2, output_padding=1))
        if i < stages - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class _ParameterHead(nn.Module):
    """``z_hat, q_index -> (scales, means)`` of ``y / step``: the whole entropy-parameter path of one latent.

    One module, so that real coding can run all of it (hyper decoders, softplus, the step size) in
    float64 through :func:`nvc_train.entropy.coding_parameters`, and training runs the same module
    in float32 with gradients.
    """

    def __init__(self, latent: int, hyper: int, stages: int, kernel: int, gain: RateGain) -> None:
        super().__init__()
        self.h_mean = synthesis(hyper, hyper, latent, stages, kernel)
        self.h_scale = synthesis(hyper, hyper, latent, stages, kernel)
        self.gain = gain

    def forward(self, z_hat: Tensor, q_index: Tensor) -> tuple[Tensor, Tensor]:
        # softplus keeps scales positive with a gradient everywhere (a final ReLU would kill it).
        step = self.gain(q_index)
        return F.softplus(self.h_scale(z_hat)) / step, self.h_mean(z_hat) / step


class ScaleSpaceHyperprior(LatentCodec):
    """Mean-scale hyperprior of one latent, with a per-q_index quantization step; SSF's shape.

    ::

        y ──h_a──► z ──Q──► EntropyBottleneck ──► z_hat ──(h_mean, h_scale, step)──► (mu, sigma) / step
        └── / step ──► y_s ──Q──► GaussianConditional(mu / step, sigma / step) ──► y_s_hat ──* step──► y_hat

    The hyper analysis sees ``y`` before the step and the hyper decoders predict ``y``'s
    distribution, so the step is purely a quantization step size: a smaller step (higher q_index)
    can only cost more bits for ``y``. Coding writes ``z`` then ``y`` into the frame's one
    :class:`AnsEncoder` stream; :meth:`encode_into` and :meth:`decode_from` compute the parameters
    with one function (:meth:`coding_parameters`) and rebuild ``y_hat`` with one function, so the
    encoder's ``y_hat`` is the decoder's. It keeps the :class:`models.base.LatentCodec` interface
    (every method returns a dict); it has no side prior, so ``side`` must stay None.
    """

    def __init__(self, config: ScaleSpaceFlowConfig) -> None:
        super().__init__()
        latent, hyper, kernel = config.latent_channels, config.hyper_channels, config.kernel_size
        self.stages = config.hyper_stages
        self.h_a = analysis(latent, hyper, hyper, self.stages, kernel)
        gain = RateGain(config.num_q, latent, config.q_max, config.q_min)
        self.params = _ParameterHead(latent, hyper, self.stages, kernel, gain)
        self.entropy_bottleneck = EntropyBottleneck(hyper)
        self.gaussian_conditional = GaussianConditional()

    @property
    def downsampling(self) -> int:
        return 2**self.stages

    @staticmethod
    def _no_side(side: Tensor | None) -> None:
        if side is not None:
            raise ValueError("ScaleSpaceHyperprior has no side prior; pass side=None")

    def forward(self, y: Tensor, q_index: Tensor, side: Tensor | None = None) -> dict[str, Tensor]:
        """``y_hat`` and ``bits``: noise for the likelihoods and straight-through rounding in training."""
        self._no_side(side)
        z = self.h_a(y)
        z_hat, z_lik = self.entropy_bottleneck(z, quantizer="noise" if self.training else "dequantize")
        scales, means = self.params(z_hat, q_index)
        step = self.params.gain(q_index)
        y_s_hat, y_lik = quantize_gaussian(self.gaussian_conditional, y / step, scales, means, self.training)
        return {"y_hat": y_s_hat * step, "bits": likelihood_bits(z_lik) + likelihood_bits(y_lik)}

    def coding_parameters(self, z_hat: Tensor, q_index: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(scales, means, step)`` for real coding: THE function both directions call (float64 path)."""
        q = torch.tensor([q_index], device=z_hat.device)
        scales, means = coding_parameters(self.params, z_hat, q)
        return scales, means, self.params.gain(q)

    def encode_into(
        self, encoder: AnsEncoder, y: Tensor, q_index: int, side: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Write ``z`` then ``y`` (batch 1) into ``encoder``; ``y_hat`` and the estimated ``bits``."""
        self._no_side(side)
        z = self.h_a(y)
        z_hat = self.entropy_bottleneck.encode_into(encoder, z)
        scales, means, step = self.coding_parameters(z_hat, q_index)
        y_s = y / step
        y_s_hat = self.gaussian_conditional.encode_into(encoder, y_s, scales, means)
        _, z_lik = self.entropy_bottleneck(z, quantizer="dequantize")
        y_lik = self.gaussian_conditional.likelihood(y_s_hat, scales, means)
        return {"y_hat": y_s_hat * step, "bits": likelihood_bits(z_lik) + likelihood_bits(y_lik)}

    def decode_from(
        self, decoder: AnsDecoder, q_index: int, latent_size: tuple[int, int], side: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Read ``z`` then ``y`` of spatial size ``latent_size`` from ``decoder``: ``{"y_hat"}``."""
        self._no_side(side)
        z_size = (latent_size[0] // self.downsampling, latent_size[1] // self.downsampling)
        z_hat = self.entropy_bottleneck.decode_from(decoder, z_size)
        scales, means, step = self.coding_parameters(z_hat, q_index)
        return {"y_hat": self.gaussian_conditional.decode_from(decoder, scales, means) * step}


# ---------------------------------------------------------------------------------------------------
# Blocks: scale-space warping


def gaussian_taps(sigma: float) -> Tensor:
    """Normalised 1-D Gaussian of radius ceil(3 sigma) (float32, computed in float64)."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    return (taps / taps.sum()).float()


def _corners(position: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Lower and upper sample index and the weight of the upper one, for linear interpolation.

    Positions outside ``[0, size - 1]`` are clamped (the edge sample, as border padding does); an
    integer position gets weight exactly 0 or 1, so sampling there returns the sample exactly.
    """
    position = position.clamp(0, size - 1)
    lower = position.detach().floor().clamp(max=max(size - 2, 0))
    weight = position - lower
    lower = lower.long()
    return lower, (lower + 1).clamp(max=size - 1), weight


class ScaleSpaceWarp(nn.Module):
    """Warp a picture by a scale-space flow: trilinear sampling of its Gaussian scale-space volume.

    The volume stacks the picture (level 0) and ``num_levels`` Gaussian-blurred copies, level ``k``
    blurred with sigma ``sigma0 * 2**(k-1)``, each by a separable blur of the picture itself (exact,
    not a pyramid approximation; edges replicated). The flow field gives, per output pixel, an
    offset in luma pixels and a scale coordinate in levels (0 = sharp, ``num_levels`` = blurriest;
    outside that range it is clamped, as are positions outside the picture). Sampling is trilinear
    (linear in x, y and the level). Zero flow and zero scale return the reference exactly.
    """

    def __init__(self, num_levels: int, sigma0: float) -> None:
        super().__init__()
        if num_levels < 1 or sigma0 <= 0:
            raise ValueError(f"need num_levels >= 1 and sigma0 > 0, got {num_levels}, {sigma0}")
        self.num_levels = num_levels
        self.sigma0 = sigma0
        for k in range(1, num_levels + 1):
            # Not persistent: fixed numbers of the config, not weights.
            self.register_buffer(f"taps{k}", gaussian_taps(sigma0 * 2 ** (k - 1)), persistent=False)

    def _blur(self, x: Tensor, taps: Tensor) -> Tensor:
        c, r = x.shape[1], taps.numel() // 2
        horizontal = taps.to(x.dtype).view(1, 1, 1, -1).expand(c, 1, 1, -1)
        vertical = taps.to(x.dtype).view(1, 1, -1, 1).expand(c, 1, -1, 1)
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), horizontal, groups=c)
        return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), vertical, groups=c)

    def volume(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, num_levels + 1, H, W)."""
        levels = [x] + [self._blur(x, getattr(self, f"taps{k}")) for k in range(1, self.num_levels + 1)]
        return torch.stack(levels, dim=2)

    def forward(self, x: Tensor, flow: Tensor) -> Tensor:
        """Warp ``x`` (B, C, H, W) by ``flow`` (B, 3, H, W): (dx, dy) in pixels, scale in levels."""
        if flow.shape[0] != x.shape[0] or flow.shape[1] != FLOW_CHANNELS or flow.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"flow must be (B, 3, H, W) like {tuple(x.shape)}, got {tuple(flow.shape)}")
        b, c, h, w = x.shape
        volume = self.volume(x).flatten(2)  # (B, C, L * H * W)
        ys = torch.arange(h, device=x.device, dtype=flow.dtype).view(1, h, 1)
        xs = torch.arange(w, device=x.device, dtype=flow.dtype).view(1, 1, w)
        # Positions in pixel and level units, so that integer positions (zero flow) hit samples
        # exactly; normalised [-1, 1] coordinates (grid_sample) would blur them by rounding.
        x0, x1, fx = _corners(xs + flow[:, 0], w)
        y0, y1, fy = _corners(ys + flow[:, 1], h)
        z0, z1, fz = _corners(flow[:, 2], self.num_levels + 1)

        def sample(z: Tensor, y: Tensor, x_: Tensor) -> Tensor:
            index = ((z * h + y) * w + x_).view(b, 1, h * w).expand(b, c, h * w)
            return volume.gather(2, index).view(b, c, h, w)

        def lerp(a: Tensor, b_: Tensor, t: Tensor) -> Tensor:
            return a + t.unsqueeze(1) * (b_ - a)

        plane0 = lerp(
            lerp(sample(z0, y0, x0), sample(z0, y0, x1), fx),
            lerp(sample(z0, y1, x0), sample(z0, y1, x1), fx),
            fy,
        )
        plane1 = lerp(
            lerp(sample(z1, y0, x0), sample(z1, y0, x1), fx),
            lerp(sample(z1, y1, x0), sample(z1, y1, x1), fx),
            fy,
        )
        return lerp(plane0, plane1, fz)


# ---------------------------------------------------------------------------------------------------
# Model


@dataclass
class Reference:
    """The decoded picture a P frame is predicted from, as the 4:4:4 tensor the networks see."""

    frame: Tensor  # (B, 3, H, W)

    def detach(self) -> Reference:
        return Reference(self.frame.detach())


@register_network
class ScaleSpaceFlow(NeuralVideoCodec):
    """ssf: hyperprior intra codec + scale-space-flow motion + residual coding, variable rate, YUV 4:2:0.

    ::

        (Y, UV) ─to_444─► x (3, H, W)
        I:  x ─img_encoder─► y ─hyperprior─► y_hat ─img_decoder─► x_hat
        P:  [x, ref] ─motion_encoder─► m ─hyperprior─► m_hat ─motion_decoder─► flow (dx, dy, scale)
            warped = ScaleSpaceWarp(ref, flow)
            x - warped ─res_encoder─► r ─hyperprior─► r_hat ;  x_hat = warped + res_decoder([r_hat, m_hat])
        x_hat ─to_420─► (Y_hat, UV_hat) ;  next ref = to_444(clamp(Y_hat), clamp(UV_hat))

    Latents are at 1/2**stages of the luma resolution and hyper latents a further 2**hyper_stages
    smaller, hence ``pad_multiple = 2**(stages + hyper_stages)``. A P frame's payload is the tag
    ``P`` and one stream holding the flow's ``z`` and ``y``, then the residual's ``z`` and ``y``.
    ``forward_frame`` returns unclamped pictures; coding returns them clamped to [0, 1].

    Keyword arguments only: the fields of :class:`ScaleSpaceFlowConfig` (``configs/model/ssf.yaml``).
    ``self.arch`` holds them typed, ``self.config`` as the plain dict a checkpoint carries.
    """

    def __init__(self, **numbers: Any) -> None:
        super().__init__()
        arch = self.arch = ScaleSpaceFlowConfig(**numbers)
        self.config = arch.as_dict()
        c, m, k, stages = arch.channels, arch.latent_channels, arch.kernel_size, arch.stages
        self.num_q = arch.num_q
        self.stages = stages
        self.pad_multiple = arch.pad_multiple

        def prior() -> ScaleSpaceHyperprior:
            return ScaleSpaceHyperprior(arch)

        self.img_encoder = analysis(COLOUR_CHANNELS, c, m, stages, k)
        self.img_decoder = synthesis(m, c, COLOUR_CHANNELS, stages, k)
        self.img_prior = prior()
        self.motion_encoder = analysis(2 * COLOUR_CHANNELS, c, m, stages, k)
        self.motion_decoder = synthesis(m, c, FLOW_CHANNELS, stages, k)
        self.motion_prior = prior()
        self.res_encoder = analysis(COLOUR_CHANNELS, c, m, stages, k)
        self.res_decoder = synthesis(2 * m, c, COLOUR_CHANNELS, stages, k)
        self.res_prior = prior()
        self.warp = ScaleSpaceWarp(arch.num_levels, arch.sigma0)

    # Training / evaluation path

    def forward_frame(
        self, y: Tensor, uv: Tensor, q_index: Tensor | int, ref: Reference | None
    ) -> FrameOutput:
        self.check_frame(y, uv)
        q = self.q_tensor(q_index, y.shape[0], y.device)
        x = to_444(y, uv)
        if ref is None:
            intra = self.img_prior(self.img_encoder(x), q)
            x_hat, bits = self.img_decoder(intra["y_hat"]), intra["bits"]
        else:
            self.check_reference(ref, Reference, x)
            motion = self.motion_prior(self.motion_encoder(torch.cat([x, ref.frame], dim=1)), q)
            warped = self.warp(ref.frame, self.motion_decoder(motion["y_hat"]))
            residual = self.res_prior(self.res_encoder(x - warped), q)
            x_hat = warped + self.res_decoder(torch.cat([residual["y_hat"], motion["y_hat"]], dim=1))
            bits = motion["bits"] + residual["bits"]
        return self._output(x_hat, bits, clamp=False)

    # Real coding

    def encode_frame(
        self, y: Tensor, uv: Tensor, q_index: int, ref: Reference | None
    ) -> tuple[bytes, FrameOutput]:
        x = to_444(y, uv)
        encoder = AnsEncoder()
        if ref is None:
            intra = self.img_prior.encode_into(encoder, self.img_encoder(x), q_index)
            x_hat, bits = self.img_decoder(intra["y_hat"]), intra["bits"]
        else:
            self.check_reference(ref, Reference, x)
            m = self.motion_encoder(torch.cat([x, ref.frame], dim=1))
            motion = self.motion_prior.encode_into(encoder, m, q_index)
            warped = self.warp(ref.frame, self.motion_decoder(motion["y_hat"]))
            residual = self.res_prior.encode_into(encoder, self.res_encoder(x - warped), q_index)
            x_hat = warped + self.res_decoder(torch.cat([residual["y_hat"], motion["y_hat"]], dim=1))
            bits = motion["bits"] + residual["bits"]
        return encoder.to_bytes(), self._output(x_hat, bits, clamp=True)

    def decode_frame(
        self, stream: bytes, q_index: int, ref: Reference | None, height: int, width: int
    ) -> tuple[Tensor, Tensor, Reference]:
        latent_size = (height >> self.stages, width >> self.stages)
        if ref is not None and (not isinstance(ref, Reference) or ref.frame.shape[-2:] != (height, width)):
            raise ValueError(f"ref must be the Reference of a previous {height}x{width} frame")
        decoder = AnsDecoder(stream)
        if ref is None:
            x_hat = self.img_decoder(self.img_prior.decode_from(decoder, q_index, latent_size)["y_hat"])
        else:
            m_hat = self.motion_prior.decode_from(decoder, q_index, latent_size)["y_hat"]
            warped = self.warp(ref.frame, self.motion_decoder(m_hat))
            r_hat = self.res_prior.decode_from(decoder, q_index, latent_size)["y_hat"]
            x_hat = warped + self.res_decoder(torch.cat([r_hat, m_hat], dim=1))
        decoder.finish()
        out = self._output(x_hat, torch.zeros(1), clamp=True)
        return out.y_hat, out.uv_hat, out.ref

    def complexity(self) -> dict[str, float]:
        return self.split_parameters(
            intra=[self.img_encoder, self.img_decoder, self.img_prior],
            inter=[self.motion_encoder, self.motion_decoder, self.motion_prior,
                   self.res_encoder, self.res_decoder, self.res_prior],
        )  # fmt: skip

    # Helpers

    @staticmethod
    def _output(x_hat: Tensor, bits: Tensor, clamp: bool) -> FrameOutput:
        y_hat, uv_hat = to_420(x_hat)
        y_ref, uv_ref = y_hat.clamp(0.0, 1.0), uv_hat.clamp(0.0, 1.0)
        if clamp:
            y_hat, uv_hat = y_ref, uv_ref
        return FrameOutput(y_hat=y_hat, uv_hat=uv_hat, bits=bits, ref=Reference(to_444(y_ref, uv_ref)))


# ---------------------------------------------------------------------------------------------------
# Reference numbers. The paper gives the architecture, not a parameter or MAC count; these are
# measured on this code (python -m nvc_train.complexity ssf: 1920x1080, run padded to 1920x1152;
# ssf_tiny with --height 256 --width 320). 28 of the 34.2 M parameters are the three hyperpriors
# (3 x 8.3 M: 5x5 convolutions at 192 channels); the P frame's 171.5 kMAC/px include the
# scale-space blurs (about 1.7 kMAC/px), not the trilinear sampling (no multiply-accumulate ops).
# Tests check the parameter counts exactly, so an architecture change updates this table.

REFERENCE: dict[str, dict[str, float]] = {
    "ssf": {"params": 34_236_105, "params_intra": 11_204_035, "params_inter": 23_032_070,
            "kmac_px_intra": 82.3, "kmac_px_inter": 171.5},  # at 1920x1080
    "ssf_tiny": {"params": 242_001, "params_intra": 77_067, "params_inter": 164_934,
                 "kmac_px_intra": 1.7, "kmac_px_inter": 4.1},  # at 320x256
}  # fmt: skip
