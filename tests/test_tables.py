"""Results tables and plots: bdrate.md layout (families as row groups, the anchor at 0, best and second
best marked), the complexity table (the review's Table 5 layout) and the BD-rate / speed radar (its
Figure 1)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from nvc_train.evaluation.plots import RADAR_FLOOR, radar_axes, radar_scores, write_radar_plots
from nvc_train.evaluation.tables import (
    COMPLEXITY_COLUMNS,
    BDRow,
    bdrate_markdown,
    complexity_markdown,
    complexity_rows,
    device_name,
    write_complexity,
)


def row(codec: str, family: str, value: float | None, metric: str = "psnr_yuv") -> BDRow:
    return BDRow(codec, family, "x264", "HEVC_B", metric, "pchip", "sequence", value, None, 5)


def test_table_groups_families_and_marks_the_best_two() -> None:
    rows = [
        row("x265", "conventional", -18.4),
        row("dcvc", "scene-agnostic", -25.0),
        row("c3", "scene-adaptive", None),
        row("x265", "conventional", 3.0, "vmaf"),
        row("dcvc", "scene-agnostic", 5.0, "vmaf"),
    ]
    text = bdrate_markdown(
        rows, "x264", "conventional", ["psnr_yuv", "vmaf"], "pchip", "sequence", "R.", "ld"
    )
    lines = text.splitlines()
    body = lines[lines.index("| Codec | HEVC_B PSNR-YUV | HEVC_B VMAF |") :]
    assert [line.split("|")[1].strip() for line in body[2:]] == [
        "*conventional*", "x264 (anchor)", "x265", "*scene-agnostic*", "dcvc", "*scene-adaptive*", "c3",
    ]  # fmt: skip
    assert "| dcvc | **-25.0** | +5.0 |" in body
    assert "| x265 | <u>-18.4</u> | <u>+3.0</u> |" in body
    assert "| x264 (anchor) | 0.0 | **0.0** |" in body
    assert "| c3 |  |  |" in body
    assert "against x264 (ld)" in text and "BD-rate per sequence, then averaged over the class" in text


ROWS = [
    {"codec": "x265", "family": "conventional", "params_m": None, "kmac_per_px": None,
     "kmac_per_px_intra": None, "kmac_resolution": None, "enc_fps": 140.0, "dec_fps": 900.0,
     "resolution": "352x288", "device": "cpu A"},
    {"codec": "dcvc_rt", "family": "scene-agnostic", "params_m": 20.7, "kmac_per_px": 185.7,
     "kmac_per_px_intra": 90.0, "kmac_resolution": "1920x1080", "enc_fps": 12.5, "dec_fps": 14.0,
     "resolution": "1920x1080", "device": "NVIDIA H200"},
    {"codec": "c3", "family": "scene-adaptive", "params_m": 0.01, "kmac_per_px": 4.4,
     "kmac_per_px_intra": 4.4, "kmac_resolution": "1920x1080", "enc_fps": 0.001, "dec_fps": 30.0,
     "resolution": "1920x1080", "device": "NVIDIA H200"},
]  # fmt: skip


def bd(codec: str, metric: str, value: float | None) -> BDRow:
    return BDRow(
        codec, "x", "x265", "uvg", metric, "pchip", "sequence", value, None, 7, "" if value else "no overlap"
    )


def test_complexity_markdown_is_laid_out_like_table_5() -> None:
    text = complexity_markdown(ROWS, fps_rule="FPS: test rule")
    lines = text.splitlines()
    header = lines.index("| Codec | Params (M) | kMAC/px | Enc FPS | Dec FPS | Device |")
    body = lines[header + 2 :]
    # families in the BD-rate table's order, each codec under its family, blanks for unknown figures
    assert body == [
        "| *conventional* | | | | | |",
        "| x265 |  |  | 140.00 | 900.00 | cpu A |",
        "| *scene-agnostic* | | | | | |",
        "| dcvc_rt | 20.70 | 185.7 | 12.50 | 14.00 | NVIDIA H200 |",
        "| *scene-adaptive* | | | | | |",
        "| c3 | 0.01 | 4.4 | 0.00 | 30.00 | NVIDIA H200 |",
    ]
    assert "P frame at 1920x1080" in lines[0] and "FPS: test rule." in lines[0]


def test_write_complexity_writes_csv_and_markdown_from_rows_read_back(tmp_path: Path) -> None:
    write_complexity(tmp_path, ROWS)
    with (tmp_path / "complexity.csv").open() as handle:
        back = list(csv.DictReader(handle))
    assert list(back[0]) == COMPLEXITY_COLUMNS and [r["codec"] for r in back] == ["x265", "dcvc_rt", "c3"]
    # the CSV's strings render the same table as the numbers did
    assert complexity_markdown(back) == (tmp_path / "complexity.md").read_text() == complexity_markdown(ROWS)


def test_complexity_rows_take_the_codecs_own_device() -> None:
    points = [
        {"codec": "m", "family": "scene-agnostic", "enc_fps": 2.0, "dec_fps": 4.0, "width": 64, "height": 48},
        {"codec": "m", "family": "scene-agnostic", "enc_fps": 4.0, "dec_fps": 8.0, "width": 64, "height": 48},
    ]
    (row,) = complexity_rows(points, {"m": {"params_m": 1.5, "device": "NVIDIA H200"}})
    assert (row["enc_fps"], row["dec_fps"], row["device"], row["params_m"]) == (3.0, 6.0, "NVIDIA H200", 1.5)
    assert device_name() == device_name("cpu") and "cores" in device_name()


def test_radar_axes_and_scores() -> None:
    bd_rows = [
        bd("dcvc_rt", "psnr_yuv", -20.0),
        bd("dcvc_rt", "vmaf", 5.0),
        bd("c3", "psnr_yuv", 10.0),
        bd("c3", "vmaf", None),
    ]
    labels, values = radar_axes(bd_rows, ROWS, "x265", "uvg", ["psnr_yuv", "vmaf"])
    assert labels == ["BD-rate PSNR-YUV", "BD-rate VMAF", "Enc FPS", "Dec FPS"]
    assert values == {
        "c3": [10.0, None, 0.001, 30.0],
        "dcvc_rt": [-20.0, 5.0, 12.5, 14.0],
        "x265": [0.0, 0.0, 140.0, 900.0],  # the anchor: 0 on every BD-rate axis
    }
    scores = radar_scores(values, num_bd_axes=2)

    def radius(fraction: float) -> float:  # the worst known value sits at RADAR_FLOOR, unknown at 0
        return RADAR_FLOOR + (1 - RADAR_FLOOR) * fraction

    assert scores["dcvc_rt"][0] == 1.0 and scores["c3"][0] == RADAR_FLOOR  # lowest BD-rate is best
    assert scores["x265"][0] == pytest.approx(radius(10 / 30))
    assert scores["c3"][1] == 0.0 and scores["x265"][1] == 1.0 and scores["dcvc_rt"][1] == RADAR_FLOOR
    assert scores["x265"][2] == 1.0 and scores["c3"][2] == RADAR_FLOOR  # fastest encoder outermost
    assert scores["dcvc_rt"][2] == pytest.approx(radius((1.097 - -3) / (2.146 - -3)), abs=1e-3)  # log


def test_write_radar_plots_one_png_per_class(tmp_path: Path) -> None:
    bd_rows = [bd("dcvc_rt", "psnr_yuv", -20.0), bd("c3", "psnr_yuv", 10.0)]
    (path,) = write_radar_plots(tmp_path, bd_rows, ROWS, "x265", ["psnr_yuv"])
    assert path == tmp_path / "radar_uvg.png" and path.read_bytes()[:4] == b"\x89PNG"
    assert write_radar_plots(tmp_path, [], ROWS, "x265", ["psnr_yuv"]) == []


def test_class_means_refuse_a_missing_value_the_same_way_everywhere() -> None:
    """One class-mean rule (metrics.aggregate.class_mean) behind the plots, the CTC scalars and BD-rate:
    a value some sequence lacks gives no mean (no point, NaN, an error), never the mean of the others."""
    import math

    from nvc_train import bdrate
    from nvc_train.callbacks.ctc_evaluation import rd_scalars
    from nvc_train.evaluation.plots import class_average_curves
    from nvc_train.metrics import class_mean

    assert class_mean([30.0, "32.0", 34.0]) == pytest.approx(32.0)
    assert class_mean([30.0, None]) is None and class_mean([30.0, math.nan]) is None
    assert class_mean([30.0, ""]) is None and class_mean([]) is None

    def point(sequence: str, rate: int, vmaf: float | None) -> dict:
        return {"codec": "c", "class": "B", "sequence": sequence, "rate_point": rate, "bpp": 0.1 * (rate + 1),
                "bits": 100, "est_bits": 90, "width": 8, "height": 8, "frames": 1, "psnr_yuv": 30.0 + rate,
                "vmaf": vmaf}  # fmt: skip

    rows = [point("a", 0, 50.0), point("b", 0, None), point("a", 1, 60.0), point("b", 1, 70.0)]
    rates, qualities = class_average_curves(rows, "B", "vmaf")["c"]
    assert rates == [pytest.approx(0.2)] and qualities == [pytest.approx(65.0)]  # rate point 0 left out
    assert class_average_curves(rows, "B", "psnr_yuv")["c"][1] == [pytest.approx(30.0), pytest.approx(31.0)]
    # Without b's rate point 1 (not coded), that point is left out as well: no vmaf curve remains.
    assert "c" not in class_average_curves(rows[:3], "B", "vmaf")
    scalars = rd_scalars(rows, "c", ["vmaf", "psnr_yuv"])
    assert math.isnan(scalars["ctc/vmaf_q0"]) and scalars["ctc/vmaf_q1"] == pytest.approx(65.0)
    assert scalars["ctc/psnr_yuv_q0"] == pytest.approx(30.0)
    assert scalars["ctc/bpp_est_q0"] == pytest.approx(90 / 64)
    assert scalars["ctc/file_over_est_bits"] == pytest.approx(100 / 90)
    with pytest.raises(bdrate.BDRateError, match="non-finite quality"):
        curve = ([1.0, 2.0, 3.0, 4.0], [30.0, 32.0, 34.0, 36.0])
        bdrate.class_bd_rate({"a": (*curve, *curve), "b": (*curve, curve[0], [30.0, math.nan, 34.0, 36.0])})
