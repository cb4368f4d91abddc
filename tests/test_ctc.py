"""The CTC registry: every configs/ctc file composes through Hydra and states the published numbers;
the loader finds files, reports every missing one in one message, refuses files that do not hold
what the registry says, scans a folder and makes the embedded set.

Registries are composed the way ``evaluate.py ctc=...`` composes them (``+ctc=<name>`` on the repo's
config folder) and handed to the real :func:`load_sequences`; files are tiny ones written under
``tmp_path``.
"""

from __future__ import annotations

import pickle
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from nvc_train.ctc import (
    ENV_ROOT,
    MissingSequencesError,
    RegistryError,
    SequenceFileError,
    list_suites,
    load_sequences,
    parse_fps,
    scan_folder,
)
from nvc_train.video.frame import VideoInfo
from nvc_train.video.readers import raw_name_fields

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

# Published sequence counts per test set (HEVC CTC JCTVC-L1100, UVG, MCL-JCV, AV2 CTC v2/v3).
PUBLISHED_COUNTS = {
    "hevc_b": {"HEVC_B": 5},
    "hevc_c": {"HEVC_C": 4},
    "hevc_d": {"HEVC_D": 4},
    "hevc_e": {"HEVC_E": 3},
    "uvg": {"UVG": 7},
    "mcl_jcv": {"MCL-JCV": 30},
    "aom_a2": {"AOM_A2": 22},
    "aom_a3": {"AOM_A3": 8},
    "aom_a4": {"AOM_A4": 6},
    "aom_a5": {"AOM_A5": 4},
    "embedded": {"embedded": 4},
}
REVIEW_PARTS = (
    "uvg",
    "mcl_jcv",
    "hevc_b",
    "hevc_c",
    "hevc_d",
    "hevc_e",
    "aom_a2",
    "aom_a3",
    "aom_a4",
    "aom_a5",
)


@pytest.fixture(scope="module")
def hydra_configs() -> Iterator[None]:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        yield


def compose_ctc(*overrides: str) -> DictConfig:
    """The ``ctc`` node as ``evaluate.py ctc=...`` would compose it (needs the hydra_configs fixture)."""
    return compose(overrides=list(overrides)).ctc


# The review's test sets (its Tables 3-4), as the review names them.
REVIEW_TEST_SETS = [
    "UVG", "MCL-JCV", "HEVC_B", "HEVC_C", "HEVC_D", "HEVC_E", "AOM_A2", "AOM_A3", "AOM_A4", "AOM_A5",
]  # fmt: skip


def registry(suite: str) -> dict[str, Any]:
    return OmegaConf.to_container(compose_ctc(f"+ctc={suite}"), resolve=True)  # type: ignore[return-value]


def write_raw(path: Path, width: int, height: int, frames: int, bit_depth: int = 8, extra: int = 0) -> Path:
    info = VideoInfo(width, height, bit_depth)
    path.write_bytes(bytes(info.frame_bytes * frames + extra))
    return path


def write_y4m(
    path: Path, width: int, height: int, frames: int, colour: str = "420jpeg", rate: str = "25:1"
) -> Path:
    """A y4m file written byte by byte (independent of the project's writer)."""
    info = VideoInfo(width, height, 10 if colour == "420p10" else 8)
    header = f"YUV4MPEG2 W{width} H{height} F{rate} Ip A1:1 C{colour}\n".encode()
    path.write_bytes(header + (b"FRAME\n" + bytes(info.frame_bytes)) * frames)
    return path


def entry(file: str, width: int = 64, height: int = 48, fps: Any = 25, bit_depth: int = 8, frames: int = 10):
    return {
        "file": file,
        "width": width,
        "height": height,
        "fps": fps,
        "bit_depth": bit_depth,
        "frames": frames,
    }


# ---- the config files ----------------------------------------------------------------------------


def test_list_suites_names_every_file_with_a_description() -> None:
    suites = list_suites()
    assert set(suites) == {p.stem for p in (CONFIG_DIR / "ctc").glob("*.yaml")}
    assert set(PUBLISHED_COUNTS) | {"review", "folder"} <= set(suites)
    assert all(suites.values()), "every ctc file starts with a one-line description comment"


@pytest.mark.parametrize("suite", sorted(list_suites()))
def test_every_suite_composes_with_hydra(hydra_configs: None, suite: str, tmp_path: Path) -> None:
    overrides = [f"+ctc={suite}"] + ([f"ctc.path={tmp_path}"] if suite == "folder" else [])
    ctc = compose_ctc(*overrides)
    assert ctc.name == suite  # evaluate.yaml names the run folder after it
    for set_name, spec in (ctc.get("test_sets") or {}).items():
        assert spec.sequences, set_name


