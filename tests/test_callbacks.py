"""The training callbacks through ``train.py`` / ``train(cfg)`` with tiny overrides, CSV logger only.

``CTCEvaluation`` codes real files through the evaluation runner (bits from the file sizes), the
anchor once; under 2-process DDP its sharded, gathered results equal a single process's, and its
fit-end points equal ``evaluate``'s runner on the saved checkpoint. ``ComplexityProfile`` and
``ReconstructionSamples`` leave their tables and pictures in the run folder.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from nvc_train.callbacks.ctc_evaluation import CTCEvaluation, embedded_ctc, select_sequences
from nvc_train.callbacks.reconstruction_samples import ReconstructionSamples
from nvc_train.codecs.neural import NeuralCodec
from nvc_train.evaluation.runner import MeasureOptions, make_jobs, run_jobs
from nvc_train.structure import CodingStructure
from nvc_train.training.train import train
from tests.test_train import SHRINK, SMALL_RUN, make_cfg, read_metrics, run_train_py

SEQUENCES = ["astronaut_pan", "coffee_zoom"]
CTC_TINY = [
    "callbacks=ctc",
    "callbacks.ctc_evaluation.frames=2",
    f"callbacks.ctc_evaluation.sequences=[{','.join(SEQUENCES)}]",
]
# Columns that depend on the coded content only (not on timing or on when the point was measured).
CONTENT_COLUMNS = [
    "codec", "class", "sequence", "rate_point", "bits", "bpp", "est_bits", "psnr_y", "psnr_u", "psnr_v",
    "psnr_yuv", "msssim_y", "msssim_yuv", "codec_description",
]  # fmt: skip


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def content(rows: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """What must agree between two evaluations of the same weights, in a fixed order."""
    return sorted(tuple(str(row[c]) for c in CONTENT_COLUMNS) for row in rows)


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory) -> Path:
    """``train.py callbacks=ctc`` for 2 steps, evaluating after every step, CSV logger only."""
    run_dir = tmp_path_factory.mktemp("callbacks") / "run"
    run_train_py(
        *SHRINK, *SMALL_RUN, *CTC_TINY, "logger=csv", "callbacks.ctc_evaluation.every_n_steps=1",
        f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    return run_dir


def test_ctc_evaluation_codes_real_files_per_step(csv_run: Path) -> None:
    steps = sorted(p.name for p in (csv_run / "ctc_eval").glob("step_*"))
    assert steps == ["step_0000001", "step_0000002"]  # every step; the fit end (step 2) is not coded twice
    descriptions = set()
    for step in steps:
        folder = csv_run / "ctc_eval" / step
        rows = read_csv(folder / "points.csv")
        model = [r for r in rows if r["codec"] == "dcvc_lite_tiny"]
        assert len(model) == 2 * 4 and {r["sequence"] for r in model} == set(SEQUENCES)
        assert sorted({int(r["rate_point"]) for r in model}) == [0, 2, 5, 7]  # 4 of the 8 q_index values
        for row in model:
            assert int(row["bits"]) == (folder / row["bitstream"]).stat().st_size * 8
            assert int(row["frames"]) == 2
            assert abs(float(row["bits"]) / float(row["est_bits"]) - 1) < 0.15  # file vs estimate
        descriptions |= {r["codec_description"] for r in model}
        assert (folder / "rd_embedded_psnr_yuv.png").is_file() and (folder / "bdrate.md").is_file()
    assert len(descriptions) == 2  # the weights of step 1 and step 2 differ: the live net was coded


def test_anchor_is_coded_once_and_reused(csv_run: Path) -> None:
    anchor_results = sorted((csv_run / "ctc_eval" / "anchor" / "points" / "x265").rglob("result.json"))
    assert len(anchor_results) == 2 * 4
    assert not list((csv_run / "ctc_eval" / "step_0000002" / "points").glob("x265"))
    first, second = (
        [r for r in read_csv(csv_run / "ctc_eval" / s / "points.csv") if r["codec"] == "x265"]
        for s in ("step_0000001", "step_0000002")
    )
    assert first == second and len(first) == 8


def test_rd_points_and_bdrate_reach_the_csv_logger(csv_run: Path) -> None:
    metrics = read_metrics(csv_run)
    logged = {int(r["step"]): r for r in metrics if r.get("ctc/bpp_q0")}
    assert sorted(logged) == [1, 2]
    for step, logged_row in logged.items():
        folder = csv_run / "ctc_eval" / f"step_{step:07d}"
        rows = [r for r in read_csv(folder / "points.csv") if r["codec"] == "dcvc_lite_tiny"]
        for q in (0, 7):
            mine = [r for r in rows if int(r["rate_point"]) == q]
            assert float(logged_row[f"ctc/bpp_q{q}"]) == pytest.approx(sum(float(r["bpp"]) for r in mine) / 2)
            est = sum(float(r["est_bits"]) / (320 * 256 * 2) for r in mine) / 2
            assert float(logged_row[f"ctc/bpp_est_q{q}"]) == pytest.approx(est)
        for bd in read_csv(folder / "bdrate.csv"):
            value = float(logged_row[f"ctc/bd_rate_{bd['metric']}"])
            if bd["bd_rate"] == "":  # not measurable (an untrained model): NaN, and bdrate.csv says why
                assert math.isnan(value) and bd["note"]
            else:
                assert value == pytest.approx(float(bd["bd_rate"]))


def test_complexity_profile_and_samples_are_written(csv_run: Path) -> None:
    (row,) = read_csv(csv_run / "complexity.csv")
    assert row["codec"] == "dcvc_lite_tiny" and row["resolution"] == "320x256"
    assert (
        0.1 < float(row["params_m"]) < 5 and float(row["kmac_per_px"]) > float(row["kmac_per_px_intra"]) > 0
    )
    assert float(row["enc_fps"]) > 0 and float(row["dec_fps"]) > 0 and row["device"]
    table = (csv_run / "complexity.md").read_text()
    assert "| Codec | Params (M) | kMAC/px | Enc FPS | Dec FPS | Device |" in table
    assert "| dcvc_lite_tiny | " in table
    logged = [r for r in read_metrics(csv_run) if r.get("complexity/params_m")]
    assert len(logged) == 1 and float(logged[0]["complexity/params_m"]) == pytest.approx(
        float(row["params_m"])
    )
    samples = sorted((csv_run / "media").glob("samples_step*.png"))
    assert [p.name for p in samples] == ["samples_step0000002.png"]  # the one validation


def test_imported_csv_anchor_is_read_not_coded(csv_run: Path, tmp_path: Path) -> None:
    """The anchor as a lab's CSV (the existing CSV codec): its points join the tables without coding."""
    lab = tmp_path / "lab_points.csv"
    rows = [r for r in read_csv(csv_run / "ctc_eval" / "step_0000001" / "points.csv") if r["codec"] == "x265"]
    with lab.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["sequence", "rate_point", "bpp", "psnr_yuv", "msssim_yuv"])
        writer.writeheader()
        writer.writerows({k: r[k] for k in writer.fieldnames} for r in rows)
    run_dir = tmp_path / "run"
    cfg = make_cfg(run_dir, *SMALL_RUN, *CTC_TINY, "trainer.max_steps=1", "trainer.val_check_interval=1")
    cfg.callbacks.ctc_evaluation.anchor = OmegaConf.create(
        {"_target_": "nvc_train.codecs.imported.ImportedPoints", "path": str(lab), "name": "lab_hm"}
    )
    train(cfg)
    assert not (run_dir / "ctc_eval" / "anchor").exists()  # nothing was coded for the anchor
    out = read_csv(run_dir / "ctc_eval" / "step_0000001" / "points.csv")
    imported = sorted(
        (r["sequence"], float(r["rate_point"]), float(r["bpp"])) for r in out if r["codec"] == "lab_hm"
    )
    assert imported == sorted((r["sequence"], float(r["rate_point"]), float(r["bpp"])) for r in rows)
    assert {r["anchor"] for r in read_csv(run_dir / "ctc_eval" / "step_0000001" / "bdrate.csv")} == {"lab_hm"}


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="not in the registry; known: .*astronaut_pan"):
        select_sequences(embedded_ctc(), ["no_such_clip"], 2)
    with pytest.raises(ValueError, match="every_n_steps must be >= 0"):
        CTCEvaluation(every_n_steps=-1)
    with pytest.raises(ValueError, match="bd_method"):
        CTCEvaluation(bd_method="linear")
    with pytest.raises(ValueError, match="max_error > 0"):
        ReconstructionSamples(max_error=0)


