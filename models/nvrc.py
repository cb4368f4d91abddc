"""NVRC (Kwan et al., "NVRC: Neural Video Representation Compression", NeurIPS 2024), from the paper.

NVRC has no public code. This file builds it from the paper (arXiv 2409.07414, main text and
appendix A.2/A.3). What the paper states and what had to be chosen here, in short (the README's NVRC
section has the long list and the measured counts):

Stated by the paper and done here
    * A HiNeRV network (:mod:`models.hinerv`: its stages, ConvNeXt blocks, local grids, head), with
      NVRC's changes: larger multi-resolution feature grids ``T_grid x 45 x 80 x C`` at 1080p whose
      levels scale by (2, 2, 2, 0.5) in (t, h, w, c); the stem convolution (3 x 3 x 3) runs on the
      grids BEFORE they are interpolated to the frame (HiNeRV interpolates first); scales S1..S4
      differ only in channels (configs/model/nvrc_s{1,2,3,4}.yaml, Table 7).
    * Every parameter is quantized with learned steps and entropy coded, hierarchically:
      - feature grids (theta_grid): per-block steps (blocks of 16 x 8 x 8, one step per channel per
        block, learned as logs), coded under a Gaussian whose mean and scale a context model gives:
        3 blocks of masked 3-D convolution (kernel 5, width 8, LayerNorm, GELU), channels
        independent, one model per grid level, each block coded autoregressively and all blocks in
        parallel; the mean and scale are divided by the step before coding;
      - layer parameters (theta_layer, local grids included), seen as 2-D (out x in): per-axis steps
        ``delta[i, j] = delta_out[i] * delta_in[j]`` and a dual-axis Gaussian
        ``mu = mu_out[i] * sigma_in[j] + mu_in[j]``, ``sigma = sigma_out[i] * sigma_in[j]``; an axis
        gets its own vector only when its lines hold at least 128 parameters (else one value);
      - the steps, means, scales and context-model weights (phi) are themselves quantized with
        learned steps and coded under a Gaussian (psi, sent as a byte and two float16 values);
    * loss ``R + lambda * D`` with R of all three levels in bits per pixel; stage 1 soft-rounding
      (temperature 0.5 -> 0.3) with Kumaraswamy noise (2.0 -> 1.0) on grids AND layers with the rate
      in the loss, stage 2 Quant-Noise (ratio 0.5 -> 1.0) with rounding (no straight-through) for the
      quantized values (configs/overfit/nvrc*.yaml drive both through the phases' ``quantizer``,
      ``temperature`` and ``noise``, which an INR otherwise does not use).

Chosen here (the paper does not say, or the framework differs)
    * the context model's first block has no LayerNorm (over one input channel it would output
      zero); its weights are shared by the channels of a grid level; it reads the values scaled by a
      per-level power of two ``2**-r`` (sent, one byte) and outputs ``mu / 2**r`` and
      ``log2(sigma) - r``;
    * the coded symbol is ``q - floor(mu / step)`` under the table of (the nearest of 128 log-spaced
      scales, the eighth of ``mu / step``'s fraction): the mean is kept to 1/16 of a step at coding
      (exactly in the rate estimate, which uses the density's bits far in the tail);
    * steps start no finer than 2**-8 (zero-initialised biases, +-1e-3 grids);
    * side information is grouped by kind (grid steps, layer steps, layer means, layer scales, one
      group per context model) with one psi per group (the paper: per tensor); psi's step is a power
      of two, its Gaussian is fitted (mean and deviation of the symbols) rather than learned;
    * a stage's first ConvNeXt block widens its input (HiNeRV: its output) by the expansion: with it
      the parameter counts match Table 7 within 0.7% for S1..S4 (without it they are 7% short);
    * the local grids' per-stage channel factor 0.5 of HiNeRV is kept (Table 7 does not list it);
      expansions (4, 4, 4, 1), depths (3, 3, 3, 1), strides (3, 2, 2, 2) read from a table whose
      extraction is garbled; the grid keeps ``min(T_grid, frames)`` slices;
    * whole frames per step, not 120 x 120 patches; YUV 4:2:0 planes from an RGB head through the
      same matrix as ``hinerv`` with the project's 6:1:1 MSE as D (the paper trains YUV 4:4:4 with a
      geometric-mean MSE and MS-SSIM term); no alternating R/D steps, no L2 term, no gradient
      clipping (the overfit loop has none of them);
    * a layer parameter's 2-D view is ``(shape[0], rest)`` (a convolution's taps count as input
      columns), biases are one row.

Coding is exact: the decoder rebuilds every probability from decoded integers with the same code,
and the grid contexts are computed position by position by one function that encoder and decoder
both run (never the training path's convolutions, whose summation order differs).
"""

from __future__ import annotations

import functools
import math
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.adaptive import GEOMETRY_FIELDS, QuantizerState, SceneAdaptiveNet
from models.hinerv import LAYER_NORM_EPS, ConvNeXtBlock, HiNeRV, Stage, TemporalGrids
from models.registry import register_network
from nvc_train.bitstream.architecture import ArchitectureField
from nvc_train.entropy.coder import MAX_HALF_RANGE, AnsDecoder, AnsEncoder, EntropyCoderError, _cdf_tables
from nvc_train.entropy.gaussian import GaussianConditional, gaussian_bin_mass
from nvc_train.entropy.ops import lower_bound
from nvc_train.entropy.param_coding import ParamCodingError
from nvc_train.video.colour import LUMA_WEIGHTS, rgb_to_ycbcr, yuv444_to_420

__all__ = ["NVRC", "REFERENCE", "ContextModel", "NVRCCoder"]

# ---- constants of the coder (what the decoder must agree on; the format's, not a config's) -------

# The weights unit's header, as nvc_train/bitstream/FORMAT.md defines it for every adaptive network
# (magic, version, CRC32 of the coded tensors' description, CRC32 of the rest): the container checks
# the description's CRC against the architecture before building. The body after it is NVRC's.
_HEADER = struct.Struct("<3sBII")
_MAGIC, _VERSION = b"NVP", 1
_SIDE_RECORD = struct.Struct("<bee")  # per side group: log2 of psi's step, symbols' mean, deviation
_KINDS = ("grid_steps", "layer_steps", "layer_means", "layer_scales")
# Initial log2 of psi's step per kind: log-steps and log-scales to 1/16 octave, means and
# context-model weights to 2**-8 (psi's steps learn from there).
_SIDE_INIT = {"grid_steps": -4.0, "layer_steps": -4.0, "layer_means": -8.0, "layer_scales": -4.0,
              "context": -8.0}  # fmt: skip