@pytest.mark.parametrize("suite", sorted(PUBLISHED_COUNTS))
def test_sequence_counts_match_the_published_sets(hydra_configs: None, suite: str) -> None:
    sets = registry(suite)["test_sets"]
    assert {name: len(spec["sequences"]) for name, spec in sets.items()} == PUBLISHED_COUNTS[suite]


@pytest.mark.parametrize("suite", sorted(set(PUBLISHED_COUNTS) - {"embedded"}))
def test_every_entry_is_valid_and_every_missing_file_is_listed(
    hydra_configs: None, suite: str, tmp_path: Path
) -> None:
    """Loading against an empty root validates every entry and lists each file, in two folders."""
    with pytest.raises(MissingSequencesError) as caught:
        load_sequences(compose_ctc(f"+ctc={suite}", f"ctc.root={tmp_path}"))
    sets = registry(suite)["test_sets"]
    expected = {(s, n) for s, spec in sets.items() for n in spec["sequences"]}
    assert {(m.test_set, m.name) for m in caught.value.missing} == expected
    for item in caught.value.missing:
        assert item.searched == (tmp_path / sets[item.test_set]["subdir"], tmp_path)


@pytest.mark.parametrize("suite", sorted(set(PUBLISHED_COUNTS) - {"embedded"}))
def test_names_agree_with_the_data_where_they_state_it(hydra_configs: None, suite: str) -> None:
    """Where a distributed file name states size, rate or depth, the registry says the same."""
    for spec in registry(suite)["test_sets"].values():
        for name, seq in spec["sequences"].items():
            parsed = raw_name_fields(seq["file"])
            if parsed is None:
                continue
            width, height, fps, depth = parsed
            assert (width, height) == (seq["width"], seq["height"]), name
            if fps is not None:
                assert fps == pytest.approx(parse_fps(seq["fps"])), name
            if depth is not None:
                assert depth == seq["bit_depth"], name


def test_published_numbers(hydra_configs: None) -> None:
    hevc_b = registry("hevc_b")["test_sets"]["HEVC_B"]["sequences"]
    assert (hevc_b["Kimono1"]["fps"], hevc_b["Kimono1"]["frames"]) == (24, 240)
    assert (hevc_b["BQTerrace"]["fps"], hevc_b["BQTerrace"]["frames"]) == (60, 600)
    assert hevc_b["BasketballDrive"]["file"] == "BasketballDrive_1920x1080_50.yuv"
    assert (
        registry("hevc_c")["test_sets"]["HEVC_C"]["sequences"]["RaceHorses"]["file"]
        == "RaceHorses_832x480_30.yuv"
    )
    assert (
        registry("hevc_d")["test_sets"]["HEVC_D"]["sequences"]["RaceHorses"]["file"]
        == "RaceHorses_416x240_30.yuv"
    )

    uvg = registry("uvg")["test_sets"]["UVG"]["sequences"]
    assert {s["frames"] for n, s in uvg.items() if n != "ShakeNDry"} == {600}
    assert uvg["ShakeNDry"]["frames"] == 300
    assert {(s["width"], s["height"], s["fps"], s["bit_depth"]) for s in uvg.values()} == {
        (1920, 1080, 120, 8)
    }
    assert uvg["Beauty"]["file"] == "Beauty_1920x1080_120fps_420_8bit_YUV.yuv"

    mcl = registry("mcl_jcv")["test_sets"]["MCL-JCV"]["sequences"]
    assert list(mcl) == [f"videoSRC{i:02d}" for i in range(1, 31)]
    for name, seq in mcl.items():
        assert seq["fps"] in (24, 25, 30) and seq["frames"] == 5 * seq["fps"], name
        assert seq["file"] == f"{name}_1920x1080_{seq['fps']}.yuv"

    for suite, size in {
        "aom_a2": 1920 * 1080,
        "aom_a3": 1280 * 720,
        "aom_a4": 640 * 360,
        "aom_a5": 480 * 270,
    }.items():
        for seq in next(iter(registry(suite)["test_sets"].values()))["sequences"].values():
            assert (
                seq["frames"] == 130 and seq["width"] * seq["height"] == size and seq["file"].endswith(".y4m")
            )
    a2 = registry("aom_a2")["test_sets"]["AOM_A2"]["sequences"]
    assert sum(s["bit_depth"] == 10 for s in a2.values()) >= 8  # the 10-bit sources as distributed
    assert a2["Aerial3200"]["fps"] == "60000/1001" and parse_fps(a2["Aerial3200"]["fps"]) == pytest.approx(
        59.94, 1e-4
    )


