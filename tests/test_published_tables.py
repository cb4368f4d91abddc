"""The review's published figures (issue 14, item 3): the data file, its cells, and when they show.

The cells are checked against the review's numbers as issue 14 quotes them (DCVC-RT on UVG PSNR
-25.59 in Table 3, ECM 12.0 RA on UVG PSNR -44.47, C3 4.4 kMAC/px) and as the project quoted Table 5
before (DCVC-RT 20.7 M, 185.7 kMAC/px). The rows must reach bdrate.md / complexity.md only when the
run's anchor (VTM-20 LD), codec structure and test set are the table's, must never be ranked, and
must never enter a CSV. Synthetic runs go through the real report writer (write_run_tables); one
slow test runs ``evaluate.py suite=review_ld`` with a fake VTM-20 on a UVG stand-in, then again with
``report.published=false``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from nvc_train.evaluation.merge import merge_runs
from nvc_train.evaluation.published import (
    DEFAULT_PATH,
    PublishedDataError,
    anchor_label,
    load_published,
    matching_bdrate,
)
from nvc_train.evaluation.report import write_run_tables
from tests.conftest import REPO_ROOT
from tests.test_ctc import REVIEW_TEST_SETS
from tests.test_evaluate_many import run_evaluate
from tests.test_suites import QUICK, install_fake_vtm

LD = "ld ip=96 gop=1"
RA = "ra ip=32 gop=32"
VTM20 = "VTM 20.0 (/opt/VTM/bin/EncoderAppStatic)"


# ---- the data file ------------------------------------------------------------------------------


def _cell(table: int, codec: str, test_set: str, metric: str):
    (cell,) = [
        c
        for c in load_published().bdrate
        if (c.table, c.codec, c.test_set, c.metric) == (table, codec, test_set, metric)
    ]
    return cell


def test_cells_against_the_review() -> None:
    dcvc_rt = _cell(3, "DCVC-RT", "UVG", "PSNR")
    assert (dcvc_rt.bd_rate, dcvc_rt.anchor, dcvc_rt.structure) == (-25.59, "VTM-20 LD", "LD")
    assert (dcvc_rt.family, dcvc_rt.class_name, dcvc_rt.column) == ("scene-agnostic", "UVG", "psnr_yuv")
    ecm = _cell(4, "ECM 12.0", "UVG", "PSNR")
    assert (ecm.bd_rate, ecm.anchor, ecm.structure, ecm.family) == (-44.47, "VTM-20 LD", "RA", "conventional")
    table5 = {row.codec: row for row in load_published().complexity}
    assert table5["C3"].kmac_per_px == 4.4 and table5["C3"].family == "scene-adaptive"
    assert (table5["DCVC-RT"].params_m, table5["DCVC-RT"].kmac_per_px) == (20.7, 185.7)
    # a figure the quotes do not give stays empty, never filled in
    assert table5["C3"].params_m is None and table5["DCVC-RT"].enc_fps is None


def test_the_file_states_its_source_and_what_is_missing() -> None:
    tables = load_published()
    assert tables.source["title"] == "Advances in Neural Video Compression: A Review and Benchmarking"
    assert tables.source["url"] == "https://www.preprints.org/manuscript/202604.0035"
    assert set(tables.source["tables"]) == {"3", "4", "5"}
    assert all(cell.quoted_from for cell in tables.bdrate) and all(r.quoted_from for r in tables.complexity)
    assert tables.missing and all(entry.get("cells") and entry.get("why") for entry in tables.missing)
    # shipped inside the package (pyproject's package-data takes every *.yaml of a package)
    assert DEFAULT_PATH.parent == REPO_ROOT / "nvc_train" / "evaluation"
    assert (DEFAULT_PATH.parent / "__init__.py").is_file() and DEFAULT_PATH.suffix == ".yaml"
    assert '"*" = ["*.yaml"]' in (REPO_ROOT / "pyproject.toml").read_text()


GOOD_ENTRY = """
  - table: 3
    codec: X
    family: scene-agnostic
    structure: LD
    anchor: VTM-20 LD
    test_set: UVG
    metric: PSNR
    bd_rate: -1.5
    quoted_from: here
