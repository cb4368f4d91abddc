"""Careless training inputs end with a non-zero exit and a message that says why (issue 10).

Every test runs ``train.py`` in a subprocess, as a user would, with the tiny codec on the embedded
clips shrunk to seconds per run (64x64 crops, two-frame chains, four steps at most). What a user
sees is checked: the exit status, the ``error:`` line on stderr, no traceback for a mistake the
user must fix (a traceback for a bug), and what is left in ``checkpoints/``.

Skipped steps are provoked with :class:`NaNGradients`, a callback added from the command line
(``+callbacks.nan_gradients._target_=...``), the way any callback is switched on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.optim import Optimizer

from tests.conftest import REPO_ROOT
from tests.test_train import SHRINK

pytestmark = pytest.mark.slow

# Four steps, validation (and last.ckpt) every two; the callbacks that measure or draw are off.
TINY_RUN = [
    "logger=csv",
    *SHRINK,
    "++callbacks.complexity_profile=null",
    "++callbacks.reconstruction_samples=null",
    "data.frames=2",
    "data.val_frames=2",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
]
# Variables that would change what the user sees: a data root from the environment, Hydra's full
# tracebacks, W&B settings.
_HIDDEN_ENV = ("VIMEO90K_ROOT", "BVI_DVC_ROOT", "HYDRA_FULL_ERROR")
# How train.py (run from the repository root) imports the callbacks below; pytest's own module
# name for this file depends on its import mode, so it is not used.
THIS_MODULE = "tests.test_train_failures"


class NaNGradients(Callback):
    """Turn one gradient into NaN at the given global steps, so that the RD module skips them.

    Callbacks' ``on_before_optimizer_step`` runs before the module's, which is where the skip is
    decided, so each listed step is skipped and no other.
    """

    def __init__(self, steps: Iterable[int]) -> None:
        self.steps = {int(step) for step in steps}

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        if trainer.global_step in self.steps:
            grad = next(p.grad for p in pl_module.parameters() if p.grad is not None)
            grad.fill_(float("nan"))


class FailingCallback(Callback):
    """A bug in code the run calls: it must keep its traceback."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        raise RuntimeError("deliberate bug in a callback")


def run_train_py(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    """``python train.py TINY_RUN... overrides... hydra.run.dir=run_dir``; its status is not checked."""
    env = {k: v for k, v in os.environ.items() if k not in _HIDDEN_ENV and not k.startswith("WANDB_")}
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), *TINY_RUN, *overrides, f"hydra.run.dir={run_dir}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def error_message(proc: subprocess.CompletedProcess[str]) -> str:
    """The ``error: ...`` message ``train.py`` printed on stderr (it may span lines)."""
    assert proc.returncode == 1, (
        f"exit status {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    _, found, message = proc.stderr.partition("error: ")
    assert found, f"no 'error:' on stderr:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr + proc.stdout, "a user error printed a traceback"
    return message


def assert_finite_or_absent(path: Path) -> None:
    """A checkpoint under this name is one a user would resume or evaluate: every tensor is finite."""
    if not path.exists():
        return
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    bad = [
        name
        for name, tensor in checkpoint["state_dict"].items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    assert not bad, f"{path.name} holds non-finite tensors: {bad[:5]}"


def test_zero_steps_exits_nonzero_and_says_how_to_fix(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    message = error_message(run_train_py(run_dir, "trainer.max_steps=0"))
    assert "no optimisation step was made" in message
    assert "trainer.max_steps=0" in message and "set trainer.max_steps to a positive number" in message
    assert not list(run_dir.glob("checkpoints/*.ckpt"))


def test_diverging_run_exits_nonzero_and_sets_its_checkpoints_aside(tmp_path: Path) -> None:
    """lr=1e12: the first step blows the weights up to ~1e12, every validation loss is NaN."""
    run_dir = tmp_path / "run"
    message = error_message(run_train_py(run_dir, "module.optimizer.lr=1e12"))
    assert message.startswith("training diverged")
    assert "the last validation's loss (val/loss) is nan" in message
    assert "module.optimizer.lr=1e+12" in message
    assert "last.ckpt -> last.nonfinite.ckpt" in message
    checkpoints = run_dir / "checkpoints"
    assert not (checkpoints / "last.ckpt").exists()
    assert (checkpoints / "last.nonfinite.ckpt").is_file()  # kept for a post-mortem
    assert "No checkpoint of this run has a finite val/loss" in message  # the best one was NaN too
    for path in checkpoints.glob("*.ckpt"):
        if not path.name.endswith(".nonfinite.ckpt"):
            assert_finite_or_absent(path)


@pytest.mark.parametrize(
    ("limit", "fails"), [(0.5, True), (0.8, False)], ids=["over-the-limit", "within-the-limit"]
)
def test_skipped_share_is_checked_against_max_skipped_share(
    tmp_path: Path, limit: float, fails: bool
) -> None:
    """Three of four steps get a NaN gradient (75% skipped): a failure under 0.5, a run under 0.8."""
    run_dir = tmp_path / "run"
    proc = run_train_py(
        run_dir,
        f"max_skipped_share={limit}",
        f"+callbacks.nan_gradients._target_={THIS_MODULE}.NaNGradients",
        "+callbacks.nan_gradients.steps=[0,1,2]",
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    if fails:
        message = error_message(proc)
        assert message.startswith("training skipped too many steps")
        assert (
            "3 of 4 optimizer steps (75%) were skipped" in message and f"max_skipped_share={limit}" in message
        )
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert last.is_file()  # finite weights: the checkpoint stays under its own name either way
    assert_finite_or_absent(last)
    assert torch.load(last, map_location="cpu", weights_only=True)["nvc_skipped_steps"] == 3


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data=vimeo90k", "data.root={tmp}/nowhere"], "Vimeo-90k root not found: {tmp}/nowhere"),
        (["data=vimeo90k"], "data.root (or set VIMEO90K_ROOT)"),
        (["data=bvi_dvc", "data.root={tmp}"], "no BVI-DVC video files (*.mp4 or *.yuv) under {tmp}"),
    ],
    ids=["vimeo90k-absent-root", "vimeo90k-root-not-set", "bvi_dvc-no-files"],
)
def test_missing_data_is_one_message_without_traceback(
    tmp_path: Path, overrides: list[str], expected: str
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    proc = run_train_py(tmp_path / "run", *(o.format(tmp=data) for o in overrides))
    assert expected.format(tmp=data) in error_message(proc)


def test_a_bug_keeps_its_traceback(tmp_path: Path) -> None:
    proc = run_train_py(tmp_path / "run", f"+callbacks.failing._target_={THIS_MODULE}.FailingCallback")
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "Traceback" in output and "RuntimeError: deliberate bug in a callback" in output