def test_review_is_the_four_test_sets_composed_from_their_files(hydra_configs: None) -> None:
    review = registry("review")["test_sets"]
    parts: dict[str, Any] = {}
    for suite in REVIEW_PARTS:
        parts.update(registry(suite)["test_sets"])
    assert review == parts
    assert set(REVIEW_TEST_SETS) == set(review)


def test_several_suites_merge_and_overrides_reach_one_set(hydra_configs: None) -> None:
    ctc = compose_ctc("+ctc=[hevc_b,uvg]", "ctc.test_sets.UVG.subdir=uvg_8bit", "ctc.root=/data")
    assert set(ctc.test_sets) == {"HEVC_B", "UVG"}
    assert ctc.test_sets.UVG.subdir == "uvg_8bit" and ctc.root == "/data"


# ---- the loader ----------------------------------------------------------------------------------


def test_root_from_config_then_environment_and_subdir_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "SET").mkdir()
    in_subdir = write_raw(tmp_path / "SET" / "a_64x48_25.yuv", 64, 48, 10)
    write_raw(tmp_path / "a_64x48_25.yuv", 64, 48, 10)  # shadowed by the subdir copy
    at_root = write_raw(tmp_path / "b_64x48_25.yuv", 64, 48, 10)
    cfg = {
        "test_sets": {
            "SET": {
                "subdir": "SET",
                "sequences": {"a": entry("a_64x48_25.yuv"), "b": entry("b_64x48_25.yuv")},
            }
        }
    }

    monkeypatch.setenv(ENV_ROOT, str(tmp_path))
    sequences = load_sequences(cfg)
    assert [(s.name, s.test_set, s.path) for s in sequences] == [
        ("a", "SET", in_subdir),
        ("b", "SET", at_root),
    ]
    assert sequences[0].info == VideoInfo(64, 48, 8, 25.0, 10)

    monkeypatch.setenv(ENV_ROOT, str(tmp_path / "elsewhere"))
    assert load_sequences({**cfg, "root": str(tmp_path)})[0].path == in_subdir  # ctc.root wins


def test_missing_files_are_reported_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_raw(tmp_path / "present_64x48_25.yuv", 64, 48, 10)
    cfg = {
        "root": str(tmp_path),
        "test_sets": {
            "ONE": {
                "subdir": "one",
                "sequences": {"present": entry("present_64x48_25.yuv"), "gone": entry("gone.yuv")},
            },
            "TWO": {"sequences": {"lost": entry("lost.y4m")}},
        },
    }
    with pytest.raises(MissingSequencesError) as caught:
        load_sequences(cfg)
    message = str(caught.value)
    assert "2 CTC sequence files not found" in message
    assert "ONE/gone: gone.yuv" in message and f"looked in: {tmp_path / 'one'}, {tmp_path}" in message
    assert "TWO/lost: lost.y4m" in message and f"looked in: {tmp_path}\n" in message
    assert "present" not in message
    assert "ctc.root=" in message and ENV_ROOT in message and "from ctc.root" in message
    assert isinstance(caught.value, FileNotFoundError)
    assert str(pickle.loads(pickle.dumps(caught.value))) == message

    monkeypatch.delenv(ENV_ROOT, raising=False)
    with pytest.raises(MissingSequencesError, match="no data root set") as caught:
        load_sequences({"test_sets": cfg["test_sets"]})
    assert "looked in: nowhere" in str(caught.value) and len(caught.value.missing) == 3


def test_max_frames_and_start_frame_cut_the_published_window(tmp_path: Path) -> None:
    write_raw(tmp_path / "a.yuv", 64, 48, 10)
    cfg = {"root": str(tmp_path), "test_sets": {"S": {"sequences": {"a": entry("a.yuv", frames=10)}}}}
    assert load_sequences(cfg)[0].info.num_frames == 10
    assert load_sequences(cfg, max_frames=4)[0].info.num_frames == 4
    assert load_sequences(cfg, max_frames=100)[0].info.num_frames == 10
    shifted = load_sequences(cfg, start_frame=3)[0]
    assert (shifted.start_frame, shifted.info.num_frames) == (3, 7)
    assert load_sequences(cfg, max_frames=4, start_frame=3)[0].info.num_frames == 4
    with pytest.raises(SequenceFileError, match="start_frame 10 is past the 10 frames"):
        load_sequences(cfg, start_frame=10)
    with pytest.raises(RegistryError):
        load_sequences(cfg, max_frames=0)


