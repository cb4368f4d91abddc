"""Several codecs in one evaluate.py run, and the point store that runs share (issue 14, item 1).

The real entry point codes three ffmpeg codecs and a checkpoint against x265 on two embedded clips
(3 frames each) into a point store; a second run with one more codec must code only that codec.
The checkpoint is an untrained dcvc_lite_tiny written in train.py's format: its pictures are noise,
so its BD-rate cells are empty, but its row, points and complexity figures must be there.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nvc_train.cli import register_resolvers
from nvc_train.codecs.base import CodecError
from nvc_train.evaluation.store import build_listed_codecs, codec_entries, many_label
from tests.conftest import REPO_ROOT

# Two of the four embedded clips, 3 frames, PSNR only, quick complexity profile: the whole file
# stays within a few minutes on two cores.
COMMON = [
    "frames=3",
    "~ctc.test_sets.embedded.sequences.coffee_zoom",
    "~ctc.test_sets.embedded.sequences.rocket_tilt",
    "metrics=[psnr]",
    "bd_metrics=[psnr_yuv,psnr_y]",
    "bd_methods=[pchip]",
    "complexity.frames=2",
    "complexity.warmup=0",
    "complexity.repeats=1",
    "progress=false",
    "anchor=x265",
]


def run_evaluate(*overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    """The real entry point in a subprocess, as a user runs it."""
    cmd = [sys.executable, str(REPO_ROOT / "evaluate.py"), *overrides]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"evaluate.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def results(store: Path) -> dict[Path, str]:
    return {path: path.read_text() for path in store.glob("**/result.json")}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained dcvc_lite_tiny in train.py's checkpoint format (what evaluate.py ckpt= reads)."""
    import torch
    from hydra.utils import instantiate

    from nvc_train.convert.official import write_checkpoint

    torch.manual_seed(0)
    model = OmegaConf.to_container(OmegaConf.load(REPO_ROOT / "configs/model/dcvc_lite_tiny.yaml"))
    net = instantiate(model)
    net.update(force=True)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    return write_checkpoint(path, model, "dcvc_lite_tiny", net.state_dict(), ["random init (test)"])


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, checkpoint: Path) -> tuple[Path, Path, str]:
    """x264, x265 (also the anchor), svtav1 and the checkpoint against x265, into a fresh store."""
    base = tmp_path_factory.mktemp("many")
    store, run_dir = base / "store", base / "run1"
    proc = run_evaluate(
        *COMMON,
        f"codecs=[x264,x265,svtav1,checkpoint:{checkpoint}]",
        f"point_store={store}",
        f"hydra.run.dir={run_dir}",
    )
    return store, run_dir, proc.stderr + proc.stdout


