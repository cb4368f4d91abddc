"""HiNeRV (Kwan et al., NeurIPS 2023): frame index -> RGB frame, weights are the code.

The network is the published one (github hmkx/HiNeRV, ``cfgs/models/uvg-hinerv-{s,m,l,xl,xxl}``),
written here from its description and checked against the official code: same layers, same
parameter shapes and counts, same multiply-accumulates (``tests/test_hinerv_official.py``). Its
weights (grids included) are pruned, quantized and coded as HiNeRV does it
(:mod:`models.hinerv_compression`, through :meth:`HiNeRV.parameter_coder`); HiNeRV's training
schedule is ``configs/overfit/hinerv.yaml`` (:mod:`nvc_train.training.hinerv_schedule`).

Data flow of one frame t (sizes for HiNeRV-M at 1080p, 600 frames)::

    base grids: level l has 150 / 2**l slices of 18 x 32 x (4 * 2**l)   --lerp at t-->  18 x 32 x 12
      -> stem conv 3x3 (bias) -> 400 channels
      -> stage s = 1..4 (scales 5 3 2 2, widths 400 400 200 100 -> 400 200 100 50):
           LayerNorm (no affine, eps 1e-6) -> bilinear upsample x scale_s
           + hierarchical encoding: per level a grid of (600 / 2**l) slices x scale x scale cells
             x (C_e * 2**l) channels, lerped at t, Linear (bias) to the width, and every pixel takes
             the features of its position inside its upsampling cell
           -> depth_s ConvNeXt blocks (depthwise kxk, LayerNorm, MLP x expansion, GELU; no bias,
              no affine; residual where the width does not change)
      -> Linear (bias) to R, G, B -> sigmoid              (1080 x 1920 x 3, in [0, 1])
      -> Y'CbCr (``colour_matrix``, limited range), chroma 2x2-averaged: the framework's 4:2:0 planes

Time is sampled with half-pixel alignment: frame t of T lies at ``(t + 0.5) * S / T - 0.5`` on a
grid of S slices (clamped to the ends), as ``F.interpolate(align_corners=False)`` and
``F.grid_sample(align_corners=False)`` place it in the official code.

Two ways to run the same network:

* whole frames (``frames_forward(indices)``): what the decoder runs; the multiply-accumulates counted
  by :mod:`nvc_train.complexity` are this path's.
* patches (``frames_forward(indices, crop=...)``): HiNeRV trains on 120 x 120 patches. Each stage
  computes only the window its successors need (the patch, grown by every later convolution's reach
  and the upsampling's support), positions outside the frame are held at zero as the frame's zero
  padding would, so a patch equals the same pixels of the whole frame (to float rounding).

The base grid is ``ceil(size / prod(scales))``; the output is cropped to the coded size, so any even
size is coded (the official code needs sizes divisible by ``prod(scales)``; at 1080p both agree).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.adaptive import GEOMETRY_FIELDS, SceneAdaptiveNet
from models.hinerv_compression import HiNeRVWeightCodec
from models.registry import register_network
from nvc_train.bitstream.architecture import ArchitectureField
from nvc_train.video.colour import LUMA_WEIGHTS, rgb_to_ycbcr, yuv444_to_420

__all__ = ["LAYER_NORM_EPS", "REFERENCE", "HiNeRV"]

# HiNeRV's LayerNorm everywhere: no affine parameters, eps 1e-6 (the official ``layernorm-no-affine``).
LAYER_NORM_EPS = 1e-6


# ---- time sampling ------------------------------------------------------------------------------


def _lerp_time(grid: Tensor, frame_indices: Tensor, num_frames: int) -> Tensor:
    """``grid`` (S, ...) linearly interpolated at each frame, half-pixel aligned; (B, ...).

    Frame t of ``num_frames`` sits at ``(t + 0.5) * S / num_frames - 0.5`` on the slice axis, clamped
    to [0, S - 1]. Tensor ops only (no ``.item()``), so the same code runs on meta tensors.
    """
    slices = grid.shape[0]
    position = (frame_indices.to(torch.float32) + 0.5) * (slices / num_frames) - 0.5
    position = position.clamp(0.0, float(slices - 1))
    lower = torch.floor(position)
    weight = (position - lower).to(grid.dtype).view(-1, *([1] * (grid.dim() - 1)))
    lower_index = lower.long()
    upper_index = torch.clamp(lower_index + 1, max=slices - 1)
    return grid[lower_index] * (1 - weight) + grid[upper_index] * weight


class TemporalGrids(nn.Module):
    """Learned grids over time: level l has ``frames // 2**l`` slices of ``cell x (channels * 2**l)``.

    HiNeRV's grids trade temporal for channel resolution from level to level: coarse levels are
    shared by many frames, fine ones are nearly per frame. Stored channels-last, (slices, h, w, C),
    the official layout; initialised uniform in +-``init_scale``.
    """

    def __init__(
        self, frames: int, channels: int, levels: int, cell: tuple[int, int], init_scale: float
    ) -> None:
        super().__init__()
        self.grids = nn.ParameterList()
        for level in range(levels):
            slices = max(frames // 2**level, 1)
            grid = torch.empty(slices, *cell, channels * 2**level).uniform_(-init_scale, init_scale)
            self.grids.append(nn.Parameter(grid))

    @property
    def channels(self) -> int:
        return sum(grid.shape[-1] for grid in self.grids)

    def forward(self, frame_indices: Tensor, num_frames: int) -> Tensor:
        """(B, h, w, channels): every level interpolated at each frame, concatenated."""
        return torch.cat([_lerp_time(grid, frame_indices, num_frames) for grid in self.grids], dim=-1)


# ---- patch windows ------------------------------------------------------------------------------


@dataclass
class _AxisWindow:
    """One axis of the window a stage computes, per batch item, at that stage's output resolution.

    ``positions`` (B, L): the global index of every sample of the upsampled window (the blocks'
    input; may lie outside the frame). ``inside`` (B, L): which of them are in the frame.
    ``interpolation`` (B, L, L_in): the bilinear upsampling from the stage's input window, one row per
    output sample (zero rows outside the frame). ``halo``: samples the blocks consume on each side
    (cropped after them).
    """

    positions: Tensor
    inside: Tensor
    interpolation: Tensor
    halo: int


def _plan_axis(
    origins: Tensor, length: int, sizes: Sequence[int], scales: Sequence[int], halos: Sequence[int],
    stem_reach: int,
) -> tuple[list[_AxisWindow], Tensor]:  # fmt: skip
    """Windows along one axis so that the last stage outputs ``[origin, origin + length)`` exactly.

    Walks from the output back to the base grid: stage s's blocks need ``halos[s]`` more samples on
    each side; its bilinear upsampling (x ``scales[s]``, half-pixel aligned, sources clamped at the
    frame edge as ``F.interpolate`` does) needs the input samples between the first and last
    in-frame output's sources. Every item gets the same window length (the largest), so a batch of
    patches at different offsets runs as one tensor. ``sizes[s]`` is the frame's extent at stage
    s's output resolution. Returns the windows (first stage first) and the base grid positions the
    stem reads (B, L_base): its unpadded convolution lands exactly on stage 0's input window.
    """
    windows: list[_AxisWindow] = []
    origin = origins.to(torch.long)
    for stage in reversed(range(len(scales))):
        scale, halo, size = scales[stage], halos[stage], sizes[stage]
        source_size = size // scale
        positions = origin[:, None] - halo + torch.arange(length + 2 * halo)[None, :]
        inside = (positions >= 0) & (positions < size)
        source = ((positions.to(torch.float64) + 0.5) / scale - 0.5).clamp_min(0.0)
        low = torch.floor(source).long().clamp(max=source_size - 1)
        high = (low + 1).clamp(max=source_size - 1)
        fraction = (source - low.to(torch.float64)).clamp(0.0, 1.0)
        # The input window: from the first to the last source an in-frame output reads.
        first = torch.where(inside, low, torch.full_like(low, size)).min(dim=1).values
        last = torch.where(inside, high, torch.full_like(high, -1)).max(dim=1).values
        source_length = int((last - first).max()) + 1
        # One row of bilinear weights per output sample (a matrix product, as the official code
        # upsamples patches: cheaper to differentiate than gathers).
        zero = torch.zeros((), dtype=torch.float64)
        interpolation = torch.zeros(*positions.shape, source_length, dtype=torch.float64)
        local_low = (low - first[:, None]).clamp(0, source_length - 1)
        local_high = (high - first[:, None]).clamp(0, source_length - 1)
        interpolation.scatter_add_(
            2, local_low[..., None], torch.where(inside, 1.0 - fraction, zero)[..., None]
        )
        interpolation.scatter_add_(2, local_high[..., None], torch.where(inside, fraction, zero)[..., None])
        windows.append(_AxisWindow(positions, inside, interpolation.to(torch.float32), halo))
        origin, length = first, source_length
    base = origin[:, None] - stem_reach + torch.arange(length + 2 * stem_reach)[None, :]
    return windows[::-1], base


def _gather_axis(x: Tensor, axis: int, index: Tensor) -> Tensor:
    """``x`` (B, H, W, C) sampled along ``axis`` (1: rows, 2: columns) at per-item ``index`` (B, L)."""
    batch, height, width, channels = x.shape
    if axis == 1:
        return x.gather(1, index[:, :, None, None].expand(batch, index.shape[1], width, channels))
    return x.gather(2, index[:, None, :, None].expand(batch, height, index.shape[1], channels))


def _upsample_window(x: Tensor, rows: _AxisWindow, cols: _AxisWindow) -> Tensor:
    """Separable bilinear upsampling of a window (B, h, w, C) onto the next stage's window."""
    batch, height, width, channels = x.shape
    x = torch.matmul(rows.interpolation, x.reshape(batch, height, width * channels))
    x = x.view(batch, -1, width, channels)
    return torch.matmul(cols.interpolation[:, None], x)  # (B, 1, L_w, w) @ (B, L_h, w, C)


