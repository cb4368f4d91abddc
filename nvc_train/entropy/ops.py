"""Quantization with named rounding roles, and a lower bound that keeps gradients alive.

The roles (STYLE.md, "Codecs and entropy models"):

- ``"noise"``: ``x + U(-0.5, 0.5)``, the differentiable training proxy for rounding;
- ``"ste"``: ``round(x - means) + means`` forward, identity gradient backward (straight-through);
- ``"dequantize"``: ``round(x - means) + means``, what the decoder reconstructs;
- ``"symbols"``: ``round(x - means)`` as int64, what the coder writes.

``dequantize`` and ``symbols`` share one rounding expression so that the encoder's reconstruction
and the decoder's ``symbols + means`` agree bit for bit (``torch.round`` rounds half to even).
"""

from __future__ import annotations

import torch
from torch import Tensor

QUANTIZERS = ("noise", "ste", "dequantize", "symbols")


def _rounded(x: Tensor, means: Tensor | None) -> Tensor:
    """``round(x - means)`` in x's dtype: the one rounding both dequantize and symbols use."""
    return torch.round(x if means is None else x - means)


def quantize(x: Tensor, mode: str, means: Tensor | None = None) -> Tensor:
    """Quantize ``x`` in one of the roles above; ``means`` centres the integer grid (broadcast)."""
    if mode == "noise":
        # A shift of the grid does not change uniform noise, so means play no part here.
        return x + torch.empty_like(x).uniform_(-0.5, 0.5)
    if mode == "symbols":
        return _rounded(x, means).to(torch.int64)
    if mode == "dequantize":
        q = _rounded(x, means)
        return q if means is None else q + means
    if mode == "ste":
        q = _rounded(x, means)
        q = q if means is None else q + means
        return x + (q - x).detach()
    raise ValueError(f"unknown quantizer mode {mode!r}; expected one of {QUANTIZERS}")


class _LowerBound(torch.autograd.Function):
    """``max(x, bound)`` whose gradient still flows where it would push x back above the bound.

    A plain clamp zeroes the gradient below the bound, so a scale or likelihood that once fell
    under it could never recover during training.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, bound: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.bound = bound
        return torch.clamp(x, min=bound)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        passes = (x >= ctx.bound) | (grad < 0)
        return grad * passes.to(grad.dtype), None


def lower_bound(x: Tensor, bound: float) -> Tensor:
    """``max(x, bound)`` with the gradient rule of :class:`_LowerBound`."""
    return _LowerBound.apply(x, float(bound))
