"""bdrate.md layout: families as row groups, the anchor at 0, best and second best marked."""

from __future__ import annotations

from nvc_train.evaluation.tables import BDRow, bdrate_markdown


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
