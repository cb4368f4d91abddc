"""Benchmark suites (issue 14, item 2): ``evaluate.py suite=review_ld`` and friends.

A suite must fail at once, with one message naming every missing sequence and binary, when the
data or the encoders are absent; with a fake VTM (tests/fake_reference_codec.py) and stand-in
sequences of the size and name the registry expects, it must run through to the tables.
"""

from __future__ import annotations

import csv
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from tests.test_ctc import REVIEW_TEST_SETS
from tests.test_evaluate_many import run_evaluate

FAKE = REPO_ROOT / "tests" / "fake_reference_codec.py"
QUICK = ["metrics=[psnr]", "bd_metrics=[psnr_yuv]", "bd_methods=[pchip]", "progress=false"]


def install_fake_vtm(root: Path) -> None:
    """VTM's encoder and decoder as fake_reference_codec.py wrappers, and its LD cfg, under ``root``."""
    for name, mode in (("EncoderAppStatic", "hm-enc"), ("DecoderAppStatic", "hm-dec")):
        path = root / "bin" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" {mode} "$@"\n')
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    cfg = root / "cfg" / "encoder_lowdelay_vtm.cfg"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text("# fake LD cfg\nGOPSize                       : 8\nIntraPeriod : -1\n")


def test_review_ld_composes_the_review_settings() -> None:
    """The suite sets the review's test sets, LD structure (96 frames, intra period 96) and VTM anchor."""
    proc = run_evaluate("suite=review_ld", "--cfg", "job")
    text = proc.stdout
    assert "name: review" in text and "kind: ld" in text and "intra_period: 96" in text
    assert "frames: 96" in text and "name: vtm" in text
    for test_set in REVIEW_TEST_SETS:
        assert f"    {test_set}:" in text
    ra = run_evaluate("suite=review_ra", "--cfg", "job").stdout
    assert "kind: ra" in ra and "intra_period: auto" in ra and "gop_size: 32" in ra
    overridden = run_evaluate("suite=review_ld", "frames=5", "codecs=[x264]", "--cfg", "job").stdout
    assert "frames: 5" in overridden and "- x264" in overridden and "- hm" not in overridden


def test_review_ld_without_data_lists_everything_missing_at_once(tmp_path: Path) -> None:
    empty, store = tmp_path / "empty", tmp_path / "store"
    empty.mkdir()
    proc = run_evaluate(
        "suite=review_ld",
        f"ctc.root={empty}",
        f"anchor.root={tmp_path / 'no_vtm'}",
        f"point_store={store}",
        f"hydra.run.dir={tmp_path / 'run'}",
        *QUICK,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    message = proc.stderr
    assert "nothing was coded" in message
    for test_set in REVIEW_TEST_SETS:  # every test set's files, in the one message
        assert f"{test_set}/" in message
    assert "Beauty_1920x1080_120fps_420_8bit_YUV.yuv" in message and "BQSquare_416x240_60.yuv" in message
    assert "vtm: VTM encoder not found" in message  # and the binaries, in the same message
    assert not store.exists() or not list(store.glob("**/result.json"))


def test_review_ld_runs_through_with_fake_vtm_and_stand_ins(tmp_path: Path) -> None:
    """One HEVC-D sequence (416x240, the registry's file name), 2 frames, x265 against the fake VTM."""
    root, vtm = tmp_path / "ctc", tmp_path / "vtm"
    install_fake_vtm(vtm)
    (root / "HEVC_D").mkdir(parents=True)
    frames = np.random.default_rng(0).integers(0, 256, size=2 * 416 * 240 * 3 // 2, dtype=np.uint8)
    (root / "HEVC_D" / "BQSquare_416x240_60.yuv").write_bytes(frames.tobytes())
    dropped = [f"~ctc.test_sets.{name}" for name in REVIEW_TEST_SETS if name != "HEVC_D"]
    dropped += [
        f"~ctc.test_sets.HEVC_D.sequences.{n}" for n in ("BasketballPass", "BlowingBubbles", "RaceHorses")
    ]
    run_dir = tmp_path / "run"
    run_evaluate(
        "suite=review_ld",
        f"ctc.root={root}",
        *dropped,
        "frames=2",
        "codecs=[x265]",
        f"anchor.root={vtm}",
        "anchor.version=20.0",
        f"point_store={tmp_path / 'store'}",
        f"hydra.run.dir={run_dir}",
        *QUICK,
    )
    with open(run_dir / "points.csv") as handle:
        points = list(csv.DictReader(handle))
    assert {row["codec"] for row in points} == {"x265", "vtm"}
    assert {row["sequence"] for row in points} == {"BQSquare"} and {row["frames"] for row in points} == {"2"}
    assert len([row for row in points if row["codec"] == "vtm"]) == 4  # VTM's four QPs
    table = (run_dir / "bdrate.md").read_text()
    assert "vtm (anchor)" in table and "| x265 |" in table and "against vtm (ld ip=96" in table


@pytest.mark.parametrize("suite", ["embedded_quick"])
def test_embedded_quick_composes(suite: str) -> None:
    text = run_evaluate(f"suite={suite}", "--cfg", "job").stdout
    assert "name: embedded" in text and "frames: 8" in text
    for codec in ("x264", "x265", "svtav1", "aom"):
        assert f"- {codec}" in text
