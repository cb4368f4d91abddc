"""bench/hinerv_vs_official.py: the official trainer's arguments come from our configs' numbers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

from models import build_model


def _bench(repo_root: Path):
    spec = importlib.util.spec_from_file_location(
        "hinerv_bench", repo_root / "bench" / "hinerv_vs_official.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _value(args: list[str], flag: str, count: int = 1) -> list[str]:
    index = args.index(flag)
    return args[index + 1 : index + 1 + count]


def test_official_arguments_carry_our_schedule_and_network(repo_root: Path) -> None:
    bench = _bench(repo_root)
    preset = yaml.safe_load((repo_root / "configs" / "overfit" / "hinerv_tiny.yaml").read_text())
    args = bench.official_train_args(preset, [30, 6, 3], 3, 240, 320)
    assert _value(args, "--epochs") == ["30"] and _value(args, "--prune-epochs") == ["6"]
    assert _value(args, "--quant-epochs") == ["3"] and _value(args, "--warmup-epochs") == ["3"]
    assert float(_value(args, "--quant-lr-scale")[0]) == 0.1  # the quant phase's lr over the prune phase's
    assert _value(args, "--lr") == ["0.002"] and _value(args, "--warmup-lr") == ["2e-05"]
    assert _value(args, "--patch-size", 3) == ["1", "80", "80"] and _value(args, "--batch-size") == ["12"]
    assert _value(args, "--prune-ratio") == ["0.15"] and _value(args, "--quant-level") == ["6"]
    assert _value(args, "--max-norm") == ["1.0"] and _value(args, "--auto-lr-scaling") == ["true"]
    net = build_model("hinerv_tiny", height=240, width=320, num_frames=8)
    model = bench.official_model_args(net.architecture)
    assert _value(model, "--channels") == ["48"] and _value(model, "--scales-hw", 3) == ["4", "2", "2"]
    assert _value(model, "--base-grid-size", 4) == ["8", "-1", "-1", "2"]
    assert _value(model, "--enc-grid-size", 2) == ["-1", "4"] and _value(model, "--enc-grid-level") == ["2"]
