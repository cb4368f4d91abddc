"""Choosing the quantization steps of a fitted network's weights by measuring the RD cost of each.

Why: a scene-adaptive codec sends its network, and on small frames the network is most of the file.
Learning the steps by gradient (the ``parameters: ste`` phase) needs many iterations and starts from
a guess; Cool-Chic instead fits the network in float, then tries a short list of steps per module
and keeps the pair (weights, biases) with the lowest ``rate + lambda * distortion`` of the whole
frame, the network's own rate included. That costs one forward of the sequence per candidate (a
fraction of a second at CIF) and lands on steps a gradient rarely reaches in a few hundred
iterations (coarse ones: 4-6 bits a parameter instead of 8-12).

Here a *group* is the weights (or the biases) of one top-level module of the network (``arm``,
``synthesis``, ``upsampling``, ...): every tensor of the group gets the same step, a power of two
or (``per_octave``) a fraction of an octave, tried over the preset's range, one group at a time
(coordinate descent, ``passes`` rounds). The measure is
:meth:`~nvc_train.training.overfit.OverfitModule.sequence_terms`: hard-rounded latents, the
quantized weights exactly as the decoder rebuilds them, and their estimated bits::

    parameter_search: {weight_log2: [-12, 0], bias_log2: [-24, 0], passes: 1, per_octave: 4}

The chosen steps stay in the network's :class:`~nvc_train.entropy.param_coding.ParameterCoder`, so
``compress`` codes exactly what was measured.

Then, at the end of the fit, :func:`refine_parameters` (the preset's ``parameter_rdoq``, Cool-Chic's
rdoq_model) moves single weights to neighbouring multiples of their step where the measured RD cost
drops: rounding each weight to its nearest multiple is not the best joint choice, and on the dog
QCIF frame Cool-Chic's own log shows this step recovering 0.65 dB of the 1.2 dB that quantizing its
network had cost.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from nvc_train.training.presets import ParameterRdoq, StepSearch

log = logging.getLogger(__name__)


def parameter_groups(names: Sequence[str], depth: int = 1) -> dict[str, list[int]]:
    """Coded tensor indexes by group ``<module>.<weight|bias>``, in coding order; the module is the
    first ``depth`` parts of a name (a network's ``MODULE_DEPTH``: 1, ``arm``; a P frame's cores, 3:
    ``cores.m1.arm``)."""
    groups: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        kind = "bias" if name.rsplit(".", 1)[-1] == "bias" else "weight"
        module = ".".join(name.split(".")[:depth])
        groups.setdefault(f"{module}.{kind}", []).append(index)
    return groups


def _groups(net: Any) -> dict[str, list[int]]:
    return parameter_groups(net.parameter_coder().names, int(getattr(net, "MODULE_DEPTH", 1)))


@torch.no_grad()
def quantize_network(
    module: Any, y: Tensor, uv: Tensor, search: StepSearch, rdoq: ParameterRdoq | None, seed: int = 0
) -> tuple[list[dict[str, float]], dict[str, float] | None]:
    """The fitted network's weights quantized for the file: steps searched on each grid of
    ``search.per_octave``, then (``rdoq``) refined weight by weight; the grid whose result has the
    lowest measured RD loss is kept. Returns every step tried (rows carry their grid) and the kept
    grid's RDOQ figures (None without ``rdoq``)."""
    net = module.net
    start = _QuantizationState.of(net)
    best: tuple[float, _QuantizationState, dict[str, float] | None] | None = None
    tried: list[dict[str, float]] = []
    for per_octave in search.per_octave:
        start.restore(net)
        rows = search_parameter_steps(module, y, uv, search, per_octave)
        tried += [{**row, "per_octave": per_octave} for row in rows]
        refined = refine_parameters(module, y, uv, rdoq, seed) if rdoq is not None else None
        loss = refined["loss_after"] if refined is not None else float(module.sequence_terms(y, uv).loss)
        log.info("weights quantized on 1/%d octave steps: loss %.5f", per_octave, loss)
        if best is None or loss < best[0]:
            best = (loss, _QuantizationState.of(net), refined)
    assert best is not None  # StepSearch refuses an empty per_octave
    best[1].restore(net)
    return tried, best[2]


