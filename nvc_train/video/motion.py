"""Motion for scene-adaptive P frames: sub-pixel warping and a classical optical flow, in torch.

Cool-Chic's P frames predict a frame as ``warp(reference, flow)`` and learn the flow with a small
motion decoder, which its encoder first pulls towards a flow estimated by RAFT. RAFT's weights cannot
be downloaded here (nor shipped: they are 20 MB and not ours), so :func:`estimate_flow` is a
classical estimator: coarse-to-fine dense Lucas-Kanade with warping, a few hundred lines of arithmetic
on the luma, no weights. It only seeds the motion decoder; the fit that follows minimises the rate
and distortion of the warped prediction, so what matters is a flow near the right basin.

:func:`warp` is the separable windowed-sinc interpolation of Cool-Chic v4+ ("Efficient Sub-pixel
Motion Compensation in Learned Video Codecs"): ``taps`` neighbours a direction, weights
``cos(pi (s - k) / taps) * sinc(s - k)`` for the fractional offset ``s`` and neighbour ``k``; the
rows are interpolated first, then the column; positions outside the picture take the border's value.
Differentiable in the reference and in the flow's fractional part (the integer part selects
neighbours), so a flow can be learned through it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["estimate_flow", "global_translation", "sinc_weights", "warp"]


def sinc_weights(fraction: Tensor, taps: int) -> Tensor:
    """Interpolation weights ``[..., taps]`` for offsets ``fraction`` in [0, 1) from the sample at
    ``floor``: neighbours ``k = 1 - taps/2 .. taps/2``, a cosine-windowed sinc (not renormalised:
    the window keeps the sum within 1e-2 of one, and a learned flow sees the filter it is coded with)."""
    if taps < 2 or taps % 2:
        raise ValueError(f"the warp needs an even number of taps >= 2, not {taps}")
    offsets = torch.arange(1 - taps // 2, taps // 2 + 1, dtype=fraction.dtype, device=fraction.device)
    distance = fraction.unsqueeze(-1) - offsets
    return torch.cos(math.pi * distance / taps) * torch.sinc(distance)


def warp(reference: Tensor, flow: Tensor, taps: int = 8, accuracy: int | None = None) -> Tensor:
    """``out[..., y, x] = reference[..., y + flow[1], x + flow[0]]``, interpolated (see the module).

    Args:
        reference: ``[B, C, H, W]``.
        flow: ``[B, 2, H, W]`` in pixels, channel 0 horizontal, channel 1 vertical: the motion from
            the predicted picture to the reference.
        taps: interpolation taps a direction (even; Cool-Chic's P frames use 8).
        accuracy: when given, the flow is rounded to ``1 / accuracy`` pel first (what a decoder
            does with a coded flow; Cool-Chic: 64). Rounding has no gradient, so training leaves it
            ``None``.
    """
    if reference.dim() != 4 or flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"warp needs [B, C, H, W] and [B, 2, H, W], got {tuple(reference.shape)} and "
                         f"{tuple(flow.shape)}")  # fmt: skip
    batch, channels, height, width = reference.shape
    if flow.shape[0] != batch or flow.shape[2:] != reference.shape[2:]:
        raise ValueError(f"flow {tuple(flow.shape)} does not match the reference {tuple(reference.shape)}")
    if accuracy is not None:
        flow = torch.round(flow * accuracy) / accuracy
    rows = torch.arange(height, device=flow.device, dtype=flow.dtype).view(1, height, 1)
    cols = torch.arange(width, device=flow.device, dtype=flow.dtype).view(1, 1, width)
    x, y = cols + flow[:, 0], rows + flow[:, 1]  # [B, H, W] positions in the reference
    x0, y0 = torch.floor(x.detach()), torch.floor(y.detach())
    weights_x, weights_y = sinc_weights(x - x0, taps), sinc_weights(y - y0, taps)  # [B, H, W, taps]
    offsets = torch.arange(1 - taps // 2, taps // 2 + 1, device=flow.device)
    index_x = (x0.long().unsqueeze(-1) + offsets).clamp(0, width - 1)  # [B, H, W, taps]
    index_y = (y0.long().unsqueeze(-1) + offsets).clamp(0, height - 1)
    # every (row tap, column tap) neighbour of every pixel: [B, H, W, taps, taps] flat indexes
    flat = (index_y.unsqueeze(-1) * width + index_x.unsqueeze(-2)).view(batch, 1, -1)
    values = torch.gather(reference.reshape(batch, channels, -1), 2, flat.expand(batch, channels, -1))
    values = values.view(batch, channels, height, width, taps, taps)
    along_rows = (values * weights_x[:, None, :, :, None, :]).sum(-1)  # [B, C, H, W, taps (row)]
    return (along_rows * weights_y[:, None]).sum(-1)


def _blur(image: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``[B, C, H, W]`` with replicated borders."""
    radius = max(1, math.ceil(2.5 * sigma))
    grid = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-0.5 * (grid / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = image.shape[1]
    padded = F.pad(image, (radius, radius, 0, 0), mode="replicate")
    image = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    padded = F.pad(image, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(padded, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def _bilinear(image: Tensor, flow: Tensor) -> Tensor:
    """:func:`warp`'s mapping with bilinear weights (exact for constant pictures), borders replicated."""
    batch, _, height, width = image.shape
    rows = torch.arange(height, dtype=flow.dtype).view(1, height, 1)
    cols = torch.arange(width, dtype=flow.dtype).view(1, 1, width)
    x = (cols + flow[:, 0]) * (2 / max(width - 1, 1)) - 1
    y = (rows + flow[:, 1]) * (2 / max(height - 1, 1)) - 1
    grid = torch.stack([x, y], -1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _gradients(image: Tensor) -> tuple[Tensor, Tensor]:
    """Central differences of ``[B, 1, H, W]`` (one-sided at the borders)."""
    padded = F.pad(image, (1, 1, 1, 1), mode="replicate")
    gx = 0.5 * (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2])
    gy = 0.5 * (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1])
    return gx, gy


@torch.no_grad()
def estimate_flow(
    target: Tensor,
    reference: Tensor,
    levels: int = 4,
    iterations: int = 4,
    window_sigma: float = 2.0,
    regularisation: float = 1e-6,
) -> Tensor:
    """The flow ``[B, 2, H, W]`` (pixels) with ``target ~= warp(reference, flow)``, from luma
    ``[B, 1, H, W]`` in [0, 1].

    Coarse-to-fine Lucas-Kanade: at each pyramid level (halved ``levels - 1`` times, at least 8 pixels
    a side) the reference is warped by the current flow, and each pixel's update solves the 2x2
    normal equations of the linearised brightness constancy, summed over a Gaussian window
    (``window_sigma``); ``regularisation`` (times the window's gradient energy scale) keeps flat and
    edge-only windows from moving far (the aperture problem). Warping inside the estimate is bilinear:
    it only needs to be smooth, not sharp.
    """
    if target.shape != reference.shape or target.dim() != 4 or target.shape[1] != 1:
        raise ValueError(f"estimate_flow needs two [B, 1, H, W] luma tensors, got {tuple(target.shape)} "
                         f"and {tuple(reference.shape)}")  # fmt: skip
    pyramid = [(target.float(), reference.float())]
    while len(pyramid) < levels and min(pyramid[-1][0].shape[-2:]) >= 16:
        pyramid.append(tuple(F.avg_pool2d(_blur(p, 0.8), 2) for p in pyramid[-1]))  # type: ignore[misc]
    flow = torch.zeros(target.shape[0], 2, *pyramid[-1][0].shape[-2:], dtype=torch.float32)
    for level, (goal, ref) in reversed(list(enumerate(pyramid))):
        if flow.shape[-2:] != goal.shape[-2:]:
            flow = 2 * F.interpolate(flow, size=goal.shape[-2:], mode="bilinear", align_corners=False)
        gx_goal, gy_goal = _gradients(goal)
        for _ in range(iterations):
            moved = _bilinear(ref, flow)
            gx_moved, gy_moved = _gradients(moved)
            gx, gy = 0.5 * (gx_goal + gx_moved), 0.5 * (gy_goal + gy_moved)
            difference = moved - goal
            sums = _blur(torch.cat([gx * gx, gx * gy, gy * gy, gx * difference, gy * difference], 1),
                         window_sigma)  # fmt: skip
            a, b, c, u, v = sums.unbind(1)
            a, c = a + regularisation, c + regularisation
            determinant = a * c - b * b
            step = torch.stack([-(c * u - b * v), -(a * v - b * u)], 1) / determinant.unsqueeze(1)
            flow = flow + step.clamp(-2.0, 2.0)  # one linearisation is trusted over a few pixels only
        flow = _blur(flow, 1.0 + 0.5 * level)  # coarse levels: smoother fields
    return flow


@torch.no_grad()
def global_translation(target: Tensor, reference: Tensor, search: int = 4) -> tuple[int, int]:
    """The whole-pixel shift ``(dx, dy)`` for which ``warp(reference, shift)`` is closest to
    ``target`` in MSE over the part both show (``[1, C, H, W]`` each). Coarse to fine on a pyramid
    (halved while the smaller side stays >= 16): every shift within ``search`` pixels at the
    coarsest level, then the 3 x 3 around twice the shift found at each finer one. A P frame's flow
    then codes what is left of the motion (Cool-Chic sends such a translation with every P frame;
    its search steps through 2^n-pixel moves on the full picture, which lands on a far, wrong
    shift when the picture's texture is finer than the steps)."""
    if target.shape != reference.shape or target.dim() != 4 or target.shape[0] != 1:
        raise ValueError(f"global_translation needs two [1, C, H, W] tensors, got {tuple(target.shape)} and "
                         f"{tuple(reference.shape)}")  # fmt: skip
    pyramid = [(target.float(), reference.float())]
    while min(pyramid[-1][0].shape[-2:]) >= 32:
        pyramid.append(tuple(F.avg_pool2d(p, 2) for p in pyramid[-1]))  # type: ignore[misc]
    best = (0, 0)
    for level, (goal, ref) in reversed(list(enumerate(pyramid))):
        reach = search if level == len(pyramid) - 1 else 1
        centre = best if level == len(pyramid) - 1 else (2 * best[0], 2 * best[1])
        candidates = [(centre[0] + dx, centre[1] + dy) for dy in range(-reach, reach + 1)
                      for dx in range(-reach, reach + 1)]  # fmt: skip
        best = min(
            candidates, key=lambda shift: (_overlap_error(goal, ref, *shift), abs(shift[0]) + abs(shift[1]))
        )
    return best


def _overlap_error(target: Tensor, reference: Tensor, dx: int, dy: int) -> float:
    """MSE between ``target`` and ``reference`` moved by a whole-pixel ``(dx, dy)``, over the pixels
    both have; a shift that keeps less than a quarter of the picture is not a match (infinite)."""
    height, width = target.shape[-2:]
    if (height - abs(dy)) * (width - abs(dx)) * 4 < height * width:
        return math.inf
    moved = reference[..., max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)]
    kept = target[..., max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)]
    return float((moved - kept).pow(2).mean())