# ---- blocks -------------------------------------------------------------------------------------


class ConvNeXtBlock(nn.Module):
    """Depthwise kxk conv -> LayerNorm -> Linear(C_in, hidden) -> GELU -> Linear(hidden, C_out) (+ x).

    HiNeRV's block: no biases, LayerNorm without affine parameters; the residual is kept whenever the
    width does not change. Channels-last (B, H, W, C) in and out.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int, kernel: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, kernel, padding=kernel // 2, groups=in_channels, bias=False
        )
        self.norm = nn.LayerNorm(in_channels, eps=LAYER_NORM_EPS, elementwise_affine=False)
        self.expand = nn.Linear(in_channels, hidden, bias=False)
        self.project = nn.Linear(hidden, out_channels, bias=False)
        self.residual = in_channels == out_channels

    def forward(self, x: Tensor, inside: Tensor | None = None) -> Tensor:
        """``inside`` (B, H, W, 1): positions in the frame (patch windows); outside stays zero."""
        h = self.depthwise(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        h = self.project(F.gelu(self.expand(self.norm(h))))
        if inside is not None:
            h = h * inside
        return x + h if self.residual else h


class Stage(nn.Module):
    """LayerNorm, upsample x ``scale``, add the hierarchical encoding, then ``depth`` ConvNeXt blocks."""

    def __init__(
        self, in_channels: int, out_channels: int, scale: int, depth: int, expansion: float, kernel: int,
        encoding: TemporalGrids,
    ) -> None:  # fmt: skip
        super().__init__()
        self.scale = scale
        self.norm = nn.LayerNorm(in_channels, eps=LAYER_NORM_EPS, elementwise_affine=False)
        self.encoding = encoding
        self.encoding_projection = nn.Linear(encoding.channels, in_channels)
        hidden = int(out_channels * expansion)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(in_channels if i == 0 else out_channels, out_channels, hidden, kernel)
            for i in range(depth)
        )
        self.halo = depth * (kernel // 2)

    def cell_features(self, frame_indices: Tensor, num_frames: int) -> Tensor:
        """(B, scale * scale, C_in): the encoding of every position inside an upsampling cell."""
        cells = self.encoding(frame_indices, num_frames)  # (B, scale, scale, C_e)
        return self.encoding_projection(cells.flatten(1, 2))

    def add_encoding(self, x: Tensor, cells: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        """Add to each pixel the features of its position in its cell (rows, cols: (B, H) / (B, W)
        global indices, or (1, H) / (1, W) for whole frames).

        As in the official code, the lookup is a product with the one-hot cell-membership matrix:
        it serves any window offset, and its multiply-accumulates are the ones the official figures
        count (0.5% of the total)."""
        scale = self.scale
        member = (rows % scale)[:, :, None] * scale + (cols % scale)[:, None, :]  # (B', H, W)
        one_hot = (member.flatten(1)[:, :, None] == torch.arange(scale * scale, device=x.device)).to(x.dtype)
        return x + torch.matmul(one_hot, cells).view_as(x)

    def forward(
        self, x: Tensor, frame_indices: Tensor, num_frames: int,
        window: tuple[_AxisWindow, _AxisWindow] | None = None,
    ) -> Tensor:  # fmt: skip
        """Whole frames (``window`` None) or one window per item; channels-last in and out."""
        x = self.norm(x)
        cells = self.cell_features(frame_indices, num_frames)
        if window is None:
            x = F.interpolate(
                x.permute(0, 3, 1, 2), scale_factor=self.scale, mode="bilinear", align_corners=False
            ).permute(0, 2, 3, 1)
            rows = torch.arange(x.shape[1], device=x.device)[None]
            cols = torch.arange(x.shape[2], device=x.device)[None]
            x = self.add_encoding(x, cells, rows, cols)
            for block in self.blocks:
                x = block(x)
            return x
        row_window, col_window = window
        inside = (row_window.inside[:, :, None] & col_window.inside[:, None, :])[..., None].to(x.dtype)
        x = _upsample_window(x, row_window, col_window)
        x = self.add_encoding(x, cells, row_window.positions, col_window.positions)
        x = x * inside
        for block in self.blocks:
            x = block(x, inside)
        halo = self.halo
        if halo:
            x = x[:, halo : x.shape[1] - halo, halo : x.shape[2] - halo]
        return x


# ---- the codec network --------------------------------------------------------------------------


@register_network
class HiNeRV(SceneAdaptiveNet):
    """One network per sequence: frame index -> RGB -> (Y, UV); see the module docstring.

    Args (all stored in the bitstream's architecture config):
        height, width, num_frames: the padded size and frame count of the sequence.
        structure, intra_period, gop_size: the coding structure (an INR decodes any frame alone, so
            they only travel for the record).
        channels: width of the stem and of stage 1; each later stage divides it by
            ``channels_reduce`` (rounded down).
        depths, expansions, kernels, scales: per stage: ConvNeXt blocks, MLP expansion (hidden =
            int(width * expansion)), depthwise kernel (odd) and upsampling factor.
        stem_kernel: kernel of the stem convolution (odd).
        base_grid_frames, base_grid_channels, base_grid_levels: the base grids (level l has
            ``base_grid_frames // 2**l`` slices of ``base_grid_channels * 2**l`` channels).
        encoding_frames, encoding_channels, encoding_levels, encoding_depth_scale: the per-stage
            hierarchical encoding grids (``encoding_frames`` 0: one slice per frame; stage s has
            ``int(encoding_channels * encoding_depth_scale**s)`` channels at level 0).
        grid_init_scale: grids start uniform in +-this (HiNeRV: 1e-3).
        colour_matrix: the Y'CbCr matrix taking the RGB output to the coded 4:2:0 planes.
    """

    pad_multiple = 2
    # What a file may set, and within what (the published S..XXL sizes fit well inside;
    # nvc_train/bitstream/FORMAT.md lists them).
    ARCHITECTURE_FIELDS = {
        **GEOMETRY_FIELDS,
        "channels": ArchitectureField("int", 1, 2048),
        "channels_reduce": ArchitectureField("float", 1.0, 16.0),
        "depths": ArchitectureField("ints", 1, 16, min_items=1, max_items=8),
        "expansions": ArchitectureField("floats", 0.25, 16.0, min_items=1, max_items=8),
        "kernels": ArchitectureField("ints", 1, 15, min_items=1, max_items=8),
        "scales": ArchitectureField("ints", 1, 8, min_items=1, max_items=8),
        "stem_kernel": ArchitectureField("int", 1, 15),
        "base_grid_frames": ArchitectureField("int", 1, 100_000),
        "base_grid_channels": ArchitectureField("int", 1, 256),
        "base_grid_levels": ArchitectureField("int", 1, 8),
        "encoding_frames": ArchitectureField("int", 0, 100_000),
        "encoding_channels": ArchitectureField("int", 1, 256),
        "encoding_levels": ArchitectureField("int", 1, 8),
        "encoding_depth_scale": ArchitectureField("float", 0.0, 4.0),
        "grid_init_scale": ArchitectureField("float", 0.0, 10.0),
        "colour_matrix": ArchitectureField("str", choices=tuple(LUMA_WEIGHTS)),
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
        channels: int,
        channels_reduce: float,
        depths: Sequence[int],
        expansions: Sequence[float],
        kernels: Sequence[int],
        scales: Sequence[int],
        stem_kernel: int,
        base_grid_frames: int,
        base_grid_channels: int,
        base_grid_levels: int,
        encoding_frames: int,
        encoding_channels: int,
        encoding_levels: int,
        encoding_depth_scale: float,
        grid_init_scale: float,
        colour_matrix: str,
    ) -> None:
        # The numbers have no defaults: configs/model/hinerv*.yaml (or a bitstream's architecture)
        # give every one, so no second copy of a variant lives here.
        numbers = dict(
            channels=channels, channels_reduce=channels_reduce, depths=list(depths),
            expansions=list(expansions), kernels=list(kernels), scales=list(scales),
            stem_kernel=stem_kernel, base_grid_frames=base_grid_frames,
            base_grid_channels=base_grid_channels, base_grid_levels=base_grid_levels,
            encoding_frames=encoding_frames, encoding_channels=encoding_channels,
            encoding_levels=encoding_levels, encoding_depth_scale=encoding_depth_scale,
            grid_init_scale=grid_init_scale, colour_matrix=colour_matrix,
        )  # fmt: skip
        super().__init__(
            dict(
                height=height, width=width, num_frames=num_frames, structure=structure,
                intra_period=intra_period, gop_size=gop_size, **numbers,
            )
        )  # fmt: skip
        stages = len(scales)
        if not (len(depths) == len(expansions) == len(kernels) == stages) or stages < 1:
            raise ValueError(
                f"depths, expansions, kernels and scales need one entry per stage (at least 1), got "
                f"{list(depths)}, {list(expansions)}, {list(kernels)}, {list(scales)}"
            )
        if min(scales) < 1 or min(depths) < 1 or channels < 1 or channels_reduce < 1:
            raise ValueError("scales, depths and channels must be >= 1 and channels_reduce >= 1")
        if any(k % 2 == 0 for k in [*kernels, stem_kernel]):
            raise ValueError(
                f"kernels must be odd (same padding), got {list(kernels)} and stem {stem_kernel}"
            )
        if colour_matrix not in LUMA_WEIGHTS:
            raise ValueError(f"unknown colour_matrix {colour_matrix!r}; known: {', '.join(LUMA_WEIGHTS)}")
        self.colour_matrix = colour_matrix
        self.scales = [int(s) for s in scales]
        total_scale = math.prod(self.scales)
        self.base_height = -(-height // total_scale)
        self.base_width = -(-width // total_scale)

        self.base_grids = TemporalGrids(
            base_grid_frames, base_grid_channels, base_grid_levels,
            (self.base_height, self.base_width), grid_init_scale,
        )  # fmt: skip
        self.stem_kernel = int(stem_kernel)
        self.stem = nn.Conv2d(self.base_grids.channels, channels, stem_kernel, padding=stem_kernel // 2)
        self.widths = [int(channels)]
        for _ in range(1, stages):
            self.widths.append(max(int(self.widths[-1] // channels_reduce), 1))
        self.stages = nn.ModuleList()
        in_channels = self.widths[0]
        for s in range(stages):
            encoding = TemporalGrids(
                encoding_frames if encoding_frames > 0 else num_frames,
                max(int(encoding_channels * encoding_depth_scale**s), 1),
                encoding_levels, (scales[s], scales[s]), grid_init_scale,
            )  # fmt: skip
            self.stages.append(
                Stage(in_channels, self.widths[s], scales[s], depths[s], expansions[s], kernels[s], encoding)
            )
            in_channels = self.widths[s]
        self.head = nn.Linear(self.widths[-1], 3)
        # HiNeRV zeroes every bias at the start (stem, encodings' projections, head).
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Linear | nn.Conv2d) and module.bias is not None:
                    module.bias.zero_()

    def is_network_parameter(self, name: str) -> bool:
        """Everything is network: an INR has no latents; grids are coded with the weights."""
        return True

    # ---- weight coding -----------------------------------------------------------------------------

    #: Weights coded as HiNeRV codes them (:mod:`models.hinerv_compression`: pruning masks, the
    #: per-slice symmetric quantizer, one histogram per tensor). A subclass that codes its weights
    #: with the framework's learned steps (``ParameterCoder``, e.g. NVRC) sets this False.
    hinerv_weight_coding: ClassVar[bool] = True

    @staticmethod
    def is_prunable(name: str) -> bool:
        """HiNeRV prunes the decoder's convolutions and linear layers: the stem, the blocks and the
        head; never the grids nor the hierarchical encodings (their grids and projections)."""
        return name in ("stem.weight", "head.weight") or (".blocks." in name and name.endswith(".weight"))

    @staticmethod
    def coded_shape(name: str, parameter: Tensor) -> tuple[int, ...]:
        """The shape HiNeRV's quantizer sees a parameter in: the official code keeps a base grid as
        (slices * h * w, C) and an encoding grid as (slices, cells * C), and picks each tensor's
        slice axis (hence its scales) on that shape; the memory order is ours, channels-last."""
        if name.startswith("base_grids."):
            return (parameter.numel() // parameter.shape[-1], parameter.shape[-1])
        if ".encoding.grids." in name:
            return (parameter.shape[0], parameter.numel() // parameter.shape[0])
        return tuple(parameter.shape)

    def parameter_coder(self) -> nn.Module:
        """HiNeRV's weight codec (:class:`~models.hinerv_compression.HiNeRVWeightCodec`), built once and
        kept outside ``state_dict`` like the base class's coder; the base class's learned-step coder
        when :attr:`hinerv_weight_coding` is False."""
        if not self.hinerv_weight_coding:
            return super().parameter_coder()
        if self._param_coder is None:
            codec = HiNeRVWeightCodec.from_module(
                self, include=lambda name, _t: self.is_network_parameter(name), prunable=self.is_prunable,
                coded_shape=self.coded_shape,
            )  # fmt: skip
            codec.to(self.stem.weight.device)
            object.__setattr__(self, "_param_coder", codec)
        return self._param_coder  # type: ignore[return-value]

    # ---- forward ---------------------------------------------------------------------------------

    def stage_sizes(self) -> list[tuple[int, int]]:
        """(height, width) of the frame at each stage's output resolution (before the final crop)."""
        sizes, height, width = [], self.base_height, self.base_width
        for scale in self.scales:
            height, width = height * scale, width * scale
            sizes.append((height, width))
        return sizes

    def rgb_forward(self, frame_indices: Tensor, crop: Tensor | None = None) -> Tensor:
        """RGB in [0, 1], (B, 3, H, W): whole frames, or per item the patch ``crop`` (B, 4) names.

        ``crop`` rows are ``(top, left, height, width)`` in pixels of the coded frame; every item
        must have the same height and width (a batch is one tensor).
        """
        frame_indices = frame_indices.to(self.stem.weight.device)
        base = self.base_grids(frame_indices, self.num_frames)  # (B, h, w, C)
        if crop is None:
            x = self.stem(base.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            for stage in self.stages:
                x = stage(x, frame_indices, self.num_frames)
            rgb = torch.sigmoid(self.head(x)).permute(0, 3, 1, 2)
            return rgb[..., : self.height, : self.width]
        return self._window_forward(base, frame_indices, crop)

    def _window_forward(self, base: Tensor, frame_indices: Tensor, crop: Tensor) -> Tensor:
        crop = crop.detach().to("cpu", torch.long)
        if crop.ndim != 2 or crop.shape != (frame_indices.shape[0], 4):
            raise ValueError(
                f"crop must be (B, 4) rows of (top, left, height, width), got {tuple(crop.shape)}"
            )
        patch_height, patch_width = int(crop[0, 2]), int(crop[0, 3])
        if not (crop[:, 2] == patch_height).all() or not (crop[:, 3] == patch_width).all():
            raise ValueError("every patch of a batch must have the same height and width")
        top, left = crop[:, 0], crop[:, 1]
        if patch_height < 1 or patch_width < 1 or top.min() < 0 or left.min() < 0:
            raise ValueError(f"patches must be non-empty and inside the frame, got {crop.tolist()}")
        if (top + patch_height).max() > self.height or (left + patch_width).max() > self.width:
            raise ValueError(f"patches {crop.tolist()} leave the {self.width}x{self.height} frame")
        sizes = self.stage_sizes()
        halos = [stage.halo for stage in self.stages]
        reach = self.stem_kernel // 2
        row_windows, base_rows = _plan_axis(
            top, patch_height, [s[0] for s in sizes], self.scales, halos, reach
        )
        col_windows, base_cols = _plan_axis(
            left, patch_width, [s[1] for s in sizes], self.scales, halos, reach
        )
        device = base.device

        def to_device(window: _AxisWindow) -> _AxisWindow:
            fields = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in vars(window).items()}
            return _AxisWindow(**fields)

        row_windows = [to_device(w) for w in row_windows]
        col_windows = [to_device(w) for w in col_windows]
        # The stem reads the base grid with zeros outside the frame (its 'same' padding), runs
        # unpadded, and its output outside the frame is zeroed (the bias would fill it).
        rows_inside = (base_rows >= 0) & (base_rows < self.base_height)
        cols_inside = (base_cols >= 0) & (base_cols < self.base_width)
        x = _gather_axis(base, 1, base_rows.clamp(0, self.base_height - 1).to(device))
        x = _gather_axis(x, 2, base_cols.clamp(0, self.base_width - 1).to(device))
        x = x * (rows_inside[:, :, None] & cols_inside[:, None, :]).to(device, x.dtype)[..., None]
        x = F.conv2d(x.permute(0, 3, 1, 2), self.stem.weight, self.stem.bias).permute(0, 2, 3, 1)
        stem_rows, stem_cols = (
            base_rows[:, reach : base_rows.shape[1] - reach],
            base_cols[:, reach : base_cols.shape[1] - reach],
        )
        stem_inside = ((stem_rows >= 0) & (stem_rows < self.base_height))[:, :, None] & (
            (stem_cols >= 0) & (stem_cols < self.base_width)
        )[:, None, :]
        x = x * stem_inside.to(device, x.dtype)[..., None]
        for stage, row_window, col_window in zip(self.stages, row_windows, col_windows, strict=True):
            x = stage(x, frame_indices, self.num_frames, (row_window, col_window))
        return torch.sigmoid(self.head(x)).permute(0, 3, 1, 2)

    def rgb_to_planes(self, rgb: Tensor) -> tuple[Tensor, Tensor]:
        """The coded 4:2:0 planes of an RGB output: Y'CbCr (``colour_matrix``, limited range), chroma
        2x2-averaged (the framework codes and measures 4:2:0)."""
        y, u, v = yuv444_to_420(rgb_to_ycbcr(rgb, self.colour_matrix, full_range=False))
        return y, torch.cat([u, v], dim=1)

    def frames_forward(
        self, frame_indices: Tensor, crop: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(y, uv, 0)`` of whole frames, or of the patches ``crop`` names (top and left even, so the
        chroma of a patch is the frame's chroma there)."""
        if crop is not None and bool((crop.detach().cpu()[:, :4] % 2 != 0).any()):
            raise ValueError(f"4:2:0 patches need even offsets and sizes, got {crop.tolist()}")
        y, uv = self.rgb_to_planes(self.rgb_forward(frame_indices, crop))
        return y, uv, y.new_zeros(())

    # ---- complexity ------------------------------------------------------------------------------

    def frame_activation_bytes(self) -> int:
        """The widest stage's expanded activations (float32), a few alive at once."""
        arch = self.architecture
        peak = 0
        for (height, width), channels, expansion in zip(
            self.stage_sizes(), self.widths, arch["expansions"], strict=True
        ):
            peak = max(peak, height * width * channels * max(1.0, expansion))
        return int(peak * 4 * 4)

    def macs_per_pixel(self) -> float:
        """MACs per luma pixel of decoding one frame (the framework's counter, on meta tensors)."""
        from nvc_train.complexity import count_macs

        with torch.device("meta"):
            meta = HiNeRV(**self.architecture)
        with torch.no_grad():
            macs = count_macs(meta.frames_forward, torch.zeros(1, dtype=torch.long, device="meta"))
        return macs / float(self.height * self.width)

    def complexity(self) -> dict[str, float]:
        return {**super().complexity(), "kmac_per_px": self.macs_per_pixel() / 1e3}


# ---- reference numbers --------------------------------------------------------------------------
# The variants' numbers live in configs/model/hinerv_{s,m,l,xl,xxl}.yaml (hinerv.yaml is the M size)
# and hinerv_tiny.yaml. "official" is what the official code (github hmkx/HiNeRV, its
# cfgs/models/uvg-hinerv-*_1920x1080.txt, unmodified) counts at 1920x1080 with 600 frames:
# sum(p.numel()) of the model and FlopCounterMode's FLOPs / 2 of one frame in eval mode
# (tools/hinerv_official_counts.py prints them). tests/test_hinerv_official.py pins ours to them.

_UVG_1080P = {"height": 1080, "width": 1920, "num_frames": 600}
REFERENCE: dict[str, dict[str, Any]] = {
    "hinerv_s": {**_UVG_1080P, "params": 3_188_933, "kmac_per_px": 87.70},
    "hinerv_m": {**_UVG_1080P, "params": 6_489_553, "kmac_per_px": 177.55},
    "hinerv_l": {**_UVG_1080P, "params": 12_818_953, "kmac_per_px": 346.12},
    "hinerv_xl": {**_UVG_1080P, "params": 25_649_557, "kmac_per_px": 666.39},
    "hinerv_xxl": {**_UVG_1080P, "params": 50_726_919, "kmac_per_px": 1277.84},
    # Ours, measured (no official counterpart): a CIF clip of 8 frames.
    "hinerv_tiny": {"height": 288, "width": 352, "num_frames": 8, "params": 31_807, "kmac_per_px": 2.470},
}  # fmt: skip
