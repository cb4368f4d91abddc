"""Multi-stage DCVC-RT recipes (configs/experiment/dcvc_rt_s*.yaml) and the stage callbacks.

The recipes are composed with the real train config; a tiny two-stage chain then runs on the CPU
with the recipes' own files and overrides that only shrink them (dcvc_rt_tiny, 64x64 crops of the
embedded clips, a few steps): stage 2 must start from stage 1's weights with a new optimizer, and
a resumed stage must keep its own weights.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from models import build_model, list_models
from nvc_train.training.stages import InitWeights, InitWeightsError
from nvc_train.training.train import train
from tests.test_train import CONFIG_DIR, make_cfg

STAGES = ["dcvc_rt_s1_intra", "dcvc_rt_s2_single_p", "dcvc_rt_s3_cascade", "dcvc_rt_s4_long"]
needs_dcvc_rt = pytest.mark.skipif(
    "dcvc_rt_tiny" not in list_models(), reason="models/dcvc_rt.py is not in this checkout yet"
)


def compose_stage(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[f"experiment={name}", *overrides], return_hydra_config=True)


@needs_dcvc_rt
def test_recipes_compose_and_chain_their_run_folders() -> None:
    previous_dir = None
    for index, name in enumerate(STAGES):
        cfg = compose_stage(name)
        assert cfg.model._target_ == "models.dcvc_rt.DCVCRT" and cfg.model.num_q == 64
        assert (cfg.module.lambda_min, cfg.module.lambda_max) == (1.0, 768.0)
        assert cfg.data.crop == 256 and cfg.trainer.max_steps > 0 and cfg.module.optimizer.lr > 0
        run_dir = cfg.hydra.run.dir
        assert run_dir == f"runs/dcvc_rt/{name.removeprefix('dcvc_rt_')}"
        if index == 0:
            assert cfg.module.intra_period == 1 and cfg.data.frames == 1
            assert "init_weights" not in cfg.callbacks
        else:
            init = cfg.callbacks.init_weights
            assert init._target_ == "nvc_train.training.stages.InitWeights"
            assert init.path == f"{previous_dir}/checkpoints/last.ckpt", "a stage starts from the one before"
            assert cfg.module.intra_period == 0 and cfg.data.frames >= 2
        previous_dir = run_dir
    # the learning rate falls and the chains grow from stage to stage
    cfgs = [compose_stage(name) for name in STAGES]
    assert [c.data.frames for c in cfgs] == sorted(c.data.frames for c in cfgs)
    assert [c.module.optimizer.lr for c in cfgs] == sorted(
        (c.module.optimizer.lr for c in cfgs), reverse=True
    )
    # mixed precision: the GPU trainer composes with every recipe
    assert compose_stage(STAGES[2], "trainer=gpu").trainer.precision == "bf16-mixed"


def _net_state(ckpt: str | Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("net.") and "_cdf" not in k}


SHRINK_STAGE = ["model=dcvc_rt_tiny", "data.frames=2", "data.val_frames=2", "module.val_q_indices=[0]"]


@needs_dcvc_rt
@pytest.mark.slow
def test_two_stage_chain_starts_from_the_previous_weights_and_resume_keeps_its_own(tmp_path: Path) -> None:
    stage1 = train(
        make_cfg(
            tmp_path / "s1",
            "experiment=dcvc_rt_s1_intra",
            "model=dcvc_rt_tiny",
            "data.frames=1",
            "data.val_frames=1",
            "module.val_q_indices=[0]",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
        )
    )
    assert stage1["global_step"] == 2 and stage1["ckpt_path"]
    # lr 0 (and no weight decay): stage 2 changes nothing, so its weights must equal stage 1's exactly
    stage2_overrides = [
        "experiment=dcvc_rt_s2_single_p",
        *SHRINK_STAGE,
        f"callbacks.init_weights.path={stage1['ckpt_path']}",
        "module.optimizer.lr=0.0",
        "module.scheduler.eta_min=0.0",
        "trainer.val_check_interval=1",
    ]
    stage2 = train(make_cfg(tmp_path / "s2", *stage2_overrides, "trainer.max_steps=1"))
    init = next(c for c in stage2["trainer"].callbacks if isinstance(c, InitWeights))
    assert init.loaded
    assert stage2["global_step"] == 1, "a new stage counts its own steps"
    steps = {float(s["step"]) for s in stage2["trainer"].optimizers[0].state.values()}
    assert steps == {1.0}, "a new stage has a new optimizer"
    before, after = _net_state(stage1["ckpt_path"]), _net_state(stage2["ckpt_path"])
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before), "stage 2 did not start from stage 1"

    # Resuming stage 2 (resume: auto finds its last.ckpt) keeps its own weights: the initial
    # checkpoint is not even read, so a path that no longer exists is no error.
    resumed = train(
        make_cfg(
            tmp_path / "s2",
            *stage2_overrides,
            "trainer.max_steps=2",
            f"callbacks.init_weights.path={tmp_path / 'gone.ckpt'}",
        )
    )
    assert resumed["resumed_from"] and resumed["global_step"] == 2
    assert not next(c for c in resumed["trainer"].callbacks if isinstance(c, InitWeights)).loaded
    assert math.isfinite(resumed["metrics"]["train/loss"])


# --------------------------------------------------------------------------------------------------
# InitWeights errors (no Trainer needed: the hook reads only these fields)


def _fresh_trainer(fast_dev_run: bool = False) -> SimpleNamespace:
    return SimpleNamespace(ckpt_path=None, global_step=0, fast_dev_run=fast_dev_run)


def test_init_weights_refuses_missing_foreign_and_incompatible_checkpoints(tmp_path: Path) -> None:
    module = SimpleNamespace(net=build_model("dcvc_lite_tiny"))
    missing = InitWeights(tmp_path / "nope.ckpt")
    with pytest.raises(InitWeightsError, match="initial weights not found: .*nope.ckpt.*previous stage"):
        missing.on_fit_start(_fresh_trainer(), module)
    missing.on_fit_start(_fresh_trainer(fast_dev_run=True), module)  # a smoke test only warns
    assert not missing.loaded
    with pytest.raises(InitWeightsError, match="previous stage's checkpoint"):
        InitWeights("")

    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(InitWeightsError, match="cannot read checkpoint"):
        InitWeights(garbage).on_fit_start(_fresh_trainer(), module)
    no_net = tmp_path / "no_net.ckpt"
    torch.save({"state_dict": {"other.weight": torch.zeros(1)}}, no_net)
    with pytest.raises(InitWeightsError, match="no codec network weights"):
        InitWeights(no_net).on_fit_start(_fresh_trainer(), module)

    other = tmp_path / "other_model.ckpt"
    foreign = build_model("dcvc_lite_tiny", latent_channels=40)  # same class, another size
    torch.save({"state_dict": {f"net.{k}": v for k, v in foreign.state_dict().items()}}, other)
    with pytest.raises(InitWeightsError, match="does not fit this network .*shape: .*strict=false"):
        InitWeights(other).on_fit_start(_fresh_trainer(), module)
    partial = InitWeights(other, strict=False)
    partial.on_fit_start(_fresh_trainer(), module)  # loads what matches, logs the rest
    assert partial.loaded
    same = {k: v for k, v in foreign.state_dict().items() if v.shape == module.net.state_dict()[k].shape}
    assert same and all(torch.equal(module.net.state_dict()[k], v) for k, v in same.items())

    good = tmp_path / "good.ckpt"
    source = build_model("dcvc_lite_tiny")
    torch.save({"state_dict": {f"net.{k}": v for k, v in source.state_dict().items()}}, good)
    resumed = InitWeights(good)
    resumed.on_fit_start(SimpleNamespace(ckpt_path="last.ckpt", global_step=0, fast_dev_run=False), module)
    assert not resumed.loaded, "a resumed fit keeps its own weights"
    InitWeights(good).on_fit_start(_fresh_trainer(), module)
    assert all(torch.equal(module.net.state_dict()[k], v) for k, v in source.state_dict().items())


def test_compile_callback_traces_the_sub_networks(tmp_path: Path) -> None:
    """CompileNet with the eager backend (graph capture only, no code generation) in a real fit."""
    cfg = make_cfg(
        tmp_path / "run",
        "+callbacks.compile._target_=nvc_train.training.stages.CompileNet",
        "+callbacks.compile.backend=eager",
        "data.frames=2",
        "trainer.fast_dev_run=true",
    )
    out = train(cfg)
    compile_cb = next(c for c in out["trainer"].callbacks if type(c).__name__ == "CompileNet")
    assert compile_cb.compiled and math.isfinite(out["metrics"]["train/loss"])
    # parameter names are unchanged (checkpoints stay loadable by uncompiled modules)
    assert all("_orig_mod" not in k for k in out["module"].state_dict())
    assert OmegaConf.select(cfg, "callbacks.compile.backend") == "eager"