_SIDE_STEP_RANGE = (-24, 4)
_LOG2_STEP_RANGE = (-40.0, 16.0)  # a parameter's step stays within 2**-40 .. 2**16
# The smallest step init_steps gives: zero-initialised biases and the grids' +-1e-3 start would
# otherwise get steps of 2**-37 or 2**-17, whose symbols grow past any table once they train (and
# whose rate estimate, on the probability floor, has no gradient to bring them back).
_INIT_MIN_LOG2_STEP = -8.0
_MIN_SCALE = 0.04  # smallest Gaussian scale (in steps) of the rate estimate and the tables
_BIT_FLOOR = 1e-9  # probability floor of the rate estimate


_MEAN_FRACTIONS = 8  # tables per scale level, one per eighth of the mean's fractional part


class _MeanGaussianTables(GaussianConditional):
    """Integer tables of ``N(fraction, scale)`` for 128 scale levels x 8 mean fractions.

    A symbol is ``q - floor(mean)``, coded with the row of (the scale's level, the eighth its mean's
    fraction falls in), whose Gaussian sits at that eighth's centre: the mean's fraction is kept to
    1/16 (a zero-mean table would lose up to half a step of it, and most bits at small scales). The
    scale level is :meth:`GaussianConditional.scale_indexes`' (comparisons only); the fraction's
    eighth is ``floor(8 * (mean - floor(mean)))``, the same float ops on both sides.
    """

    def __init__(self) -> None:
        super().__init__(scale_min=_MIN_SCALE, scale_max=2048.0, num_scales=128)

    def update(self) -> None:
        levels = self.scale_table.detach().cpu().to(torch.float64)
        z = -float(torch.special.ndtri(torch.tensor(self.tail_mass / 2, dtype=torch.float64)))
        half = torch.clamp(torch.ceil(levels * z), 1, MAX_HALF_RANGE - 1).to(torch.int64)
        centres = (torch.arange(_MEAN_FRACTIONS, dtype=torch.float64) + 0.5) / _MEAN_FRACTIONS
        half = half.repeat_interleave(_MEAN_FRACTIONS)
        scale = levels.repeat_interleave(_MEAN_FRACTIONS)
        centre = centres.repeat(len(levels))
        lengths = 2 * half + 2  # symbols -half .. half + 1 (the mean lies in [0, 1))
        entry = torch.arange(int(lengths.max()), dtype=torch.int64)[None, :]
        symbols = (entry - half[:, None]).to(torch.float64)
        pmf = gaussian_bin_mass(symbols - centre[:, None], scale[:, None])
        pmf = torch.where(entry < lengths[:, None], pmf, torch.zeros_like(pmf))
        below = 0.5 * torch.special.erfc((half.to(torch.float64) + 0.5 + centre) / (scale * math.sqrt(2.0)))
        above = 0.5 * torch.special.erfc((half.to(torch.float64) + 1.5 - centre) / (scale * math.sqrt(2.0)))
        cdf, cdf_length = _cdf_tables(pmf.numpy(), lengths.numpy(), (below + above).numpy())
        self._set_tables(cdf, cdf_length, (-half).numpy())

    def rows(self, means: Tensor, scales: Tensor) -> tuple[Tensor, np.ndarray]:
        """``(floor(means), table row of each symbol)``: the part both coding directions share."""
        floor = torch.floor(means)
        eighth = torch.clamp(torch.floor((means - floor) * _MEAN_FRACTIONS), 0, _MEAN_FRACTIONS - 1)
        level = self._level_of(scales).astype(np.int64)
        return floor, level * _MEAN_FRACTIONS + eighth.to(torch.int64).numpy()


@functools.lru_cache(maxsize=1)
def _coding_tables() -> _MeanGaussianTables:
    """The tables every NVRC symbol is coded with (scales and means in steps); built once a process
    (about a second), read-only after."""
    tables = _MeanGaussianTables()
    tables.update()
    return tables


def _bits(distance: Tensor, scale: Tensor) -> Tensor:
    """Estimated bits of integer bins at ``distance`` from a Gaussian's mean (scale in steps).

    Far in the tail, where the bin mass underflows, the density's bits take over: they keep a
    gradient that pulls the mean and scale towards a value the model had put out of reach.
    """
    scale = lower_bound(scale, _MIN_SCALE)
    mass = gaussian_bin_mass(distance, scale)
    density_bits = (distance / scale) ** 2 * (0.5 / math.log(2.0)) + torch.log2(
        scale * math.sqrt(2 * math.pi)
    )
    bin_bits = -torch.log2(mass.clamp_min(_BIT_FLOOR))
    return torch.where(mass > _BIT_FLOOR, bin_bits, torch.maximum(density_bits, bin_bits.detach())).sum()


def _snap_log2(value: Tensor, low: float, high: float) -> Tensor:
    """``2**round(value)`` forward, the gradient of ``2**value`` backward (exact powers of two)."""
    rounded = torch.clamp(torch.round(value.detach()), low, high)
    continuous = torch.exp2(value)
    return torch.exp2(rounded) + (continuous - continuous.detach())


def _kumaraswamy_noise(like: Tensor, shape_a: float) -> Tensor:
    """C3's noise: Kumaraswamy(a, b) - 0.5 with b putting the mode at 0.5; uniform at a = 1."""
    a = max(float(shape_a), 1.0)
    b = (2.0**a * (a - 1.0) + 1.0) / a
    u = torch.rand_like(like).clamp(1e-6, 1 - 1e-6)
    return (1.0 - (1.0 - u) ** (1.0 / b)) ** (1.0 / a) - 0.5


def _proxy(y: Tensor, mode: str, state: QuantizerState) -> tuple[Tensor, Tensor]:
    """(values the network uses, values the rate is estimated on), both in steps.

    ``noise`` (stage 1): soft-rounding with Kumaraswamy noise when the phase's quantizer is ``soft``
    (temperature, noise shape from the phase), uniform noise otherwise; ``ste`` (stage 2):
    Quant-Noise, a fraction ``noise`` of the values rounded (no gradient through them), the rest
    left as they are; ``dequantize``: rounding.
    """
    if mode == "dequantize":
        rounded = torch.round(y)
        return rounded, rounded
    if mode == "noise":
        if state.mode in ("soft", "soft_twice"):
            from models.c3 import soft_round

            noisy = soft_round(y, state.temperature) + _kumaraswamy_noise(y, state.noise)
            return soft_round(noisy, state.temperature), noisy
        noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        return noisy, noisy
    if mode == "ste":
        ratio = min(max(float(state.noise), 0.0), 1.0)
        chosen = torch.rand_like(y) < ratio
        used = torch.where(chosen, torch.round(y.detach()), y)
        return used, y + torch.empty_like(y).uniform_(-0.5, 0.5)
    raise ValueError(f"mode must be 'noise', 'ste' or 'dequantize', got {mode!r}")


# ---- the grids' context model ---------------------------------------------------------------------


def _causal_offsets(kernel: int, include_centre: bool) -> list[tuple[int, int, int]]:
    """(dt, dh, dw) of a masked 3-D kernel, raster order: those before the centre (and the centre)."""
    half = kernel // 2
    offsets = []
    for dt in range(-half, half + 1):
        for dh in range(-half, half + 1):
            for dw in range(-half, half + 1):
                if (dt, dh, dw) < (0, 0, 0) or (include_centre and (dt, dh, dw) == (0, 0, 0)):
                    offsets.append((dt, dh, dw))
    return offsets


