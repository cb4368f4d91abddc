"""The training path end to end: the real config, shrunk, through ``train(cfg)`` and ``train.py``.

In-process tests compose ``configs/train.yaml`` with Hydra's compose API and call the same
``train`` the entry point calls; subprocess tests run ``train.py`` as a user would (W&B with no
key and no ``WANDB_MODE``, DDP on two CPU processes). Everything is sized for two CPU cores:
64x64 crops, two-frame chains, a few steps.
"""

from __future__ import annotations

import csv
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from nvc_train.training.loggers import decide_wandb_mode, host_reachable
from nvc_train.training.losses import lambda_table, msssim, msssim_levels
from nvc_train.training.train import train
from tests.conftest import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))

# Small enough for seconds per step on two cores; the tiny codec's pad_multiple is 32.
SHRINK = [
    "data.crop=64",
    "data.batch_size=2",
    "data.samples_per_epoch=4",
    "data.val_crop=[64,64]",
    "data.val_max_clips=2",
    "data.val_batch_size=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
    "~callbacks.progress_bar",
]
SMALL_RUN = ["data.frames=2", "data.val_frames=2", "trainer.max_steps=2", "trainer.val_check_interval=2"]


def make_cfg(run_dir: Path, *overrides: str, logger: str = "csv") -> DictConfig:
    """The real train config with the test's overrides (later ones win) and output under run_dir."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(
            "train", overrides=[f"logger={logger}", *SHRINK, *overrides, f"paths.run_dir={run_dir}"]
        )


def run_train_py(*overrides: str, env: dict[str, str] | None = None, timeout: float = 600):
    """``python train.py ...`` in a subprocess, as a user would run it."""
    cmd = [sys.executable, str(REPO_ROOT / "train.py"), *overrides]
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "1", **(env or {})}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=full_env, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for path in sorted((run_dir / "csv").glob("version_*/metrics.csv")):
        with path.open() as handle:
            rows += list(csv.DictReader(handle))
    return rows


def column(rows: list[dict[str, str]], name: str) -> list[float]:
    return [float(r[name]) for r in rows if r.get(name) not in (None, "")]


def assert_plain(value: Any, where: str = "checkpoint") -> None:
    """Only what ``weights_only=True`` accepts from a config: plain Python containers and scalars."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str), f"{where}: key {key!r}"
            assert_plain(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            assert_plain(item, f"{where}[{index}]")
    else:
        assert value is None or isinstance(value, (str, int, float, bool)), f"{where}: {type(value)}"


# --------------------------------------------------------------------------------------------------
# train(cfg) in-process


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> dict[str, Any]:
    """One shrunk run (3 steps, validation every 2: the last step comes after the last validation)."""
    run_dir = tmp_path_factory.mktemp("train") / "run"
    cfg = make_cfg(
        run_dir, "data.frames=2", "data.val_frames=2", "trainer.max_steps=3", "trainer.val_check_interval=2"
    )
    out = train(cfg)
    return {"cfg": cfg, "out": out, "run_dir": run_dir}


def test_train_returns_metrics_and_checkpoint(small_run: dict[str, Any]) -> None:
    out, run_dir = small_run["out"], small_run["run_dir"]
    assert out["run_dir"] == run_dir
    assert out["global_step"] == 3
    assert out["skipped_steps"] == 0
    assert Path(out["ckpt_path"]) == run_dir / "checkpoints" / "last.ckpt"
    assert Path(out["best_ckpt_path"]).is_file()
    metrics = out["metrics"]
    for key in ("train/loss", "train/bpp_est", "train/mse", "train/psnr_yuv", "train/lambda", "train/lr"):
        assert math.isfinite(metrics[key]), key
    for q in out["module"].val_q_indices:
        assert math.isfinite(metrics[f"val/psnr_yuv_q{q}"]) and metrics[f"val/bpp_est_q{q}"] > 0
    assert metrics["train/skipped_steps"] == 0.0
    rows = read_metrics(run_dir)
    assert column(rows, "train/psnr_yuv") and column(rows, "val/loss")
    assert any("lr-" in key for key in rows[0]), "LearningRateMonitor logs the learning rate"
    assert (run_dir / "run_info" / "packages.txt").is_file()


def test_checkpoint_loads_weights_only_with_config(small_run: dict[str, Any]) -> None:
    out, cfg = small_run["out"], small_run["cfg"]
    checkpoint = torch.load(out["ckpt_path"], weights_only=True, map_location="cpu")
    assert checkpoint["global_step"] == 3, "last.ckpt is the final step, not the last validation"
    config = checkpoint["nvc_config"]
    assert_plain(config)
    assert config == OmegaConf.to_container(cfg, resolve=True)
    assert config["model"]["_target_"] == cfg.model._target_
    assert_plain(checkpoint["hyper_parameters"], "hyper_parameters")
    state = checkpoint["state_dict"]
    assert state and all(key.startswith("net.") for key in state)
    # The network rebuilt from the stored config takes the stored weights (entropy tables included).
    from hydra.utils import instantiate

    net = instantiate(config["model"])
    net.load_state_dict({key[len("net.") :]: value for key, value in state.items()})


def test_resume_continues_global_step(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = train(make_cfg(run_dir, *SMALL_RUN))
    assert first["resumed_from"] is None and first["global_step"] == 2
    out = train(make_cfg(run_dir, *SMALL_RUN[:2], "trainer.max_steps=4", "trainer.val_check_interval=2"))
    assert out["resumed_from"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert out["global_step"] == 4
    assert torch.load(out["ckpt_path"], weights_only=True)["global_step"] == 4
    second_run_steps = column(read_metrics(run_dir)[-1:], "step")
    assert second_run_steps and second_run_steps[0] >= 2, "the resumed run logs from where the first stopped"

    again = train(make_cfg(run_dir, *SMALL_RUN, "resume=never"))
    assert again["resumed_from"] is None and again["global_step"] == 2


class NonFiniteInjector(Callback):
    """Test helper built from the config: a NaN loss at ``loss_steps``, a NaN gradient at ``grad_steps``."""

    def __init__(self, loss_steps: list[int], grad_steps: list[int]) -> None:
        self.loss_steps = set(loss_steps)
        self.grad_steps = set(grad_steps)
        self._original = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step in self.loss_steps:
            net = pl_module.net
            self._original = net.forward_frame

            def poisoned(*args, **kwargs):
                out = self._original(*args, **kwargs)
                out.bits = out.bits * float("nan")
                return out

            net.forward_frame = poisoned

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._original is not None:
            del pl_module.net.forward_frame  # back to the class's method
            self._original = None

    def on_after_backward(self, trainer, pl_module) -> None:
        if trainer.global_step in self.grad_steps:
            next(p for p in pl_module.parameters() if p.grad is not None).grad.view(-1)[0] = float("inf")


def test_nonfinite_steps_are_skipped_and_counted(tmp_path: Path) -> None:
    cfg = make_cfg(
        tmp_path / "run",
        *SMALL_RUN,
        "trainer.max_steps=5",
        "trainer.val_check_interval=5",
        "+callbacks.injector._target_=tests.test_train.NonFiniteInjector",
        "+callbacks.injector.loss_steps=[1]",
        "+callbacks.injector.grad_steps=[3]",
    )
    out = train(cfg)
    module = out["module"]
    assert out["skipped_steps"] == 2
    assert out["global_step"] == 5
    assert all(torch.isfinite(p).all() for p in module.parameters())
    # A skipped step leaves the optimizer state alone: Adam counted only the 3 real updates.
    optimizer = out["trainer"].optimizers[0]
    steps = {float(state["step"]) for state in optimizer.state.values()}
    assert steps == {3.0}
    logged = column(read_metrics(tmp_path / "run"), "train/skipped_steps")
    assert logged and max(logged) == 2.0
    assert torch.load(out["ckpt_path"], weights_only=True)["nvc_skipped_steps"] == 2


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_fast_dev_run(experiment: str, tmp_path: Path) -> None:
    # The DCVC-RT recipes name the full-size model; the tiny one of the same class keeps this test fast.
    shrink = ["model=dcvc_rt_tiny"] if experiment.startswith("dcvc_rt_") else []
    out = train(make_cfg(tmp_path / "run", f"experiment={experiment}", *shrink, "trainer.fast_dev_run=true"))
    assert out["global_step"] == 1
    assert math.isfinite(out["metrics"]["train/loss"])


def test_msssim_distortion_trains(tmp_path: Path) -> None:
    cfg = make_cfg(
        tmp_path / "run",
        "module.distortion=msssim",
        "module.lambda_min=2.4",
        "module.lambda_max=115",
        "trainer.fast_dev_run=true",
    )
    out = train(cfg)
    assert 0.0 < out["metrics"]["train/msssim_yuv"] <= 1.0


def test_mixed_precision_keeps_the_loss_in_float32(tmp_path: Path) -> None:
    """bf16 autocast (the gpu config's precision, here on the CPU) must not round the loss terms."""
    out = train(make_cfg(tmp_path / "run", "trainer.precision=bf16-mixed", "trainer.fast_dev_run=true"))
    mse = out["metrics"]["train/mse"]
    assert math.isfinite(out["metrics"]["train/loss"])
    assert torch.tensor(mse).bfloat16().float().item() != mse, "the MSE went through bf16"


def test_no_clips_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    cfg = make_cfg(
        tmp_path / "run", "data=folder", f"data.folder={tmp_path / 'empty'}", "trainer.fast_dev_run=true"
    )
    with pytest.raises(FileNotFoundError, match="no training clips found"):
        train(cfg)


@pytest.mark.slow
def test_short_run_improves_rate_distortion(tmp_path: Path) -> None:
    """A short run already lowers the RD loss and raises PSNR (validation every 40 of 160 steps)."""
    cfg = make_cfg(
        tmp_path / "run",
        "data.frames=2",
        "data.val_frames=2",
        "trainer.max_steps=160",
        "trainer.val_check_interval=40",
    )
    train(cfg)
    rows = read_metrics(tmp_path / "run")
    val_loss, val_psnr = column(rows, "val/loss"), column(rows, "val/psnr_yuv")
    print("val/loss", val_loss, "val/psnr_yuv", val_psnr, "val/bpp_est", column(rows, "val/bpp_est"))
    assert len(val_loss) == 4
    assert val_loss[-1] < val_loss[0]
    assert val_psnr[-1] > val_psnr[0] + 1.5


# --------------------------------------------------------------------------------------------------
# train.py in a subprocess


def clean_wandb_env(tmp_path: Path) -> dict[str, str]:
    """No W&B mode, no key, no netrc: the situation that hangs or fails with plain W&B."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["NETRC"] = str(tmp_path / "no_netrc")
    return env


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    """``python train.py`` with the default loggers (csv + wandb), WANDB_MODE unset and no API key."""
    tmp = tmp_path_factory.mktemp("cli")
    run_dir = tmp / "run"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), *SHRINK, *SMALL_RUN, f"hydra.run.dir={run_dir}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=clean_wandb_env(tmp),
        timeout=600,  # a W&B prompt or network wait would hit this instead of hanging the suite
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run_dir


@pytest.mark.slow
def test_train_py_writes_loadable_checkpoint(cli_run: Path) -> None:
    checkpoint = torch.load(cli_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2
    config = checkpoint["nvc_config"]
    assert config["paths"]["run_dir"] == str(cli_run)
    assert config["data"]["crop"] == 64
    assert config["model_name"] == "dcvc_lite_tiny"
    assert (cli_run / ".hydra" / "config.yaml").is_file()
    assert (cli_run / "run_info" / "git_commit.txt").is_file()


@pytest.mark.slow
def test_train_py_writes_an_offline_wandb_run_without_key_or_mode(cli_run: Path) -> None:
    offline = list((cli_run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and any(offline[0].glob("*.wandb")), offline


@pytest.mark.slow
def test_evaluate_py_codes_the_trained_checkpoint(cli_run: Path, tmp_path: Path) -> None:
    """Chain the entry points: evaluate.py rebuilds the model from last.ckpt alone and codes real files."""
    eval_dir = tmp_path / "eval"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "evaluate.py"),
            f"ckpt={cli_run / 'checkpoints' / 'last.ckpt'}",
            "~anchor",
            "frames=2",
            "metrics=[psnr]",
            "progress=false",
            f"hydra.run.dir={eval_dir}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    with (eval_dir / "points.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert rows and {r["codec"] for r in rows} == {"dcvc_lite_tiny"}
    for row in rows:
        # file bits vs the likelihood estimate the training loss used: within 15 % for a tiny model
        assert abs(float(row["bits"]) / float(row["est_bits"]) - 1.0) < 0.15, row
        assert math.isfinite(float(row["psnr_yuv"]))
    with (eval_dir / "complexity.csv").open() as handle:
        (complexity,) = list(csv.DictReader(handle))  # kMAC/px counted at the test sequences' size
    assert 0 < float(complexity["kmac_per_px_intra"]) < float(complexity["kmac_per_px"])
    # A neural codec's speed is its coding path's, timed with warm-up (ComplexityProfile's rule).
    assert complexity["fps_method"] == "model" and float(complexity["enc_fps"]) > 0


@pytest.mark.slow
def test_train_py_user_error_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "train.py"),
            "data=folder",
            f"data.folder={tmp_path}",
            "logger=csv",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "error: no training clips found" in proc.stderr
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------------------------------
# Pieces


def test_wandb_mode_decision_is_quick_and_never_online_without_a_key(monkeypatch, tmp_path: Path) -> None:
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert decide_wandb_mode("auto")[0] == "offline"
    assert decide_wandb_mode("online")[0] == "offline"  # online needs a key; never a prompt
    assert decide_wandb_mode("disabled")[0] == "disabled"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert decide_wandb_mode("online")[0] == "offline"  # the environment wins
    monkeypatch.delenv("WANDB_MODE")
    # A key, but a host whose name does not resolve: offline, quickly.
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "https://api.wandb.invalid")
    mode, reason = decide_wandb_mode("auto", probe_timeout_s=1.0)
    assert mode == "offline" and "not reachable" in reason
    # A key, and a server that accepts the connection but never answers (a proxy or a stuck
    # server: the case where plain W&B hangs for minutes): offline within the probe's bound.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        monkeypatch.setenv("WANDB_BASE_URL", f"https://127.0.0.1:{port}")
        start = time.perf_counter()
        mode, reason = decide_wandb_mode("auto", probe_timeout_s=1.0)
        assert mode == "offline" and "not reachable" in reason
        assert time.perf_counter() - start < 2.5
        assert host_reachable("127.0.0.1", port, timeout_s=0.5, tls=False)  # TCP alone would say yes


def test_lambda_table_is_log_spaced() -> None:
    table = lambda_table(117.0, 6060.0, 8)
    assert table[0].item() == pytest.approx(117.0) and table[-1].item() == pytest.approx(6060.0)
    ratios = table[1:] / table[:-1]
    assert torch.allclose(ratios, ratios[0].expand_as(ratios), rtol=1e-5)
    assert lambda_table(256.0, 256.0, 1).tolist() == [256.0]
    with pytest.raises(ValueError, match="single-rate"):
        lambda_table(100.0, 200.0, 1)


def test_training_msssim_matches_reference_at_full_size() -> None:
    """With room for all five scales the training MS-SSIM is the standard one (pytorch-msssim)."""
    from pytorch_msssim import ms_ssim

    gen = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(
        torch.rand(2, 1, 48, 48, generator=gen), size=(192, 192), mode="bilinear"
    )
    x_hat = (x + 0.05 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    ours = msssim(x_hat, x)[:, 0]
    reference = ms_ssim(x_hat, x, data_range=1.0, size_average=False)
    assert torch.allclose(ours, reference, atol=2e-3)
    assert msssim_levels(64, 64) == 3 and msssim_levels(32, 32) == 2
