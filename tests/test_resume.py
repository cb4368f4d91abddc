"""Faults during training: ``train.py`` stopped by SIGTERM, then killed with SIGKILL, then re-run.

The same command is run three times in one run folder, as a user (or a scheduler) would after each
fault. A SIGTERM (preemption, ``scancel``) saves ``hpc_ckpt_1.ckpt`` at the end of the current step
and exits with 143; a SIGKILL saves nothing, so the next run continues from ``last.ckpt``, written
at the last validation. Every resume must carry on the global step, the learning-rate schedule
and the optimizer state, and the last run ends at ``max_steps``. (NaN-loss steps are covered in
tests/test_train.py; the evaluate.py kill test is in tests/test_evaluate.py.)
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nvc_train.training.train import SIGTERM_EXIT_STATUS, resume_checkpoint
from tests.conftest import REPO_ROOT
from tests.test_train import SHRINK, column, read_metrics

MAX_STEPS = 40  # long enough (about 0.1 s a step) for the kill to land between two validations
VAL_EVERY = 4
LR, ETA_MIN = 5.0e-4, 5.0e-5  # configs/train.yaml: AdamW lr and the cosine schedule's floor
# Callbacks that measure or draw at fit start / every validation cost seconds per process and play
# no part in resuming; `++` switches them off whether or not the callback config names them.
LEAN_CALLBACKS = ["++callbacks.complexity_profile=null", "++callbacks.reconstruction_samples=null"]


def train_command(run_dir: Path) -> list[str]:
    return [
        sys.executable,
        str(REPO_ROOT / "train.py"),
        "logger=csv",
        *SHRINK,
        *LEAN_CALLBACKS,
        "data.frames=2",
        "data.val_frames=2",
        f"trainer.max_steps={MAX_STEPS}",
        f"trainer.val_check_interval={VAL_EVERY}",
        f"hydra.run.dir={run_dir}",
    ]


def start(run_dir: Path, log_name: str) -> tuple[subprocess.Popen, Path]:
    log_path = run_dir.parent / log_name
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            train_command(run_dir), cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT
        )
    return proc, log_path


def wait_for_step(path: Path, min_step: int, proc: subprocess.Popen, timeout_s: float = 300) -> int:
    """Poll until ``path`` is a checkpoint at ``min_step`` or later; return its step."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"train.py ended early with {proc.returncode}"
        if path.is_file():
            try:
                step = torch.load(path, map_location="cpu", weights_only=True)["global_step"]
            except (RuntimeError, EOFError, KeyError):  # being written: look again
                step = -1
            if step >= min_step:
                return step
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint at step >= {min_step} in {path} within {timeout_s} s")


def cosine_lr(step: int) -> float:
    """CosineAnnealingLR of configs/train.yaml (T_max = max_steps) after ``step`` scheduler steps."""
    return ETA_MIN + (LR - ETA_MIN) * (1 + math.cos(math.pi * step / MAX_STEPS)) / 2


def adam_steps(checkpoint: dict) -> set[float]:
    return {float(state["step"]) for state in checkpoint["optimizer_states"][0]["state"].values()}


def assert_resumable_state(checkpoint: dict) -> None:
    """Optimizer and scheduler state count every step taken so far (no restart at 0)."""
    step = checkpoint["global_step"]
    assert adam_steps(checkpoint) == {float(step)}, "AdamW's per-parameter step count"
    scheduler = checkpoint["lr_schedulers"][0]
    assert scheduler["last_epoch"] == step
    assert scheduler["_last_lr"][0] == pytest.approx(cosine_lr(step), rel=1e-6)


