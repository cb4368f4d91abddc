"""HiNeRV-style implicit neural representation: frame index -> YUV 4:2:0 frame, weights are the code.

HiNeRV (Kwan et al., NeurIPS 2023) represents a whole sequence as one network. NVRC (Kwan et al.,
NeurIPS 2024) codes that network end to end: quantization steps per tensor / output channel are
learned, and the weights' rate under a learned entropy model is part of the loss. Here the network
follows HiNeRV; its weights (grids included) are quantized and coded by the shared
:class:`nvc_train.entropy.param_coding.ParameterCoder` through :class:`models.adaptive.SceneAdaptiveNet`
(learned steps, fitted Laplace rate, real ANS bytes), so this file is architecture only.

Data flow of one frame t (all stages are resolution-agnostic; sizes for the full config at 1080p)::

    base grids (T_l x C_l x 18 x 32, multi-resolution in time)   --lerp at t-->  (sum C_l) x 18 x 32
      -> stem conv kxk -> channels
      -> stage s = 1..S:  bilinear upsample x scale_s                            (18x32 -> 90x160 -> ...)
                          + linear(hierarchical encoding): a learned local grid (T_e x C_e x scale x scale)
                            per level, lerped at t, tiled over every upsampled cell (HiNeRV's
                            "upsampling encoding": positions inside a cell get their own features)
                          -> depth_s ConvNeXt blocks (depthwise kxk, LayerNorm, MLP x exp, GELU)
      -> Y  = linear head on the last stage (full resolution)
         UV = linear head on the stage before (half resolution: the last scale must be 2)

The network codes frames of any size: the base grid is ``ceil(size / prod(scales))`` and the output
is cropped, so the adapter only pads to even sizes (4:2:0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.adaptive import GEOMETRY_FIELDS, SceneAdaptiveNet
from models.registry import register_network
from nvc_train.bitstream.architecture import ArchitectureField

__all__ = ["REFERENCE", "HiNeRV"]


# ---- blocks -------------------------------------------------------------------------------------


def _lerp_time(grid: Tensor, frame_indices: Tensor, num_frames: int) -> Tensor:
    """Linear interpolation of ``grid`` (T_g, ...) at each frame's position on the grid's time axis.

    Frame 0 maps to slice 0 and the last frame to slice T_g - 1 (corners aligned), so a grid with as
    many slices as frames returns each frame's own slice exactly. Tensor ops only (no ``.item()``),
    so the same code runs on meta tensors for complexity counting.
    """
    slices = grid.shape[0]
    ratio = (slices - 1) / max(num_frames - 1, 1)
    position = frame_indices.to(grid.dtype if grid.is_floating_point() else torch.float32) * ratio
    lower = torch.clamp(torch.floor(position), 0, slices - 1)
    weight = (position - lower).view(-1, *([1] * (grid.dim() - 1)))
    lower_index = lower.long()
    upper_index = torch.clamp(lower_index + 1, max=slices - 1)
    return grid[lower_index] * (1 - weight) + grid[upper_index] * weight


class TemporalGrids(nn.Module):
    """Multi-resolution learned grids over time: level l has ``frames // 2**l`` slices, ``channels * 2**l``.

    HiNeRV's grids trade temporal for channel resolution from level to level: coarse levels are
    shared by many frames (cheap, smooth), fine ones are nearly per frame. Every slice is
    ``height x width`` (the base grid's spatial size, or one upsampling cell).
    """

    def __init__(
        self, frames: int, channels: int, levels: int, height: int, width: int, init_scale: float
    ) -> None:
        super().__init__()
        self.grids = nn.ParameterList()
        for level in range(levels):
            slices = max(frames // 2**level, 1)
            grid = torch.empty(slices, channels * 2**level, height, width).uniform_(-init_scale, init_scale)
            self.grids.append(nn.Parameter(grid))

    @property
    def channels(self) -> int:
        return sum(grid.shape[1] for grid in self.grids)

    def forward(self, frame_indices: Tensor, num_frames: int) -> Tensor:
        """(B, channels, height, width): every level interpolated at each frame, concatenated."""
        return torch.cat([_lerp_time(grid, frame_indices, num_frames) for grid in self.grids], dim=1)


class ConvNeXtBlock(nn.Module):
    """Depthwise kxk conv -> LayerNorm -> Linear(C_in, exp*C_out) -> GELU -> Linear -> (+ input).

    HiNeRV's block: depthwise convolutions and channel MLPs give a deep, wide network at few MACs
    per pixel; the residual is kept whenever the width does not change.
    """

    def __init__(self, in_channels: int, out_channels: int, expansion: float, kernel: int) -> None:
        super().__init__()
        hidden = max(int(round(out_channels * expansion)), 1)
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel, padding=kernel // 2, groups=in_channels)
        self.norm = nn.LayerNorm(in_channels)
        self.expand = nn.Linear(in_channels, hidden)
        self.project = nn.Linear(hidden, out_channels)
        self.residual = in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        h = self.depthwise(x).permute(0, 2, 3, 1)  # channels last for the norm and the MLP
        h = self.project(F.gelu(self.expand(self.norm(h)))).permute(0, 3, 1, 2)
        return x + h if self.residual else h


class Stage(nn.Module):
    """Upsample x ``scale``, add the hierarchical encoding, then ``depth`` ConvNeXt blocks."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale: int,
        depth: int,
        expansion: float,
        kernel: int,
        encoding: TemporalGrids,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.encoding = encoding
        self.encoding_projection = nn.Linear(encoding.channels, in_channels)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(in_channels if i == 0 else out_channels, out_channels, expansion, kernel)
            for i in range(depth)
        )

    def forward(self, x: Tensor, frame_indices: Tensor, num_frames: int) -> Tensor:
        x = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        cell = self.encoding(frame_indices, num_frames)  # (B, C_e, scale, scale)
        tiled = cell.repeat(1, 1, x.shape[-2] // self.scale, x.shape[-1] // self.scale)
        x = x + self.encoding_projection(tiled.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        for block in self.blocks:
            x = block(x)
        return x


# ---- the codec network --------------------------------------------------------------------------


@register_network
class HiNeRV(SceneAdaptiveNet):
    """One network per sequence: frame index -> (Y, UV); see the module docstring for the data flow.

    Args (all stored in the bitstream's architecture config):
        height, width, num_frames: the padded size and frame count of the sequence.
        structure, intra_period, gop_size: the coding structure (an INR decodes any frame alone, so
            they only travel for the record).
        channels: width after the stem; each later stage divides it by ``channels_reduce``.
        depths, expansions, kernels, scales: per stage: blocks, MLP expansion, depthwise kernel and
            upsampling factor (the last must be 2: chroma comes from the stage before it).
        stem_kernel: kernel of the stem convolution.
        base_grid_frames, base_grid_channels, base_grid_levels: the base grids (level l has
            ``min(base_grid_frames, num_frames) // 2**l`` slices of ``base_grid_channels * 2**l``).
        encoding_frames, encoding_channels, encoding_levels, encoding_depth_scale: the per-stage
            upsampling-encoding grids (``encoding_frames`` 0: one slice per frame; stage s has
            ``encoding_channels * encoding_depth_scale**s`` channels at level 0).
        grid_init_scale: grids start uniform in +-this.
    """

    pad_multiple = 2
    # What a file may set, and within what (the published S..XXL sizes fit well inside;
    # nvc_train/bitstream/FORMAT.md lists them).
    ARCHITECTURE_FIELDS = {
        **GEOMETRY_FIELDS,
        "channels": ArchitectureField("int", 1, 2048),
        "channels_reduce": ArchitectureField("float", 1.0, 16.0),
        "depths": ArchitectureField("ints", 1, 16, min_items=2, max_items=8),
        "expansions": ArchitectureField("floats", 0.25, 16.0, min_items=2, max_items=8),
        "kernels": ArchitectureField("ints", 1, 15, min_items=2, max_items=8),
        "scales": ArchitectureField("ints", 1, 8, min_items=2, max_items=8),
        "stem_kernel": ArchitectureField("int", 1, 15),
        "base_grid_frames": ArchitectureField("int", 1, 100_000),
        "base_grid_channels": ArchitectureField("int", 1, 256),
        "base_grid_levels": ArchitectureField("int", 1, 8),
        "encoding_frames": ArchitectureField("int", 0, 100_000),
        "encoding_channels": ArchitectureField("int", 1, 256),
        "encoding_levels": ArchitectureField("int", 1, 8),
        "encoding_depth_scale": ArchitectureField("float", 0.0, 4.0),
        "grid_init_scale": ArchitectureField("float", 0.0, 10.0),
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
            grid_init_scale=grid_init_scale,
        )  # fmt: skip
        super().__init__(
            dict(
                height=height, width=width, num_frames=num_frames, structure=structure,
                intra_period=intra_period, gop_size=gop_size, **numbers,
            )
        )  # fmt: skip
        stages = len(scales)
        if not (len(depths) == len(expansions) == len(kernels) == stages) or stages < 2:
            raise ValueError(
                f"depths, expansions, kernels and scales need one entry per stage (at least 2), got "
                f"{list(depths)}, {list(expansions)}, {list(kernels)}, {list(scales)}"
            )
        if scales[-1] != 2:
            raise ValueError(f"the last scale must be 2 (chroma uses the stage before), got {scales[-1]}")
        if min(scales) < 1 or min(depths) < 1 or channels < 1 or channels_reduce < 1:
            raise ValueError("scales, depths and channels must be >= 1 and channels_reduce >= 1")
        total_scale = math.prod(scales)
        self.base_height = -(-height // total_scale)
        self.base_width = -(-width // total_scale)

        self.base_grids = TemporalGrids(
            min(base_grid_frames, num_frames), base_grid_channels, base_grid_levels,
            self.base_height, self.base_width, grid_init_scale,
        )  # fmt: skip
        self.stem = nn.Conv2d(self.base_grids.channels, channels, stem_kernel, padding=stem_kernel // 2)
        widths = [channels]
        for _ in range(1, stages):
            widths.append(max(int(widths[-1] / channels_reduce), 1))
        self.stages = nn.ModuleList()
        in_channels = channels
        for s in range(stages):
            encoding = TemporalGrids(
                encoding_frames if encoding_frames > 0 else num_frames,
                max(int(encoding_channels * encoding_depth_scale**s), 1),
                encoding_levels, scales[s], scales[s], grid_init_scale,
            )  # fmt: skip
            self.stages.append(
                Stage(in_channels, widths[s], scales[s], depths[s], expansions[s], kernels[s], encoding)
            )
            in_channels = widths[s]
        self.head_y = nn.Linear(widths[-1], 1)
        self.head_uv = nn.Linear(widths[-2], 2)

    def is_network_parameter(self, name: str) -> bool:
        """Everything is network: an INR has no latents; grids are coded with the weights."""
        return True

    def frames_forward(self, frame_indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        frame_indices = frame_indices.to(self.stem.weight.device)
        x = self.stem(self.base_grids(frame_indices, self.num_frames))
        chroma_features = x
        for stage in self.stages:
            chroma_features = x
            x = stage(x, frame_indices, self.num_frames)
        y = self.head_y(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) + 0.5
        uv = self.head_uv(chroma_features.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) + 0.5
        y = y[..., : self.height, : self.width]
        uv = uv[..., : self.height // 2, : self.width // 2]
        return y, uv, y.new_zeros(())

    def frame_activation_bytes(self) -> int:
        """The widest stage's expanded activations (float32), a few alive at once."""
        arch = self.architecture
        height, width, widths = self.base_height, self.base_width, [int(arch["channels"])]
        for _ in range(1, len(arch["scales"])):
            widths.append(max(int(widths[-1] / arch["channels_reduce"]), 1))
        peak = 0
        for scale, channels, expansion in zip(arch["scales"], widths, arch["expansions"], strict=True):
            height, width = height * scale, width * scale
            peak = max(peak, height * width * channels * max(1.0, expansion))
        return int(peak * 4 * 4)

    def macs_per_pixel(self) -> float:
        """MACs per luma pixel of decoding one frame (the framework's counter, on meta tensors)."""
        from nvc_train.complexity import count_macs

        meta = HiNeRV(**self.architecture).to("meta")
        with torch.no_grad():
            macs = count_macs(meta.frames_forward, torch.zeros(1, dtype=torch.long, device="meta"))
        return macs / float(self.height * self.width)

    def complexity(self) -> dict[str, float]:
        return {**super().complexity(), "kmac_per_px": self.macs_per_pixel() / 1e3}


# ---- reference numbers --------------------------------------------------------------------------
# The variants' numbers live in configs/model/hinerv.yaml (HiNeRV-M) and hinerv_tiny.yaml; these are
# the figures measured on them, pinned by tests/test_hinerv.py.

REFERENCE: dict[str, dict[str, Any]] = {
    # Published: HiNeRV "170 kMAC/px" (the NVRC-Lite paper, Kwan et al. 2025, arXiv 2512.04019, on the
    # original HiNeRV it starts from; read in a review of that paper, the paper's table was not
    # reachable here). No published parameter count was reachable: params are pinned as measured.
    # Measured with nvc_train.complexity's counter (conv + linear MACs) at 1920x1080, 600 frames.
    "hinerv": {"height": 1080, "width": 1920, "num_frames": 600, "params": 6_507_753,
               "kmac_per_px": 178.86, "published_kmac_per_px": 170.0},
    "hinerv_tiny": {"height": 288, "width": 352, "num_frames": 8, "params": 32_431, "kmac_per_px": 2.44},
}  # fmt: skip
