"""C3-like latent-grid codec: per-frame multi-resolution latents, one shared network per sequence.

After C3 (Kim et al., CVPR 2024) and COOL-CHIC: each frame owns ``levels`` single-channel latent
grids at strides 1, 2, 4, ... of the synthesis resolution; a fixed bilinear upsampler brings them to
that resolution, a small synthesis (1x1 convolutions, then 3x3 residual convolutions) maps them to
YUV 4:2:0, and an auto-regressive context model (ARM, a small MLP) gives a Gaussian (mean, scale)
per latent. Unlike per-frame Cool-Chic, the ARM and the synthesis are shared by the WHOLE sequence
and their weights are coded once (the measured cost of re-sending networks per frame on small clips
is what made per-frame overfitting lose to x265), and the ARM looks at the co-located latents of
the frame's reference frames, so temporal redundancy is removed in the latent domain::

    frame t latents  L_t[l] (1, H/s/2^l, W/s/2^l), l = 0..levels-1
    ARM context of a latent at level l:  3x3 of level l+1 (same frame, coded before it)
                                       + 3x3 of level l in ref0(t) and ref1(t)   (coding structure)
                                       + its 4 neighbours in level l (second checkerboard pass only)
    p(L_t[l] | context) = N(mu, sigma) on integer bins           -> rate
    upsample(all levels) -> synthesis -> (Y, U, V)                 -> distortion

Coding order inside a frame: coarsest level first; in each level, a checkerboard: the "anchor"
half first (no spatial context), then the other half with its four anchor neighbours as context.
That two-pass factorization is auto-regressive and decodes with two vectorised ARM passes per
level instead of one ARM call per latent, which a Python decoder needs. With ``arm_neighbours = N``
(Cool-Chic's ARM, ``model=coolchic``) the spatial context is instead the first N causal neighbours
of ``CAUSAL_NEIGHBOURS`` in raster order; the decoder then runs the ARM once per wavefront line
``x + a*y`` (latents on one line never see each other), ``w + a*(h - 1)`` calls per grid.

Exact decoding in another process: the decoder evaluates the ARM in FIXED POINT, with integer
weights ``round(w * 2**weight_bits)``, integer inputs (latents times ``2**fraction_bits``) and
floor shifts between layers, computed in float64 on integer values whose partial sums are checked
to stay below 2**52 (so every sum is exact, in any order, on any IEEE-754 machine). Means and
log-scales come out as integers; a table row is (scale level, mean phase) chosen by integer
arithmetic only. The encoder runs the same fixed-point ARM on its own DECODED weights. The
synthesis is float (as in Cool-Chic); encoder and decoder run it on one thread (see
``models.adaptive.decode_threads``), so a reconstruction matches byte for byte on one machine.
"""

from __future__ import annotations

import math
import statistics
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.adaptive import GEOMETRY_FIELDS, SceneAdaptiveNet
from models.registry import register_network
from nvc_train.bitstream.architecture import ArchitectureField
from nvc_train.entropy.base import TableEntropyModel
from nvc_train.entropy.coder import MAX_HALF_RANGE, AnsDecoder, AnsEncoder, EntropyCoderError, _cdf_tables
from nvc_train.entropy.gaussian import gaussian_bin_mass
from nvc_train.entropy.ops import lower_bound
from nvc_train.structure import CodingStructure

__all__ = ["C3Net", "PhasedGaussian", "soft_round", "start_small_"]

_EXACT_LIMIT = 2.0**52  # float64 sums of integers below this are exact in any order


# ---- quantization proxies --------------------------------------------------------------------------


@torch.no_grad()
def start_small_(layer: nn.Linear) -> None:
    """Cool-Chic's start for a layer (its ``SynthesisConv2d``): weights ``U(+-1 / (sqrt(fan_in) *
    out**2))``, bias zero: the layer begins with almost no output, so a fit grows what it needs."""
    out, fan_in = layer.weight.shape
    bound = 1.0 / (math.sqrt(fan_in) * out**2)
    nn.init.uniform_(layer.weight, -bound, bound)
    nn.init.zeros_(layer.bias)


def soft_round(x: Tensor, temperature: float) -> Tensor:
    """Soft-rounding (Agustsson & Theis 2020): rounding as ``temperature -> 0``, identity as it grows."""
    floor = torch.floor(x)
    r = x - floor - 0.5
    t = max(float(temperature), 1e-4)
    return floor + 0.5 + torch.tanh(r / t) / (2.0 * math.tanh(0.5 / t))


# ---- the latent entropy model -------------------------------------------------------------------


def laplace_bin_mass(distance: Tensor, scales: Tensor) -> Tensor:
    """Mass of ``Laplace(0, b = scale)`` on ``[d - 0.5, d + 0.5]``; in the tail as a product, not a
    difference of two CDF values (which would cancel to zero far out)."""
    d = distance.abs()
    # Each branch sees only its own range of d (clamped), so the branch torch.where discards can
    # overflow neither in the forward nor in the backward pass (0 * inf would be a NaN gradient).
    beyond, within = d.clamp_min(0.5), d.clamp_max(0.5)
    tail = 0.5 * torch.exp(-(beyond - 0.5) / scales) * -torch.expm1(-1.0 / scales)  # bin wholly beyond 0
    centre = 1.0 - 0.5 * torch.exp(-(within + 0.5) / scales) - 0.5 * torch.exp((within - 0.5) / scales)
    return torch.where(d >= 0.5, tail, centre)


# The table model's distributions: bin mass, and how many scales out the tables reach at tail mass t
# (Gaussian: the normal quantile of t/2; Laplace: ln(1/t)).
LATENT_DISTRIBUTIONS = {
    "gaussian": (gaussian_bin_mass, lambda tail: -statistics.NormalDist().inv_cdf(tail / 2.0)),
    "laplace": (laplace_bin_mass, lambda tail: math.log(1.0 / tail)),
}