"""
HEADER = """
source: {title: T, url: U, tables: {"3": t}}
metrics: {PSNR: psnr_yuv}
test_sets: {UVG: UVG}
complexity: []
bdrate:
"""


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (GOOD_ENTRY.replace("metric: PSNR", "metric: PSNR-X"), "metric 'PSNR-X' is not in metrics"),
        (GOOD_ENTRY.replace("test_set: UVG", "test_set: UVG 4K"), "test set 'UVG 4K' is not in test_sets"),
        (GOOD_ENTRY.replace("bd_rate: -1.5", "bd_rate: about -2"), "'bd_rate' must be a finite number"),
        (GOOD_ENTRY.replace("structure: LD", "structure: LDP"), "structure 'LDP' is not one of LD, RA"),
        (GOOD_ENTRY.replace("anchor: VTM-20 LD", "anchor: VTM LD"), "anchor 'VTM LD' is not"),
        (GOOD_ENTRY.replace("family: scene-agnostic", "family: neural"), "family 'neural' is not one of"),
        (GOOD_ENTRY.replace("    quoted_from: here\n", ""), "'quoted_from' must be a non-empty text"),
        (GOOD_ENTRY + GOOD_ENTRY, "two bdrate entries"),
    ],
)
def test_a_bad_file_is_refused_naming_the_entry_and_field(tmp_path: Path, entry: str, message: str) -> None:
    path = tmp_path / "published.yaml"
    path.write_text(HEADER + entry)
    with pytest.raises(PublishedDataError, match=message) as error:
        load_published(path)
    assert "bdrate[" in str(error.value) or "two bdrate" in str(error.value)


def test_a_good_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "published.yaml"
    path.write_text(HEADER + GOOD_ENTRY)
    (cell,) = load_published(path).bdrate
    assert (cell.codec, cell.bd_rate, cell.column) == ("X", -1.5, "psnr_yuv")


# ---- which anchor the run has ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "descriptions", "structures", "expected"),
    [
        ("vtm", [VTM20], [LD], "VTM-20 LD"),
        ("vtm", ["VTM 20 (bin/EncoderAppStatic)"], [LD, LD], "VTM-20 LD"),
        ("vtm", [VTM20], [RA], "VTM-20 RA"),
        ("vtm", ["VTM 23.0 (bin/EncoderAppStatic)"], [LD], "VTM-23 LD"),
        ("vtm", ["VTM 20.1 (bin/EncoderAppStatic)"], [LD], None),  # another release
        (
            "vtm",
            ["VTM (version unknown: set codec.version) (/opt/VTM-20.0/bin/EncoderAppStatic)"],
            [LD],
            None,
        ),
        ("vtm", [VTM20], [LD, RA], None),  # one anchor, two structures
        ("VTM-20", [], [LD], "VTM-20 LD"),  # imported points named by the user
        ("VTM-20", [], [""], None),  # imported points that do not say their structure
        ("x265", ["libx265 3.5 (ffmpeg 6.1)"], [LD], None),
    ],
)
def test_anchor_label(
    name: str, descriptions: list[str], structures: list[str], expected: str | None
) -> None:
    assert anchor_label(name, descriptions, structures) == expected


def test_matching_needs_anchor_structure_test_set_and_metric() -> None:
    tables = load_published()
    assert [c.codec for c in matching_bdrate(tables, "VTM-20 LD", LD, ["UVG"], ["psnr_yuv"])] == ["DCVC-RT"]
    assert [c.codec for c in matching_bdrate(tables, "VTM-20 LD", RA, ["UVG"], ["psnr_yuv"])] == ["ECM 12.0"]
    assert matching_bdrate(tables, "VTM-20 RA", RA, ["UVG"], ["psnr_yuv"]) == []
    assert matching_bdrate(tables, "VTM-23 LD", LD, ["UVG"], ["psnr_yuv"]) == []
    assert matching_bdrate(tables, "VTM-20 LD", LD, ["HEVC_B"], ["psnr_yuv"]) == []
    assert matching_bdrate(tables, "VTM-20 LD", LD, ["UVG"], ["psnr_y", "vmaf"]) == []
    assert matching_bdrate(tables, None, LD, ["UVG"], ["psnr_yuv"]) == []


# ---- through the real report writer ------------------------------------------------------------------


def _points(
    codec: str, description: str, structure: str, shift_db: float, test_set: str = "UVG"
) -> list[dict[str, object]]:
    """Four rate points on two sequences; ``shift_db`` raises the curve (a lower BD-rate)."""
    rows = []
    for sequence in ("Beauty", "Jockey"):
        for point, bpp in enumerate((0.01, 0.02, 0.04, 0.08)):
            rows.append({
                "codec": codec, "family": "conventional", "class": test_set, "sequence": sequence,
                "rate_point": point, "width": 1920, "height": 1080, "frames": 2, "fps": 120, "bit_depth": 8,
                "bits": bpp * 1920 * 1080 * 2, "bpp": bpp,
                "psnr_yuv": 30 + 4 * math.log2(bpp / 0.01) + shift_db, "structure": structure,
                "codec_description": description,
            })  # fmt: skip
    return rows


def _run(
    tmp_path: Path,
    anchor_description: str = VTM20,
    anchor_structure: str = LD,
    structure: str = LD,
    test_set: str = "UVG",
    bd_metrics: tuple[str, ...] = ("psnr_yuv",),
    published: bool = True,
) -> tuple[str, str, Path]:
    """x265 (+1 dB) and svtav1 (+0.5 dB) against the anchor; returns bdrate.md, complexity.md, folder."""
    rows = _points("vtm", anchor_description, anchor_structure, 0.0, test_set)
    rows += _points("x265", "libx265", structure, 1.0, test_set) + _points(
        "svtav1", "SVT-AV1", structure, 0.5, test_set
    )
    complexity = [
        {"codec": "x265", "family": "conventional", "enc_fps": 3.0, "dec_fps": 30.0, "device": "cpu"},
    ]
    write_run_tables(
        tmp_path, rows, complexity, anchor="vtm", anchor_family="conventional", structure=structure,
        bd_metrics=list(bd_metrics), bd_methods=["pchip"], averaging="sequence", published=published,
    )  # fmt: skip
    return (tmp_path / "bdrate.md").read_text(), (tmp_path / "complexity.md").read_text(), tmp_path


def test_published_rows_show_below_ours_when_the_run_is_the_tables_and_are_never_ranked(
    tmp_path: Path,
) -> None:
    bdrate, complexity, run = _run(tmp_path)
    lines = bdrate.splitlines()
    header = lines.index("| Codec | UVG PSNR-YUV |")
    body = [line.split("|")[1].strip() for line in lines[header + 2 :] if line.startswith("|")]
    assert body == [
        "*conventional*", "vtm (anchor)", "svtav1", "x265",
        "*published: review Table 3 (LD, against VTM-20 LD)*", "DCVC-RT, scene-agnostic (published)",
    ]  # fmt: skip
    assert "| DCVC-RT, scene-agnostic (published) | -25.59 |" in lines
    # ranking: the published -25.59 beats every measured number, yet the marks go to measured rows
    x265 = next(line for line in lines if line.startswith("| x265 |"))
    svtav1 = next(line for line in lines if line.startswith("| svtav1 |"))
    assert "**" in x265 and "<u>" in svtav1
    assert "**" not in lines[lines.index("| DCVC-RT, scene-agnostic (published) | -25.59 |")]
    assert "Rows marked (published): the review's Table 3" in bdrate and "preprints.org" in bdrate
    assert "ECM 12.0" not in bdrate  # Table 4's codecs were run in RA
    # complexity.md: Table 5's rows after ours, as printed
    assert "| DCVC-RT, scene-agnostic (published) | 20.7 | 185.7 |  |  |  |" in complexity
    assert "| C3, scene-adaptive (published) |  | 4.4 |  |  |  |" in complexity
    assert complexity.index("| x265 |") < complexity.index("*published: review Table 5 (1080p)*")
    # never in the CSVs
    for name in ("bdrate.csv", "complexity.csv", "points.csv"):
        text = (run / name).read_text()
        assert "DCVC-RT" not in text and "C3" not in text and "-25.59" not in text, name
    with open(run / "bdrate.csv") as handle:
        assert {row["codec"] for row in csv.DictReader(handle)} == {"x265", "svtav1"}


def test_table_4_needs_an_ld_anchor_beside_ra_codecs(tmp_path: Path) -> None:
    """Table 4 puts RA codecs against VTM-20 LD: imported LD anchor points in an RA run match it."""
    bdrate, _, _ = _run(tmp_path, anchor_structure=LD, structure=RA)
    assert "| ECM 12.0, conventional (published) | -44.47 |" in bdrate.splitlines()
    assert "DCVC-RT" not in bdrate and "*published: review Table 4 (RA, against VTM-20 LD)*" in bdrate


@pytest.mark.parametrize(
    "differs",
    [
        {"anchor_description": "libx265 3.5 (ffmpeg)"},  # another anchor codec
        {"anchor_description": "VTM 23.0 (bin/EncoderAppStatic)"},  # another VTM
        {"anchor_description": "VTM (version unknown: set codec.version) (bin/EncoderAppStatic)"},
        {"anchor_structure": RA, "structure": RA},  # the review_ra suite's VTM-20 RA anchor
        {"test_set": "HEVC_B"},  # a set with no published cell here
        {"bd_metrics": ("psnr_y",)},  # no column of the published metric
        {"published": False},  # report.published=false
    ],
)
def test_no_published_rows_when_the_run_is_not_the_tables(tmp_path: Path, differs: dict) -> None:
    bdrate, complexity, _ = _run(tmp_path, **differs)
    assert "published" not in bdrate and "published" not in complexity
    assert "| x265 |" in bdrate and "| x265 |" in complexity


def test_a_broken_data_file_costs_the_published_rows_not_the_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(HEADER + GOOD_ENTRY.replace("bd_rate: -1.5", "bd_rate: n/a"))
    monkeypatch.setattr("nvc_train.evaluation.published.DEFAULT_PATH", broken)
    run = tmp_path / "run"
    run.mkdir()
    bdrate, complexity, _ = _run(run)
    assert "| x265 |" in bdrate and "published" not in bdrate and "published" not in complexity
    assert "published rows left out" in caplog.text and "'bd_rate' must be a finite number" in caplog.text


def test_the_switch_is_on_by_default_in_evaluate_yaml() -> None:
    config = OmegaConf.load(REPO_ROOT / "configs" / "evaluate.yaml")
    assert config.report.published is True


@pytest.mark.slow  # about 40 s on two cores: x265 and the fake VTM code a 1080p stand-in
def test_review_ld_run_shows_the_published_rows_and_the_switch_hides_them(tmp_path: Path) -> None:
    """The real entry point: suite=review_ld on a UVG stand-in (one 1080p sequence, 2 frames), x265
    against a fake VTM that says it is 20.0; then the same run with report.published=false."""
    root, vtm, store = tmp_path / "ctc", tmp_path / "vtm", tmp_path / "store"
    install_fake_vtm(vtm)
    (root / "UVG").mkdir(parents=True)
    frames = np.random.default_rng(0).integers(0, 256, size=2 * 1920 * 1080 * 3 // 2, dtype=np.uint8)
    (root / "UVG" / "Beauty_1920x1080_120fps_420_8bit_YUV.yuv").write_bytes(frames.tobytes())
    dropped = [f"~ctc.test_sets.{name}" for name in REVIEW_TEST_SETS if name != "UVG"]
    dropped += [
        f"~ctc.test_sets.UVG.sequences.{name}"
        for name in ("Bosphorus", "HoneyBee", "Jockey", "ReadySteadyGo", "ShakeNDry", "YachtRide")
    ]
    common = [
        "suite=review_ld", f"ctc.root={root}", *dropped, "frames=2", "codecs=[x265]", f"anchor.root={vtm}",
        "anchor.version=20.0", f"point_store={store}", *QUICK,
    ]  # fmt: skip
    shown, hidden = tmp_path / "shown", tmp_path / "hidden"
    run_evaluate(*common, f"hydra.run.dir={shown}")
    bdrate = (shown / "bdrate.md").read_text()
    assert "vtm (anchor)" in bdrate and "| x265 |" in bdrate
    assert "| DCVC-RT, scene-agnostic (published) | -25.59 |" in bdrate.splitlines()
    assert "ECM 12.0" not in bdrate  # Table 4: RA codecs
    assert "| C3, scene-adaptive (published) |  | 4.4 |" in (shown / "complexity.md").read_text()
    assert "DCVC-RT" not in (shown / "bdrate.csv").read_text()

    run_evaluate(*common, "report.published=false", f"hydra.run.dir={hidden}")  # points from the store
    assert "published" not in (hidden / "bdrate.md").read_text()
    assert "published" not in (hidden / "complexity.md").read_text()

    # merge lays out its tables with the first run's settings, the switch included
    merge_runs([hidden, shown], tmp_path / "merged_hidden")
    assert "published" not in (tmp_path / "merged_hidden" / "bdrate.md").read_text()
    merge_runs([shown, hidden], tmp_path / "merged_shown")
    assert (tmp_path / "merged_shown" / "bdrate.md").read_text() == bdrate
