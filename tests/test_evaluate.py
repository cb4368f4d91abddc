"""evaluate.py end to end: real ffmpeg codecs on the embedded clips, real Hydra entry point.

The expensive run (x265 vs x264 on the embedded set) happens once per session in a fixture; the
tests then read the run folder it left, re-run it, shard it, and break it.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

FRAMES = 6  # frames coded per embedded clip: enough for P frames, quick on 2 cores


def run_evaluate(*overrides: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real entry point in a subprocess, as a user would."""
    cmd = [sys.executable, str(REPO_ROOT / "evaluate.py"), *overrides]
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=full_env, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"evaluate.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def read_points(run_dir: Path) -> list[dict]:
    with (run_dir / "points.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="session")
def embedded_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("eval") / "run"
    run_evaluate(
        f"frames={FRAMES}", f"hydra.run.dir={run_dir}", "progress=false", "keep_reconstructions=true"
    )
    return run_dir


@pytest.mark.slow
def test_default_run_writes_every_result_file(embedded_run: Path) -> None:
    for name in ("points.csv", "points.json", "bdrate.csv", "bdrate.md", "complexity.csv", "complexity.md"):
        assert (embedded_run / name).is_file(), name
    assert list(embedded_run.glob("rd_*_psnr_yuv.png"))
    assert list(embedded_run.glob("radar_*.png"))  # BD-rate per metric against speed (review's Fig. 1)
    rows = read_points(embedded_run)
    assert {r["codec"] for r in rows} == {"x265", "x264"}
    assert len({r["sequence"] for r in rows}) == 4
    assert len(rows) == 2 * 4 * 4
    for row in rows:
        bitstream = embedded_run / row["bitstream"]
        assert int(row["bits"]) == bitstream.stat().st_size * 8  # bits from the file
        assert int(row["frames"]) == FRAMES
        assert 20 < float(row["psnr_yuv"]) < 60
        assert 0.5 < float(row["msssim_yuv"]) <= 1.0


@pytest.mark.slow
def test_quality_and_bits_fall_as_qp_rises(embedded_run: Path) -> None:
    rows = read_points(embedded_run)
    for codec in ("x264", "x265"):
        for sequence in {r["sequence"] for r in rows}:
            curve = sorted(
                (float(r["rate_point"]), float(r["bits"]), float(r["psnr_yuv"]))
                for r in rows
                if r["codec"] == codec and r["sequence"] == sequence
            )
            bits, psnr = [c[1] for c in curve], [c[2] for c in curve]
            assert bits == sorted(bits, reverse=True), (codec, sequence, bits)
            assert psnr == sorted(psnr, reverse=True), (codec, sequence, psnr)


@pytest.mark.slow
def test_psnr_matches_ffmpeg_psnr_filter(embedded_run: Path) -> None:
    """The framework's PSNR-Y of a point equals ffmpeg's own psnr filter on the same files."""
    row = next(r for r in read_points(embedded_run) if r["codec"] == "x265" and r["rate_point"] == "37")
    decoded = (embedded_run / row["bitstream"]).parent / "decoded.yuv"
    from nvc_train.embedded import ensure_embedded_clips

    source = ensure_embedded_clips()[row["sequence"]]
    size = f"{row['width']}x{row['height']}"
    log = decoded.parent / "psnr.log"
    raw = ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", size]
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            *raw,
            "-i",
            str(decoded),
            *raw,
            "-i",
            str(source),
            "-lavfi",
            f"psnr=stats_file={log}",
            "-frames:v",
            row["frames"],
            "-f",
            "null",
            "-",
        ],
        check=True,
    )
    per_frame = [
        float(part.split(":")[1])
        for line in log.read_text().splitlines()
        for part in line.split()
        if part.startswith("psnr_y:")
    ]
    assert len(per_frame) == FRAMES
    assert abs(sum(per_frame) / len(per_frame) - float(row["psnr_y"])) < 0.01


@pytest.mark.slow
def test_bdrate_table_has_caption_and_sane_values(embedded_run: Path) -> None:
    text = (embedded_run / "bdrate.md").read_text()
    assert "against x264" in text and "pchip" in text
    assert "mean of per-frame values" in text
    assert "x265" in text and "x264 (anchor)" in text
    with (embedded_run / "bdrate.csv").open() as handle:
        bd = list(csv.DictReader(handle))
    psnr = [r for r in bd if r["metric"] == "psnr_yuv" and r["method"] == "pchip"]
    assert psnr and all(-80 < float(r["bd_rate"]) < 80 for r in psnr)
    assert {r["method"] for r in bd} == {"pchip", "cubic"}


@pytest.mark.slow
def test_rerun_resumes_without_remeasuring(embedded_run: Path) -> None:
    stamps = {p: p.read_text() for p in embedded_run.glob("points/**/result.json")}
    started = time.monotonic()
    run_evaluate(f"frames={FRAMES}", f"hydra.run.dir={embedded_run}", "progress=false")
    assert time.monotonic() - started < 60
    assert {p: p.read_text() for p in embedded_run.glob("points/**/result.json")} == stamps