class PhasedGaussian(TableEntropyModel):
    """Integer latents under ``N(mu, sigma)`` (or ``Laplace(mu, b)``, Cool-Chic's); coding tables per
    (scale level, phase of mu).

    Latents are integers (not ``round(y - mu) + mu``), so that a frame's latents never depend on
    the probability model and training needs no sequential decode. A table per scale level alone
    would ignore where ``mu`` falls between two integers; so ``mu`` is split into its integer part
    ``n`` and a phase ``p / phases``, the symbol ``y - n`` is coded with the table of
    ``N(p / phases, sigma_k)``. Scale level ``k`` has log-scale ``log_scale_min + k * log_scale_step``.
    """

    def __init__(
        self,
        log_scale_min: float = -3.0,
        log_scale_step: float = 0.125,
        num_scales: int = 56,
        phases: int = 8,
        tail_mass: float = 1e-9,
        likelihood_bound: float = 1e-9,
        distribution: str = "gaussian",
    ) -> None:
        super().__init__()
        if distribution not in LATENT_DISTRIBUTIONS:
            raise ValueError(f"latent distribution must be one of {sorted(LATENT_DISTRIBUTIONS)}, got "
                             f"{distribution!r}")  # fmt: skip
        self.distribution = distribution
        self._bin_mass, tail_width = LATENT_DISTRIBUTIONS[distribution]
        self.tail_width = float(tail_width(tail_mass))  # table half-width in scales
        if num_scales < 2 or phases < 1 or log_scale_step <= 0:
            raise ValueError(f"bad scale table: {num_scales=}, {phases=}, {log_scale_step=}")
        self.log_scale_min = float(log_scale_min)
        self.log_scale_step = float(log_scale_step)
        self.num_scales = int(num_scales)
        self.phases = int(phases)
        self.tail_mass = float(tail_mass)
        self.likelihood_bound = float(likelihood_bound)

    @property
    def log_scale_max(self) -> float:
        return self.log_scale_min + (self.num_scales - 1) * self.log_scale_step

    def bits(self, y: Tensor, mu: Tensor, log_scale: Tensor) -> Tensor:
        """Estimated bits of ``y`` (differentiable): ``-log2`` of the bin mass around each value."""
        scale = torch.exp(log_scale.clamp(self.log_scale_min, self.log_scale_max))
        mass = lower_bound(self._bin_mass(y - mu, scale), self.likelihood_bound)
        return -torch.log2(mass).sum()

    def update(self) -> None:
        """Integer CDF tables of every (scale level, phase) row (float64, deterministic)."""
        k = torch.arange(self.num_scales, dtype=torch.float64)
        scales = torch.exp(self.log_scale_min + k * self.log_scale_step)
        half = torch.clamp(torch.ceil(scales * self.tail_width) + 1, 1, MAX_HALF_RANGE).to(torch.int64)
        half = half.repeat_interleave(self.phases)
        scales = scales.repeat_interleave(self.phases)
        phase = (torch.arange(self.phases, dtype=torch.float64) / self.phases).repeat(self.num_scales)
        lengths = 2 * half + 1
        entry = torch.arange(int(lengths.max()), dtype=torch.int64)[None, :]
        symbols = (entry - half[:, None]).to(torch.float64)
        pmf = self._bin_mass(symbols - phase[:, None], scales[:, None])
        pmf = torch.where(entry < lengths[:, None], pmf, torch.zeros_like(pmf))
        tails = (1.0 - pmf.sum(dim=1)).clamp_min(1e-12)
        cdf, cdf_length = _cdf_tables(pmf.numpy(), lengths.numpy(), tails.numpy())
        self._set_tables(cdf, cdf_length, (-half).numpy())

    def rows(self, mu_fixed: Tensor, log_scale_fixed: Tensor, fraction_bits: int) -> tuple[Tensor, Tensor]:
        """``(integer part of mu, table row)`` from fixed-point mu and log-scale: integers only."""
        one = 1 << fraction_bits
        mu_fixed = mu_fixed.to(torch.int64)
        n = torch.div(mu_fixed, one, rounding_mode="floor")
        phase = torch.div((mu_fixed - n * one) * self.phases + one // 2, one, rounding_mode="floor")
        n = n + (phase == self.phases).to(torch.int64)
        phase = phase % self.phases
        ls_min = int(round(self.log_scale_min * one))
        ls_step = int(round(self.log_scale_step * one))
        level = torch.div(
            log_scale_fixed.to(torch.int64) - ls_min + ls_step // 2, ls_step, rounding_mode="floor"
        )
        level = level.clamp(0, self.num_scales - 1)
        return n, level * self.phases + phase

    def encode_into(self, encoder: AnsEncoder, values: Tensor, n: Tensor, rows: Tensor) -> None:
        self._encode_into(encoder, (values.to(torch.int64) - n).cpu(), rows.cpu().numpy(), self.rows_total)

    def decode_from(self, decoder: AnsDecoder, n: Tensor, rows: Tensor) -> Tensor:
        symbols = self._decode_from(decoder, rows.cpu().numpy(), self.rows_total)
        return torch.from_numpy(symbols).view(n.shape) + n

    @property
    def rows_total(self) -> int:
        return self.num_scales * self.phases


# ---- networks ---------------------------------------------------------------------------------


def _neighbourhood(grid: Tensor, kernel: int) -> Tensor:
    """(B, kernel*kernel, h, w): each position's kernel x kernel neighbourhood (zeros outside)."""
    b, _, h, w = grid.shape
    return F.unfold(grid, kernel, padding=kernel // 2).view(b, kernel * kernel, h, w)


def _checkerboard(h: int, w: int, device: torch.device) -> Tensor:
    """1 where a latent is in the SECOND pass (non-anchor), 0 for anchors; (1, 1, h, w)."""
    i = torch.arange(h, device=device)[:, None]
    j = torch.arange(w, device=device)[None, :]
    return ((i + j) % 2).to(torch.float32)[None, None]


def _cross(grid: Tensor) -> Tensor:
    """(B, 4, h, w): up, down, left, right neighbours (zeros outside)."""
    padded = F.pad(grid, (1, 1, 1, 1))
    h, w = grid.shape[-2:]
    return torch.cat(
        [padded[..., 0:h, 1 : w + 1], padded[..., 2 : h + 2, 1 : w + 1], padded[..., 1 : h + 1, 0:w],
         padded[..., 1 : h + 1, 2 : w + 2]], dim=1,
    )  # fmt: skip


# Causal neighbours of a latent in its own grid, (dy, dx), nearest first: Cool-Chic's ARM context
# order (its 9x9 priority map). ``arm_neighbours = N`` takes the first N (Cool-Chic's hop: 14).
CAUSAL_NEIGHBOURS: tuple[tuple[int, int], ...] = (
    (0, -1), (-1, 0), (-1, -1), (-1, 1), (0, -2), (-2, 0), (-3, 0), (0, -3), (-1, -2), (-2, 1),
    (-2, -1), (-1, 2), (-2, -2), (-1, -3), (-2, 2), (-3, 1), (0, -4), (-1, 3), (-2, -3), (-2, 3),
    (-3, -1), (-3, -2), (-3, 2), (-4, 0), (-1, -4), (-4, -1), (-1, 4), (-2, 4), (-3, -3), (-3, 3),
    (-4, -2), (-4, 1), (-2, -4), (-3, -4), (-3, 4), (-4, -3), (-4, 2), (-4, 3), (-4, -4), (-4, 4),
)  # fmt: skip
_REACH = 4  # no neighbour lies farther than 4 rows up or 4 columns aside


def _causal_neighbours(grid: Tensor, offsets: tuple[tuple[int, int], ...]) -> Tensor:
    """(B, len(offsets), h, w): each latent's causal neighbours at ``offsets`` (zeros outside)."""
    h, w = grid.shape[-2:]
    padded = F.pad(grid, (_REACH, _REACH, _REACH, 0))
    r = _REACH  # the latent (0, 0) sits at padded[r, r]
    return torch.cat([padded[..., r + dy : r + dy + h, r + dx : r + dx + w] for dy, dx in offsets], dim=1)


def wavefront_slope(offsets: tuple[tuple[int, int], ...]) -> int:
    """The smallest ``a`` for which every neighbour of (y, x) lies on an earlier line ``x + a*y``.

    Latents on one such line do not depend on each other, so the decoder runs the ARM once per line
    (``w + a*(h-1)`` calls for an h x w grid) instead of once per latent. Cool-Chic's 14 neighbours
    reach 2 columns right on the row above, so a = 3.
    """
    ratios = [dx / -dy for dy, dx in offsets if dy < 0]
    return max(1, math.floor(max(ratios, default=0.0)) + 1)


def wavefronts(h: int, w: int, slope: int) -> list[Tensor]:
    """Flat indices (row-major) of an h x w grid's latents, one tensor per line ``x + slope*y``."""
    y = torch.arange(h)[:, None].expand(h, w)
    x = torch.arange(w)[None, :].expand(h, w)
    line = (x + slope * y).flatten()
    order = torch.argsort(line, stable=True)
    return list(torch.split(order, torch.bincount(line).tolist()))


class ARM(nn.Module):
    """The context MLP: ``features -> hidden (ReLU) x layers -> (mu, log_scale)`` per latent.

    Linear layers over the channels of (B, features, h, w) maps (a GEMM, far faster on a CPU than
    1x1 convolutions); :meth:`fixed_point` is the decoder's exact integer evaluation of them.
    ``residual`` (Cool-Chic's ARM form): every hidden layer whose width equals its input's adds its
    input before the ReLU (and starts at zero: the ARM starts near linear), and a linear
    "stabiliser" from the context straight to the output is added to the trunk's.
    """

    def __init__(self, features: int, hidden: int, layers: int, residual: bool = False) -> None:
        super().__init__()
        sizes = [features] + [hidden] * layers
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.out = nn.Linear(sizes[-1], 2)
        self.skips = [residual and a == b for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        self.stabiliser = nn.Linear(features, 2) if residual else None
        with torch.no_grad():  # start as N(0, e^0): a sensible prior before training moves it
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()
            for layer, skip in zip(self.hidden, self.skips, strict=True):
                if skip:
                    layer.weight.zero_()
                    layer.bias.zero_()
            if self.stabiliser is not None:
                self.stabiliser.weight.mul_(0.1)
                self.stabiliser.bias.zero_()

    def forward(self, context: Tensor) -> tuple[Tensor, Tensor]:
        x = context.permute(0, 2, 3, 1)
        h = x
        for layer, skip in zip(self.hidden, self.skips, strict=True):
            h = torch.relu(layer(h) + h) if skip else torch.relu(layer(h))
        out = self.out(h)
        if self.stabiliser is not None:
            out = out + self.stabiliser(x)
        out = out.permute(0, 3, 1, 2)
        return out[:, 0:1], out[:, 1:2]

    @torch.no_grad()
    def fixed_point(self, context: Tensor, fraction_bits: int, weight_bits: int) -> tuple[Tensor, Tensor]:
        """``(mu, log_scale)`` times ``2**fraction_bits`` as integer-valued float64, bit-exact anywhere.

        ``context`` holds integers (fixed point, ``fraction_bits``). Every layer: integer weights
        ``round(w * 2**weight_bits)`` and biases ``round(b * 2**(weight_bits + fraction_bits))``; the
        accumulator is an exact integer (checked below 2**52); ``floor(acc / 2**weight_bits)`` brings it
        back to ``fraction_bits``.
        """
        b, c, h, w = context.shape
        out = self.fixed_point_rows(context.permute(0, 2, 3, 1).reshape(-1, c), fraction_bits, weight_bits)
        out = out.view(b, h, w, 2).permute(0, 3, 1, 2)
        return out[:, 0:1], out[:, 1:2]

    @torch.no_grad()
    def fixed_point_rows(self, context: Tensor, fraction_bits: int, weight_bits: int) -> Tensor:
        """:meth:`fixed_point` on (N, features) integer contexts: (N, 2) of ``(mu, log_scale)``."""
        context = context.to(torch.float64)
        x = context
        for index, layer in enumerate(self.hidden):
            step = self._fixed_layer(layer, x, index, fraction_bits, weight_bits)
            x = torch.relu(step + x if self.skips[index] else step)
        out = self._fixed_layer(self.out, x, len(self.hidden), fraction_bits, weight_bits)
        if self.stabiliser is not None:
            index = len(self.hidden) + 1
            out = out + self._fixed_layer(self.stabiliser, context, index, fraction_bits, weight_bits)
        return out

    @staticmethod
    def _fixed_layer(layer: nn.Linear, x: Tensor, index: int, fraction_bits: int, weight_bits: int) -> Tensor:
        """One linear layer in fixed point: integer weights and bias, exact sum, floor shift back."""
        weight = torch.round(layer.weight.detach().to(torch.float64).flatten(1) * 2.0**weight_bits)
        bias = torch.round(layer.bias.detach().to(torch.float64) * 2.0 ** (weight_bits + fraction_bits))
        bound = float(weight.abs().sum(dim=1).max()) * float(x.abs().max() if x.numel() else 0.0)
        if bound + float(bias.abs().max()) >= _EXACT_LIMIT:
            raise EntropyCoderError(
                f"ARM layer {index}: fixed-point sums may exceed 2**52 (latents or weights too large)"
            )
        return torch.floor((x @ weight.T + bias) / 2.0**weight_bits)


class Synthesis(nn.Module):
    """Upsampled latents -> 1x1 conv MLP -> 3x3 residual convs -> YUV 4:2:0 (0.5 added: grey at zero).

    At ``stride`` 2 the network runs at half the luma resolution and emits 4 luma sub-pixels
    (pixel shuffle) and U, V; at ``stride`` 1 it runs at luma resolution and U, V are 2x2 averages.
    ``stabiliser``: a linear map from the latents straight to the output, added to the trunk's
    (Cool-Chic's "linear stabiliser"): the part of the image that is linear in the latents is learnt
    through one layer, not through the whole trunk, which a fit of a few thousand steps needs.
    """

    def __init__(
        self, levels: int, hidden: list[int], residual: int, stride: int, stabiliser: bool, channels: int = 0
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"synthesis stride must be 1 or 2, got {stride}")
        if channels and stride != 1:
            raise ValueError("a synthesis of raw channels runs at stride 1")
        self.stride = stride
        # channels > 0: that many raw maps (a P frame's flow, residue and mask), not a picture
        out = channels or (6 if stride == 2 else 3)
        sizes = [levels, *hidden]
        self.mlp = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))
        self.head = nn.Linear(sizes[-1], out)
        self.residual = nn.ModuleList(
            nn.Conv2d(out, out, 3, padding=1, padding_mode="replicate") for _ in range(residual)
        )
        for conv in self.residual:
            nn.init.zeros_(conv.weight)  # residual layers start as identity
            nn.init.zeros_(conv.bias)
        self.stabiliser = nn.Linear(levels, out) if stabiliser else None
        if self.stabiliser is not None:
            start_small_(self.stabiliser)

    def forward(self, upsampled: Tensor) -> tuple[Tensor, Tensor]:
        x = self.raw(upsampled) + 0.5
        if self.stride == 2:
            return F.pixel_shuffle(x[:, :4], 2), x[:, 4:6]
        return x[:, 0:1], F.avg_pool2d(x[:, 1:3], 2)

    def raw(self, upsampled: Tensor) -> Tensor:
        """The output maps before they are read as a picture (no grey offset, no 4:2:0 split)."""
        h = upsampled.permute(0, 2, 3, 1)  # channels last: the 1x1 layers are GEMMs
        for layer in self.mlp:
            h = torch.relu(layer(h))
        x = self.head(h).permute(0, 3, 1, 2)
        for conv in self.residual:
            x = x + conv(torch.relu(x))
        if self.stabiliser is not None:
            x = x + self.stabiliser(upsampled.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return x


def _keys_cubic_half_kernel(size: int) -> Tensor:
    """The outer half (``size // 2`` taps, far to near) of a 2x Keys-cubic (a = -0.75) upsampling kernel.

    Output pixels of a 2x upsampling sit at distances 1/4, 3/4, 5/4, 7/4 from the input samples;
    the Keys cubic weighs them 0.8789, 0.2617, -0.1055, -0.0352. Longer kernels get zeros outside.
    """
    a = -0.75
    taps = []
    for i in range(size // 2):
        d = 0.25 + 0.5 * i
        if d <= 1:
            weight = (a + 2) * d**3 - (a + 3) * d**2 + 1
        else:
            weight = a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
        taps.append(weight if d < 2 else 0.0)
    return torch.tensor(taps[::-1], dtype=torch.float32)


def _symmetric(half: Tensor, size: int) -> Tensor:
    """A symmetric 1-D kernel of ``size`` taps from its first ``ceil(size / 2)``: (a b c) -> a b c (c) b a."""
    return torch.cat([half, half.flip(0)[size % 2 :]])


class LearnedUpsampling(nn.Module):
    """Cool-Chic's upsampling: latent grids -> one dense tensor by learned 2x filters, coarsest first.

    Going from the coarsest grid to the finest: the dense tensor so far is upsampled 2x by a
    transposed convolution with a separable, symmetric, even kernel (started as a Keys cubic), then
    the next finer grid, passed through a separable symmetric odd filter with a residual connection
    (started as identity), is put in front of it. Every stage has its own two filters; each filter
    is ``ceil(k / 2)`` numbers, so the module is tiny (60 parameters for 7 levels at k = 8 / 7).
    """

    def __init__(self, levels: int, kernel: int, preconcat_kernel: int) -> None:
        super().__init__()
        if kernel < 4 or kernel % 2 or preconcat_kernel < 1 or preconcat_kernel % 2 == 0:
            raise ValueError(
                f"upsampling kernels: need even >= 4 and odd >= 1, got {kernel}, {preconcat_kernel}"
            )
        self.kernel, self.preconcat_kernel = kernel, preconcat_kernel
        stages = levels - 1
        self.upsample = nn.Parameter(_keys_cubic_half_kernel(kernel).repeat(stages, 1))
        self.preconcat = nn.Parameter(torch.zeros(stages, (preconcat_kernel + 1) // 2))

    def _upsample2x(self, x: Tensor, stage: int, size: tuple[int, int]) -> Tensor:
        k = self.kernel
        taps = _symmetric(self.upsample[stage], k)
        b, c, h, w = x.shape
        pad = k // 2
        padded = F.pad(x.reshape(b * c, 1, h, w), (pad, pad, pad, pad), mode="replicate")
        # The 2-D kernel is the outer product of the taps: two 1-D passes (2k MACs an output, not k^2).
        out = F.conv_transpose2d(padded, taps.view(1, 1, k, 1), stride=(2, 1))
        out = F.conv_transpose2d(out, taps.view(1, 1, 1, k), stride=(1, 2))
        crop = 2 * pad - 1 + k // 2  # centres the 2h x 2w result on the input grid
        out = out[..., crop : crop + 2 * h, crop : crop + 2 * w]
        return out[..., : size[0], : size[1]].reshape(b, c, size[0], size[1])

    def _preconcat(self, grid: Tensor, stage: int) -> Tensor:
        k = self.preconcat_kernel
        taps = _symmetric(self.preconcat[stage], k)
        padded = F.pad(grid, (k // 2,) * 4, mode="replicate")
        return grid + F.conv2d(F.conv2d(padded, taps.view(1, 1, k, 1)), taps.view(1, 1, 1, k))

    def forward(self, grids: list[Tensor]) -> Tensor:
        """(B, levels, H, W) from ``grids[l]`` (B, 1, H / 2**l, W / 2**l), finest first."""
        dense = grids[-1]
        for stage, level in enumerate(reversed(range(len(grids) - 1))):
            size = (grids[level].shape[-2], grids[level].shape[-1])
            upsampled = self._upsample2x(dense, stage, size)
            dense = torch.cat([self._preconcat(grids[level], stage), upsampled], dim=1)
        return dense


# ---- the codec network ------------------------------------------------------------------------


@register_network
class C3Net(SceneAdaptiveNet):
    """Latent grids per frame + shared ARM and synthesis for one sequence (see the module docstring).

    Args (all stored in the bitstream's architecture config):
        height, width, num_frames: the padded size and frame count of the sequence.
        structure, intra_period, gop_size: the coding structure (gives each frame's references).
        levels: latent grids per frame (strides 1 .. 2**(levels-1) of the synthesis resolution).
        synthesis_stride: 1 (synthesis at luma resolution) or 2 (at chroma resolution, cheaper).
        synthesis_hidden: widths of the 1x1 layers; synthesis_residual: 3x3 residual layers.
        synthesis_stabiliser: add a linear map of the latents to the output (Cool-Chic's stabiliser).
        arm_hidden, arm_layers: the context MLP; context: 3x3 coarser level, 3x3 in each reference.
        arm_neighbours: 0: the checkerboard context (two ARM passes per grid, C3-like); N > 0: the
            first N causal neighbours of ``CAUSAL_NEIGHBOURS`` in the same grid (Cool-Chic's raster
            ARM, hop: 14), decoded one wavefront line at a time (:func:`wavefront_slope`).
        arm_coarser_stack: add the co-located latent of every coarser grid of the frame to the
            context (Cool-Chic's inter-feature context), zeros where a grid has fewer coarser ones.
        arm_residual: Cool-Chic's ARM form: residual hidden layers and a linear stabiliser (ARM).
        hyper_grids: extra latent grids at the sizes of the ``hyper_grids`` coarsest levels that the
            synthesis never sees (Cool-Chic's hyperlatents): they are coded first and exist only to
            give the finest grids' ARM context through the IFCE. 0: none.
        ifce_grids, ifce_features: the ``ifce_grids`` finest grids get Cool-Chic's inter-feature
            context: a linear map (one per grid) of the co-located values of every coarser grid and
            every hyperlatent to ``ifce_features`` more ARM inputs (zeros for the other grids).
        temporal_context: use the references' latents (False: an intra-only latent model).
        fraction_bits, weight_bits: fixed point of the ARM at coding time.
        log_scale_min, log_scale_step, num_scales, phases: the coding tables (PhasedGaussian).
        latent_distribution: ``gaussian`` or ``laplace`` (Cool-Chic's) for the latents given their context.
        latent_init_std: initial latent noise (0: zeros, as COOL-CHIC).
        shared_latents: add one sequence-level grid per level to every frame's (coded once, before
            frame 0; trained by every batch), so static content is learned and paid for once and
            the per-frame grids only carry what changes.
        frame_min_level: per-frame grids exist from this level on (finer ones are zero and not sent);
            with shared latents, fine detail is then learned and paid for once per sequence; without,
            the finest levels are simply absent (Cool-Chic's motion latents: 1/4 .. 1/64).
        latent_gain: the trained parameter is the latent divided by this power of two (Cool-Chic's
            encoder gain, 16): with one learning rate for weights and latents, the latents then move
            ``gain`` times faster, which is what a fit of a few thousand iterations needs.
        upsampling_kernel, preconcat_kernel: 0: the latents are upsampled bilinearly (C3); else
            Cool-Chic's learned upsampling with these kernel sizes (even, odd; Cool-Chic: 8, 7).
    """

    pad_multiple = 4
    # What a file may set, and within what (beyond the published c3 / Cool-Chic presets, bounded so
    # that a decoder's memory and time stay sane; nvc_train/bitstream/FORMAT.md lists them).
    ARCHITECTURE_FIELDS = {
        **GEOMETRY_FIELDS,
        "levels": ArchitectureField("int", 1, 12),
        "synthesis_stride": ArchitectureField("int", 1, 2),
        "synthesis_hidden": ArchitectureField("ints", 1, 256, min_items=0, max_items=8),
        "synthesis_residual": ArchitectureField("int", 0, 8),
        "synthesis_stabiliser": ArchitectureField("bool"),
        "arm_hidden": ArchitectureField("int", 1, 256),
        "arm_layers": ArchitectureField("int", 1, 8),
        "arm_neighbours": ArchitectureField("int", 0, len(CAUSAL_NEIGHBOURS)),
        "arm_coarser_stack": ArchitectureField("bool"),
        "arm_residual": ArchitectureField("bool"),
        "hyper_grids": ArchitectureField("int", 0, 12),
        "ifce_grids": ArchitectureField("int", 0, 12),
        "ifce_features": ArchitectureField("int", 0, 32),
        "temporal_context": ArchitectureField("bool"),
        "fraction_bits": ArchitectureField("int", 0, 16),
        "weight_bits": ArchitectureField("int", 1, 20),
        "log_scale_min": ArchitectureField("float", -10.0, 10.0),
        "log_scale_step": ArchitectureField("float", 1e-3, 1.0),
        "num_scales": ArchitectureField("int", 2, 128),
        "phases": ArchitectureField("int", 1, 16),
        "latent_distribution": ArchitectureField("str", choices=tuple(LATENT_DISTRIBUTIONS)),
        "latent_init_std": ArchitectureField("float", 0.0, 10.0),
        "shared_latents": ArchitectureField("bool"),
        "frame_min_level": ArchitectureField("int", 0, 11),
        "latent_gain": ArchitectureField("int", 1, 256),
        "upsampling_kernel": ArchitectureField("int", 0, 16),
        "preconcat_kernel": ArchitectureField("int", 1, 15),
    }

    def __init__(
        self,
        *,
        height: int,
        width: int,
        num_frames: int,
        structure: str = "ld",
        intra_period: int = -1,
        gop_size: int = 1,
        levels: int,
        synthesis_stride: int,
        synthesis_hidden: list[int] | tuple[int, ...],
        synthesis_residual: int,
        synthesis_stabiliser: bool,
        arm_hidden: int,
        arm_layers: int,
        arm_neighbours: int,
        arm_coarser_stack: bool,
        arm_residual: bool,
        hyper_grids: int,
        ifce_grids: int,
        ifce_features: int,
        temporal_context: bool,
        fraction_bits: int,
        weight_bits: int,
        log_scale_min: float,
        log_scale_step: float,
        num_scales: int,
        phases: int,
        latent_distribution: str,
        latent_init_std: float,
        shared_latents: bool,
        frame_min_level: int,
        latent_gain: int,
        upsampling_kernel: int,
        preconcat_kernel: int,
    ) -> None:
        # The numbers have no defaults: configs/model/c3*.yaml (or a bitstream's architecture) give
        # every one, so no second copy of a variant lives here.
        architecture = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        architecture["synthesis_hidden"] = [int(v) for v in synthesis_hidden]
        super().__init__(architecture)
        self.structure = CodingStructure(structure, intra_period, gop_size)  # type: ignore[arg-type]
        self.coding_order = self.structure.frames(num_frames)
        self.shared = bool(shared_latents)
        self.frame_min_level = int(frame_min_level)
        if not 0 <= self.frame_min_level < int(levels):
            raise ValueError(f"frame_min_level must be in [0, levels), got {frame_min_level}")
        # Row num_frames (when shared): the sequence-level grids, coded like an intra frame.
        refs = torch.full((num_frames + int(self.shared), 2), -1, dtype=torch.int64)
        for frame in self.coding_order:
            if frame.refs and temporal_context:
                refs[frame.poc, 0] = frame.refs[0]
                refs[frame.poc, 1] = frame.refs[-1]
        self.register_buffer("refs", refs, persistent=False)
        # All intra (or temporal_context off): no reference context, so no ARM weights for it (they
        # would get no gradient and still be coded).
        self.uses_references = bool(temporal_context) and any(frame.refs for frame in self.coding_order)
        self.levels = int(levels)
        if int(latent_gain) < 1 or int(latent_gain) & (int(latent_gain) - 1):
            raise ValueError(f"latent_gain must be a power of two (exact division), got {latent_gain}")
        self.latent_gain = int(latent_gain)
        self.fraction_bits = int(fraction_bits)
        self.weight_bits = int(weight_bits)
        stride = int(synthesis_stride)
        self.grid_sizes = []
        h, w = height // stride, width // stride
        for _ in range(self.levels):
            self.grid_sizes.append((h, w))
            h, w = -(-h // 2), -(-w // 2)
        self.hyper_grids, self.ifce_grids = int(hyper_grids), int(ifce_grids)
        if not 0 <= self.hyper_grids <= self.levels or not 0 <= self.ifce_grids <= self.levels:
            raise ValueError(
                f"hyper_grids and ifce_grids must be in [0, levels], got {hyper_grids}, {ifce_grids}"
            )
        if self.hyper_grids and not self.ifce_grids:
            raise ValueError("hyper_grids need ifce_grids > 0: the IFCE is what reads the hyperlatents")
        if self.ifce_grids and int(ifce_features) < 1:
            raise ValueError(f"ifce_grids > 0 needs ifce_features >= 1, got {ifce_features}")
        if self.hyper_grids and self.levels - self.hyper_grids < self.ifce_grids:
            raise ValueError(
                "hyperlatents must be coarser than every grid with an IFCE (levels - hyper_grids >= "
                f"ifce_grids), got {levels}, {hyper_grids}, {ifce_grids}"
            )
        if self.hyper_grids and self.shared:
            raise ValueError("hyper_grids are per-frame grids: not available with shared_latents")
        # Slots 0 .. levels-1 are the latent levels (finest first); slots levels .. are the
        # hyperlatents, finest first, at the sizes of the coarsest levels.
        self.slot_sizes = self.grid_sizes + self.grid_sizes[self.levels - self.hyper_grids :]
        self.latents = nn.ParameterList(
            nn.Parameter(torch.randn(num_frames + int(self.shared), 1, gh, gw) * latent_init_std)
            for gh, gw in self.slot_sizes
        )
        self.neighbours = CAUSAL_NEIGHBOURS[: int(arm_neighbours)]
        if self.neighbours:  # raster order: causal neighbours, no pass flag; has_ref only with references
            self.context_features = 9 + len(self.neighbours) + (19 if self.uses_references else 0)
        else:
            self.context_features = 9 + (18 if self.uses_references else 0) + 4 + 2
        self.coarser_stack = bool(arm_coarser_stack)
        self.context_features += (self.levels - 1) * self.coarser_stack
        self.ifce_features = int(ifce_features) if self.ifce_grids else 0
        self.context_features += self.ifce_features
        self.ifce = nn.ModuleList(
            nn.Linear(max(len(self._ifce_sources(level)), 1), self.ifce_features)
            for level in range(self.ifce_grids)
        )
        with torch.no_grad():  # small: the ARM starts from its spatial context alone
            for layer in self.ifce:
                layer.weight.mul_(0.1)
                layer.bias.zero_()
        self.arm = ARM(self.context_features, int(arm_hidden), int(arm_layers), bool(arm_residual))
        self.synthesis = Synthesis(
            self.levels,
            architecture["synthesis_hidden"],
            int(synthesis_residual),
            stride,
            bool(synthesis_stabiliser),
        )
        self.entropy = PhasedGaussian(
            log_scale_min, log_scale_step, num_scales, phases, distribution=str(latent_distribution)
        )
        self.upsampling = (
            LearnedUpsampling(self.levels, int(upsampling_kernel), int(preconcat_kernel))
            if upsampling_kernel and self.levels > 1 else None
        )  # fmt: skip

    # ---- SceneAdaptiveNet ------------------------------------------------------------------------

    def is_network_parameter(self, name: str) -> bool:
        return not name.startswith("latents.")

    #: The ARM and the IFCE move only the latents' rate; the upsampling and the synthesis only the
    #: pictures (the quantized latents depend on no weight).
    RD_SPLIT: ClassVar[dict[str, str]] = {"arm": "rate", "ifce": "rate", "upsampling": "picture",
                                          "synthesis": "picture"}  # fmt: skip

    def _quantized(self, latent: Tensor, for_context: bool = False) -> Tensor:
        """The latent as the current quantizer sees it (``for_context``: references, no noise)."""
        q = self.quantizer
        if q.mode == "hard":
            return torch.round(latent.detach())
        if q.mode == "ste":
            return latent + (torch.round(latent) - latent).detach()
        soft = soft_round(latent, q.temperature)
        if for_context or q.noise <= 0:
            return soft
        if q.mode == "soft_twice":
            return soft_round(soft + torch.randn_like(soft) * q.noise, q.temperature)
        return soft + (torch.rand_like(soft) - 0.5) * q.noise

    def _ifce_sources(self, level: int) -> list[tuple[int, int]]:
        """(slot, upsampling factor) of what the IFCE of latent ``level`` reads: every coarser level,
        then every hyperlatent (Cool-Chic: all grids decoded before this one)."""
        coarser = [(k, 2 ** (k - level)) for k in range(level + 1, self.levels)]
        first_hyper_level = self.levels - self.hyper_grids
        hyper = [(self.levels + j, 2 ** (first_hyper_level + j - level)) for j in range(self.hyper_grids)]
        return coarser + hyper

    def _coarser_slots(self, slot: int) -> list[int]:
        """The slots coarser than ``slot`` in its chain (latent levels, or hyperlatents), nearest first."""
        end = self.levels if slot < self.levels else len(self.slot_sizes)
        return list(range(slot + 1, end))

    def _ifce_context(self, slot: int, slots: list[Tensor], fixed: bool = False) -> Tensor | None:
        """(B, ifce_features, h, w) inter-feature context of one slot (None when the model has none).

        ``slots``: this frame's quantized grids, every slot (only those coarser are read). With
        ``fixed``, the linear map runs in the ARM's fixed point on the integer grids, so the decoder
        gets the same integers the encoder did; the result is returned divided by 2**fraction_bits.
        """
        if not self.ifce_features:
            return None
        grid = slots[slot]
        b, _, h, w = grid.shape
        if slot >= self.ifce_grids:
            return grid.new_zeros(b, self.ifce_features, h, w)
        sources = self._ifce_sources(slot)
        columns = [slots[s].repeat_interleave(f, dim=2).repeat_interleave(f, dim=3) for s, f in sources]
        stack = torch.cat([c[..., :h, :w] for c in columns] or [grid.new_zeros(b, 1, h, w)], dim=1)
        rows = stack.permute(0, 2, 3, 1)
        layer = self.ifce[slot]
        if not fixed:
            return layer(rows).permute(0, 3, 1, 2)
        one = float(1 << self.fraction_bits)
        flat = torch.round(rows.reshape(-1, stack.shape[1]).to(torch.float64) * one)
        out = ARM._fixed_layer(layer, flat, -1 - slot, self.fraction_bits, self.weight_bits) / one
        return out.view(b, h, w, -1).permute(0, 3, 1, 2)

    def _context(self, level: int, grid: Tensor, coarser: list[Tensor], ref0: Tensor, ref1: Tensor,
                 has_ref: Tensor, ifce: Tensor | None = None) -> Tensor:  # fmt: skip
        """(B, features, h, w) ARM inputs of every latent of ``grid`` (one level): the next coarser
        grid's 3x3, the spatial context (the causal neighbours, or the checkerboard's cross and pass
        flag), the references' 3x3 (if any), then with ``arm_coarser_stack`` the co-located latent of
        every coarser grid (``coarser``: this frame's coarser grids, nearest first), then the IFCE's
        output (``ifce``, from :meth:`_ifce_context`) if the model has one."""
        b, _, h, w = grid.shape
        if not coarser:
            coarse_ctx = grid.new_zeros(b, 9, h, w)
        else:
            coarse_ctx = _neighbourhood(coarser[0], 3).repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
            coarse_ctx = coarse_ctx[..., :h, :w]
        stack = []
        if self.coarser_stack:  # Cool-Chic's inter-feature context, without its extra linear layer
            for k, other in enumerate(coarser, start=1):
                stack.append(other.repeat_interleave(2**k, dim=2).repeat_interleave(2**k, dim=3)[..., :h, :w])
            stack.append(grid.new_zeros(b, self.levels - 1 - len(coarser), h, w))
        if ifce is not None:
            stack.append(ifce)
        if self.neighbours:
            parts = [coarse_ctx, _causal_neighbours(grid, self.neighbours)]
            if self.uses_references:
                ref_flag = has_ref.view(b, 1, 1, 1).to(grid.dtype)
                temporal = torch.cat([_neighbourhood(ref0, 3), _neighbourhood(ref1, 3)], dim=1) * ref_flag
                parts += [temporal, ref_flag.expand(b, 1, h, w)]
            return torch.cat(parts + stack, dim=1)
        second = _checkerboard(h, w, grid.device).to(grid.dtype).expand(b, 1, h, w)
        spatial = _cross(grid) * second
        flags = torch.cat([second, has_ref.view(b, 1, 1, 1).to(grid.dtype).expand(b, 1, h, w)], dim=1)
        if not self.uses_references:
            return torch.cat([coarse_ctx, spatial, flags, *stack], dim=1)
        temporal = torch.cat([_neighbourhood(ref0, 3), _neighbourhood(ref1, 3)], dim=1)
        temporal = temporal * has_ref.view(b, 1, 1, 1).to(grid.dtype)
        return torch.cat([coarse_ctx, temporal, spatial, flags, *stack], dim=1)

    def _ref_grids(self, level: int, frame_indices: Tensor, quantize: bool) -> tuple[Tensor, Tensor, Tensor]:
        refs = self.refs[frame_indices]
        has_ref = refs[:, 0] >= 0
        grids = self.latents[level] * self.latent_gain
        ref0 = grids[refs[:, 0].clamp_min(0)]
        ref1 = grids[refs[:, 1].clamp_min(0)]
        if quantize:
            ref0, ref1 = self._quantized(ref0, True), self._quantized(ref1, True)
        return ref0, ref1, has_ref

    def frames_forward(self, frame_indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        quantized, bits = self._frame_grids(frame_indices, with_bits=True)
        return *self._synthesize(quantized), bits

    def frames_bits(self, frame_indices: Tensor) -> Tensor:
        return self._frame_grids(frame_indices, with_bits=True)[1]

    def frames_planes(self, frame_indices: Tensor) -> tuple[Tensor, Tensor]:
        return self._synthesize(self._frame_grids(frame_indices, with_bits=False)[0])

    def _frame_grids(self, frame_indices: Tensor, with_bits: bool) -> tuple[list[Tensor], Tensor]:
        """The quantized grids the synthesis reads for ``frame_indices`` and (``with_bits``) their bits."""
        frame_indices = frame_indices.to(self.refs.device).long()
        quantized, bits = self._grids_and_bits(frame_indices, with_bits=with_bits)
        if self.shared:  # sequence-level grids: sent once, so a batch of B frames pays B / T of them
            shared_index = torch.tensor([self.num_frames], device=frame_indices.device)
            shared, shared_bits = self._grids_and_bits(shared_index, sequence_level=True, with_bits=with_bits)
            quantized = [g + s for g, s in zip(quantized, shared, strict=True)]
            bits = bits + shared_bits * (len(frame_indices) / self.num_frames)
        return quantized, bits

    def _grids_and_bits(
        self, indices: Tensor, sequence_level: bool = False, with_bits: bool = True
    ) -> tuple[list[Tensor], Tensor]:
        """Quantized grids (every level) of latent rows ``indices`` and their estimated bits (zero
        without ``with_bits``: the ARM is not run)."""
        first = 0 if sequence_level else self.frame_min_level  # finer per-frame levels are not sent
        quantized = [
            self._quantized(self.latents[level][indices] * self.latent_gain) if level >= first
            else self.latents[level].new_zeros(len(indices), *self.latents[level].shape[1:])
            for level in range(self.levels)
        ]  # fmt: skip
        quantized += [self._quantized(self.latents[slot][indices] * self.latent_gain)
                      for slot in range(self.levels, len(self.slot_sizes))]  # fmt: skip
        bits = quantized[0].new_zeros(())
        for slot in [*range(first, self.levels), *range(self.levels, len(self.slot_sizes))] * with_bits:
            ref0, ref1, has_ref = self._ref_grids(slot, indices, quantize=True)
            coarser = [quantized[k] for k in self._coarser_slots(slot)]
            ifce = self._ifce_context(slot, quantized)
            context = self._context(slot, quantized[slot], coarser, ref0, ref1, has_ref, ifce)
            mu, log_scale = self.arm(context)
            bits = bits + self.entropy.bits(quantized[slot], mu, log_scale)
        return quantized[: self.levels], bits

    def _synthesize(self, grids: list[Tensor]) -> tuple[Tensor, Tensor]:
        return self.synthesis(self._upsampled(grids))

    def _upsampled(self, grids: list[Tensor]) -> Tensor:
        """The latent levels (finest first) as one dense tensor at the synthesis resolution."""
        if self.upsampling is not None:
            return self.upsampling(grids)
        size = self.grid_sizes[0]
        upsampled = [grids[0]] + [
            F.interpolate(g, size=size, mode="bilinear", align_corners=False) for g in grids[1:]
        ]
        return torch.cat(upsampled, dim=1)

    def frames_raw(self, frame_indices: Tensor, with_bits: bool = True) -> tuple[Tensor, Tensor]:
        """``(maps, latent_bits)``: the synthesis output before it is read as a picture (a network
        built with raw synthesis channels, e.g. a P frame's motion or residue); without
        ``with_bits`` the ARM is not run and the bits are zero."""
        quantized, bits = self._frame_grids(frame_indices, with_bits=with_bits)
        return self.synthesis.raw(self._upsampled(quantized)), bits

    # ---- real coding -------------------------------------------------------------------------------

    def _fixed_context(self, level: int, poc: int, grids: list[list[Tensor | None]]) -> Tensor:
        """Fixed-point context of one frame's level from integer grids decoded so far."""
        one = float(1 << self.fraction_bits)
        ref = self.refs[poc]
        has_ref = torch.tensor([bool(ref[0] >= 0)])
        zero = torch.zeros(1, 1, *self.slot_sizes[level], dtype=torch.float64)
        ref0 = grids[int(ref[0])][level] if ref[0] >= 0 else zero
        ref1 = grids[int(ref[1])][level] if ref[1] >= 0 else zero
        coarser = [grids[poc][k] for k in self._coarser_slots(level)]
        grid = grids[poc][level]
        assert grid is not None and ref0 is not None and ref1 is not None and None not in coarser
        ifce = self._ifce_context(level, grids[poc], fixed=True)  # type: ignore[arg-type]
        context = self._context(level, grid, coarser, ref0, ref1, has_ref, ifce)  # type: ignore[arg-type]
        return torch.round(context * one)  # integers: latents and flags are integers, * 2**F is exact

    def _code_frame(self, poc: int, grids: list[list[Tensor | None]], coder: AnsEncoder | AnsDecoder) -> None:
        """Encode (grids[poc] known) or decode (grids[poc] filled in place) one frame's latents."""
        decoding = isinstance(coder, AnsDecoder)
        first = 0 if poc == self.num_frames else self.frame_min_level
        # The hyperlatents first (coarsest first), then the latent levels, coarsest first: every
        # grid's context (coarser level, IFCE sources) is decoded before it.
        for level in [*reversed(range(self.levels, len(self.slot_sizes))), *reversed(range(self.levels))]:
            h, w = self.slot_sizes[level]
            if decoding or level < first:
                grids[poc][level] = torch.zeros(1, 1, h, w, dtype=torch.float64)
            if level < first:
                continue
            if self.neighbours:
                self._code_grid_raster(level, poc, grids, coder)
                continue
            second = _checkerboard(h, w, torch.device("cpu")).bool()
            for mask in (~second, second):
                context = self._fixed_context(level, poc, grids)
                mu, log_scale = self.arm.fixed_point(context, self.fraction_bits, self.weight_bits)
                n, rows = self.entropy.rows(mu[mask], log_scale[mask], self.fraction_bits)
                grid = grids[poc][level]
                assert grid is not None
                if decoding:
                    grid[mask] = self.entropy.decode_from(coder, n, rows).to(torch.float64)
                else:
                    self.entropy.encode_into(coder, grid[mask], n, rows)

    def _code_grid_raster(
        self, level: int, poc: int, grids: list[list[Tensor | None]], coder: AnsEncoder | AnsDecoder
    ) -> None:
        """One grid under the causal-neighbour ARM, one block per wavefront line (both sides).

        The encoder knows the whole grid, so it evaluates the ARM once; the decoder fills each
        line's neighbours from what it has decoded and evaluates the ARM on that line. Both see the
        same integer contexts, and the fixed-point ARM gives each row the same result whatever the
        batch, so they choose the same table rows.
        """
        grid = grids[poc][level]
        assert grid is not None
        h, w = grid.shape[-2:]
        context = self._fixed_context(level, poc, grids)
        rows_in = context.permute(0, 2, 3, 1).reshape(h * w, -1)
        lines = wavefronts(h, w, wavefront_slope(self.neighbours))
        if isinstance(coder, AnsEncoder):
            out = self.arm.fixed_point_rows(rows_in, self.fraction_bits, self.weight_bits)
            n, table_rows = self.entropy.rows(out[:, 0], out[:, 1], self.fraction_bits)
            flat = grid.flatten()
            for line in lines:
                self.entropy.encode_into(coder, flat[line], n[line], table_rows[line])
            return
        one = float(1 << self.fraction_bits)
        width = w + 2 * _REACH
        padded = torch.zeros((h + _REACH) * width, dtype=torch.float64)  # the grid, zero-padded, flat
        y, x = torch.arange(h).repeat_interleave(w), torch.arange(w).repeat(h)
        position = (y + _REACH) * width + x + _REACH
        neighbour = position[:, None] + torch.tensor([dy * width + dx for dy, dx in self.neighbours])
        spatial = slice(9, 9 + len(self.neighbours))  # where _context puts the neighbours
        for line in lines:
            rows = rows_in[line]
            rows[:, spatial] = padded[neighbour[line]] * one
            out = self.arm.fixed_point_rows(rows, self.fraction_bits, self.weight_bits)
            n, table_rows = self.entropy.rows(out[:, 0], out[:, 1], self.fraction_bits)
            padded[position[line]] = self.entropy.decode_from(coder, n, table_rows).to(torch.float64)
        grid.copy_(padded[position].view_as(grid))

    def compress_latents(self) -> list[bytes]:
        self.entropy.update()
        with torch.no_grad():
            grids: list[list[Tensor | None]] = [
                [
                    torch.round(
                        self.latents[level][t : t + 1].detach().cpu().to(torch.float64) * self.latent_gain
                    )
                    for level in range(len(self.slot_sizes))
                ]
                for t in range(self.latents[0].shape[0])
            ]
            payloads = [b""] * self.num_frames
            for frame in self.coding_order:
                encoder = AnsEncoder()
                if frame.coding_index == 0 and self.shared:  # the sequence-level grids lead the stream
                    self._code_frame(self.num_frames, grids, encoder)
                self._code_frame(frame.poc, grids, encoder)
                payloads[frame.poc] = encoder.to_bytes()
            for level in range(len(self.slot_sizes)):  # the encoder continues with exactly what it sent
                self.latents[level].data.copy_(
                    (torch.cat([g[level] for g in grids]) / self.latent_gain).to(self.latents[level].dtype)
                )
        return payloads

    def decompress_latents(self, frames: list[bytes]) -> None:
        self.entropy.update()
        rows = self.latents[0].shape[0]
        grids: list[list[Tensor | None]] = [[None] * len(self.slot_sizes) for _ in range(rows)]
        for frame in self.coding_order:
            decoder = AnsDecoder(frames[frame.poc])
            if frame.coding_index == 0 and self.shared:
                self._code_frame(self.num_frames, grids, decoder)
            self._code_frame(frame.poc, grids, decoder)
            decoder.finish()
        with torch.no_grad():
            for level in range(len(self.slot_sizes)):
                self.latents[level].data.copy_(
                    (torch.cat([g[level] for g in grids]) / self.latent_gain).to(self.latents[level].dtype)
                )

    def frame_activation_bytes(self) -> int:
        """Synthesis at the finest grid, the float64 grids and ARM contexts of decoding, the tables."""
        h, w = self.grid_sizes[0]
        widths = [self.levels, *self.architecture["synthesis_hidden"], 6]
        synthesis = h * w * (self.levels + 2 * max(widths)) * 4 * 4
        grids = self.latents[0].shape[0] * sum(gh * gw for gh, gw in self.slot_sizes) * 8
        arm = h * w * (self.context_features + 2 * int(self.architecture["arm_hidden"])) * 8 * 3
        reach = math.exp(self.entropy.log_scale_max) * self.entropy.tail_width
        half = min(math.ceil(reach) + 1, MAX_HALF_RANGE)
        tables = self.entropy.num_scales * self.entropy.phases * (2 * half + 1) * 8 * 4
        return int(synthesis + grids + arm + tables)

    def complexity(self) -> dict[str, float]:
        return {**super().complexity(), "latents_per_px": self._latents_per_pixel()}

    def _latents_per_pixel(self) -> float:
        return sum(h * w for h, w in self.slot_sizes) / float(self.height * self.width)