# --------------------------------------------------------------------------------------------------
# DDP: sharded across two gloo processes, gathered on rank 0, equal to a single process

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
AT_START_AND_END = [
    *CTC_TINY,
    "callbacks.ctc_evaluation.at_fit_start=true",
    "callbacks.ctc_evaluation.every_n_steps=0",
    "~callbacks.complexity_profile",
    "~callbacks.reconstruction_samples",
    "logger=csv",
    "trainer.num_sanity_val_steps=0",
    "data.frames=2",
    "data.val_frames=2",
    "trainer.max_steps=1",
    "trainer.val_check_interval=1",
]


@pytest.mark.slow
def test_ddp_sharded_evaluation_equals_a_single_process(tmp_path: Path) -> None:
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    proc = run_train_py(*DDP, *SHRINK, *AT_START_AND_END, f"hydra.run.dir={ddp_dir}")
    run_train_py(*SHRINK, *AT_START_AND_END, f"hydra.run.dir={single_dir}")
    assert "rank 1 coded 8 of 16 points" in proc.stdout + proc.stderr  # the second rank did its share

    # Step 0 (the initial weights, the same seed): identical points, model and anchor alike.
    ddp_rows = read_csv(ddp_dir / "ctc_eval" / "step_0000000" / "points.csv")
    single_rows = read_csv(single_dir / "ctc_eval" / "step_0000000" / "points.csv")
    assert len(ddp_rows) == 16 and content(ddp_rows) == content(single_rows)
    assert read_csv(ddp_dir / "ctc_eval" / "step_0000000" / "bdrate.csv") == read_csv(
        single_dir / "ctc_eval" / "step_0000000" / "bdrate.csv"
    )

    # Fit end under DDP == evaluate's runner on the checkpoint the run saved, in this one process.
    end = ddp_dir / "ctc_eval" / "step_0000001"
    codec = NeuralCodec.from_checkpoint(ddp_dir / "checkpoints" / "last.ckpt", rate_points=[0, 2, 5, 7])
    sequences = select_sequences(embedded_ctc(), SEQUENCES, 2)
    rows = run_jobs(
        make_jobs([codec], sequences),
        CodingStructure("ld", -1, 1),
        tmp_path / "reference",
        MeasureOptions(metrics=("psnr", "msssim"), progress=False),
    )
    ddp_end = [r for r in read_csv(end / "points.csv") if r["codec"] == codec.name]
    assert content(ddp_end) == content(rows)
    assert torch.load(ddp_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 1


def test_evaluation_run_complexity_table_and_radar(tmp_path: Path) -> None:
    """What evaluate.py writes through the hook: every codec's Table 5 row and the radar plot."""
    import models
    from nvc_train.codecs.ffmpeg import X265Codec
    from nvc_train.evaluation.complexity import complexity_table_rows
    from nvc_train.evaluation.plots import write_radar_plots
    from nvc_train.evaluation.tables import compute_bdrates, write_complexity

    neural = NeuralCodec(models.build_model("dcvc_lite_tiny"), "tiny", rate_points=[0, 7])
    x265 = X265Codec(rate_points=[30, 38])
    sequences = select_sequences(embedded_ctc(), ["astronaut_pan"], 2)
    rows = run_jobs(
        make_jobs([neural, x265], sequences),
        CodingStructure("ld", -1, 1),
        tmp_path,
        MeasureOptions(metrics=("psnr",), progress=False),
    )
    table = complexity_table_rows([neural, x265], rows, 128, 160, frames=2, warmup=1, repeats=1)
    by_codec = {row["codec"]: row for row in table}
    assert by_codec["tiny"]["fps_method"] == "model" and by_codec["x265"]["fps_method"] == "runner"
    assert by_codec["tiny"]["kmac_per_px"] > 0 and by_codec["tiny"]["enc_fps"] > 0
    assert by_codec["x265"]["params_m"] is None and by_codec["x265"]["enc_fps"] > 0
    write_complexity(tmp_path, table)
    text = (tmp_path / "complexity.md").read_text()
    assert "FPS marked *" in text and "evaluation runner" in text  # both rules stated
    assert [line.count("*") for line in text.splitlines() if line.startswith("| tiny ")] == [2]
    bd_rows = compute_bdrates(rows, "x265", ["psnr_yuv"], ["pchip"])
    (radar,) = write_radar_plots(tmp_path, bd_rows, table, "x265", ["psnr_yuv"])
    assert radar.name == "radar_embedded.png" and radar.stat().st_size > 1000


def test_schedule_by_steps_epochs_and_fit_end(monkeypatch) -> None:
    """When evaluations run: every n steps, every n epochs, at the start and the end, never twice a step."""
    from types import SimpleNamespace

    def schedule(callback: CTCEvaluation, steps_per_epoch: int, epochs: int) -> list[int]:
        done: list[int] = []

        def fake_evaluate(trainer: Any, module: Any) -> None:
            callback._last_step = trainer.global_step
            done.append(trainer.global_step)

        monkeypatch.setattr(callback, "evaluate", fake_evaluate)
        trainer = SimpleNamespace(global_step=0, current_epoch=0, sanity_checking=False)
        callback.on_fit_start(trainer, None)
        for epoch in range(epochs):
            trainer.current_epoch = epoch
            for _ in range(steps_per_epoch):
                trainer.global_step += 1
                callback.on_train_batch_end(trainer, None)
            callback.on_train_epoch_end(trainer, None)
        callback.on_train_end(trainer, None)
        return done

    assert schedule(CTCEvaluation(every_n_steps=4), steps_per_epoch=3, epochs=3) == [4, 8, 9]
    assert schedule(CTCEvaluation(every_n_epochs=2, at_fit_start=True), 3, 4) == [0, 6, 12]
    assert schedule(CTCEvaluation(every_n_steps=3, every_n_epochs=1, at_fit_end=False), 3, 2) == [3, 6]
    assert schedule(CTCEvaluation(at_fit_end=False), 3, 2) == []


class _FailsOn(NeuralCodec):
    """A real neural codec whose encoder fails on one sequence: a rank-local fault."""

    def encode(self, sequence, rate_point, structure, bitstream):  # type: ignore[override]
        if sequence.name == "coffee_zoom":
            raise RuntimeError("encoder fault on coffee_zoom")
        return super().encode(sequence, rate_point, structure, bitstream)


def _evaluate_on_rank(rank: int, world_size: int, init_file: str, out_dir: str, results: Any) -> None:
    """One gloo rank of a 2-process group: run CTCEvaluation.evaluate with a trainer-like namespace."""
    from types import SimpleNamespace

    import torch.distributed as dist

    import models

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        net = models.build_model("dcvc_lite_tiny")
        trainer = SimpleNamespace(global_rank=rank, world_size=world_size, global_step=3, loggers=[])
        module = SimpleNamespace(net=net, device=torch.device("cpu"), nvc_config={"model_name": "tiny"})
        callback = CTCEvaluation(sequences=SEQUENCES, frames=2, q_indices=[0, 7], out_dir=out_dir)
        callback.anchor = _FailsOn(models.build_model("dcvc_lite_tiny"), "faulty", [3])
        try:
            callback.evaluate(trainer, module)
            results.put((rank, "no error"))
        except RuntimeError as error:
            results.put((rank, str(error)))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_a_failing_rank_fails_every_rank_instead_of_hanging(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    args = (2, str(tmp_path / "init"), str(tmp_path / "ctc_eval"), results)
    mp.start_processes(_evaluate_on_rank, args=args, nprocs=2, join=True, start_method="spawn")
    messages = dict(results.get() for _ in range(2))
    for rank in (0, 1):  # the anchor's coffee_zoom point is rank 1's share; both ranks report it
        assert "rank 1: RuntimeError: encoder fault on coffee_zoom" in messages[rank], messages


def test_fast_dev_run_skips_the_coding(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(make_cfg(run_dir, *SMALL_RUN, *CTC_TINY, "trainer.fast_dev_run=true"))
    assert not (run_dir / "ctc_eval").exists()
