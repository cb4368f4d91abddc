"""bench/adaptive_vs_coolchic.py: both codecs code the same frames in the same order with the same
presets, whatever the structure (Cool-Chic's options and ours are built from one set of arguments)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from tests.conftest import REPO_ROOT

#: Cool-Chic's coding order for ``--n_frames=5 --intra_pos=0 --p_pos=-1`` (its codingstructure.py's
#: docstring draws it for 8: I0 P8 B4 B2 B1 B3 B6 B5 B7): display index, type, references.
COOLCHIC_RA_5 = [(0, "I", ()), (4, "P", (0,)), (2, "B", (0, 4)), (1, "B", (0, 2)), (3, "B", (2, 4))]


def _bench():
    path = REPO_ROOT / "bench" / "adaptive_vs_coolchic.py"
    spec = importlib.util.spec_from_file_location("coolchic_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(structure: str, frames: int) -> argparse.Namespace:
    return argparse.Namespace(structure=structure, frames=frames, iterations=2000, p_iterations=1000)


def test_random_access_is_coolchics_hierarchy_on_both_sides() -> None:
    bench = _bench()
    args = _args("ra", 5)
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose("evaluate", overrides=bench.structure_overrides(args))
    ours = instantiate(cfg.structure).frames(args.frames)
    assert [(f.poc, f.frame_type, tuple(sorted(f.refs))) for f in ours] == COOLCHIC_RA_5
    src = Path("/cc")
    options = [bench._coolchic_frame_options(args, src, k) for k in range(args.frames)]
    assert all("--intra_pos=0" in o and "--p_pos=-1" in o for o in options)
    assert [o[-1] for o in options] == ["--n_itr=2000"] + ["--n_itr=1000"] * 4
    assert all("--n_itr_pretrain_motion=200" in o and f"--dec_cfg_motion={src}/cfg/dec/motion/lop.cfg" in o
               for o in options[1:])  # fmt: skip
    # the effort per sequence: the I frame, then each P or B frame's 200 + 2 x 600 + 1,000
    assert bench.sequence_iterations(args) == 2000 + 4 * 2400


@pytest.mark.parametrize(("structure", "positions"), [("ld", ["--intra_pos=0", "--p_pos=1-3"]),
                                                      ("ai", ["--intra_pos=0-3"])])  # fmt: skip
def test_low_delay_and_all_intra_keep_their_options(structure: str, positions: list[str]) -> None:
    bench = _bench()
    args = _args(structure, 4)
    assert bench._coolchic_frame_options(args, Path("/cc"), 2)[: len(positions)] == positions
    assert bench.structure_overrides(args) == [f"structure={structure}"]
