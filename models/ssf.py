"""ssf: Scale-Space Flow (Agustsson et al., CVPR 2020), the residual-coding baseline, as CompressAI has it.

What it is: the classic motion-compensated *residual* codec, so that conditional coding (dcvc_lite,
dcvc_rt) can be compared with it in one framework. Per P frame:

1. a flow autoencoder codes a **scale-space flow** field (flow x, flow y, scale) from the current
   frame and the previous reconstruction;
2. the previous reconstruction is warped by it: a Gaussian scale-space volume of the reference
   (the picture and ``num_levels`` ever blurrier copies) is sampled trilinearly at
   (x + flow x, y + flow y, scale), so where motion cannot be predicted the network asks for a
   blurred prediction instead of a wrong sharp one;
3. a residual autoencoder codes ``x - warped``; its decoder also sees the flow latent, and the
   reconstruction is ``warped + decoded residual``.

Intra frames use a mean-scale hyperprior image codec. The published implementation is
CompressAI's ``ScaleSpaceFlow`` (zoo name ``ssf2020``, ``compressai/models/video/google.py``), and
where it defines something this model IS it (tests/test_official_ssf.py proves it on weights filled
by a fixed rule: reconstructions to 1e-4, ideal bits to 0.1%):

- **Parameters**: the same tensors under the same names and shapes (``img_encoder.0.weight``,
  ``motion_hyperprior.hyper_decoder_scale.deconv3.bias``, ...), 34,209,609 with variable rate off.
  The one rename is CompressAI's older spelling of the bottleneck density
  (``entropy_bottleneck._matrix0`` for ``matrices.0``, ``_bias*``, ``_factor*``), which its own
  loader maps the same way (:mod:`nvc_train.convert.ssf`). Buffers differ: ours hold our coder's
  tables, CompressAI's its own; neither is a parameter and ours are rebuilt by ``update()``.
- **Hyperpriors**: three 5x5 stride-2 convolutions (ReLU between) down, a mean decoder of three
  transposed convolutions (ReLU between) and a *scale* decoder that clamps to [0, 255] after every
  layer (CompressAI's QReLU, with its smooth gradient outside the range: :class:`QReLU`); ``z``
  has a factorized density of filters (3, 3, 3, 3) and is rounded around each channel's median,
  which is the learned parameter ``quantiles[:, 0, 1]`` (:class:`MedianBottleneck`); ``y`` is
  Gaussian with scales bounded below by 0.11 and likelihoods by 1e-9; the scale table has 64
  levels from 0.11 to 256.
- **Scale space**: level 0 is the picture, level 1 its blur (sigma0, kernel 2 ceil(3 sigma0) + 1,
  edges replicated), level k >= 2 the level-(k-1) picture pooled 2x2, blurred with the same kernel
  and brought back by k - 1 bilinear 2x upsamplings (effective sigmas about 1.5/3.5/7.2/14.6/29.2
  for sigma0 = 1.5). The flow is in **normalised grid units** (``grid_sample``'s [-1, 1] across
  the picture, align_corners False) and the scale coordinate likewise spans the levels, so a
  scale of 0 samples the *middle* of the volume; positions outside are clamped (border).
- **References**: coding (CompressAI's video evaluation) predicts from the previous
  reconstruction clamped to [0, 1]; training (``forward_frame``, as CompressAI's ``forward``) from
  the unclamped one, with the gradient stopped after the intra frame.
- **Colour and padding** (``colour_space: rgb``, CompressAI's models): the networks see RGB made
  as CompressAI's ``eval_model`` makes it: 4:2:0 chroma upsampled bicubically (align_corners
  False), BT.709 full-range YCbCr -> RGB with chroma centred at 0.5, zero padding centred to a
  multiple of 2**(stages + hyper_stages) (128); the output is clamped (coding), cropped,
  converted back and its chroma 2x2-averaged, and measured in YUV 4:2:0 like every codec. The
  model does this padding itself, so it asks the framework only for even sizes
  (``pad_multiple = 2``): a centred pad cannot be expressed on 4:2:0 planes.

Where we differ, on purpose (none of it changes a reconstruction; the ideal bits by 0.06% at most):

- ``z``'s likelihood is evaluated on the tail side of the median (our ``EntropyBottleneck``), exact
  in float32; CompressAI subtracts two sigmoids near 1, which loses the mass of tail bins: on the
  fixtures its z bits are 0.85% above the exact value (which ours equals), its frame totals
  0.03-0.06% above ours;

- the coder's scale index is the level of least expected cost (our ``GaussianConditional``), not
  CompressAI's next level up, and each bottleneck channel's symbol range is found by bisection
  rather than read from the learned tail quantiles: file size only;
- entropy parameters for real coding run in float64 (:func:`nvc_train.entropy.coding_parameters`),
  so a decoder in another process or thread count picks the same tables; CompressAI's run in
  float32. A mean differs in its last float32 bit at most, which moves a symbol only if ``y - mean``
  lies within that distance of a rounding point;
- initial values (not part of any checkpoint; CompressAI leaves PyTorch's defaults): the scale
  channel of the flow decoder's last layer starts at zero (weights and bias), so the scale field
  starts in the middle of the volume for every seed and gets a gradient from the first step; the
  scale decoders' last bias starts at 0.11, the lowest scale: untrained scales start where
  CompressAI's do in effect (its untrained decoder gives about 0.01, more than half clamped to 0,
  all read as 0.11) but inside QReLU's range, where its gradient is whole;
- ``update(force=True)`` (after further training) refits the medians by bisection, as CompressAI's
  ``update(update_quantiles=True)``; our training has no auxiliary loss for them;
- options that are ours: ``variable_rate`` (one model, ``q_index`` picks per-channel quantization
  steps, :class:`models.blocks.RateGain`, for each of the three latents; off, the parameter set is
  CompressAI's exactly) and ``colour_space: yuv420`` (the networks see Y, U, V at luma resolution,
  chroma repeated 2x2, output chroma 2x2-averaged; the framework pads bottom-right).

CompressAI's several qualities are several models; :class:`ScaleSpaceFlowSet` makes one codec of
them whose ``q_index`` picks the model (what ``python -m nvc_train.convert ssf`` writes).

The file reads top to bottom: the typed architecture numbers (their values:
``configs/model/ssf.yaml`` and ``ssf_tiny.yaml``), colour and padding, the blocks (transforms,
hyperprior, scale space), the models, and reference numbers.
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
    MemberSet,
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
    "MedianBottleneck",
    "QReLU",
    "Reference",
    "ScaleSpaceFlow",
    "ScaleSpaceFlowConfig",
    "ScaleSpaceFlowSet",
    "ScaleSpaceHyperprior",
    "ScaleSpaceWarp",
    "centred_padding",
    "rgb_to_yuv420",
    "to_420",
    "to_444",
    "yuv420_to_rgb",
]

COLOUR_SPACES = ("rgb", "yuv420")
COLOUR_CHANNELS = 3  # R, G, B (or Y, U, V at luma resolution) inside the networks
FLOW_CHANNELS = 3  # flow x, flow y (normalised grid units), scale (normalised volume depth)
SCALE_CHANNEL = 2  # the flow decoder's output channel that is the scale field
BT709_KR, BT709_KB = 0.2126, 0.0722  # luma weights of R and B (ITU-R BT.709)
QRELU_BIT_DEPTH = 8  # the scale decoder clamps to [0, 2**8 - 1]
QRELU_BETA = 100.0  # sharpness of QReLU's gradient outside the range
QRELU_ALPHA = 0.9943258522851727  # QReLU's precomputed gradient scale (Balle et al., ICLR 2019)
INITIAL_SCALE = 0.11  # an untrained scale decoder's output (its last bias): the lowest scale


# ---------------------------------------------------------------------------------------------------
# Architecture numbers


@dataclass(frozen=True, kw_only=True)
class ScaleSpaceFlowConfig(CodecConfig):
    """The architecture numbers of :class:`ScaleSpaceFlow`.

    Their values live in ``configs/model/ssf.yaml`` (CompressAI's) and ``ssf_tiny.yaml``.
    ``q_max`` and ``q_min`` only matter with ``variable_rate``; without it ``num_q`` must be 1.
    """

    colour_space: str  # "rgb": the networks see RGB (CompressAI's models); "yuv420": Y, U, V
    channels: int  # transform width of the three autoencoders
    latent_channels: int  # y (intra, flow, residual), at 1/2**stages of the luma resolution
    hyper_channels: int  # z, a further 2**hyper_stages smaller
    stages: int  # stride-2 layers of each autoencoder
    hyper_stages: int  # stride-2 layers of each hyper analysis
    kernel_size: int  # of every (transposed) convolution
    bottleneck_filters: tuple[int, ...]  # hidden widths of z's factorized density
    num_levels: int  # blurred levels of the scale-space volume (level 0 is the picture itself)
    sigma0: float  # blur of level 1 (and the kernel each further level is blurred with)
    scale_min: float  # the Gaussian scale table: num_scales levels, log-spaced
    scale_max: float
    num_scales: int
    variable_rate: bool  # per-q_index quantization steps (ours); off: CompressAI's parameters
    num_q: int  # rate points (q_index) in one model
    q_max: float  # initial quantization step at q_index 0 (lowest rate)
    q_min: float  # initial quantization step at q_index num_q - 1 (highest rate)

    def __post_init__(self) -> None:
        object.__setattr__(self, "bottleneck_filters", tuple(int(f) for f in self.bottleneck_filters))
        if self.colour_space not in COLOUR_SPACES:
            raise ValueError(f"colour_space must be one of {COLOUR_SPACES}, got {self.colour_space!r}")
        if not self.variable_rate and self.num_q != 1:
            raise ValueError(
                f"a single-rate model (variable_rate: false) has num_q 1, got {self.num_q}; "
                "several CompressAI qualities are several models (ScaleSpaceFlowSet)"
            )
        if self.num_levels < 1 or self.sigma0 <= 0:
            raise ValueError(f"need num_levels >= 1 and sigma0 > 0, got {self.num_levels}, {self.sigma0}")
        if self.latent_multiple % 2 ** (self.num_levels - 1):
            raise ValueError(
                f"the scale space pools {self.num_levels - 1} times: 2**(stages + hyper_stages) = "
                f"{self.latent_multiple} must be a multiple of {2 ** (self.num_levels - 1)}"
            )

    @property
    def latent_multiple(self) -> int:
        """Latents at 1/2**stages, hyper latents a further 2**hyper_stages smaller."""
        return 2 ** (self.stages + self.hyper_stages)


# ---------------------------------------------------------------------------------------------------
# Colour and padding


def to_444(y: Tensor, uv: Tensor) -> Tensor:
    """(B,1,H,W) + (B,2,H/2,W/2) -> (B,3,H,W), chroma repeated 2x2: exact, and :func:`to_420` inverts it."""
    return torch.cat([y, F.interpolate(uv, scale_factor=2, mode="nearest")], dim=1)


def to_420(x: Tensor) -> tuple[Tensor, Tensor]:
    """(B,3,H,W) -> luma and 2x2-averaged chroma: the 4:2:0 picture a 4:4:4 network output stands for."""
    return x[:, :1], F.avg_pool2d(x[:, 1:], 2)


def yuv420_to_rgb(y: Tensor, uv: Tensor) -> Tensor:
    """4:2:0 planes in [0, 1] -> RGB (B,3,H,W) the way CompressAI's video evaluation feeds its models.

    Chroma is upsampled bicubically (align_corners False; the edge samples repeat, so planes the
    framework padded bottom-right by replication give the same values inside the picture), then
    BT.709 YCbCr -> RGB on the normalised values with chroma centred at 0.5 (no range expansion,
    whatever the source's range: what the published models were evaluated with).
    """
    chroma = F.interpolate(uv, scale_factor=2, mode="bicubic", align_corners=False)
    cb, cr = chroma[:, :1] - 0.5, chroma[:, 1:] - 0.5
    r = y + (2.0 - 2.0 * BT709_KR) * cr
    b = y + (2.0 - 2.0 * BT709_KB) * cb
    g = (y - BT709_KR * r - BT709_KB * b) / (1.0 - BT709_KR - BT709_KB)
    return torch.cat([r, g, b], dim=1)


def rgb_to_yuv420(rgb: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse of :func:`yuv420_to_rgb` up to the chroma resampling: BT.709, then 2x2-averaged chroma."""
    r, g, b = rgb[:, :1], rgb[:, 1:2], rgb[:, 2:]
    y = BT709_KR * r + (1.0 - BT709_KR - BT709_KB) * g + BT709_KB * b
    cb = 0.5 * (b - y) / (1.0 - BT709_KB) + 0.5
    cr = 0.5 * (r - y) / (1.0 - BT709_KR) + 0.5
    return y, F.avg_pool2d(torch.cat([cb, cr], dim=1), 2)


def centred_padding(height: int, width: int, multiple: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zeros that centre a picture in the next multiple (CompressAI's rule)."""
    padded_h, padded_w = -(-height // multiple) * multiple, -(-width // multiple) * multiple
    left, top = (padded_w - width) // 2, (padded_h - height) // 2
    return left, padded_w - width - left, top, padded_h - height - top


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


class QReLU(torch.autograd.Function):
    """Clamp to [0, 2**bit_depth - 1]; outside the range the gradient fades instead of vanishing.

    CompressAI's scale decoder (after Balle et al., "Integer networks for data compression with
    latent-variable models", ICLR 2019). Forward is a clamp; backward passes the gradient unchanged
    inside the range and multiplies it by ``exp(-alpha**beta * |2 x / max - 1|**beta)`` outside, so
    a unit pushed below zero can still come back (a plain clamp would leave it dead).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, bit_depth: int, beta: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.max_value, ctx.beta = float(2**bit_depth - 1), float(beta)
        return x.clamp(min=0.0, max=ctx.max_value)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        (x,) = ctx.saved_tensors
        outside = (x < 0) | (x > ctx.max_value)
        fade = torch.exp(-(QRELU_ALPHA**ctx.beta) * (2.0 * x / ctx.max_value - 1.0).abs() ** ctx.beta)
        return torch.where(outside, grad * fade, grad), None, None


def qrelu(x: Tensor) -> Tensor:
    """:class:`QReLU` at CompressAI's settings (8 bits, beta 100)."""
    return QReLU.apply(x, QRELU_BIT_DEPTH, QRELU_BETA)


class ScaleDecoder(nn.Module):
    """The hyper decoder of the scales: ``stages`` transposed convolutions, each followed by :func:`qrelu`.

    Named ``deconv1``, ``deconv2``, ... as in CompressAI (three of them there), so its tensors keep
    their official names.
    """

    def __init__(self, hyper: int, latent: int, stages: int, kernel: int) -> None:
        super().__init__()
        self.stages = stages
        for i in range(stages):
            out = latent if i == stages - 1 else hyper
            self.add_module(
                f"deconv{i + 1}", nn.ConvTranspose2d(hyper, out, kernel, 2, kernel // 2, output_padding=1)
            )
        with torch.no_grad():  # scales start near INITIAL_SCALE, inside the clamp (module docstring)
            getattr(self, f"deconv{stages}").bias.fill_(INITIAL_SCALE)

    def forward(self, z_hat: Tensor) -> Tensor:
        x = z_hat
        for i in range(self.stages):
            x = qrelu(getattr(self, f"deconv{i + 1}")(x))
        return x


# ---------------------------------------------------------------------------------------------------
# Blocks: hyperprior


class MedianBottleneck(EntropyBottleneck):
    """The factorized density of ``z`` with CompressAI's learned ``quantiles`` (C, 1, 3).

    ``z`` is rounded around each channel's median, and a published model's medians are what its
    auxiliary loss learned (``quantiles[:, 0, 1]``), not exactly the density's: reading them, not
    solving for them, is what makes a converted model quantize ``z`` as CompressAI does. The lower
    and upper quantiles are kept (part of the parameter set) but our coder finds each channel's
    symbol range by bisection. ``update(force=True)`` means the weights moved since the last build,
    so it first refits all three quantiles by bisection (CompressAI's ``update_quantiles``).
    """

    def __init__(self, channels: int, filters: tuple[int, ...], init_scale: float = 10.0) -> None:
        super().__init__(channels, filters=filters, init_scale=init_scale)
        start = torch.tensor([-self.init_scale, 0.0, self.init_scale])
        # Part of the parameter set (CompressAI trains it with an auxiliary loss and a second
        # optimizer); ours is fitted by bisection in update(force=True), so no gradient reaches it.
        self.quantiles = nn.Parameter(start.repeat(self.channels, 1, 1), requires_grad=False)

    def _solve(self, targets: Tensor) -> Tensor:
        """The base class solves ``logits = 0`` for the median: here it is the learned parameter."""
        if bool((targets == 0).all()):
            return self.quantiles.detach()[:, 0, 1].to("cpu", torch.float64)
        return super()._solve(targets)

    def fit_quantiles(self) -> None:
        """Set the quantiles to where the density puts tail_mass / 2, 1/2 and 1 - tail_mass / 2."""
        tail = math.log(2.0 / self.tail_mass - 1.0)
        with torch.no_grad():
            for column, target in enumerate((-tail, 0.0, tail)):
                solved = EntropyBottleneck._solve(self, torch.full((self.channels,), target))
                self.quantiles[:, 0, column] = solved.to(self.quantiles)

    def update(self, force: bool = False) -> bool:
        if self.tables_built and not force:
            return False
        if force:
            self.fit_quantiles()
        return super().update(force=True)


class _EntropyParameters(nn.Module):
    """``z_hat, q_index -> (scales, means)`` of the coded latent: one module for both precisions.

    Built on the fly around the hyperprior's own decoders (it registers nothing in the hyperprior),
    so that real coding can run exactly this path in float64 through
    :func:`nvc_train.entropy.coding_parameters` while training runs it in float32 with gradients.
    """

    def __init__(self, mean: nn.Module, scale: nn.Module, gain: RateGain | None) -> None:
        super().__init__()
        self.mean, self.scale, self.gain = mean, scale, gain

    def forward(self, z_hat: Tensor, q_index: Tensor) -> tuple[Tensor, Tensor]:
        scales, means = self.scale(z_hat), self.mean(z_hat)
        if self.gain is None:
            return scales, means
        step = self.gain(q_index)
        return scales / step, means / step


class ScaleSpaceHyperprior(LatentCodec):
    """CompressAI's mean-scale hyperprior of one latent, optionally with per-q_index steps (ours).

    ::

        y ──hyper_encoder──► z ──Q around quantiles median──► z_hat ─┬─hyper_decoder_mean──► mu
        │                                                           └─hyper_decoder_scale─► sigma
        └── [/ step] ──► Q around mu [/ step] ──► GaussianConditional(sigma [/ step]) ──[* step]──► y_hat

    With ``variable_rate`` the step (:class:`RateGain`) of the frame's q_index divides ``y`` and its
    predicted distribution, so it is purely a quantization step size; without it nothing is divided
    and the arithmetic is CompressAI's. Coding writes ``z`` then ``y`` into the frame's one
    :class:`AnsEncoder` stream; both directions compute the parameters with
    :meth:`coding_parameters` and rebuild ``y_hat`` with one function. It keeps the
    :class:`models.base.LatentCodec` interface (every method returns a dict); it has no side prior,
    so ``side`` must stay None.
    """

    def __init__(self, config: ScaleSpaceFlowConfig) -> None:
        super().__init__()
        latent, hyper, kernel = config.latent_channels, config.hyper_channels, config.kernel_size
        self.stages = config.hyper_stages
        self.entropy_bottleneck = MedianBottleneck(hyper, config.bottleneck_filters)
        self.hyper_encoder = analysis(latent, hyper, hyper, self.stages, kernel)
        self.hyper_decoder_mean = synthesis(hyper, hyper, latent, self.stages, kernel)
        self.hyper_decoder_scale = ScaleDecoder(hyper, latent, self.stages, kernel)
        self.gaussian_conditional = GaussianConditional(config.scale_min, config.scale_max, config.num_scales)
        self.gain = (
            RateGain(config.num_q, latent, config.q_max, config.q_min) if config.variable_rate else None
        )

    @property
    def downsampling(self) -> int:
        return 2**self.stages

    def parameter_net(self) -> _EntropyParameters:
        """The entropy-parameter path as a module (built on the fly; it owns no tensors)."""
        return _EntropyParameters(self.hyper_decoder_mean, self.hyper_decoder_scale, self.gain)

    def _step(self, q_index: Tensor) -> Tensor | None:
        return None if self.gain is None else self.gain(q_index)

    @staticmethod
    def _no_side(side: Tensor | None) -> None:
        if side is not None:
            raise ValueError("ScaleSpaceHyperprior has no side prior; pass side=None")

    def forward(self, y: Tensor, q_index: Tensor, side: Tensor | None = None) -> dict[str, Tensor]:
        """``y_hat`` and ``bits``: noise for the likelihoods and straight-through rounding in training."""
        self._no_side(side)
        z = self.hyper_encoder(y)
        z_hat, z_lik = self.entropy_bottleneck(z, quantizer="noise" if self.training else "dequantize")
        scales, means = self.parameter_net()(z_hat, q_index)
        step = self._step(q_index)
        y_s = y if step is None else y / step
        y_s_hat, y_lik = quantize_gaussian(self.gaussian_conditional, y_s, scales, means, self.training)
        y_hat = y_s_hat if step is None else y_s_hat * step
        return {"y_hat": y_hat, "bits": likelihood_bits(z_lik) + likelihood_bits(y_lik)}

    def coding_parameters(self, z_hat: Tensor, q_index: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(scales, means, step)`` for real coding: THE function both directions call (float64 path)."""
        q = torch.tensor([q_index], device=z_hat.device)
        scales, means = coding_parameters(self.parameter_net(), z_hat, q)
        return scales, means, self._step(q)

    def encode_into(
        self, encoder: AnsEncoder, y: Tensor, q_index: int, side: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Write ``z`` then ``y`` (batch 1) into ``encoder``; ``y_hat`` and the estimated ``bits``."""
        self._no_side(side)
        z = self.hyper_encoder(y)
        z_hat = self.entropy_bottleneck.encode_into(encoder, z)
        scales, means, step = self.coding_parameters(z_hat, q_index)
        y_s = y if step is None else y / step
        y_s_hat = self.gaussian_conditional.encode_into(encoder, y_s, scales, means)
        _, z_lik = self.entropy_bottleneck(z, quantizer="dequantize")
        y_lik = self.gaussian_conditional.likelihood(y_s_hat, scales, means)
        y_hat = y_s_hat if step is None else y_s_hat * step
        return {"y_hat": y_hat, "bits": likelihood_bits(z_lik) + likelihood_bits(y_lik)}

    def decode_from(
        self, decoder: AnsDecoder, q_index: int, latent_size: tuple[int, int], side: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Read ``z`` then ``y`` of spatial size ``latent_size`` from ``decoder``: ``{"y_hat"}``."""
        self._no_side(side)
        z_size = (latent_size[0] // self.downsampling, latent_size[1] // self.downsampling)
        z_hat = self.entropy_bottleneck.decode_from(decoder, z_size)
        scales, means, step = self.coding_parameters(z_hat, q_index)
        y_s_hat = self.gaussian_conditional.decode_from(decoder, scales, means)
        return {"y_hat": y_s_hat if step is None else y_s_hat * step}


# ---------------------------------------------------------------------------------------------------
# Blocks: scale-space warping


def gaussian_taps(sigma: float) -> Tensor:
    """CompressAI's 1-D Gaussian: 2 ceil(3 sigma) + 1 taps, computed and normalised in float32."""
    size = 2 * math.ceil(3 * sigma) + 1
    half = (size - 1) / 2.0
    x = torch.linspace(-half, half, steps=size, dtype=torch.float32)
    taps = torch.exp(-0.5 * (x / sigma).pow(2))
    return taps / taps.sum()


class ScaleSpaceWarp(nn.Module):
    """Warp a picture by a scale-space flow: trilinear sampling of its Gaussian scale-space volume.

    The volume stacks ``num_levels + 1`` pictures: the reference, its blur, and for k >= 2 the
    level k - 1 *before upsampling* pooled 2x2 and blurred again, upsampled back by k - 1 bilinear
    steps (CompressAI's construction after Yang et al.; a pyramid, so it is cheap at any blur).
    Every blur is the same 2-D Gaussian of ``sigma0`` with edges replicated. The flow field
    (B, 3, H, W) gives per pixel an offset in normalised grid units (2 / W per pixel in x) and a
    scale coordinate in the same units along the levels (-1 .. 1 spans them; 0 is the middle);
    sampling is trilinear with border clamping, as ``grid_sample`` does it.
    """

    def __init__(self, num_levels: int, sigma0: float) -> None:
        super().__init__()
        if num_levels < 1 or sigma0 <= 0:
            raise ValueError(f"need num_levels >= 1 and sigma0 > 0, got {num_levels}, {sigma0}")
        self.num_levels = num_levels
        self.sigma0 = sigma0
        # Not persistent: fixed numbers of the config, not weights.
        self.register_buffer("taps", gaussian_taps(sigma0), persistent=False)

    def _blur(self, x: Tensor) -> Tensor:
        # One 2-D convolution with the outer product of the taps, as CompressAI blurs: a separable
        # pair of 1-D passes is 5x cheaper but rounds differently (about 1e-7), and a latent that
        # lies that close to a rounding point then codes another symbol than the published model.
        c, r = x.shape[1], self.taps.numel() // 2
        taps = self.taps.to(x.dtype)
        kernel = torch.mm(taps[:, None], taps[None, :]).expand(c, 1, 2 * r + 1, 2 * r + 1)
        return F.conv2d(F.pad(x, (r, r, r, r), mode="replicate"), kernel, groups=c)

    def volume(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, num_levels + 1, H, W); H and W multiples of 2**(num_levels - 1)."""
        levels = [x]
        blurred = self._blur(x)
        levels.append(blurred)
        for k in range(1, self.num_levels):
            blurred = self._blur(F.avg_pool2d(blurred, 2))
            up = blurred
            for _ in range(k):
                up = F.interpolate(up, scale_factor=2, mode="bilinear", align_corners=False)
            levels.append(up)
        return torch.stack(levels, dim=2)

    def forward(self, x: Tensor, flow: Tensor) -> Tensor:
        """Warp ``x`` (B, C, H, W) by ``flow`` (B, 3, H, W): (dx, dy, scale) in normalised units."""
        if flow.shape[0] != x.shape[0] or flow.shape[1] != FLOW_CHANNELS or flow.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"flow must be (B, 3, H, W) like {tuple(x.shape)}, got {tuple(flow.shape)}")
        b, c, h, w = x.shape
        identity = torch.eye(2, 3, device=x.device, dtype=flow.dtype).unsqueeze(0).expand(b, 2, 3)
        grid = F.affine_grid(identity, [b, c, h, w], align_corners=False) + flow[:, :2].permute(0, 2, 3, 1)
        where = torch.cat([grid, flow[:, 2:].permute(0, 2, 3, 1)], dim=-1).unsqueeze(1)
        out = F.grid_sample(
            self.volume(x), where, mode="bilinear", padding_mode="border", align_corners=False
        )
        return out.squeeze(2)


# ---------------------------------------------------------------------------------------------------
# Model


@dataclass
class Reference:
    """The picture a P frame is predicted from: the previous network output, padded, (B, 3, H, W)."""

    frame: Tensor

    def detach(self) -> Reference:
        return Reference(self.frame.detach())


@register_network
class ScaleSpaceFlow(NeuralVideoCodec):
    """ssf: hyperprior intra codec + scale-space-flow motion + residual coding (CompressAI's ssf2020).

    ::

        (Y, UV) ─yuv420_to_rgb, centred zero pad─► x (3, H, W)       [yuv420: to_444, no pad]
        I:  x ─img_encoder─► y ─img_hyperprior─► y_hat ─img_decoder─► x_hat
        P:  [x, ref] ─motion_encoder─► m ─motion_hyperprior─► m_hat ─motion_decoder─► flow (dx, dy, s)
            warped = ScaleSpaceWarp(ref, flow)
            x - warped ─res_encoder─► r ─res_hyperprior─► r_hat ; x_hat = warped + res_decoder([r_hat, m_hat])
        x_hat ─[clamp when coding]─► next ref ;  crop, rgb_to_yuv420 ─► (Y_hat, UV_hat)

    A P frame's payload is the tag ``P`` and one stream holding the flow's ``z`` and ``y``, then
    the residual's ``z`` and ``y``. ``forward_frame`` returns unclamped pictures and references;
    coding clamps both. Keyword arguments only: the fields of :class:`ScaleSpaceFlowConfig`
    (``configs/model/ssf.yaml``). ``self.arch`` holds them typed, ``self.config`` as the plain dict
    a checkpoint carries.
    """

    def __init__(self, **numbers: Any) -> None:
        super().__init__()
        arch = self.arch = ScaleSpaceFlowConfig(**numbers)
        self.config = arch.as_dict()
        c, m, k, stages = arch.channels, arch.latent_channels, arch.kernel_size, arch.stages
        self.colour_space = arch.colour_space
        self.num_q = arch.num_q
        self.stages = stages
        self.latent_multiple = arch.latent_multiple
        # rgb pads itself (centred, in RGB): the framework only keeps 4:2:0 sizes even.
        self.pad_multiple = 2 if arch.colour_space == "rgb" else arch.latent_multiple

        self.img_encoder = analysis(COLOUR_CHANNELS, c, m, stages, k)
        self.img_decoder = synthesis(m, c, COLOUR_CHANNELS, stages, k)
        self.img_hyperprior = ScaleSpaceHyperprior(arch)
        self.res_encoder = analysis(COLOUR_CHANNELS, c, m, stages, k)
        self.res_decoder = synthesis(2 * m, c, COLOUR_CHANNELS, stages, k)
        self.res_hyperprior = ScaleSpaceHyperprior(arch)
        self.motion_encoder = analysis(2 * COLOUR_CHANNELS, c, m, stages, k)
        self.motion_decoder = synthesis(m, c, FLOW_CHANNELS, stages, k)
        self.motion_hyperprior = ScaleSpaceHyperprior(arch)
        self.warp = ScaleSpaceWarp(arch.num_levels, arch.sigma0)
        with torch.no_grad():  # the scale field starts at the middle of the volume (module docstring)
            head = self.motion_decoder[-1]
            head.weight[:, SCALE_CHANNEL].zero_()
            head.bias[SCALE_CHANNEL].zero_()

    # Frames <-> the networks' tensors

    def padding(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(left, right, top, bottom) this model adds to a frame of the size the framework gives it."""
        if self.colour_space == "rgb":
            return centred_padding(height, width, self.latent_multiple)
        return 0, 0, 0, 0

    def network_input(self, y: Tensor, uv: Tensor) -> tuple[Tensor, tuple[int, int, int, int]]:
        """The padded 3-channel tensor the networks see, and the padding to crop off afterwards."""
        padding = self.padding(y.shape[-2], y.shape[-1])
        if self.colour_space == "rgb":
            return F.pad(yuv420_to_rgb(y, uv), padding), padding
        return to_444(y, uv), padding

    def network_output(self, x_hat: Tensor, padding: tuple[int, int, int, int]) -> tuple[Tensor, Tensor]:
        """Crop a network output back to the frame and bring it to 4:2:0."""
        left, right, top, bottom = padding
        x_hat = x_hat[..., top : x_hat.shape[-2] - bottom, left : x_hat.shape[-1] - right]
        return rgb_to_yuv420(x_hat) if self.colour_space == "rgb" else to_420(x_hat)

    # Training / evaluation path

    def forward_frame(
        self, y: Tensor, uv: Tensor, q_index: Tensor | int, ref: Reference | None
    ) -> FrameOutput:
        self.check_frame(y, uv)
        q = self.q_tensor(q_index, y.shape[0], y.device)
        x, padding = self.network_input(y, uv)
        if ref is None:
            intra = self.img_hyperprior(self.img_encoder(x), q)
            x_hat, bits = self.img_decoder(intra["y_hat"]), intra["bits"]
            new_ref = Reference(x_hat.detach())  # CompressAI stops the gradient at the key frame
        else:
            self.check_reference(ref, Reference, x)
            motion = self.motion_hyperprior(self.motion_encoder(torch.cat([x, ref.frame], dim=1)), q)
            warped = self.warp(ref.frame, self.motion_decoder(motion["y_hat"]))
            residual = self.res_hyperprior(self.res_encoder(x - warped), q)
            x_hat = warped + self.res_decoder(torch.cat([residual["y_hat"], motion["y_hat"]], dim=1))
            bits = motion["bits"] + residual["bits"]
            new_ref = Reference(x_hat)
        y_hat, uv_hat = self.network_output(x_hat, padding)
        return FrameOutput(y_hat=y_hat, uv_hat=uv_hat, bits=bits, ref=new_ref)

    # Real coding

    def encode_frame(
        self, y: Tensor, uv: Tensor, q_index: int, ref: Reference | None
    ) -> tuple[bytes, FrameOutput]:
        x, padding = self.network_input(y, uv)
        encoder = AnsEncoder()
        if ref is None:
            intra = self.img_hyperprior.encode_into(encoder, self.img_encoder(x), q_index)
            x_hat, bits = self.img_decoder(intra["y_hat"]), intra["bits"]
        else:
            self.check_reference(ref, Reference, x)
            m = self.motion_encoder(torch.cat([x, ref.frame], dim=1))
            motion = self.motion_hyperprior.encode_into(encoder, m, q_index)
            warped = self.warp(ref.frame, self.motion_decoder(motion["y_hat"]))
            residual = self.res_hyperprior.encode_into(encoder, self.res_encoder(x - warped), q_index)
            x_hat = warped + self.res_decoder(torch.cat([residual["y_hat"], motion["y_hat"]], dim=1))
            bits = motion["bits"] + residual["bits"]
        x_hat = x_hat.clamp(0.0, 1.0)
        y_hat, uv_hat = self.network_output(x_hat, padding)
        return encoder.to_bytes(), FrameOutput(y_hat=y_hat, uv_hat=uv_hat, bits=bits, ref=Reference(x_hat))

    def decode_frame(
        self, stream: bytes, q_index: int, ref: Reference | None, height: int, width: int
    ) -> tuple[Tensor, Tensor, Reference]:
        padding = self.padding(height, width)
        padded = (height + padding[2] + padding[3], width + padding[0] + padding[1])
        latent_size = (padded[0] >> self.stages, padded[1] >> self.stages)
        if ref is not None and (not isinstance(ref, Reference) or ref.frame.shape[-2:] != padded):
            raise ValueError(f"ref must be the Reference of a previous {height}x{width} frame")
        decoder = AnsDecoder(stream)
        if ref is None:
            x_hat = self.img_decoder(self.img_hyperprior.decode_from(decoder, q_index, latent_size)["y_hat"])
        else:
            m_hat = self.motion_hyperprior.decode_from(decoder, q_index, latent_size)["y_hat"]
            warped = self.warp(ref.frame, self.motion_decoder(m_hat))
            r_hat = self.res_hyperprior.decode_from(decoder, q_index, latent_size)["y_hat"]
            x_hat = warped + self.res_decoder(torch.cat([r_hat, m_hat], dim=1))
        decoder.finish()
        x_hat = x_hat.clamp(0.0, 1.0)
        y_hat, uv_hat = self.network_output(x_hat, padding)
        return y_hat, uv_hat, Reference(x_hat)

    def complexity(self) -> dict[str, float]:
        return self.split_parameters(
            intra=[self.img_encoder, self.img_decoder, self.img_hyperprior],
            inter=[self.motion_encoder, self.motion_decoder, self.motion_hyperprior,
                   self.res_encoder, self.res_decoder, self.res_hyperprior],
        )  # fmt: skip


@register_network
class ScaleSpaceFlowSet(MemberSet):
    """Several single-rate :class:`ScaleSpaceFlow` models as one codec: ``q_index`` picks the model.

    CompressAI publishes ssf2020 as one model per quality (1-9, the same architecture); a
    benchmark wants one codec with several rate points. ``members.<i>`` is the model of rate point
    ``i`` with CompressAI's tensor names below it, so the whole parameter set is the published
    files' side by side. A reference is a picture, so a P frame may be coded at another rate point
    than its reference. Keyword arguments: ``rate_points`` and the fields of
    :class:`ScaleSpaceFlowConfig` (``variable_rate`` off, ``num_q`` 1) shared by every member.
    """

    def __init__(self, rate_points: int, **numbers: Any) -> None:
        super().__init__()
        if rate_points < 1:
            raise ValueError(f"rate_points must be >= 1, got {rate_points}")
        self.members = nn.ModuleList(ScaleSpaceFlow(**numbers) for _ in range(rate_points))
        first = self.members[0]
        if first.num_q != 1:
            raise ValueError("the members of a ScaleSpaceFlowSet are single-rate (variable_rate: false)")
        self.num_q = rate_points
        self.pad_multiple = first.pad_multiple
        self.colour_space = first.colour_space
        self.config = {"rate_points": rate_points, **first.config}

    def forward_frame(
        self, y: Tensor, uv: Tensor, q_index: Tensor | int, ref: Reference | None
    ) -> FrameOutput:
        """Each batch item through the member of its rate point (complexity on meta: member 0)."""
        self.check_frame(y, uv)
        q = self.q_tensor(q_index, y.shape[0], y.device)
        if q.is_meta or self.num_q == 1:
            return self.members[0].forward_frame(y, uv, 0, ref)
        groups, outputs = [], []
        for member in torch.unique(q).tolist():
            index = (q == member).nonzero().flatten()
            sub_ref = None if ref is None else Reference(ref.frame.index_select(0, index))
            groups.append(index)
            outputs.append(self.members[member].forward_frame(y[index], uv[index], 0, sub_ref))
        order = torch.argsort(torch.cat(groups))

        def merged(parts: list[Tensor]) -> Tensor:
            return torch.cat(parts).index_select(0, order)

        return FrameOutput(
            y_hat=merged([o.y_hat for o in outputs]),
            uv_hat=merged([o.uv_hat for o in outputs]),
            bits=merged([o.bits for o in outputs]),
            ref=Reference(merged([o.ref.frame for o in outputs])),
        )


# ---------------------------------------------------------------------------------------------------
# Reference numbers. The paper gives the architecture, not a parameter or MAC count; CompressAI's
# ScaleSpaceFlow() has 34,209,609 parameters (tests/fixtures/official/ssf/meta.json, counted with
# compressai 1.2.8), which `ssf` equals. 28 of the 34.2 M are the three hyperpriors (3 x 8.3 M:
# 5x5 convolutions at 192 channels). kMAC/px: python -m nvc_train.complexity ssf (1920x1080, padded
# inside to 1920x1152; ssf_tiny with --height 256 --width 320); the P frame's include the
# scale-space blurs, not the trilinear sampling (no multiply-accumulate ops). Tests check the
# parameter counts exactly, so an architecture change updates this table.

REFERENCE: dict[str, dict[str, float]] = {
    "ssf": {"params": 34_209_609, "params_intra": 11_195_203, "params_inter": 23_014_406,
            "kmac_px_intra": 82.3, "kmac_px_inter": 170.2},  # at 1920x1080
    "ssf_tiny": {"params": 242_865, "params_intra": 77_355, "params_inter": 165_510,
                 "kmac_px_intra": 1.7, "kmac_px_inter": 4.2},  # at 320x256
}  # fmt: skip
