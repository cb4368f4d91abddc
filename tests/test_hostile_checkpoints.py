"""Crafted checkpoints: a file's config builds only registered networks, in every loader.

Two attacks from issue 10, each carried by a checkpoint that ``torch.load(weights_only=True)``
reads without complaint: a ``model._target_`` of ``torch.load`` with ``weights_only: false`` on a
second file whose unpickling runs a shell command, and one of ``pathlib.Path.write_text``. Each
loader (evaluate's checkpoint codec, training resume, InitWeights) must refuse both before
anything is built: no command runs, no file is written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from models import build_model
from nvc_train.codecs.neural import NeuralCodec
from nvc_train.networks import CheckpointError, build_network, checked_network_config, load_checkpoint
from nvc_train.training.stages import InitWeights, InitWeightsError
from nvc_train.training.train import resume_checkpoint
from tests.conftest import REPO_ROOT


class _RunsCommand:
    """Unpickling this runs a shell command (what a hostile pickle does)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _checkpoint(path: Path, model: dict, model_name: str = "tiny") -> Path:
    """A file shaped like a train.py checkpoint, with ``model`` as its network config."""
    state = {f"net.{k}": v for k, v in build_model("dcvc_lite_tiny").state_dict().items()}
    torch.save(
        {"state_dict": state, "global_step": 1, "nvc_config": {"model": model, "model_name": model_name}},
        path,
    )
    return path


@pytest.fixture()
def attacks(tmp_path: Path) -> dict:
    """The two crafted checkpoints, and the files that would exist if either ran."""
    marker = tmp_path / "command_ran"
    written = tmp_path / "written_by_checkpoint.txt"
    pickle_file = tmp_path / "other.pt"
    torch.save(_RunsCommand(f"touch {marker}"), pickle_file)
    load = _checkpoint(
        tmp_path / "load.ckpt", {"_target_": "torch.load", "f": str(pickle_file), "weights_only": False}
    )
    write = _checkpoint(
        tmp_path / "write.ckpt",
        {"_target_": "pathlib.Path.write_text", "self": str(written), "data": "pwned"},
    )
    return {"files": [load, write], "marker": marker, "written": written}


def _nothing_happened(attacks: dict) -> None:
    assert not attacks["marker"].exists(), "the crafted checkpoint ran a command"
    assert not attacks["written"].exists(), "the crafted checkpoint wrote a file"


def test_the_attack_is_real_without_the_allow_list(attacks: dict) -> None:
    """The second file does run a command when unpickled without weights_only: the tests can fail."""
    assert torch.load(attacks["files"][0].parent / "other.pt", weights_only=False) == 0
    assert attacks["marker"].exists()


def test_evaluate_codec_refuses_foreign_targets(attacks: dict) -> None:
    for path in attacks["files"]:
        with pytest.raises(CheckpointError, match="is not a registered network class.*refused"):
            NeuralCodec.from_checkpoint(path)
    _nothing_happened(attacks)


def test_resume_refuses_foreign_targets(attacks: dict, tmp_path: Path) -> None:
    for path in attacks["files"]:
        with pytest.raises(CheckpointError, match="not a registered network class"):
            resume_checkpoint(str(path), tmp_path)
    # resume=auto finds it as the run's own last.ckpt and refuses it the same way
    run_checkpoints = tmp_path / "run" / "checkpoints"
    run_checkpoints.mkdir(parents=True)
    (run_checkpoints / "last.ckpt").write_bytes(attacks["files"][1].read_bytes())
    with pytest.raises(CheckpointError, match="not a registered network class"):
        resume_checkpoint("auto", run_checkpoints)
    _nothing_happened(attacks)


def test_init_weights_refuses_foreign_targets(attacks: dict) -> None:
    module = SimpleNamespace(net=build_model("dcvc_lite_tiny"))
    trainer = SimpleNamespace(ckpt_path=None, global_step=0, fast_dev_run=False)
    for path in attacks["files"]:
        with pytest.raises(InitWeightsError, match="not a registered network class"):
            InitWeights(path).on_fit_start(trainer, module)
    _nothing_happened(attacks)