@dataclass
class _QuantizationState:
    """What quantizing a network changes: its weights, its coder's steps and its parameter mode."""

    weights: dict[str, Tensor]
    steps: list[Tensor]
    mode: str | None

    @classmethod
    def of(cls, net: Any) -> _QuantizationState:
        weights = {name: p.detach().clone() for name, p in net.network_parameters().items()}
        steps = [s.detach().clone() for s in net.parameter_coder().log2_step]
        return cls(weights, steps, net.parameter_mode)

    def restore(self, net: Any) -> None:
        for name, p in net.network_parameters().items():
            p.data.copy_(self.weights[name])
        for step, saved in zip(net.parameter_coder().log2_step, self.steps, strict=True):
            step.data.copy_(saved)
        net.quantize_parameters(self.mode)


@torch.no_grad()
def search_parameter_steps(
    module: Any, y: Tensor, uv: Tensor, search: StepSearch, per_octave: int
) -> list[dict[str, float]]:
    """Set the steps of ``module.net``'s weights to the best measured ones; returns what was tried.

    ``module`` is an :class:`~nvc_train.training.overfit.OverfitModule` whose network has been fitted
    (float or quantized weights). On return the network runs with quantized weights
    (``dequantize``) at the chosen steps, from the grid of ``per_octave`` steps an octave. Each row
    of the returned list is one candidate: group, log2 step, loss, bits per pixel and PSNR.
    """
    net = module.net
    coder = net.parameter_coder()
    if net.parameter_mode is None:
        net.quantize_parameters("dequantize", init_bits=8)  # a start for the groups not yet searched
    else:
        net.quantize_parameters("dequantize")
    tried: list[dict[str, float]] = []
    best_loss = float(module.sequence_terms(y, uv).loss)
    for _ in range(search.passes):
        for group, indexes in _groups(net).items():
            kept = [coder.log2_step[i].detach().clone() for i in indexes]
            best_step: float | None = None
            for log2_step in search.candidates(group, per_octave):
                for i in indexes:
                    coder.log2_step[i].fill_(float(log2_step))
                terms = module.sequence_terms(y, uv)
                loss = float(terms.loss)
                tried.append({"group": group, "log2_step": log2_step, "loss": loss, "bpp": float(terms.bpp),
                              "psnr": float(terms.psnr)})  # fmt: skip
                if math.isfinite(loss) and loss < best_loss:
                    best_loss, best_step = loss, log2_step
            if best_step is None:  # nothing beat the current steps: keep them
                for i, value in zip(indexes, kept, strict=True):
                    coder.log2_step[i].copy_(value)
            else:
                for i in indexes:
                    coder.log2_step[i].fill_(best_step)
            log.info("step search %s: log2 step %s, loss %.5f", group,
                     "kept" if best_step is None else f"{best_step:g}", best_loss)  # fmt: skip
    return tried


