"""SOAP (Shampoo-preconditioned Adam), the optimizer Cool-Chic fits its networks with, and the preset
key that selects it for a per-sequence fit."""

from __future__ import annotations

import pytest
import torch
import yaml

from nvc_train.training.presets import FitOptimizer, OverfitConfigError, OverfitPreset
from nvc_train.training.soap import SOAP
from tests.conftest import REPO_ROOT

SOAP_CONFIG = {"name": "soap", "network_betas": [0.95, 0.95], "latent_betas": [0.9, 0.999],
               "weight_decay": 0.0, "precondition_frequency": 5, "max_precond_dim": 256}  # fmt: skip


def _least_squares(optimizer_for, steps: int = 300) -> float:
    """Final loss of an ill-conditioned least-squares fit (column scales 1 .. 100)."""
    torch.manual_seed(0)
    a = torch.randn(64, 20) @ torch.diag(torch.logspace(0, 2, 20))
    target = a @ torch.randn(20, 8)
    w = torch.zeros(20, 8, requires_grad=True)
    optimizer = optimizer_for([w])
    for _ in range(steps):
        optimizer.zero_grad()
        loss = ((a @ w - target) ** 2).mean()
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def test_soap_goes_further_than_adam_on_an_ill_conditioned_fit() -> None:
    adam = _least_squares(lambda p: torch.optim.Adam(p, lr=0.05))
    soap = _least_squares(lambda p: SOAP(p, lr=0.05, betas=(0.95, 0.95), precondition_frequency=5))
    assert soap < 0.5 * adam


def test_soap_without_preconditioner_is_adam() -> None:
    """``max_precond_dim: 0`` (how the latents are trained): Adam's steps, after SOAP's first step,
    which only builds the preconditioner."""
    torch.manual_seed(1)
    start = torch.randn(6, 4)
    w_soap, w_adam = start.clone().requires_grad_(), start.clone().requires_grad_()
    soap = SOAP([w_soap], lr=0.01, betas=(0.9, 0.999), eps=1e-12, max_precond_dim=0)
    adam = torch.optim.Adam([w_adam], lr=0.01, betas=(0.9, 0.999), eps=1e-12)
    grads = [torch.randn(6, 4) for _ in range(6)]
    for k, grad in enumerate(grads):
        w_soap.grad = grad.clone()
        soap.step()
        if k > 0:
            w_adam.grad = grad.clone()
            adam.step()
    assert torch.allclose(w_soap, w_adam, atol=1e-6)


def test_soap_trains_convolution_weights_and_keeps_its_bases_orthogonal() -> None:
    torch.manual_seed(2)
    conv = torch.nn.Conv2d(3, 5, 3)
    optimizer = SOAP(conv.parameters(), lr=0.01, precondition_frequency=3)
    x, target = torch.randn(2, 3, 8, 8), torch.randn(2, 5, 6, 6)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = ((conv(x) - target) ** 2).mean()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]
    bases = [q for q in optimizer.state[conv.weight]["bases"] if q is not None]
    assert [q.shape[0] for q in bases] == [5, 3, 3, 3]
    for q in bases:
        assert torch.allclose(q.T @ q, torch.eye(q.shape[0]), atol=1e-5)
    assert all(q is None for q in optimizer.state[conv.bias]["bases"])  # 1-d: plain Adam


def test_the_optimizer_key_of_a_preset() -> None:
    preset = yaml.safe_load((REPO_ROOT / "configs/overfit/c3_tiny.yaml").read_text())
    assert OverfitPreset.from_config(preset).optimizer == FitOptimizer("adam")
    parsed = OverfitPreset.from_config({**preset, "optimizer": SOAP_CONFIG}).optimizer
    assert parsed.name == "soap" and parsed.network_betas == (0.95, 0.95)
    for bad in ({**SOAP_CONFIG, "name": "sgd"}, {"name": "soap"}, {**SOAP_CONFIG, "momentum": 0.9},
                {"name": "adam", "max_precond_dim": 4}):  # fmt: skip
        with pytest.raises(OverfitConfigError, match="optimizer"):
            OverfitPreset.from_config({**preset, "optimizer": bad})


def test_gradient_clip_and_fresh_per_phase_are_optional_keys() -> None:
    preset = yaml.safe_load((REPO_ROOT / "configs/overfit/c3_tiny.yaml").read_text())
    extra = {"gradient_clip": 0.1, "fresh_per_phase": True}
    parsed = OverfitPreset.from_config({**preset, "optimizer": {**SOAP_CONFIG, **extra}}).optimizer
    assert parsed.gradient_clip == 0.1 and parsed.fresh_per_phase is True
    assert OverfitPreset.from_config(
        {**preset, "optimizer": {"name": "adam", **extra}}
    ).optimizer.fresh_per_phase
    for bad in ({"name": "adam", "gradient_clip": -1.0}, {"name": "adam", "fresh_per_phase": "yes please"}):
        with pytest.raises(OverfitConfigError, match="optimizer"):
            OverfitPreset.from_config({**preset, "optimizer": bad})


def test_the_gradient_clip_caps_the_network_alone_in_cool_chics_loss_units() -> None:
    """Cool-Chic clips its network's gradient of D + R / lambda at 0.1; ours is lambda times that
    loss, so the cap is 0.1 * lambda, and the latents' gradient is never touched."""
    from nvc_train.training.overfit_module import OverfitModule
    from tests.test_overfit import tiny_net

    lmbda = 50.0
    net = tiny_net(frames=1, structure="ai")
    module = OverfitModule(net, lmbda, lr=0.01, parameter_lr_ratio=20,
                           optimizer=FitOptimizer("adam", gradient_clip=0.1))  # fmt: skip
    for parameter in net.parameters():
        parameter.grad = torch.full_like(parameter, 3.0)
    module.on_before_optimizer_step(torch.optim.Adam(net.parameters()))
    named = dict(net.named_parameters())
    network = [p.grad for n, p in named.items() if net.is_network_parameter(n)]
    latents = [p.grad for n, p in named.items() if not net.is_network_parameter(n)]
    assert network and latents
    assert float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in network]))) == pytest.approx(
        0.1 * lmbda
    )
    assert all(torch.all(g == 3.0) for g in latents)


def test_fresh_per_phase_starts_each_phase_with_a_new_optimizer_state() -> None:
    """Adam's step count at the end of a two-phase fit: the last phase's steps with fresh_per_phase,
    both phases' without."""
    from nvc_train.training.overfit import fit_sequence
    from tests.test_overfit import TINY_H, TINY_W, tiny_net

    y = torch.rand(1, 1, TINY_H, TINY_W)
    uv = torch.full((1, 2, TINY_H // 2, TINY_W // 2), 0.5)
    preset = yaml.safe_load((REPO_ROOT / "configs/overfit/c3_tiny.yaml").read_text())
    preset["phases"] = [{"name": "a", "steps": 3, "lr": 0.01, "quantizer": "soft"},
                        {"name": "b", "steps": 2, "lr": 0.001, "quantizer": "ste"}]  # fmt: skip
    counts = {}
    for fresh in (False, True):
        torch.manual_seed(0)
        fit = fit_sequence(tiny_net(frames=1, structure="ai"), y, uv, 100.0,
                           {**preset, "optimizer": {"name": "adam", "fresh_per_phase": fresh}})  # fmt: skip
        states = fit.trainer.optimizers[0].state.values()
        counts[fresh] = {int(state["step"]) for state in states}
    assert counts == {False: {5}, True: {2}}
