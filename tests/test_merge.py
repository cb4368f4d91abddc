"""Merging run folders (issue 14, item 4): the merged tables equal one run over the union.

Two real runs on two embedded clips (2 frames, PSNR): x264 against x265 and SVT-AV1 against x265,
then one run of both against x265 over the same point store (it codes nothing new). The merge of
the first two must give that run's bdrate.csv, bdrate.md and complexity.csv byte for byte; runs
that measured differently (frames, metrics, anchor) are refused with the reason.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nvc_train.evaluation.merge import MergeError, main, merge_runs
from tests.test_evaluate_many import run_evaluate

COMMON = [
    "frames=2",
    "~ctc.test_sets.embedded.sequences.coffee_zoom",
    "~ctc.test_sets.embedded.sequences.rocket_tilt",
    "metrics=[psnr]",
    "bd_metrics=[psnr_yuv,psnr_y]",
    "bd_methods=[pchip,cubic]",
    "progress=false",
    "anchor=x265",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("merge")
    store = base / "store"
    folders = {}
    for label, codecs in (("a", "[x264]"), ("b", "[svtav1]"), ("union", "[x264,svtav1]")):
        folders[label] = base / label
        run_evaluate(f"codecs={codecs}", f"point_store={store}", f"hydra.run.dir={folders[label]}", *COMMON)
    return folders


def test_merge_equals_one_run_over_the_union(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "merged"
    assert main([str(runs["a"]), str(runs["b"]), "--out", str(out)]) == 0
    for name in ("bdrate.csv", "bdrate.md", "complexity.csv", "complexity.md", "points.csv"):
        assert (out / name).read_text() == (runs["union"] / name).read_text(), name
    table = (out / "bdrate.md").read_text()
    assert "| x264 |" in table and "| svtav1 |" in table and "x265 (anchor)" in table
    assert (out / "merged_from.txt").read_text().splitlines() == [
        str(runs["a"].resolve()),
        str(runs["b"].resolve()),
    ]


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def test_merge_refuses_runs_measured_otherwise(runs: dict[str, Path], tmp_path: Path) -> None:
    other = _copy(runs["b"], tmp_path / "frames")
    points = other / "points.csv"
    header, *lines = points.read_text().splitlines()
    frames = header.split(",").index("frames")
    edited = [",".join(v if i != frames else "3" for i, v in enumerate(line.split(","))) for line in lines]
    points.write_text("\n".join([header, *edited]) + "\n")
    with pytest.raises(MergeError, match="sequences and frames differ"):
        merge_runs([runs["a"], other], tmp_path / "out1")

    metrics = _copy(runs["b"], tmp_path / "metrics")
    config = metrics / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("- psnr\n", "- psnr\n- msssim\n", 1))
    with pytest.raises(MergeError, match="metrics differ"):
        merge_runs([runs["a"], metrics], tmp_path / "out2")

    anchor = _copy(runs["b"], tmp_path / "anchor")
    rows = anchor / "points.csv"
    rows.write_text(rows.read_text().replace("libx265", "libx265 (another build)"))
    with pytest.raises(MergeError, match="anchor description differ"):
        merge_runs([runs["a"], anchor], tmp_path / "out3")
    assert main([str(runs["a"]), str(anchor), "--out", str(tmp_path / "out4")]) == 1
    assert not (tmp_path / "out4").exists()