def test_a_raw_file_shorter_than_the_registry_is_an_error(tmp_path: Path) -> None:
    short = write_raw(tmp_path / "short.yuv", 64, 48, 5)
    cfg = {"root": str(tmp_path), "test_sets": {"S": {"sequences": {"short": entry("short.yuv", frames=10)}}}}
    with pytest.raises(SequenceFileError) as caught:
        load_sequences(cfg)
    assert f"S/short: {short} holds 5 frames, 10 needed" in str(caught.value)
    assert "the registry lists 10" in str(caught.value)
    assert load_sequences(cfg, max_frames=5)[0].info.num_frames == 5  # a cut copy serves a cut run


def test_wrong_size_depth_or_header_is_an_error_listing_every_file(tmp_path: Path) -> None:
    write_raw(tmp_path / "odd.yuv", 64, 48, 10, extra=7)
    write_raw(tmp_path / "deep.yuv", 64, 48, 10, bit_depth=8)  # registry says 10-bit: 5 frames, fine size
    write_y4m(tmp_path / "clip.y4m", 64, 48, 10, colour="420jpeg")
    cfg = {
        "root": str(tmp_path),
        "test_sets": {
            "S": {
                "sequences": {
                    "odd": entry("odd.yuv"),
                    "deep": entry("deep.yuv", bit_depth=10),
                    "clip": entry("clip.y4m", bit_depth=10),
                }
            }
        },
    }
    with pytest.raises(SequenceFileError) as caught:
        load_sequences(cfg)
    message = str(caught.value)
    assert message.startswith("3 CTC sequence files do not match the registry")
    assert "S/odd" in message and "not a whole number" in message
    assert "S/deep" in message and "holds 5 frames, 10 needed" in message
    assert "S/clip" in message and re.search(r"bit depth 8 \(expected 10\)", message)


def test_a_y4m_entry_is_checked_against_its_header(tmp_path: Path) -> None:
    write_y4m(tmp_path / "ten.y4m", 64, 48, 12, colour="420p10", rate="30000:1001")
    cfg = {
        "root": str(tmp_path),
        "test_sets": {
            "S": {"sequences": {"ten": entry("ten.y4m", fps="30000/1001", bit_depth=10, frames=12)}}
        },
    }
    (sequence,) = load_sequences(cfg)
    assert sequence.info == VideoInfo(64, 48, 10, 30000 / 1001, 12)
    cfg["test_sets"]["S"]["sequences"]["ten"]["frames"] = 13
    with pytest.raises(SequenceFileError, match="holds 12 frames, 13 needed"):
        load_sequences(cfg)


def test_malformed_registries_are_refused_with_the_entry_named(tmp_path: Path) -> None:
    bad_key = {"root": str(tmp_path), "test_sets": {"S": {"sequences": {"a": {**entry("a.yuv"), "fsp": 25}}}}}
    with pytest.raises(RegistryError, match=r"S/a: unknown \['fsp'\]"):
        load_sequences(bad_key)
    no_fps = {
        "root": str(tmp_path),
        "test_sets": {"S": {"sequences": {"a": {k: v for k, v in entry("a.yuv").items() if k != "fps"}}}},
    }
    with pytest.raises(RegistryError, match=r"S/a: missing \['fps'\]"):
        load_sequences(no_fps)
    with pytest.raises(RegistryError, match="odd|even"):
        load_sequences(
            {"root": str(tmp_path), "test_sets": {"S": {"sequences": {"a": entry("a.yuv", width=63)}}}}
        )
    with pytest.raises(RegistryError, match="unknown keys"):
        load_sequences({"test_sets": {"S": {"sequence": {}}}})
    with pytest.raises(RegistryError, match="no test sets"):
        load_sequences({"test_sets": {}})


def test_parse_fps() -> None:
    assert parse_fps(24) == 24.0
    assert parse_fps("60000/1001") == pytest.approx(59.94006, 1e-6)
    assert parse_fps("29.97") == pytest.approx(29.97)
    for bad in ("fast", 0, "1/0", None, True):
        with pytest.raises(RegistryError):
            parse_fps(bad)


def test_the_module_imports_neither_torch_nor_lightning() -> None:
    code = (
        "import sys, nvc_train.ctc; print([m for m in ('torch', 'lightning', 'hydra') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- ctc=folder ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stem", "expected"),
    [
        ("foo_64x48_25", (64, 48, 25.0, None)),
        ("Beauty_1920x1080_120fps_420_8bit_YUV", (1920, 1080, 120.0, 8)),
        ("CrowdRun_1920x1080p50", (1920, 1080, 50.0, None)),
        ("SparksElevator_480x270p_5994_10bit", (480, 270, 60000 / 1001, 10)),
        ("clip_416x240_32f", (416, 240, None, None)),  # 32 frames, not 32 fps
        ("plain_64x48", (64, 48, None, None)),
        ("x_64x48_30_yuv420p10le", (64, 48, 30.0, 10)),
        ("nosize", None),
    ],
)
def test_raw_names(stem: str, expected: tuple | None) -> None:
    assert raw_name_fields(stem + ".yuv") == expected


