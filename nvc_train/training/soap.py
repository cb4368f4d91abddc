"""SOAP: Adam run in the eigenbasis of Shampoo's preconditioner (Vyas et al., "SOAP: Improving and
Stabilizing Shampoo using Adam", 2024), written here from the paper's algorithm.

Why it is here: Cool-Chic (v4 on) fits its small networks with SOAP and its latents with Adam. On a
network of a couple of thousand parameters fitted for 2,000 iterations, a second-order method that
accounts for how the weights of one layer interact converges further than Adam in the same steps.

For each parameter tensor, every dimension ``d`` of size at most ``max_precond_dim`` keeps
``L_d = EMA(G_d G_d^T)`` (the gradient unfolded along ``d``) and an orthogonal basis ``Q_d`` of its
eigenvectors; the gradient is rotated into that basis (``G' = G x_d Q_d^T`` for every such ``d``),
Adam's moments are kept there, and the normalised step is rotated back. The bases are refreshed
every ``precondition_frequency`` steps by one power iteration followed by a QR decomposition (the
paper's cheap alternative to an eigendecomposition), re-ordering Adam's second moment with them.
One-dimensional tensors (biases) and tensors with no such dimension (``max_precond_dim: 0``, how
the latents are trained) get plain Adam.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor


class SOAP(torch.optim.Optimizer):
    """Shampoo-preconditioned Adam with decoupled weight decay (see the module docstring).

    Args:
        params: parameters or parameter groups (each group may set every option below).
        lr, betas, eps: Adam's; ``betas[1]`` also drives the preconditioner's EMA.
        weight_decay: decoupled (AdamW-style) decay.
        precondition_frequency: steps between refreshes of the eigenbases.
        max_precond_dim: dimensions larger than this (or all, at 0) are not preconditioned.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.95, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        precondition_frequency: int = 10,
        max_precond_dim: int = 256,
    ) -> None:
        if lr < 0 or not 0 <= betas[0] < 1 or not 0 <= betas[1] < 1 or precondition_frequency < 1:
            raise ValueError(f"SOAP: bad options lr={lr}, betas={betas}, "
                             f"precondition_frequency={precondition_frequency}")  # fmt: skip
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "precondition_frequency": precondition_frequency,
                    "max_precond_dim": max_precond_dim}  # fmt: skip
        super().__init__(params, defaults)

    @staticmethod
    def _unfold(grad: Tensor, dim: int) -> Tensor:
        return grad.movedim(dim, 0).reshape(grad.shape[dim], -1)

    @staticmethod
    def _rotate(x: Tensor, bases: list[Tensor | None], back: bool = False) -> Tensor:
        """``x`` with every preconditioned dimension expressed in (or, ``back``, out of) its basis."""
        for dim, q in enumerate(bases):
            if q is not None:
                x = torch.movedim(torch.tensordot(x, q.T if back else q, dims=([dim], [0])), -1, dim)
        return x

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: C901 - one loop over the paper's algorithm
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.float()
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    dims = [d for d in range(grad.dim())
                            if grad.dim() > 1 and 1 < grad.shape[d] <= group["max_precond_dim"]]  # fmt: skip
                    state["gram"] = [torch.zeros(grad.shape[d], grad.shape[d], device=grad.device)
                                     if d in dims else None for d in range(grad.dim())]  # fmt: skip
                    self._update_gram(state, grad, beta2)
                    state["bases"] = [None if g is None else self._eigenbasis(g) for g in state["gram"]]
                    state["exp_avg"] = torch.zeros_like(grad)
                    state["exp_avg_sq"] = torch.zeros_like(grad)
                    continue  # the paper's first step only builds the preconditioner
                state["step"] += 1
                t = state["step"]
                rotated = self._rotate(grad, state["bases"])
                state["exp_avg"].mul_(beta1).add_(rotated, alpha=1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(rotated, rotated, value=1 - beta2)
                denom = state["exp_avg_sq"].sqrt().add_(group["eps"])
                step_size = group["lr"] * (1 - beta2**t) ** 0.5 / (1 - beta1**t)
                update = self._rotate(state["exp_avg"] / denom, state["bases"], back=True)
                p.add_(update.to(p.dtype), alpha=-step_size)
                if group["weight_decay"] > 0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])
                self._update_gram(state, grad, beta2)
                if t % group["precondition_frequency"] == 0:
                    self._refresh_bases(state)
        return loss

    def _update_gram(self, state: dict[str, Any], grad: Tensor, beta: float) -> None:
        for dim, gram in enumerate(state["gram"]):
            if gram is not None:
                unfolded = self._unfold(grad, dim)
                gram.lerp_(unfolded @ unfolded.T, 1 - beta)

    @staticmethod
    def _eigenbasis(gram: Tensor) -> Tensor:
        """Eigenvectors of ``gram``, largest eigenvalue first (float64 for a stable start)."""
        eye = torch.eye(gram.shape[0], dtype=torch.float64, device=gram.device)
        _, vectors = torch.linalg.eigh(gram.double() + 1e-30 * eye)
        return vectors.flip(-1).to(gram.dtype)

    def _refresh_bases(self, state: dict[str, Any]) -> None:
        """One power iteration + QR per basis, Adam's second moment re-ordered to match.

        The first moment lives in the rotated space too, so it is carried into the new bases.
        """
        exp_avg = self._rotate(state["exp_avg"], state["bases"], back=True)
        exp_avg_sq = state["exp_avg_sq"]
        for dim, (gram, q) in enumerate(zip(state["gram"], state["bases"], strict=True)):
            if gram is None or q is None:
                continue
            eigenvalues = torch.diag(q.T @ gram @ q)
            order = torch.argsort(eigenvalues, descending=True)
            exp_avg_sq = exp_avg_sq.index_select(dim, order)
            state["bases"][dim], _ = torch.linalg.qr(gram @ q[:, order])
        state["exp_avg_sq"] = exp_avg_sq
        state["exp_avg"] = self._rotate(exp_avg, state["bases"])
