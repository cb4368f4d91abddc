"""The entropy-parameter path of real coding: float64, on the CPU, identical in encoder and decoder.

Why: the decoder must pick the same scale level (table row) and the same mean for every symbol as
the encoder did, or the ANS decoder returns noise from the first disagreement on. Those parameters
come out of a network (a hyper decoder, a prior fusion), and float32 convolutions are NOT
reproducible bit for bit across thread counts, kernels or devices. Measured on this project's CPU
(torch 2.14, oneDNN 3.12, 2 cores; ``nvc_train/entropy`` tests pin the conclusion): a 1x1 conv
256 -> 1024 -> 256 and a depthwise 3x3 + 1x1 stack on a (2, 256, 24, 40) input give float32 outputs
that differ between 1 and 2 threads (largest relative difference 3e-4 on small outputs), and a 5x5
transposed conv differs between oneDNN and PyTorch's own kernel (1.7e-4); the same layers in
float64 gave identical results in every one of those cases. A scale within that distance of one
of the 127 level boundaries moves to the next table, and a large frame has millions of scales.

The rule (one function, :func:`coding_parameters`, that every codec's compress and decompress call):

1. The entropy-parameter network runs on **float64 copies** of its parameters and buffers, on the
   CPU by default, with gradients off. Its inputs are converted exactly (float32 -> float64 is
   exact). Float64 carries 29 more bits than the float32 result needs.
2. Its outputs are rounded **once** to float32 (correctly rounded, deterministic) and only then
   compared with the stored float32 level bounds (:meth:`GaussianConditional.scale_indexes`) and
   used as means. A different reduction order changes a float64 result by a few units in its last
   place (about 1e-16 relative); the float32 value, and hence the level, changes only if the
   exact value lies within that distance of a float32 rounding point or a level bound: with the
   variation measured above in float32 (1e-4 .. 1e-7 relative) and this one in float64 (below
   1e-15), the chance per symbol falls by about eight orders of magnitude.
3. The inputs must be values the decoder has **exactly**: decoded symbols plus the stored medians
   (``z_hat``) are exact on any machine; a step size computed from a learned parameter is computed
   inside the same float64 path. A side prior computed from previous decoded frames (DCVC-style
   temporal priors) is only as reproducible as the decoder's reconstruction itself: bit-exact in
   another process and with another thread count on the same machine and build (tests/
   test_determinism.py), but not guaranteed across different hardware unless the reconstruction
   path is made deterministic too. Codecs whose parameters depend only on their own hyper latent
   (ssf) get the full benefit.

What is not claimed: exactness across machines. That needs integer arithmetic for the whole
parameter path (integer weights and activations, float64 accumulation of integer products is exact
in any order up to 2**53; transcendental activations replaced by tables), which no model here
implements yet. Training never goes through this path (float32 or mixed precision, gradients).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["CODING_DEVICE", "CODING_DTYPE", "coding_parameters"]

CODING_DTYPE = torch.float64
"""Precision of the entropy-parameter path when coding (see the module docstring)."""

CODING_DEVICE = torch.device("cpu")
"""Where it runs: the CPU, whatever device the rest of the model is on (one kernel family)."""


def _to_coding(value: Tensor | None) -> Tensor | None:
    if value is None:  # an optional input (e.g. no side prior) passes through
        return None
    value = value.detach().to(CODING_DEVICE)
    return value.to(CODING_DTYPE) if value.is_floating_point() else value


class _Method(nn.Module):
    """Calls ``module.<name>``: lets :func:`torch.func.functional_call` run a method other than forward."""

    def __init__(self, module: nn.Module, name: str) -> None:
        super().__init__()
        self.module = module
        self.name = name

    def forward(self, *inputs: Tensor | None) -> object:
        return getattr(self.module, self.name)(*inputs)


def coding_parameters(
    module: nn.Module, *inputs: Tensor | None, method: str = "forward"
) -> tuple[Tensor, ...]:
    """Run ``module.<method>(*inputs)`` in float64 on the CPU; outputs as float32 on the inputs' device.

    ``module`` is evaluated through :func:`torch.func.functional_call` on float64 copies of its
    parameters and buffers, so the module itself (its dtype and device, its autograd state) is left
    untouched, and training keeps using it in float32. ``None`` inputs pass through (optional
    arguments). The output may be one tensor or a tuple of tensors; a tuple is always returned.
    Both directions of a codec must call this with the same ``module`` and inputs they reproduce
    exactly (module docstring, rule 3).
    """
    tensors = [x for x in inputs if x is not None]
    if not tensors:
        raise ValueError("coding_parameters needs at least one input tensor")
    if not callable(getattr(module, method, None)):
        raise AttributeError(f"{type(module).__name__} has no method {method!r}")
    device = tensors[0].device
    target = module if method == "forward" else _Method(module, method)
    state = {name: _to_coding(p) for name, p in target.named_parameters()}
    state.update({name: _to_coding(b) for name, b in target.named_buffers()})
    with torch.no_grad():
        out = torch.func.functional_call(target, state, tuple(_to_coding(x) for x in inputs))
    outputs = out if isinstance(out, tuple | list) else (out,)
    return tuple(o.to(torch.float32).to(device) for o in outputs)