def test_folder_scan(tmp_path: Path, hydra_configs: None) -> None:
    folder = tmp_path / "my_clips"
    folder.mkdir()
    write_y4m(folder / "own.y4m", 32, 16, 6, rate="50:1")
    write_raw(folder / "foo_64x48_25.yuv", 64, 48, 5)
    write_raw(folder / "deep_64x48_30_10bit.yuv", 64, 48, 3, bit_depth=10)
    write_raw(folder / "norate_64x48.yuv", 64, 48, 4)
    write_raw(folder / "nosize.yuv", 64, 48, 2)
    (folder / "notes.txt").write_text("not a video")

    with pytest.warns(UserWarning, match=r"skipped 1 raw file.*nosize\.yuv"):
        sequences = load_sequences(compose_ctc("+ctc=folder", f"ctc.path={folder}", "ctc.fps=24"))
    by_name = {s.name: s for s in sequences}
    assert set(by_name) == {"own", "foo_64x48_25", "deep_64x48_30_10bit", "norate_64x48"}
    assert {s.test_set for s in sequences} == {"my_clips"}
    assert by_name["own"].info == VideoInfo(32, 16, 8, 50.0, 6)
    assert by_name["foo_64x48_25"].info == VideoInfo(64, 48, 8, 25.0, 5)
    assert by_name["deep_64x48_30_10bit"].info == VideoInfo(64, 48, 10, 30.0, 3)
    assert by_name["norate_64x48"].info == VideoInfo(64, 48, 8, 24.0, 4)  # ctc.fps default

    with pytest.warns(UserWarning, match="nosize.yuv"):
        capped = scan_folder(folder, fps=24, max_frames=4)
    assert {s.name: s.info.num_frames for s in capped}["own"] == 4

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(SequenceFileError, match=r"norate_64x48: no frame rate in the name"):
            load_sequences(compose_ctc("+ctc=folder", f"ctc.path={folder}"))  # fps: null


def test_folder_scan_takes_real_clips(tmp_path: Path, clips_dir: Path) -> None:
    clip = sorted(clips_dir.glob("*.y4m"))[0]
    shutil.copy(clip, tmp_path / clip.name)
    (sequence,) = scan_folder(tmp_path)
    assert sequence.name == clip.stem and sequence.info.num_frames > 0 and sequence.path.name == clip.name


def test_folder_needs_a_path_and_videos(hydra_configs: None, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"ctc\.path="):
        load_sequences(compose_ctc("+ctc=folder"))
    with pytest.raises(FileNotFoundError, match="holds no .y4m"):
        load_sequences(compose_ctc("+ctc=folder", f"ctc.path={tmp_path}"))
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_sequences(compose_ctc("+ctc=folder", f"ctc.path={tmp_path / 'absent'}"))


# ---- ctc=embedded --------------------------------------------------------------------------------


def test_embedded_set_resolves(hydra_configs: None) -> None:
    try:
        from nvc_train.embedded import EMBEDDED_CLIPS
    except ImportError as error:  # pragma: no cover - only while nvc_train.embedded is being written
        pytest.skip(f"nvc_train.embedded is not importable yet: {error}")
    sequences = load_sequences(compose_ctc("+ctc=embedded"), max_frames=8)
    assert [s.name for s in sequences] == [spec.name for spec in EMBEDDED_CLIPS]
    for sequence, spec in zip(sequences, EMBEDDED_CLIPS, strict=True):
        assert sequence.test_set == "embedded" and sequence.path.is_file()
        assert sequence.path.name == spec.file_name
        assert sequence.info == VideoInfo(spec.width, spec.height, spec.info.bit_depth, spec.fps, 8)

    # The config's numbers repeat the module's clip table as data: they must stay in step.
    table = {spec.name: spec for spec in EMBEDDED_CLIPS}
    for name, seq in registry("embedded")["test_sets"]["embedded"]["sequences"].items():
        spec = table[name]
        assert (seq["file"], seq["width"], seq["height"], seq["fps"], seq["frames"]) == (
            spec.file_name,
            spec.width,
            spec.height,
            spec.fps,
            spec.frames,
        )