@pytest.mark.slow
def test_sigterm_then_sigkill_then_rerun_finishes_with_continuous_state(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    hpc = run_dir / "hpc_ckpt_1.ckpt"

    # 1. SIGTERM after the first validation: a whole-step checkpoint, exit status 143.
    proc, log1 = start(run_dir, "run1.log")
    wait_for_step(last, VAL_EVERY, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == SIGTERM_EXIT_STATUS, log1.read_text()[-3000:]
    stopped = torch.load(hpc, map_location="cpu", weights_only=True)
    term_step = stopped["global_step"]
    assert VAL_EVERY <= term_step < MAX_STEPS
    assert_resumable_state(stopped)
    assert resume_checkpoint("auto", last.parent, run_dir) == str(hpc)

    # 2. The same command resumes from it; kill -9 once a later validation has saved last.ckpt.
    proc, log2 = start(run_dir, "run2.log")
    next_val = (term_step // VAL_EVERY + 1) * VAL_EVERY
    assert next_val < MAX_STEPS, "the SIGTERM came too late for the kill to land mid-run"
    killed_at = wait_for_step(last, next_val, proc)
    proc.kill()
    proc.wait(timeout=60)
    assert f"resuming from {hpc}" in log2.read_text()
    assert killed_at < MAX_STEPS, "the run finished before it was killed"
    before_kill = torch.load(last, map_location="cpu", weights_only=True)
    assert_resumable_state(before_kill)

    # 3. The same command again: from last.ckpt (ahead of hpc_ckpt_1) to max_steps.
    proc = subprocess.run(train_command(run_dir), cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"resuming from {last}" in proc.stdout + proc.stderr
    final = torch.load(last, map_location="cpu", weights_only=True)
    assert final["global_step"] == MAX_STEPS
    assert_resumable_state(final)

    # The logged learning rate follows one cosine schedule across the three processes: a scheduler
    # restarted at 0 would log lr(step - resumed_step) after a resume.
    versions = sorted((run_dir / "csv").glob("version_*"))
    assert len(versions) == 3, "one CSV version per process"
    for version in versions:
        rows = read_metrics_version(version)
        steps, lrs = column(rows, "step"), column(rows, "train/lr")
        assert lrs
        for step, lr in zip(steps, lrs, strict=True):
            assert lr == pytest.approx(cosine_lr(int(step)), rel=1e-6), (version.name, step)
    resumed_steps = column(read_metrics_version(versions[1]), "step")
    assert min(resumed_steps) >= term_step, "the resumed run starts where the SIGTERM stopped"
    assert min(column(read_metrics_version(versions[2]), "step")) >= killed_at
    assert max(column(read_metrics(run_dir), "step")) == MAX_STEPS - 1


def read_metrics_version(version: Path) -> list[dict[str, str]]:
    """The rows with a training lr of one CSV version (validation rows have none)."""
    import csv

    with (version / "metrics.csv").open() as handle:
        return [row for row in csv.DictReader(handle) if row.get("train/lr")]


def test_auto_resume_ranks_checkpoints_by_step_and_skips_unreadable(tmp_path: Path) -> None:
    checkpoint_dir = tmp_path / "checkpoints"
    checkpoint_dir.mkdir()
    assert resume_checkpoint("auto", checkpoint_dir, tmp_path) is None
    torch.save({"global_step": 8}, checkpoint_dir / "last.ckpt")
    torch.save({"global_step": 6}, tmp_path / "hpc_ckpt_1.ckpt")
    assert resume_checkpoint("auto", checkpoint_dir, tmp_path) == str(checkpoint_dir / "last.ckpt")
    torch.save({"global_step": 9}, tmp_path / "hpc_ckpt_2.ckpt")
    assert resume_checkpoint("auto", checkpoint_dir, tmp_path) == str(tmp_path / "hpc_ckpt_2.ckpt")
    (tmp_path / "hpc_ckpt_3.ckpt").write_bytes(b"cut short by a crash")
    assert resume_checkpoint("auto", checkpoint_dir, tmp_path) == str(tmp_path / "hpc_ckpt_2.ckpt")
    assert resume_checkpoint("never", checkpoint_dir, tmp_path) is None
    with pytest.raises(FileNotFoundError, match="resume checkpoint not found"):
        resume_checkpoint(str(tmp_path / "nope.ckpt"), checkpoint_dir, tmp_path)