def read_csv(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def table_rows(markdown: str) -> list[list[str]]:
    """The cells of every row of the markdown table below the header."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


@pytest.mark.slow
def test_one_run_writes_one_table_of_every_codec(first_run: tuple[Path, Path, str]) -> None:
    store, run_dir, log = first_run
    for name in ("points.csv", "points.json", "bdrate.csv", "bdrate.md", "complexity.csv", "complexity.md"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "radar_embedded.png").stat().st_size > 1000
    rows = read_csv(run_dir / "points.csv")
    assert {r["codec"] for r in rows} == {"x264", "x265", "svtav1", "dcvc_lite_tiny"}
    assert len(rows) == 4 * 2 * 4  # x265 is listed and is the anchor: coded once
    for row in rows:  # bits from the file, which lives in the store
        bitstream = Path(row["bitstream"])
        assert bitstream.is_absolute() and bitstream.is_relative_to(store)
        assert int(row["bits"]) == bitstream.stat().st_size * 8
    assert len(results(store)) == 32
    assert "32 to code, 0 already in the point store" in log

    text = (run_dir / "bdrate.md").read_text()
    body = table_rows(text)
    assert [r[0] for r in body] == [
        "*conventional*", "x265 (anchor)", "svtav1", "x264", "*scene-agnostic*", "dcvc_lite_tiny",
    ]  # fmt: skip
    assert "against x265" in text and "Best per column in **bold**, second best <u>underlined</u>" in text
    # Per column: exactly one bold cell, the lowest BD-rate; one underlined, the next lowest.
    cells = {r[0]: r[1:] for r in body if not r[0].startswith("*")}
    assert all(cell == "" for cell in cells["dcvc_lite_tiny"])  # noise pictures: not measurable
    for column in range(2):
        marked = {name: values[column] for name, values in cells.items() if values[column]}
        numbers = {name: float(re.sub(r"[*<>/u]", "", cell)) for name, cell in marked.items()}
        ranked = sorted(numbers, key=numbers.get)
        assert marked[ranked[0]].startswith("**") and marked[ranked[0]].endswith("**")
        assert marked[ranked[1]].startswith("<u>") and marked[ranked[1]].endswith("</u>")
        assert not any(marked[name].startswith(("**", "<u>")) for name in ranked[2:])

    bd = read_csv(run_dir / "bdrate.csv")
    assert {r["codec"] for r in bd} == {"x264", "svtav1", "dcvc_lite_tiny"}
    assert {r["anchor"] for r in bd} == {"x265"}
    complexity = {r["codec"]: r for r in read_csv(run_dir / "complexity.csv")}
    assert set(complexity) == {"x264", "x265", "svtav1", "dcvc_lite_tiny"}
    assert float(complexity["dcvc_lite_tiny"]["params_m"]) > 0
    assert complexity["dcvc_lite_tiny"]["fps_method"] == "model"
    table5 = (run_dir / "complexity.md").read_text()
    assert all(f"| {name} |" in table5 for name in complexity)


@pytest.mark.slow
def test_one_more_codec_codes_only_that_codec(first_run: tuple[Path, Path, str], checkpoint: Path) -> None:
    """Another run folder, the list plus aom and the checkpoint as ckpt=[...]: only aom's points are coded."""
    store, first_dir, _ = first_run
    before = results(store)
    run_dir = first_dir.parent / "run2"
    proc = run_evaluate(
        *COMMON,
        "codecs=[x264,x265,svtav1,aom]",
        f"ckpt=[{checkpoint}]",
        f"point_store={store}",
        f"hydra.run.dir={run_dir}",
    )
    after = results(store)
    assert {path: after[path] for path in before} == before  # nothing measured again
    new = set(after) - set(before)
    assert len(new) == 2 * 4 and all(path.relative_to(store).parts[0] == "aom" for path in new)
    assert "8 to code, 32 already in the point store" in proc.stderr + proc.stdout
    rows = read_csv(run_dir / "points.csv")
    assert {r["codec"] for r in rows} == {"x264", "x265", "svtav1", "aom", "dcvc_lite_tiny"}
    body = [r[0] for r in table_rows((run_dir / "bdrate.md").read_text())]
    assert "aom" in body and body.index("aom") < body.index("*scene-agnostic*")
    assert "aom" in (run_dir / "complexity.md").read_text()
    # The first run's tables are its own: the second run wrote only into its folder.
    assert "aom" not in {r["codec"] for r in read_csv(first_dir / "points.csv")}


def test_run_folder_label_of_a_codec_list_is_stable_and_distinct() -> None:
    register_resolvers()
    cfg = OmegaConf.create(
        {"codec": {"name": "x265"}, "ckpt": None, "codecs": ["x265", "x264"],
         "dir": "${codec_label:${codec.name},${ckpt},${codecs}}"}
    )  # fmt: skip
    assert cfg.dir == "x264+x265"
    cfg.codecs = ["x264", "x265"]
    assert cfg.dir == "x264+x265"  # the same list in another order resumes the same folder
    cfg.codecs = ["x264", "x265", "aom"]
    assert cfg.dir == "aom+x264+x265"
    cfg.codecs, cfg.ckpt = None, ["runs/train/a/checkpoints/last.ckpt", "b.ckpt"]
    assert cfg.dir == "a-last+b"
    cfg.codecs, cfg.ckpt = None, "runs/train/a/checkpoints/last.ckpt"
    assert cfg.dir == "x265"  # a single codec keeps its old folder name
    long = [f"checkpoint:runs/train/model_number_{k}/checkpoints/last.ckpt" for k in range(6)]
    assert re.fullmatch(r"6codecs-[0-9a-f]{8}", many_label(long))
    assert many_label(long) != many_label(long[:5] + ["x264"])
    assert codec_entries(["x264"], "a.ckpt") == ["x264", "checkpoint:a.ckpt"]


def test_unknown_codec_in_the_list_names_the_known_ones() -> None:
    cfg = OmegaConf.create({"codecs": ["x264", "nope"], "ckpt": None, "codec_overrides": {}, "codec": None})
    with pytest.raises(CodecError, match=r"unknown codec 'nope'.*x265.*checkpoint:PATH"):
        build_listed_codecs(cfg)


def test_same_name_twice_is_refused() -> None:
    cfg = OmegaConf.create(
        {"codecs": ["x264", "x265"], "ckpt": None, "codec": None,
         "codec_overrides": {"x265": {"name": "x264"}}}
    )  # fmt: skip
    with pytest.raises(CodecError, match="x264 appear more than once"):
        build_listed_codecs(cfg)


def test_store_key_follows_settings_not_the_rate_point_list() -> None:
    """codec_overrides reach the codec; a preset changes the key of a point, the rate-point list does not."""
    from types import SimpleNamespace

    from nvc_train.evaluation.store import store_key

    def key(overrides: dict) -> tuple[list, str]:
        cfg = OmegaConf.create(
            {"codecs": ["x264"], "ckpt": None, "codec": None, "codec_overrides": overrides}
        )
        (item,) = build_listed_codecs(cfg)
        info = SimpleNamespace(width=320, height=256, fps=30.0, bit_depth=8, num_frames=3)
        sequence = SimpleNamespace(path="/nonexistent.yuv", test_set="t", name="s", info=info, start_frame=0)
        return item.codec.rate_points, store_key(
            item.codec, item.settings, sequence, 27, {"kind": "ld"}, ["psnr"]
        )

    points, plain = key({})
    assert key({"x264": {"rate_points": [22, 27]}}) == ([22, 27], plain)
    assert key({"x264": {"preset": "veryslow"}})[1] != plain
    assert key({"x264": {"params": {"bframes": 0}}})[1] != plain
    assert points == [22, 27, 32, 37]


def test_listed_anchor_is_coded_once_unless_its_settings_differ() -> None:
    from nvc_train.evaluation.store import merge_anchor

    def listed(overrides: dict) -> list:
        cfg = OmegaConf.create(
            {"codecs": ["x264", "x265"], "ckpt": None, "codec": None, "codec_overrides": overrides}
        )
        return build_listed_codecs(cfg)

    anchor = listed({})[1]
    assert [item.codec.name for item in merge_anchor(listed({}), anchor.codec, anchor.settings)] == ["x264"]
    with pytest.raises(CodecError, match="x265 is both the anchor and a listed codec"):
        merge_anchor(listed({"x265": {"preset": "veryslow"}}), anchor.codec, anchor.settings)