def test_evaluate_py_refuses_with_one_line(attacks: dict, tmp_path: Path) -> None:
    """The real entry point: exit 1, one ``error:`` line naming the entry, no traceback.

    A careless input goes the same way: a text file given as a checkpoint.
    """
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    expected = ["not a registered network class"] * 2 + ["cannot read checkpoint"]
    for index, path in enumerate([*attacks["files"], text]):
        proc = subprocess.run(
            [sys.executable, "evaluate.py", f"ckpt={path}", f"hydra.run.dir={tmp_path / f'run{index}'}"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
            env={**os.environ, "NVC_NO_REEXEC": "1"},
        )  # fmt: skip
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and expected[index] in errors[0], proc.stderr[-2000:]
    _nothing_happened(attacks)


@pytest.mark.parametrize(
    ("model", "match"),
    [
        ({"_target_": "models.dcvc_lite.DCVCLite", "channels": {"_target_": "os.system"}}, "_target_"),
        ({"_target_": "models.dcvc_lite.DCVCLite", "_partial_": True}, "model._partial_"),
        ({"_target_": "models.dcvc_lite.DCVCLite", "channels": 10**12}, "model.channels"),
        ({"_target_": "models.dcvc_lite.DCVCLite", "gain": float("nan")}, "model.gain"),
        ({"_target_": "models.__init__.network_class"}, "not a registered network class"),
        ({"_target_": "models.c3.torch.load"}, "not a registered network class"),
        (["models.dcvc_lite.DCVCLite"], "not a mapping"),
    ],
)
def test_config_entries_that_are_not_plain_numbers_are_named(model: object, match: str) -> None:
    with pytest.raises(CheckpointError, match=match):
        checked_network_config(model, "crafted.ckpt")


def test_a_huge_network_claim_allocates_nothing(tmp_path: Path) -> None:
    """The meta build compares shapes with the file's tensors before a real build."""
    tiny = build_model("dcvc_lite_tiny")
    state = tiny.state_dict()
    config = {"_target_": "models.dcvc_lite.DCVCLite", **tiny.config, "channels": 1 << 16}
    with pytest.raises(CheckpointError, match="weights do not fit DCVCLite"):
        build_network(config, "crafted.ckpt", state)


def test_careless_checkpoints_get_one_clear_message(tmp_path: Path) -> None:
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*notes.ckpt"):
        load_checkpoint(text)
    # another model class's weights under this config: the message says which and what to check
    other = {f"net.{k}": v for k, v in build_model("ssf_tiny").state_dict().items()}
    tiny = build_model("dcvc_lite_tiny")
    swapped = tmp_path / "swapped.ckpt"
    config = {"_target_": "models.dcvc_lite.DCVCLite", **tiny.config}
    torch.save({"state_dict": other, "nvc_config": {"model": config, "model_name": "x"}}, swapped)
    with pytest.raises(CheckpointError, match="do not fit DCVCLite.*another model's checkpoint"):
        NeuralCodec.from_checkpoint(swapped)
    bad_name = _checkpoint(tmp_path / "name.ckpt", config, model_name="../../escape")
    with pytest.raises(CheckpointError, match="model_name .* is not a plain name"):
        NeuralCodec.from_checkpoint(bad_name)


def test_a_diverged_checkpoint_is_refused_with_the_reason(tmp_path: Path) -> None:
    tiny = build_model("dcvc_lite_tiny")
    state = {f"net.{k}": v.clone() for k, v in tiny.state_dict().items()}
    first_weight = next(k for k, v in state.items() if v.is_floating_point())
    state[first_weight].view(-1)[0] = float("nan")
    config = {"_target_": "models.dcvc_lite.DCVCLite", **tiny.config}
    path = tmp_path / "diverged.ckpt"
    torch.save({"state_dict": state, "nvc_config": {"model": config, "model_name": "tiny"}}, path)
    with pytest.raises(CheckpointError, match="NaN or infinite values .* the run diverged"):
        NeuralCodec.from_checkpoint(path)
    with pytest.raises(InitWeightsError, match="the run diverged"):
        InitWeights(path).on_fit_start(
            SimpleNamespace(ckpt_path=None, global_step=0, fast_dev_run=False),
            SimpleNamespace(net=build_model("dcvc_lite_tiny")),
        )
