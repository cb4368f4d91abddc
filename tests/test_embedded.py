"""The embedded default clips: format, real motion, determinism and the cache's regeneration rules."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from nvc_train import embedded
from nvc_train.ctc import embedded_sequences
from nvc_train.embedded import (
    EMBEDDED_CLIPS,
    ClipSpec,
    default_cache_dir,
    ensure_embedded_clips,
)
from nvc_train.video import RawYUVReader, VideoInfo, open_video


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return ensure_embedded_clips(tmp_path_factory.mktemp("embedded"))


def test_table() -> None:
    assert len(EMBEDDED_CLIPS) == 4
    assert len({spec.name for spec in EMBEDDED_CLIPS}) == 4
    assert len({spec.source for spec in EMBEDDED_CLIPS}) == 4
    assert len({spec.motion for spec in EMBEDDED_CLIPS}) == 4  # a different camera path per clip
    for spec in EMBEDDED_CLIPS:
        assert (spec.width, spec.height, spec.frames, spec.fps) == (320, 256, 32, 30)
        assert spec.file_name == f"{spec.name}_320x256_30.yuv"
        assert spec.info == VideoInfo(320, 256, 8, 30.0, 32)


def test_clips_on_disk(clips: dict[str, Path]) -> None:
    assert set(clips) == {spec.name for spec in EMBEDDED_CLIPS}
    assert "astronaut_pan" in clips
    for spec in EMBEDDED_CLIPS:
        reader = open_video(clips[spec.name])  # size and rate come from the file name alone
        assert isinstance(reader, RawYUVReader)
        assert reader.info == spec.info, spec.name
        frames = list(reader.read())
        luma = np.stack([frame.y for frame in frames]).astype(np.float64)
        chroma = np.stack([frame.u for frame in frames] + [frame.v for frame in frames])
        # BT.709 limited range: in-gamut pictures stay inside the nominal code ranges.
        assert luma.min() >= 16 and luma.max() <= 235, spec.name
        assert chroma.min() >= 16 and chroma.max() <= 240, spec.name
        assert luma.std() > 20, f"{spec.name} looks flat"
        assert np.abs(chroma.astype(np.float64) - 128).mean() > 2, f"{spec.name} has no colour"
        # The camera moves every frame, smoothly: consecutive frames differ, but far less than
        # the first and last frames do.
        steps = np.abs(np.diff(luma, axis=0)).mean(axis=(1, 2))
        assert steps.min() > 0.2, f"{spec.name} stands still somewhere"
        assert steps.max() < np.abs(luma[-1] - luma[0]).mean(), spec.name


def test_sequences(clips: dict[str, Path]) -> None:
    directory = next(iter(clips.values())).parent
    sequences = embedded_sequences(directory)
    assert [seq.name for seq in sequences] == [spec.name for spec in EMBEDDED_CLIPS]
    assert all(seq.test_set == "embedded" and seq.path.is_file() for seq in sequences)
    assert sequences[0].info == VideoInfo(320, 256, 8, 30.0, 32)


def test_deterministic(tmp_path: Path, clips: dict[str, Path]) -> None:
    """Two fresh generations give the same bytes (and match the sidecar's hash)."""
    other = ensure_embedded_clips(tmp_path / "again")
    for name, path in clips.items():
        assert sha256(other[name]) == sha256(path), name
        record = json.loads(path.with_name(path.name + ".sha256").read_text())
        assert record["sha256"] == sha256(path)


def test_cache_reuse_and_regeneration(
    tmp_path: Path, clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "cache"
    directory.mkdir()
    for path in clips.values():  # a valid cache, copied with its sidecars
        for source in (path, path.with_name(path.name + ".sha256")):
            (directory / source.name).write_bytes(source.read_bytes())

    def no_render(spec: ClipSpec) -> list:
        raise AssertionError(f"{spec.name} was rendered again although its cached file is intact")

    monkeypatch.setattr(embedded, "render_clip", no_render)
    paths = ensure_embedded_clips(directory)
    assert all(path.parent == directory for path in paths.values())
    monkeypatch.undo()

    corrupted = paths["coffee_zoom"]
    data = bytearray(corrupted.read_bytes())
    data[1000] ^= 0xFF
    corrupted.write_bytes(bytes(data))
    missing = paths["rocket_tilt"]
    missing.unlink()
    stale = paths["chelsea_zoom_out"]
    stale.with_name(stale.name + ".sha256").write_text('{"sha256": "0", "spec": "old"}')

    rendered: list[str] = []
    original = embedded.render_clip

    def counting_render(spec: ClipSpec) -> list:
        rendered.append(spec.name)
        return original(spec)

    monkeypatch.setattr(embedded, "render_clip", counting_render)
    ensure_embedded_clips(directory)
    assert sorted(rendered) == ["chelsea_zoom_out", "coffee_zoom", "rocket_tilt"]
    for name, path in clips.items():
        assert sha256(directory / path.name) == sha256(path), name
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_default_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NVC_CACHE_DIR", str(tmp_path / "nvc"))
    assert default_cache_dir() == tmp_path / "nvc" / "embedded"
    monkeypatch.delenv("NVC_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "nvc_train" / "embedded"
