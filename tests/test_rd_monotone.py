"""RD curves that fall as the rate rises are named in bdrate.md / bdrate.csv (issue 13, item 5).

Synthetic points: an anchor and two codecs on two sequences; one codec's curve on one sequence
loses PSNR at its highest rate. That cell must carry a dagger, the curve must be named with the
offending rate points below the table, bdrate.csv must list the sequence, and the sound codec's
cells must stay unmarked.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from nvc_train.evaluation.report import write_run_tables
from nvc_train.evaluation.tables import non_monotone_curves


def _points() -> list[dict]:
    rows = []
    curves = {
        "anchor": [(0.02, 30.0), (0.04, 33.0), (0.08, 36.0), (0.16, 39.0)],
        "good": [(0.018, 30.5), (0.035, 33.5), (0.07, 36.5), (0.14, 39.5)],
        "bent": [(0.018, 30.5), (0.035, 33.5), (0.07, 36.5), (0.14, 35.0)],  # worse at the top rate
    }
    for codec, curve in curves.items():
        for sequence in ("s1", "s2"):
            for rate_point, (bpp, psnr) in enumerate(curve):
                if codec == "bent" and sequence == "s2":
                    psnr = curves["good"][rate_point][1]  # only s1 is bent
                rows.append({
                    "codec": codec, "family": "conventional", "class": "C", "sequence": sequence,
                    "rate_point": rate_point, "width": 64, "height": 64, "frames": 2, "bpp": bpp,
                    "psnr_yuv": psnr, "enc_fps": 1.0, "dec_fps": 1.0, "structure": "ld ip=96 gop=1",
                })  # fmt: skip
    return rows


def test_non_monotone_curve_is_named() -> None:
    found = non_monotone_curves(_points(), ["psnr_yuv"])
    assert [(c.codec, c.test_set, c.sequence, c.metric) for c in found] == [("bent", "C", "s1", "psnr_yuv")]
    assert "rp 3 (0.14 bpp, 35) is worse than rp 2 (0.07 bpp, 36.5)" in found[0].text()


def test_bdrate_tables_name_the_bent_curve(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Per-sequence averaging: BD-rate refuses the bent curve (empty cell); the table names it."""
    with caplog.at_level("WARNING"):
        write_run_tables(
            tmp_path, _points(), [], "anchor", "conventional", "ld", ["psnr_yuv"], ["pchip"], "sequence"
        )
    table = (tmp_path / "bdrate.md").read_text()
    assert "| bent |  |" in table and "†" not in _row(table, "good")
    assert "- bent C/s1 PSNR-YUV: rp 3 (0.14 bpp, 35) is worse than rp 2 (0.07 bpp, 36.5)" in table
    with open(tmp_path / "bdrate.csv") as handle:
        marked = {row["codec"]: row["non_monotone"] for row in csv.DictReader(handle)}
    assert marked == {"bent": "s1", "good": ""}
    assert "RD curve not monotone" in caplog.text and "bent C/s1" in caplog.text


def _row(table: str, codec: str) -> str:
    return next(line for line in table.splitlines() if line.startswith(f"| {codec} |"))