@pytest.mark.slow
def test_sharded_run_equals_single_process(embedded_run: Path, tmp_path: Path) -> None:
    """Two ranks split the points; rank 0 merges; the bits equal the single-process run."""
    run_dir = tmp_path / "sharded"
    common = [
        sys.executable,
        str(REPO_ROOT / "evaluate.py"),
        f"frames={FRAMES}",
        f"hydra.run.dir={run_dir}",
        "progress=false",
        "metrics=[psnr]",
        "bd_metrics=[psnr_yuv]",
    ]
    procs = [
        subprocess.Popen(
            common,
            cwd=REPO_ROOT,
            env={**os.environ, "RANK": str(rank), "WORLD_SIZE": "2"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (1, 0)
    ]
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    sharded = {(r["codec"], r["sequence"], r["rate_point"]): r["bits"] for r in read_points(run_dir)}
    single = {(r["codec"], r["sequence"], r["rate_point"]): r["bits"] for r in read_points(embedded_run)}
    assert sharded == single


@pytest.mark.slow
def test_imported_anchor_csv_gives_the_same_bdrate(embedded_run: Path, tmp_path: Path) -> None:
    rows = [r for r in read_points(embedded_run) if r["codec"] == "x264"]
    anchor_csv = tmp_path / "x264_points.csv"
    with anchor_csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    run_dir = tmp_path / "imported"
    # The codec points are reused by copying them: the resume logic must accept them as measured.
    run_dir.mkdir()
    subprocess.run(["cp", "-r", str(embedded_run / "points"), str(run_dir)], check=True)
    run_evaluate(
        f"frames={FRAMES}",
        f"hydra.run.dir={run_dir}",
        "progress=false",
        "anchor=csv",
        f"anchor.path={anchor_csv}",
        "anchor.name=x264",
    )

    def table(folder: Path) -> dict:
        with (folder / "bdrate.csv").open() as handle:
            return {
                (r["class"], r["metric"], r["method"]): float(r["bd_rate"])
                for r in csv.DictReader(handle)
                if r["bd_rate"]
            }

    imported, measured = table(run_dir), table(embedded_run)
    assert imported.keys() == measured.keys()
    assert all(abs(imported[k] - measured[k]) < 1e-9 for k in measured)


def test_unknown_codec_is_one_clear_message(tmp_path: Path) -> None:
    proc = run_evaluate("codec=nope", f"hydra.run.dir={tmp_path / 'r'}", check=False)
    assert proc.returncode != 0
    assert "codec/nope" in proc.stderr and "x265" in proc.stderr  # Hydra lists the known options
    assert not (tmp_path / "r" / "points.csv").exists()


def test_absent_ffmpeg_binary_is_one_clear_message(tmp_path: Path) -> None:
    proc = run_evaluate(
        "codec.ffmpeg=/nonexistent/ffmpeg", f"frames={FRAMES}", f"hydra.run.dir={tmp_path / 'r'}", check=False
    )
    assert proc.returncode == 1
    assert "/nonexistent/ffmpeg" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r" / "points.csv").exists()


def test_failing_encoder_leaves_no_results(tmp_path: Path) -> None:
    proc = run_evaluate(
        "codec.extra_args=[-x265-params,no-such-option=1]",
        f"frames={FRAMES}",
        f"hydra.run.dir={tmp_path / 'r'}",
        "progress=false",
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r" / "points.csv").exists()
    assert not list((tmp_path / "r").glob("points/x265/**/bitstream*"))


def test_missing_ctc_files_listed_in_one_message(tmp_path: Path) -> None:
    proc = run_evaluate("ctc=hevc_d", f"ctc.root={tmp_path}", f"hydra.run.dir={tmp_path / 'r'}", check=False)
    assert proc.returncode == 1
    for name in ("BasketballPass", "BQSquare", "BlowingBubbles", "RaceHorses"):
        assert name in proc.stderr
    assert str(tmp_path) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_killed_run_resumes_and_finishes(tmp_path: Path) -> None:
    """kill -9 in the middle of evaluate.py; the same command then finishes with no half tables."""
    run_dir = tmp_path / "killed"
    args = [
        sys.executable,
        str(REPO_ROOT / "evaluate.py"),
        "frames=4",
        f"hydra.run.dir={run_dir}",
        "progress=false",
        "metrics=[psnr]",
        "bd_metrics=[psnr_yuv]",
    ]
    proc = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(run_dir.glob("points/**/result.json"))) < 3:
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    done_before = {p: p.read_text() for p in run_dir.glob("points/**/result.json")}
    assert done_before and not (run_dir / "points.csv").exists()
    for text in done_before.values():  # every point on disk is whole (atomic writes), none half-written
        json.loads(text)
    run_evaluate(
        "frames=4", f"hydra.run.dir={run_dir}", "progress=false", "metrics=[psnr]", "bd_metrics=[psnr_yuv]"
    )
    for path, text in done_before.items():
        assert path.read_text() == text  # finished points were not measured again
    assert len(read_points(run_dir)) == 32
    json.loads((run_dir / "points.json").read_text())