@torch.no_grad()
def refine_parameters(
    module: Any, y: Tensor, uv: Tensor, rdoq: ParameterRdoq, seed: int = 0
) -> dict[str, float]:
    """Greedy RDOQ of the quantized weights: each weight, in a seeded random order group by group,
    tries ``k -/+ 1, 2, ... max_shift`` times its step (stopping each way at the first candidate that
    does not lower the loss) and keeps the best; the loss is
    :meth:`~nvc_train.training.overfit.OverfitModule.sequence_terms`, the weights' own rate included.

    The network's float weights are set to exact multiples of their steps (what ``dequantize``
    gives), so the coded symbols are the ones measured. Returns the loss before and after, the
    forward passes spent, the weights changed and the seconds taken.
    """
    net = module.net
    if net.parameter_mode is None:
        raise ValueError(
            "parameter_rdoq needs quantized weights (parameter_search, or phases with parameters)"
        )
    coder = net.parameter_coder()
    params = net.network_parameters()
    snapped = coder.quantize(params, "dequantize")
    for name in coder.names:
        params[name].copy_(snapped[name])
    generator = torch.Generator().manual_seed(seed)
    best = float(module.sequence_terms(y, uv).loss)
    split = dict(getattr(net, "RD_SPLIT", {}))
    measure = SplitMeasure(module, y, uv) if split else None
    before, forwards, changed, started = best, 0, 0, time.perf_counter()
    for group, indexes in _groups(net).items():
        part = split.get(group.rsplit(".", 1)[0].rsplit(".", 1)[-1])  # the module's own name: arm, ...
        cells = [(i, j) for i in indexes for j in range(params[coder.names[i]].numel())]
        for position in torch.randperm(len(cells), generator=generator).tolist():
            i, j = cells[position]
            flat = params[coder.names[i]].data.view(-1)
            step = float(coder.element_steps(i).reshape(-1)[j])
            start = kept = float(flat[j])
            for sign in (-1.0, 1.0):
                for shift in range(1, rdoq.max_shift + 1):
                    flat[j] = start + sign * shift * step
                    loss = float(module.sequence_terms(y, uv).loss) if measure is None else measure.loss(part)
                    forwards += 1
                    if not loss < best:
                        break
                    best, kept = loss, float(flat[j])
                    if measure is not None:
                        measure.accept()
            flat[j] = kept
            changed += int(kept != start)
    if measure is not None:
        measure.close()
    log.info("parameter RDOQ: loss %.5f -> %.5f, %d weights moved, %d forwards",
             before, best, changed, forwards)  # fmt: skip
    return {"loss_before": before, "loss_after": best, "forwards": forwards, "changed": changed,
            "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip


class SplitMeasure:
    """The RD loss of :meth:`~nvc_train.training.overfit.OverfitModule.sequence_terms`, recomputing
    only the part a weight can move.

    Why: the RDOQ measures thousands of one-weight changes, and a network with an ``RD_SPLIT``
    (:class:`models.adaptive.SceneAdaptiveNet`) says which modules move only the latents' bits
    (``rate``: the ARM) and which only the pictures (``picture``: upsampling, synthesis). A
    candidate then costs the ARM alone or the synthesis alone, the other part taken from the last
    accepted state (:meth:`accept`); the parameters' bits are recomputed every time. The weights
    must be exact multiples of their steps (the RDOQ snaps them), so running the network on its
    float weights is running it on the quantized ones.
    """

    def __init__(self, module: Any, y: Tensor, uv: Tensor, chunk: int = 8) -> None:
        self.module, self.net = module, module.net
        self.y, self.uv = y.to(module.device), uv.to(module.device)
        self.chunks = [torch.arange(s, min(s + chunk, y.shape[0]), device=self.y.device)
                       for s in range(0, y.shape[0], chunk)]  # fmt: skip
        self.saved = (self.net.quantizer, self.net.parameter_mode)
        self.net.quantizer = replace(self.net.quantizer, mode="hard")
        self.net.quantize_parameters(None)  # float weights that equal the quantized ones
        self.bits = self._bits()
        self.distortion = self._distortion()
        self.pending: tuple[float, float] = (self.bits, self.distortion)

    def _bits(self) -> float:
        return sum(float(self.net.frames_bits(index)) for index in self.chunks)

    def _distortion(self) -> float:
        from nvc_train.training.losses import frame_terms

        total = 0.0
        for index in self.chunks:
            y_hat, uv_hat = self.net.frames_planes(index)
            zero = y_hat.new_zeros(len(index))
            terms = frame_terms(y_hat.clamp(0, 1), uv_hat.clamp(0, 1), zero, self.y[index], self.uv[index],
                                self.module.distortion)  # fmt: skip
            total += float(terms.distortion.sum())
        return total

    def loss(self, part: str | None) -> float:
        """The loss with the weights as they are now; ``part`` (``rate``, ``picture`` or None: both) is
        what is recomputed."""
        bits = self._bits() if part != "picture" else self.bits
        distortion = self._distortion() if part != "rate" else self.distortion
        self.pending = (bits, distortion)
        coder = self.net.parameter_coder()
        parameter_bits = float(coder(self.net.network_parameters(), mode="dequantize")[1])
        count, height, width = self.y.shape[0], self.y.shape[-2], self.y.shape[-1]
        bpp = (bits + parameter_bits) / float(count * height * width)
        return bpp + self.module.lmbda * distortion / count

    def accept(self) -> None:
        """The last measured weights are kept: their parts become the cached ones."""
        self.bits, self.distortion = self.pending

    def close(self) -> None:
        """Back to the quantizer and parameter mode the network had."""
        self.net.quantizer, mode = self.saved
        self.net.quantize_parameters(mode)
