"""W&B dashboards, offline: ``train.py`` with the default loggers writes an offline run, and this test
reads back what it recorded from the run's own ``.wandb`` file (records decoded with wandb's
protobuf schema) and media files, and checks the numbers against the CSV and result files.
"""

from __future__ import annotations

import csv
import json
import math
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

TINY = [
    "data.crop=64",
    "data.batch_size=2",
    "data.samples_per_epoch=4",
    "data.val_crop=[64,64]",
    "data.val_max_clips=2",
    "data.val_batch_size=2",
    "data.frames=2",
    "data.val_frames=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.log_every_n_steps=1",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "~callbacks.progress_bar",
]
CTC_TINY = [
    "callbacks=ctc",
    "callbacks.ctc_evaluation.frames=2",
    "callbacks.ctc_evaluation.sequences=[astronaut_pan]",
]

_BLOCK = 32768  # the .wandb file is a LevelDB-style log: 32 KiB blocks of (crc, length, type) records
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def wandb_records(path: Path) -> Iterator[Any]:
    """Every record of a ``.wandb`` file as a ``wandb_internal_pb2.Record``.

    The file is a 7-byte header (``:W&B``, version) and then LevelDB log blocks; a record longer than
    what is left of a block is split into FIRST / MIDDLE / LAST pieces; a block tail shorter than a
    piece header is zero padding.
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:  # padding to the end of the block
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == _FIRST:
            pending = chunk
            continue
        if kind == _MIDDLE:
            pending += chunk
            continue
        payload = pending + chunk if kind == _LAST else chunk
        pending = b""
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        yield record


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory) -> dict[str, Any]:
    """One ``train.py callbacks=ctc`` run with csv + wandb loggers, WANDB_MODE=offline, WANDB_DIR in tmp."""
    tmp = tmp_path_factory.mktemp("wandb")
    run_dir = tmp / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env |= {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp / "wandb_dir"), "NETRC": str(tmp / "no_netrc")}
    env |= {
        "WANDB_CACHE_DIR": str(tmp / "cache"),
        "WANDB_CONFIG_DIR": str(tmp / "config"),
        "HYDRA_FULL_ERROR": "1",
    }
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "train.py"), *TINY, *CTC_TINY, f"hydra.run.dir={run_dir}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (offline,) = list((run_dir / "wandb").glob("offline-run-*"))
    (log_file,) = list(offline.glob("*.wandb"))
    history: dict[str, list[str]] = {}
    summary: dict[str, str] = {}
    config: dict[str, str] = {}
    kinds: set[str] = set()
    for record in wandb_records(log_file):
        kind = record.WhichOneof("record_type")
        kinds.add(kind)
        if kind == "history":
            for item in record.history.item:
                history.setdefault(_key(item), []).append(item.value_json)
        elif kind == "summary":
            for item in record.summary.update:
                summary[_key(item)] = item.value_json
        elif kind == "config":
            for item in record.config.update:
                config[_key(item)] = item.value_json
    return {
        "run_dir": run_dir,
        "files": offline / "files",
        "history": history,
        "summary": summary,
        "config": config,
        "kinds": kinds,
    }


def _table(run: dict[str, Any], key: str) -> dict[str, Any]:
    """The JSON of the last table logged under ``key`` (W&B writes it under files/media/table)."""
    path = json.loads(run["summary"][f"{key}/path"])
    return json.loads((run["files"] / path).read_text())


def test_offline_run_is_complete_and_syncable(offline_run: dict[str, Any]) -> None:
    assert {"run", "history", "summary", "exit"} <= offline_run["kinds"]  # exit: wandb.finish ran
    assert offline_run["config"]["model_name"].strip('"') == "dcvc_lite_tiny"  # the run config


def test_loss_curves_and_estimated_bpp_are_logged_per_step(offline_run: dict[str, Any]) -> None:
    history = offline_run["history"]
    for key in ("train/loss", "train/bpp_est", "train/psnr_yuv", "train/lambda", "train/lr", "val/loss"):
        assert key in history, key
    assert len(history["train/loss"]) == 2  # one point per step: a curve
    assert all(math.isfinite(float(v)) for v in history["train/loss"])


def test_real_vs_estimated_bpp_match_the_result_files(offline_run: dict[str, Any]) -> None:
    run_dir = offline_run["run_dir"]
    with (run_dir / "ctc_eval" / "step_0000002" / "points.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["codec"] == "dcvc_lite_tiny"]
    assert len(rows) == 4
    summary = offline_run["summary"]
    for row in rows:
        q = row["rate_point"]
        bitstream = run_dir / "ctc_eval" / "step_0000002" / row["bitstream"]
        assert int(row["bits"]) == bitstream.stat().st_size * 8  # bits come from the file
        assert float(summary[f"ctc/bpp_q{q}"]) == pytest.approx(float(row["bpp"]))
        est_bpp = float(row["est_bits"]) / (int(row["width"]) * int(row["height"]) * int(row["frames"]))
        assert float(summary[f"ctc/bpp_est_q{q}"]) == pytest.approx(est_bpp)
    # the scatter of estimated vs file bpp is a W&B chart over a table of the model's points
    assert "wandb/scatter" in offline_run["config"]["_wandb/visualize/ctc/bpp_est_vs_real"]
    scatter = _table(offline_run, "ctc/bpp_est_vs_real_table")
    assert len(scatter["data"]) == 4 and {"bpp", "bpp_est"} <= set(scatter["columns"])


def test_rd_curves_bdrate_table_and_plots(offline_run: dict[str, Any]) -> None:
    config, summary = offline_run["config"], offline_run["summary"]
    assert "wandb/lineseries" in config["_wandb/visualize/ctc/rd_psnr_yuv"]
    curve = _table(offline_run, "ctc/rd_psnr_yuv_table")
    assert len(curve["data"]) == 8  # 4 rate points of the model + 4 of the x265 anchor
    points = _table(offline_run, "ctc/points")
    assert {row[1] for row in points["data"]} == {"dcvc_lite_tiny", "x265"}
    bdrate = _table(offline_run, "ctc/bdrate")
    columns = bdrate["columns"]
    for row in bdrate["data"]:
        cell = dict(zip(columns, row, strict=True))
        if cell["bd_rate"] is None:  # the untrained model's curve cannot be compared: the reason is kept
            assert cell["note"] and summary[f"ctc/bd_rate_{cell['metric']}"] == "NaN"
        else:
            assert float(summary[f"ctc/bd_rate_{cell['metric']}"]) == pytest.approx(cell["bd_rate"])
    plots = json.loads(summary["ctc/rd_plot/filenames"])
    assert len(plots) == 2
    for name in plots:
        assert (offline_run["files"] / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_samples_and_complexity_are_logged(offline_run: dict[str, Any]) -> None:
    summary, files = offline_run["summary"], offline_run["files"]
    (image,) = json.loads(summary["samples/reconstructions/filenames"])
    assert (files / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # 2 frames of a 64x64 validation crop; columns: source + (decoded, error) x 2 rate points
    assert (
        int(summary["samples/reconstructions/width"]),
        int(summary["samples/reconstructions/height"]),
    ) == (
        5 * 64,
        2 * 64,
    )
    with (offline_run["run_dir"] / "complexity.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert float(summary["complexity/params_m"]) == pytest.approx(float(row["params_m"]))
    assert float(summary["complexity/kmac_per_px"]) == pytest.approx(float(row["kmac_per_px"]))
    table = _table(offline_run, "complexity/table")
    assert table["data"][0][0] == "dcvc_lite_tiny" and "enc_fps" in table["columns"]