class ContextModel(nn.Module):
    """NVRC's grid context model: masked 3-D convolutions (kernel k, width w) giving mean and log-scale.

    Block 1: masked (centre excluded) conv 1 -> w, GELU; block 2: LayerNorm, masked (centre
    included) conv w -> w, GELU; block 3: LayerNorm, masked conv w -> 2. Every channel of a grid is
    an independent sequence through the same weights. Two ways to run the same function:
    :meth:`forward` on whole blocks (training: convolutions), :meth:`step` one position at a time
    (coding: what encoder and decoder both run, so their probabilities agree bit for bit).
    """

    def __init__(self, kernel: int, width: int) -> None:
        super().__init__()
        self.kernel, self.width = kernel, width
        self.first = nn.Conv3d(1, width, kernel)
        self.second = nn.Conv3d(width, width, kernel)
        self.third = nn.Conv3d(width, 2, kernel)
        with torch.no_grad():  # start at a zero mean and the reference scale
            self.third.weight.mul_(0.1)
            self.third.bias.zero_()
        half = kernel // 2
        for name, include_centre in (("mask_first", False), ("mask_rest", True)):
            mask = torch.zeros(kernel, kernel, kernel)
            for dt, dh, dw in _causal_offsets(kernel, include_centre):
                mask[dt + half, dh + half, dw + half] = 1.0
            self.register_buffer(name, mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """(N, 2, t, h, w) mean and log2-scale of every position of (N, t, h, w) blocks (zeros around)."""
        pad = self.kernel // 2
        h = F.conv3d(x[:, None], self.first.weight * self.mask_first, self.first.bias, padding=pad)
        h = self._norm(F.gelu(h))
        h = F.conv3d(h, self.second.weight * self.mask_rest, self.second.bias, padding=pad)
        h = self._norm(F.gelu(h))
        return F.conv3d(h, self.third.weight * self.mask_rest, self.third.bias, padding=pad)

    @staticmethod
    def _norm(h: Tensor) -> Tensor:
        return F.layer_norm(h.movedim(1, -1), (h.shape[1],), eps=LAYER_NORM_EPS).movedim(-1, 1)

    def step_weights(self, weights: Mapping[str, Tensor]) -> tuple[Tensor, ...]:
        """The three layers' causal taps of ``weights`` (this module's parameter names, e.g. the
        quantized ones) as matrices (taps x inputs, outputs), for the position-by-position path."""
        half = self.kernel // 2
        taps = []
        for name, include in (("first", False), ("second", True), ("third", True)):
            weight = weights[f"{name}.weight"]
            index = [
                (dt + half, dh + half, dw + half) for dt, dh, dw in _causal_offsets(self.kernel, include)
            ]
            stacked = torch.stack([weight[:, :, t, h, w] for t, h, w in index])  # (K, out, in)
            taps.append(stacked.permute(0, 2, 1).reshape(-1, weight.shape[0]).contiguous())
        return tuple(taps)

    @staticmethod
    def neighbour_table(block: Sequence[int], kernel: int, include_centre: bool) -> Tensor:
        """(P, K) flat index of each position's causal neighbours inside the block; P where outside."""
        bt, bh, bw = block
        positions = bt * bh * bw
        table = torch.full((positions, len(_causal_offsets(kernel, include_centre))), positions)
        for k, (dt, dh, dw) in enumerate(_causal_offsets(kernel, include_centre)):
            t = torch.arange(bt)[:, None, None] + dt
            h = torch.arange(bh)[None, :, None] + dh
            w = torch.arange(bw)[None, None, :] + dw
            inside = (t >= 0) & (t < bt) & (h >= 0) & (h < bh) & (w >= 0) & (w < bw)
            flat = (t * bh + h) * bw + w
            table[:, k] = torch.where(inside, flat, torch.full_like(flat, positions)).reshape(-1)
        return table


# ---- the coder ---------------------------------------------------------------------------------


class NVRCCoder(nn.Module):
    """NVRC's quantizers, rate model and real coder of a network's parameters (see the module docstring).

    ``tensors``: name -> shape of every coded parameter, in coding order; ``grids``: the names coded
    with the context model (4-D, (t, h, w, c)). Holds phi (steps, dual-axis means and scales,
    context models) and psi's steps as parameters; the interface is
    :class:`~nvc_train.entropy.param_coding.ParameterCoder`'s, so :class:`models.adaptive.SceneAdaptiveNet`
    uses it unchanged (``forward``, ``init_steps``, ``compress``, ``decompress``, ``spec_crc``).
    """

    def __init__(
        self, tensors: Mapping[str, Sequence[int]], grids: Sequence[str], block: Sequence[int],
        kernel: int, width: int, axis_min: int, state: Callable[[], QuantizerState],
    ) -> None:  # fmt: skip
        super().__init__()
        self.shapes = {name: tuple(int(s) for s in shape) for name, shape in tensors.items()}
        self.grid_names = tuple(grids)
        self.layer_names = tuple(name for name in self.shapes if name not in self.grid_names)
        if any(len(self.shapes[name]) != 4 for name in self.grid_names):
            raise ValueError("context-coded grids must be 4-D (t, h, w, c)")
        self.block = tuple(int(b) for b in block)
        self._state = state
        # Feature grids: a log2-step per block and channel, a context model and a reference exponent.
        self.grid_log2_step = nn.ParameterList()
        self.context = nn.ModuleList()
        for name in self.grid_names:
            t, h, w, c = self.shapes[name]
            blocks = [-(-size // b) for size, b in zip((t, h, w), self.block, strict=True)]
            self.grid_log2_step.append(nn.Parameter(torch.full((*blocks, c), -8.0)))
            self.context.append(ContextModel(kernel, width))
        self.register_buffer("grid_reference", torch.zeros(len(self.grid_names), dtype=torch.int64))
        # Layers: per-axis log2-steps, means and log2-scales (length 1 where an axis is not split).
        self.axes: dict[str, tuple[int, int]] = {}
        vectors = {key: nn.ParameterList() for key in ("step_out", "step_in", "mean_out", "mean_in",
                                                       "scale_out", "scale_in")}  # fmt: skip
        for name in self.layer_names:
            rows, cols = self.matrix_shape(name)
            out_len = rows if cols >= axis_min else 1
            in_len = cols if rows >= axis_min else 1
            self.axes[name] = (out_len, in_len)
            for key, length in (("step_out", out_len), ("step_in", in_len), ("mean_out", out_len),
                                ("mean_in", in_len), ("scale_out", out_len),
                                ("scale_in", in_len)):  # fmt: skip
                vectors[key].append(nn.Parameter(torch.full((length,), -8.0 if key == "step_out" else 0.0)))
        self.layer = nn.ModuleDict(vectors)
        kinds = [*_KINDS, *(f"context{g}" for g in range(len(self.grid_names)))]
        self.kinds = tuple(kinds)
        init = [_SIDE_INIT["context" if k.startswith("context") else k] for k in kinds]
        self.side_log2_step = nn.Parameter(torch.tensor(init))
        text = (
            "nvrc;"
            + ";".join(
                f"{n}:{'x'.join(map(str, s))}:"
                + ("grid" if n in self.grid_names else "x".join(map(str, self.axes[n])))
                for n, s in self.shapes.items()
            )
            + f";block={self.block};kernel={kernel};width={width}"
        )
        self.spec_crc = zlib.crc32(text.encode())
        self._neighbours = [
            ContextModel.neighbour_table(self.block, kernel, include) for include in (False, True)
        ]
        object.__setattr__(self, "_tables", None)

    # ---- shapes -----------------------------------------------------------------------------------

    def matrix_shape(self, name: str) -> tuple[int, int]:
        """A layer parameter's 2-D view: (output channels, everything else); a bias is one row."""
        shape = self.shapes[name]
        if len(shape) == 1:
            return 1, shape[0]
        return shape[0], math.prod(shape[1:])

    def tables(self) -> _MeanGaussianTables:
        if self._tables is None:
            object.__setattr__(self, "_tables", _coding_tables())
        return self._tables  # type: ignore[return-value]

    # ---- side information (phi under psi) ---------------------------------------------------------

    def _side_groups(self) -> list[list[Tensor]]:
        """phi's tensors by kind, in :attr:`kinds` order (each group is quantized with one psi)."""
        layer = self.layer
        groups = [
            list(self.grid_log2_step),
            [*layer["step_out"], *layer["step_in"]],
            [*layer["mean_out"], *layer["mean_in"]],
            [*layer["scale_out"], *layer["scale_in"]],
        ]
        groups += [list(model.parameters()) for model in self.context]
        return groups

    def _side_steps(self) -> Tensor:
        return _snap_log2(self.side_log2_step, *_SIDE_STEP_RANGE)

    def _quantized_side(self, mode: str) -> tuple[list[list[Tensor]], Tensor]:
        """phi quantized with psi's steps (straight-through to phi), and phi's estimated bits."""
        steps = self._side_steps()
        out, total = [], self.side_log2_step.new_zeros(())
        for kind, tensors in enumerate(self._side_groups()):
            if not tensors:
                out.append([])
                continue
            step = steps[kind]
            flat = torch.cat([t.reshape(-1) for t in tensors])
            symbols = torch.round(flat.detach() / step.detach())
            hat = symbols * step + (flat - flat.detach())  # exactly symbols * step forward
            rate_on = (
                symbols if mode == "dequantize" else flat / step + torch.empty_like(flat).uniform_(-0.5, 0.5)
            )
            mean, deviation = _side_gaussian(symbols)
            total = total + _bits(rate_on - mean, torch.full_like(flat, deviation))
            pieces, start = [], 0
            for t in tensors:
                pieces.append(hat[start : start + t.numel()].view_as(t))
                start += t.numel()
            out.append(pieces)
        return out, total

    # ---- learning ---------------------------------------------------------------------------------

    @torch.no_grad()
    def init_steps(self, params: Mapping[str, Tensor], bits: int = 8) -> None:
        """Steps so that each block's / tensor's largest value is ``2**(bits-1) - 1`` steps; the
        Gaussians at the tensors' spread; the context models' reference at each grid's deviation."""
        if bits < 2:
            raise ValueError(f"bits must be >= 2, got {bits}")
        levels = 2 ** (bits - 1) - 1
        for g, name in enumerate(self.grid_names):
            blocks = self._to_blocks(self._checked(params, name).detach().float(), g)  # (N, bt, bh, bw)
            peak = blocks.abs().amax(dim=(1, 2, 3)).clamp_min(2.0**-30) / levels
            step = self.grid_log2_step[g]
            step.copy_(torch.log2(peak).clamp(_INIT_MIN_LOG2_STEP, _LOG2_STEP_RANGE[1]).view(step.shape))
            deviation = float(params[name].detach().float().std().clamp_min(2.0**-30))
            self.grid_reference[g] = int(round(math.log2(deviation)))
        layer = self.layer
        for i, name in enumerate(self.layer_names):
            w = self._checked(params, name).detach().float()
            peak = float(w.abs().max().clamp_min(2.0**-30)) / levels
            layer["step_out"][i].fill_(max(min(math.log2(peak), _LOG2_STEP_RANGE[1]), _INIT_MIN_LOG2_STEP))
            layer["step_in"][i].zero_()
            layer["mean_out"][i].zero_()
            layer["mean_in"][i].zero_()
            spread = float(w.std()) if w.numel() > 1 else 0.0
            layer["scale_out"][i].fill_(math.log2(max(spread, 2.0**_INIT_MIN_LOG2_STEP)))
            layer["scale_in"][i].zero_()

    def _checked(self, params: Mapping[str, Tensor], name: str) -> Tensor:
        if name not in params:
            raise ParamCodingError(f"parameter {name!r} is missing (the coder codes {list(self.shapes)})")
        if tuple(params[name].shape) != self.shapes[name]:
            raise ParamCodingError(
                f"parameter {name!r} has shape {tuple(params[name].shape)}, the coder was built for "
                f"{self.shapes[name]}"
            )
        return params[name]

    # ---- grids: blocks ----------------------------------------------------------------------------

    def _to_blocks(self, grid: Tensor, g: int) -> Tensor:
        """(t, h, w, c) -> (blocks * c, bt, bh, bw), zero-padded; sequences ordered (bT, bH, bW, c)."""
        t, h, w, c = grid.shape
        bt, bh, bw = self.block
        nt, nh, nw = (-(-t // bt), -(-h // bh), -(-w // bw))
        padded = F.pad(grid, (0, 0, 0, nw * bw - w, 0, nh * bh - h, 0, nt * bt - t))
        blocks = padded.view(nt, bt, nh, bh, nw, bw, c).permute(0, 2, 4, 6, 1, 3, 5)
        return blocks.reshape(nt * nh * nw * c, bt, bh, bw)

    def _from_blocks(self, blocks: Tensor, g: int) -> Tensor:
        t, h, w, c = self.shapes[self.grid_names[g]]
        bt, bh, bw = self.block
        nt, nh, nw = (-(-t // bt), -(-h // bh), -(-w // bw))
        grid = blocks.view(nt, nh, nw, c, bt, bh, bw).permute(0, 4, 1, 5, 2, 6, 3)
        return grid.reshape(nt * bt, nh * bh, nw * bw, c)[:t, :h, :w]

    def _inside(self, g: int, device: torch.device) -> Tensor:
        """(N, bt, bh, bw) bool: which block positions are in the grid (not padding)."""
        return self._to_blocks(torch.ones(self.shapes[self.grid_names[g]], device=device), g) > 0

    def _grid_steps(self, g: int, log2_steps: Tensor) -> Tensor:
        """(N,) the step of each block sequence: exp2 of the decoded log2-steps (one function, both sides)."""
        return torch.exp2(log2_steps.clamp(*_LOG2_STEP_RANGE)).reshape(-1)

    # ---- forward (training, keep-best) ------------------------------------------------------------

    def forward(self, params: Mapping[str, Tensor], mode: str = "noise") -> tuple[dict[str, Tensor], Tensor]:
        """``(quantized tensors by name, estimated bits)``: grids, layers and the side information."""
        if mode not in ("noise", "ste", "dequantize"):
            raise ValueError(f"mode must be 'noise', 'ste' or 'dequantize', got {mode!r}")
        state = self._state()
        side, total = self._quantized_side(mode)
        out = dict(params)
        reference = self.grid_reference.to(torch.float32)
        for g, name in enumerate(self.grid_names):
            grid = self._checked(params, name)
            step = self._grid_steps(g, side[0][g])[:, None, None, None]
            blocks = self._to_blocks(grid.float(), g)
            used, rate_on = _proxy(blocks / step, mode, state)
            values = used * step
            out[name] = self._from_blocks(values, g).to(grid.dtype)
            mean, log2_scale = self._context_forward(g, side[4 + g], values * torch.exp2(-reference[g]))
            mean, scale = mean * torch.exp2(reference[g]), torch.exp2(log2_scale + reference[g])
            inside = self._inside(g, grid.device)
            total = total + _bits((rate_on - mean / step)[inside], (scale / step)[inside])
        for i, name in enumerate(self.layer_names):
            w = self._checked(params, name)
            step, mean, scale = self._layer_model(i, side)
            matrix = w.float().reshape(self.matrix_shape(name))
            used, rate_on = _proxy(matrix / step, mode, state)
            out[name] = (used * step).view_as(w).to(w.dtype)
            total = total + _bits(rate_on - mean / step, (scale / step).expand_as(matrix))
        return out, total

    def _context_forward(self, g: int, weights: list[Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
        """The context model with quantized weights (training path: masked convolutions)."""
        names = [n for n, _ in self.context[g].named_parameters()]
        output = torch.func.functional_call(self.context[g], dict(zip(names, weights, strict=True)), (x,))
        return output[:, 0], output[:, 1]

    def _layer_model(self, i: int, side: list[list[Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
        """(step, mean, scale) of layer tensor i as broadcastable (out, in) matrices (dual axis)."""
        count = len(self.layer_names)
        step_out, step_in = side[1][i], side[1][count + i]
        mean_out, mean_in = side[2][i], side[2][count + i]
        scale_out, scale_in = side[3][i], side[3][count + i]
        step = torch.exp2((step_out[:, None] + step_in[None, :]).clamp(*_LOG2_STEP_RANGE))
        sigma_in = torch.exp2(scale_in)
        mean = mean_out[:, None] * sigma_in[None, :] + mean_in[None, :]
        scale = torch.exp2(scale_out)[:, None] * sigma_in[None, :]
        return step, mean, scale

    def quantize(self, params: Mapping[str, Tensor], mode: str = "noise") -> dict[str, Tensor]:
        return self.forward(params, mode)[0]

    def rate_bits(self, params: Mapping[str, Tensor], mode: str = "noise") -> Tensor:
        return self.forward(params, mode)[1]

    # ---- coding -----------------------------------------------------------------------------------

    @torch.no_grad()
    def compress(self, params: Mapping[str, Tensor]) -> bytes:
        """The payload: header, psi and the reference exponents raw, then one ANS stream of phi,
        the layers and the grids (the decoded weights are ``forward(params, "dequantize")[0]``)."""
        cpu = {name: self._checked(params, name).detach().float().cpu() for name in self.shapes}
        steps = self._side_steps().detach().cpu()
        side_symbols = []
        records = b""
        for kind, tensors in enumerate(self._side_groups()):
            log2_step = int(torch.log2(steps[kind]))
            flat = (
                torch.cat([t.detach().float().cpu().reshape(-1) for t in tensors])
                if tensors
                else torch.zeros(0)
            )
            symbols = torch.round(flat / steps[kind])
            mean, deviation = _side_gaussian(symbols)
            records += _SIDE_RECORD.pack(log2_step, mean, deviation)
            side_symbols.append(symbols)
        references = bytes(int(r) & 0xFF for r in self.grid_reference.cpu().tolist())
        coder = _Stream(self.tables(), AnsEncoder())
        side = self._side_from_symbols(records, side_symbols)
        for kind, symbols in enumerate(side_symbols):
            mean, deviation = _SIDE_RECORD.unpack_from(records, kind * _SIDE_RECORD.size)[1:]
            coder.code(symbols, torch.full_like(symbols, mean), torch.full_like(symbols, deviation))
        self._code_weights(coder, side, references, cpu)
        stream = coder.coder.to_bytes()
        body = records + references + stream
        return _HEADER.pack(_MAGIC, _VERSION, self.spec_crc, zlib.crc32(body)) + body

    def decompress(self, data: bytes) -> dict[str, Tensor]:
        """float32 CPU tensors by name, bit-exact to the encoder's decoded weights."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ParamCodingError(f"parameter payload must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < _HEADER.size:
            raise ParamCodingError(f"parameter payload of {len(data)} bytes is shorter than its header")
        magic, version, spec_crc, body_crc = _HEADER.unpack_from(data)
        if magic != _MAGIC or version != _VERSION:
            raise ParamCodingError(f"not a version {_VERSION} parameter payload (magic {magic!r})")
        if spec_crc != self.spec_crc:
            raise ParamCodingError(
                "parameter payload was coded for another architecture (names, shapes differ)"
            )
        body = data[_HEADER.size :]
        if zlib.crc32(body) != body_crc:
            raise ParamCodingError("parameter payload is corrupt or truncated (CRC32 mismatch)")
        side_bytes = len(self.kinds) * _SIDE_RECORD.size
        if len(body) < side_bytes + len(self.grid_names):
            raise ParamCodingError("parameter payload is shorter than its side information")
        records = body[:side_bytes]
        references = body[side_bytes : side_bytes + len(self.grid_names)]
        try:
            coder = _Stream(self.tables(), AnsDecoder(body[side_bytes + len(self.grid_names) :]))
            side_symbols = []
            for kind, tensors in enumerate(self._side_groups()):
                log2_step, mean, deviation = _SIDE_RECORD.unpack_from(records, kind * _SIDE_RECORD.size)
                if not (_SIDE_STEP_RANGE[0] <= log2_step <= _SIDE_STEP_RANGE[1]) or not (
                    math.isfinite(mean) and math.isfinite(deviation) and deviation > 0
                ):
                    raise ParamCodingError(
                        f"parameter payload has out-of-range side information ({self.kinds[kind]})"
                    )
                count = sum(t.numel() for t in tensors)
                side_symbols.append(
                    coder.code(None, torch.full((count,), mean), torch.full((count,), deviation))
                )
            side = self._side_from_symbols(records, side_symbols)
            out: dict[str, Tensor] = {}
            self._code_weights(coder, side, references, None, out)
            coder.coder.finish()
        except ParamCodingError:
            raise
        except (EntropyCoderError, ValueError, RuntimeError) as error:
            raise ParamCodingError(f"parameter payload cannot be decoded: {error}") from error
        return {name: out[name] for name in self.shapes}

    def _side_from_symbols(self, records: bytes, symbols: list[Tensor]) -> list[list[Tensor]]:
        """phi-hat from its symbols and psi's steps, split like :meth:`_side_groups` (both sides)."""
        out = []
        for kind, tensors in enumerate(self._side_groups()):
            log2_step = _SIDE_RECORD.unpack_from(records, kind * _SIDE_RECORD.size)[0]
            values = symbols[kind].to(torch.float32) * (2.0**log2_step)
            pieces, start = [], 0
            for t in tensors:
                pieces.append(values[start : start + t.numel()].view(t.shape))
                start += t.numel()
            out.append(pieces)
        return out

    def _code_weights(
        self, coder: _Stream, side: list[list[Tensor]], references: bytes, params: dict[str, Tensor] | None,
        out: dict[str, Tensor] | None = None,
    ) -> None:  # fmt: skip
        """Layers, then grids, coded (``params`` given) or decoded into ``out``, by the same code."""
        for i, name in enumerate(self.layer_names):
            step, mean, scale = self._layer_model(i, side)
            shape = self.matrix_shape(name)
            symbols = None if params is None else torch.round(params[name].reshape(shape) / step)
            mean_s, scale_s = (mean / step).expand(shape), (scale / step).expand(shape)
            decoded = coder.code(symbols, mean_s, scale_s)
            if out is not None:
                out[name] = (decoded.view(shape) * step).view(self.shapes[name])
        for g, name in enumerate(self.grid_names):
            reference = struct.unpack("<b", references[g : g + 1])[0]
            steps = self._grid_steps(g, side[0][g])
            blocks = (
                None
                if params is None
                else torch.round(self._to_blocks(params[name], g) / steps[:, None, None, None])
            )
            values = self._code_grid(coder, g, side[4 + g], steps, reference, blocks)
            if out is not None:
                out[name] = self._from_blocks(values, g)

    def _code_grid(
        self, coder: _Stream, g: int, weights: list[Tensor], steps: Tensor, reference: int,
        symbols: Tensor | None,
    ) -> Tensor:  # fmt: skip
        """Every block of grid g position by position (all blocks at once): context -> code -> value."""
        model = self.context[g]
        names = [n for n, _ in model.named_parameters()]
        params = dict(zip(names, weights, strict=True))
        first, second, third = model.step_weights(params)
        inside = self._inside(g, torch.device("cpu")).reshape(steps.shape[0], -1)
        sequences, positions = inside.shape
        width = model.width
        scale_in, scale_out = 2.0**-reference, 2.0**reference
        x = torch.zeros(sequences, positions + 1)  # the last column: zeros outside the block
        h1 = torch.zeros(sequences, positions + 1, width)
        h2 = torch.zeros(sequences, positions + 1, width)
        table_a, table_b = self._neighbours
        values = torch.zeros(sequences, positions)
        flat_symbols = None if symbols is None else symbols.reshape(sequences, positions)
        for p in range(positions):
            hidden = F.gelu(x[:, table_a[p]] @ first + params["first.bias"])
            h1[:, p] = F.layer_norm(hidden, (width,), eps=LAYER_NORM_EPS)
            hidden = F.gelu(h1[:, table_b[p]].reshape(sequences, -1) @ second + params["second.bias"])
            h2[:, p] = F.layer_norm(hidden, (width,), eps=LAYER_NORM_EPS)
            output = h2[:, table_b[p]].reshape(sequences, -1) @ third + params["third.bias"]
            mean = output[:, 0] * scale_out / steps
            scale = torch.exp2(output[:, 1] + reference) / steps
            coded = inside[:, p]
            q = coder.code(
                None if flat_symbols is None else flat_symbols[coded, p], mean[coded], scale[coded]
            )
            column = torch.zeros(sequences)
            column[coded] = q
            values[:, p] = column * steps
            x[:, p] = values[:, p] * scale_in
        return values.view(sequences, *self.block)


def _side_gaussian(symbols: Tensor) -> tuple[float, float]:
    """The Gaussian psi codes a side group's symbols with: their mean and deviation, as float16."""
    if symbols.numel() == 0:
        return 0.0, 1.0
    mean = float(np.float16(float(symbols.float().mean())))
    deviation = float(np.float16(max(float(symbols.float().std(unbiased=False)), 0.5)))
    return mean, deviation


class _Stream:
    """One ANS stream coded or decoded by the same calls: ``code(symbols or None, means, scales)``.

    The value returned is ``q`` (float32), equal on both sides (see :class:`_MeanGaussianTables`).
    """

    def __init__(self, tables: _MeanGaussianTables, coder: AnsEncoder | AnsDecoder) -> None:
        self.tables, self.coder = tables, coder

    def code(self, symbols: Tensor | None, means: Tensor, scales: Tensor) -> Tensor:
        means = means.detach().to(torch.float32).reshape(-1)
        scales = scales.detach().to(torch.float32).reshape(-1)
        if not (torch.isfinite(means).all() and torch.isfinite(scales).all()):
            raise ParamCodingError("a Gaussian mean or scale is not finite: the parameters cannot be coded")
        if means.numel() == 0:
            return means
        floor, rows = self.tables.rows(means, scales)
        total = len(self.tables.scale_table) * _MEAN_FRACTIONS
        if isinstance(self.coder, AnsEncoder):
            assert symbols is not None
            q = symbols.reshape(-1).float()
            self.tables._encode_into(self.coder, self.tables._symbols(q - floor, None), rows, total)
            return q
        decoded = self.tables._decode_from(self.coder, rows, total)
        return torch.from_numpy(np.ascontiguousarray(decoded, dtype=np.int64)).to(torch.float32) + floor


# ---- the network -------------------------------------------------------------------------------


def _grid_sizes(
    frames: int, height: int, width: int, channels: int, levels: int, ratios: Sequence[float]
) -> list[tuple[int, int, int, int]]:
    """(t, h, w, c) of each grid level: the first level's size over ``ratios**level`` (HiNeRV's rule)."""
    sizes = []
    for level in range(levels):
        t, h, w, c = (max(int(size / ratio**level), 1) for size, ratio in
                      zip((frames, height, width, channels), ratios, strict=True))  # fmt: skip
        sizes.append((t, h, w, c))
    return sizes


class GridStem(nn.Module):
    """NVRC's input: multi-resolution grids, a 3-D stem convolution on each, THEN interpolation.

    Level l is a (t_l, h_l, w_l, c_l) grid. For a frame, the stem (kt x k x k, zero padding; one
    kernel per level, one bias: a single convolution over the levels' channels, split by level) is
    evaluated on the two grid slices around the frame's time (half-pixel aligned, as in HiNeRV),
    lerped between them, bilinearly resized to the base size and summed over levels.
    """

    def __init__(
        self, sizes: Sequence[tuple[int, int, int, int]], out_channels: int, kernel: Sequence[int],
        base: tuple[int, int], init_scale: float,
    ) -> None:  # fmt: skip
        super().__init__()
        self.sizes = [tuple(s) for s in sizes]
        self.kernel = tuple(int(k) for k in kernel)
        self.base = base
        self.grids = nn.ParameterList(
            nn.Parameter(torch.empty(size).uniform_(-init_scale, init_scale)) for size in self.sizes
        )
        self.weights = nn.ParameterList()
        fan_in = sum(size[3] for size in self.sizes) * math.prod(self.kernel)
        bound = 1.0 / math.sqrt(fan_in)
        for size in self.sizes:
            self.weights.append(
                nn.Parameter(torch.empty(out_channels, size[3], *self.kernel).uniform_(-bound, bound))
            )
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, frame_indices: Tensor, num_frames: int) -> Tensor:
        """(B, h, w, out) at the base size."""
        kt, kh, kw = self.kernel
        reach = kt // 2
        total = None
        for grid, weight in zip(self.grids, self.weights, strict=True):
            slices = grid.shape[0]
            position = (frame_indices.to(torch.float32) + 0.5) * (slices / num_frames) - 0.5
            position = position.clamp(0.0, float(slices - 1))
            lower = torch.floor(position)
            fraction = (position - lower).to(grid.dtype)
            window = lower.long()[:, None] + torch.arange(-reach, reach + 2, device=grid.device)[None, :]
            inside = ((window >= 0) & (window < slices)).to(grid.dtype)
            x = grid[window.clamp(0, slices - 1)] * inside[:, :, None, None, None]  # (B, kt+1, h, w, c)
            x = F.conv3d(x.permute(0, 4, 1, 2, 3), weight, padding=(0, kh // 2, kw // 2))  # (B, out, 2, h, w)
            x = x[:, :, 0] * (1 - fraction)[:, None, None, None] + x[:, :, 1] * fraction[:, None, None, None]
            if tuple(x.shape[-2:]) != self.base:
                x = F.interpolate(x, size=self.base, mode="bilinear", align_corners=False)
            total = x if total is None else total + x
        assert total is not None
        return (total + self.bias[None, :, None, None]).permute(0, 2, 3, 1)


# Architecture numbers NVRC shares with HiNeRV (same meaning, same bounds).
_HINERV_NUMBERS = (
    "channels", "channels_reduce", "depths", "expansions", "kernels", "scales", "encoding_frames",
    "encoding_channels", "encoding_levels", "encoding_depth_scale", "grid_init_scale", "colour_matrix",
)  # fmt: skip


@register_network
class NVRC(SceneAdaptiveNet):
    """NVRC's network (HiNeRV with NVRC's grids and stem) and NVRC's coder of its parameters.

    Args (all stored in the bitstream's architecture config):
        height, width, num_frames, structure, intra_period, gop_size: as :class:`models.hinerv.HiNeRV`.
        channels, channels_reduce, depths, expansions, kernels, scales: HiNeRV's stages.
        stem_kernel: (t, h, w) of the stem convolution on the grids (NVRC: 3 x 3 x 3).
        grid_frames, grid_channels, grid_levels, grid_level_scale: the feature grids: level 0 has
            ``min(grid_frames, num_frames)`` slices of the base size (frame / prod(scales)) with
            ``grid_channels``; level l divides (t, h, w, c) by ``grid_level_scale**l``.
        encoding_frames, encoding_channels, encoding_levels, encoding_depth_scale: HiNeRV's local grids.
        grid_init_scale: grids start uniform in +-this.
        colour_matrix: RGB output -> coded Y'CbCr 4:2:0.
        grid_block, context_kernel, context_width, axis_min: the coder (block size of the grids'
            steps and context coding, the context model's kernel and width, the line length from
            which an axis of a layer parameter gets its own steps and Gaussian parameters).
    """

    pad_multiple = 2
    # HiNeRV's stages, local grids and head take the same numbers within the same bounds; NVRC adds its
    # stem, multi-resolution grids and coder (nvc_train/bitstream/FORMAT.md lists them).
    ARCHITECTURE_FIELDS = {
        **GEOMETRY_FIELDS,
        **{name: HiNeRV.ARCHITECTURE_FIELDS[name] for name in _HINERV_NUMBERS},
        "stem_kernel": ArchitectureField("ints", 1, 7, min_items=3, max_items=3),
        "grid_frames": ArchitectureField("int", 1, 100_000),
        "grid_channels": ArchitectureField("int", 1, 256),
        "grid_levels": ArchitectureField("int", 1, 6),
        "grid_level_scale": ArchitectureField("floats", 0.25, 4.0, min_items=4, max_items=4),
        "grid_block": ArchitectureField("ints", 1, 64, min_items=3, max_items=3),
        "context_kernel": ArchitectureField("int", 1, 7),
        "context_width": ArchitectureField("int", 1, 32),
        "axis_min": ArchitectureField("int", 1, 1 << 20),
    }

    def __init__(
        self, *, height: int, width: int, num_frames: int, structure: str = "ld", intra_period: int = -1,
        gop_size: int = 1, channels: int, channels_reduce: float, depths: Sequence[int],
        expansions: Sequence[float], kernels: Sequence[int], scales: Sequence[int],
        stem_kernel: Sequence[int],
        grid_frames: int, grid_channels: int, grid_levels: int, grid_level_scale: Sequence[float],
        encoding_frames: int, encoding_channels: int, encoding_levels: int, encoding_depth_scale: float,
        grid_init_scale: float, colour_matrix: str, grid_block: Sequence[int], context_kernel: int,
        context_width: int, axis_min: int,
    ) -> None:  # fmt: skip
        numbers = dict(
            channels=channels, channels_reduce=channels_reduce, depths=list(depths),
            expansions=list(expansions), kernels=list(kernels), scales=list(scales),
            stem_kernel=list(stem_kernel), grid_frames=grid_frames,
            grid_channels=grid_channels, grid_levels=grid_levels, grid_level_scale=list(grid_level_scale),
            encoding_frames=encoding_frames, encoding_channels=encoding_channels,
            encoding_levels=encoding_levels,
            encoding_depth_scale=encoding_depth_scale, grid_init_scale=grid_init_scale,
            colour_matrix=colour_matrix, grid_block=list(grid_block), context_kernel=context_kernel,
            context_width=context_width, axis_min=axis_min,
        )  # fmt: skip
        super().__init__(dict(height=height, width=width, num_frames=num_frames, structure=structure,
                              intra_period=intra_period, gop_size=gop_size, **numbers))  # fmt: skip
        stages = len(scales)
        if not (len(depths) == len(expansions) == len(kernels) == stages) or stages < 1:
            raise ValueError("depths, expansions, kernels and scales need one entry per stage (at least 1)")
        if min(scales) < 1 or min(depths) < 1 or channels < 1 or channels_reduce < 1:
            raise ValueError("scales, depths and channels must be >= 1 and channels_reduce >= 1")
        if any(k % 2 == 0 for k in [*kernels, *stem_kernel, context_kernel]) or len(stem_kernel) != 3:
            raise ValueError("kernels, the 3 stem kernel sizes and context_kernel must be odd")
        if len(grid_level_scale) != 4 or min(grid_level_scale) <= 0:
            raise ValueError(
                f"grid_level_scale needs 4 positive ratios (t, h, w, c), got {list(grid_level_scale)}"
            )
        if len(grid_block) != 3 or min(grid_block) < 1:
            raise ValueError(f"grid_block needs 3 sizes >= 1 (t, h, w), got {list(grid_block)}")
        if colour_matrix not in LUMA_WEIGHTS:
            raise ValueError(f"unknown colour_matrix {colour_matrix!r}; known: {', '.join(LUMA_WEIGHTS)}")
        self.colour_matrix = colour_matrix
        self.scales = [int(s) for s in scales]
        total_scale = math.prod(self.scales)
        self.base_height, self.base_width = -(-height // total_scale), -(-width // total_scale)
        sizes = _grid_sizes(min(grid_frames, num_frames), self.base_height, self.base_width, grid_channels,
                            grid_levels, grid_level_scale)  # fmt: skip
        self.stem = GridStem(
            sizes, channels, stem_kernel, (self.base_height, self.base_width), grid_init_scale
        )
        self.widths = [int(channels)]
        for _ in range(1, stages):
            self.widths.append(max(int(self.widths[-1] // channels_reduce), 1))
        self.stages = nn.ModuleList()
        in_channels = self.widths[0]
        for s in range(stages):
            encoding = TemporalGrids(
                encoding_frames if encoding_frames > 0 else num_frames,
                max(int(encoding_channels * encoding_depth_scale**s), 1), encoding_levels,
                (scales[s], scales[s]), grid_init_scale,
            )  # fmt: skip
            stage = Stage(
                in_channels, self.widths[s], scales[s], depths[s], expansions[s], kernels[s], encoding
            )
            # A stage's first block widens its INPUT by the expansion (HiNeRV: its output); inferred
            # from Table 7's parameter counts, which this matches within 0.3% for S2..S4.
            stage.blocks[0] = ConvNeXtBlock(
                in_channels, self.widths[s], int(in_channels * expansions[s]), kernels[s]
            )
            self.stages.append(stage)
            in_channels = self.widths[s]
        self.head = nn.Linear(self.widths[-1], 3)
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Linear | nn.Conv2d) and module.bias is not None:
                    module.bias.zero_()

    def is_network_parameter(self, name: str) -> bool:
        """Everything is network: an INR has no latents; grids are coded with the weights."""
        return True

    def parameter_coder(self) -> nn.Module:
        """NVRC's coder (built once, outside ``_modules`` as the base class keeps its coder)."""
        if self._param_coder is None:
            shapes = {name: tuple(p.shape) for name, p in self.named_parameters()}
            grids = [f"stem.grids.{level}" for level in range(len(self.stem.grids))]
            arch = self.architecture
            coder = NVRCCoder(shapes, grids, arch["grid_block"], arch["context_kernel"],
                              arch["context_width"],
                              arch["axis_min"], lambda: self.quantizer)  # fmt: skip
            coder.to(next(self.parameters()).device)
            object.__setattr__(self, "_param_coder", coder)
        return self._param_coder  # type: ignore[return-value]

    # ---- forward -----------------------------------------------------------------------------------

    def frames_forward(self, frame_indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(y, uv, 0)`` of whole frames."""
        frame_indices = frame_indices.to(self.stem.bias.device)
        x = self.stem(frame_indices, self.num_frames)
        for stage in self.stages:
            x = stage(x, frame_indices, self.num_frames)
        rgb = torch.sigmoid(self.head(x)).permute(0, 3, 1, 2)[..., : self.height, : self.width]
        y, u, v = yuv444_to_420(rgb_to_ycbcr(rgb, self.colour_matrix, full_range=False))
        return y, torch.cat([u, v], dim=1), y.new_zeros(())

    def frame_activation_bytes(self) -> int:
        """The widest stage's expanded activations (float32), a few alive at once."""
        peak, height, width = 0.0, self.base_height, self.base_width
        for scale, channels, expansion in zip(
            self.scales, self.widths, self.architecture["expansions"], strict=True
        ):
            height, width = height * scale, width * scale
            peak = max(peak, height * width * channels * max(1.0, expansion))
        return int(peak * 4 * 4)

    def decode_memory_bytes(self) -> int:
        """The base estimate plus the coder's: the grids' position-by-position state (each padded grid
        element holds its value and two hidden vectors of the context model's width, float32) and the
        coding tables (128 scales x 8 mean fractions x up to 4096 symbols, int32)."""
        block = self.architecture["grid_block"]
        width = self.architecture["context_width"]
        padded = 0
        for grid in self.stem.grids:
            t, h, w, c = grid.shape
            padded += math.prod(-(-n // b) * b for n, b in zip((t, h, w), block, strict=True)) * c
        tables = 128 * _MEAN_FRACTIONS * 2 * MAX_HALF_RANGE * 4
        return super().decode_memory_bytes() + int(1.25 * (padded * (2 * width + 2) * 4 + tables))

    def complexity(self) -> dict[str, float]:
        from nvc_train.complexity import count_macs

        with torch.device("meta"):
            meta = NVRC(**self.architecture)
        with torch.no_grad():
            macs = count_macs(meta.frames_forward, torch.zeros(1, dtype=torch.long, device="meta"))
        return {**super().complexity(), "kmac_per_px": macs / float(self.height * self.width) / 1e3}


# ---- reference numbers --------------------------------------------------------------------------
# The paper's Table 7 ("number of parameters") for S1..S4, and the geometry we count ours at (UVG
# 1080p, 600 frames; the paper does not say at which sequence length it counted).
_UVG_1080P = {"height": 1080, "width": 1920, "num_frames": 600}
REFERENCE: dict[str, dict[str, Any]] = {
    "nvrc_s1": {**_UVG_1080P, "paper_params": 2_140_000},
    "nvrc_s2": {**_UVG_1080P, "paper_params": 6_350_000},
    "nvrc_s3": {**_UVG_1080P, "paper_params": 14_190_000},
    "nvrc_s4": {**_UVG_1080P, "paper_params": 31_410_000},
}
