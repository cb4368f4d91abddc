"""ClipDataModule and EmbeddedDataModule: shapes, ranges, crops, augmentations, errors, workers.

Synthetic clips make every property checkable by value: luma at column ``c`` is ``c``, U at chroma
column ``c`` is ``c`` and V of frame ``i`` is ``10 i`` everywhere, so frame order, flips and 4:2:0
co-siting of a crop can be read back from the batch.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.clips import ClipDataModule
from datamodules.embedded import EmbeddedDataModule
from nvc_train.video import VideoInfo, YUVFrame, write_y4m, write_yuv


def synthetic_frames(width: int, height: int, count: int) -> list[YUVFrame]:
    y = np.tile(np.arange(width, dtype=np.uint8), (height, 1))
    u = np.tile(np.arange(width // 2, dtype=np.uint8), (height // 2, 1))
    return [YUVFrame(y, u, np.full_like(u, 10 * i), 8) for i in range(count)]


@pytest.fixture
def clip_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "clips"
    folder.mkdir()
    write_yuv(folder / "ramp_96x64_25.yuv", synthetic_frames(96, 64, 6))
    write_y4m(folder / "ramp.y4m", synthetic_frames(80, 48, 5), VideoInfo(80, 48, 8, 30.0))
    return folder


def code(value: torch.Tensor) -> int:
    return round(float(value) * 255)


def frame_index(item: dict[str, torch.Tensor]) -> list[int]:
    """Frame number of each frame of an item (from its V plane)."""
    return [code(v) // 10 for v in item["uv"][:, 1, 0, 0]]


def test_batches_have_the_documented_layout(clip_folder: Path) -> None:
    dm = ClipDataModule(
        folder=clip_folder, frames=3, crop=[32, 48], batch_size=2, samples_per_epoch=4, val_crop=32
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"y", "uv"}
    assert batch["y"].shape == (2, 3, 1, 32, 48) and batch["uv"].shape == (2, 3, 2, 16, 24)
    assert batch["y"].dtype == torch.float32
    assert float(batch["y"].min()) >= 0.0 and float(batch["y"].max()) <= 1.0
    assert len(dm.train_dataloader()) == 2


def test_crops_are_consecutive_frames_and_chroma_stays_co_sited(clip_folder: Path) -> None:
    dm = ClipDataModule(
        folder=clip_folder, frames=3, crop=16, val_crop=16, flip_p=0.0, reverse_p=0.0, samples_per_epoch=20
    )
    dm.setup("fit")
    for index in range(20):
        item = dm.train_set[index]
        frames = frame_index(item)
        assert frames == [frames[0], frames[0] + 1, frames[0] + 2]
        # luma column c -> chroma column c / 2: even crop offsets keep the 4:2:0 sampling grid
        left = code(item["y"][0, 0, 0, 0])
        assert left % 2 == 0
        assert code(item["uv"][0, 0, 0, 0]) == left // 2


def test_flip_and_reversal_probabilities(clip_folder: Path) -> None:
    dm = ClipDataModule(
        folder=clip_folder, frames=3, crop=16, val_crop=16, flip_p=1.0, reverse_p=1.0, samples_per_epoch=8
    )
    dm.setup("fit")
    item = dm.train_set[0]
    frames = frame_index(item)
    assert frames == [frames[0], frames[0] - 1, frames[0] - 2]
    row = item["y"][0, 0, 0]
    assert bool((row[1:] < row[:-1]).all()), "the luma ramp runs right to left after a flip"
    assert code(item["uv"][0, 0, 0, -1]) * 2 == code(item["y"][0, 0, 0, -1]), "chroma flipped with luma"


def test_validation_is_a_fixed_centre_crop_of_the_first_frames(clip_folder: Path) -> None:
    dm = ClipDataModule(
        folder=clip_folder, frames=2, crop=16, val_frames=3, val_crop=[32, 40], val_batch_size=2
    )
    dm.setup("fit")
    first = next(iter(dm.val_dataloader()))
    again = next(iter(dm.val_dataloader()))
    assert torch.equal(first["y"], again["y"])
    assert first["y"].shape == (2, 3, 1, 32, 40)
    # the 96x64 clip: the centre crop starts at column (96 - 40) / 2 = 28; frames 0, 1, 2
    item = dm.val_set[[r.info.width for r in dm.val_set.readers].index(96)]
    assert frame_index(item) == [0, 1, 2]
    assert code(item["y"][0, 0, 0, 0]) == 28


def test_no_or_unusable_clips_are_clear_errors(tmp_path: Path, clip_folder: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no training clips found.*empty"):
        ClipDataModule(folder=tmp_path / "empty").setup("fit")
    with pytest.raises(FileNotFoundError, match="no training clips found.*set data.clips or data.folder"):
        ClipDataModule().setup("fit")
    with pytest.raises(FileNotFoundError, match="no clip usable for training .*ramp"):
        ClipDataModule(folder=clip_folder, crop=128).setup("fit")
    with pytest.raises(ValueError, match="even"):
        ClipDataModule(folder=clip_folder, crop=33)


def test_short_clips_are_skipped_with_a_warning(clip_folder: Path, caplog) -> None:
    dm = ClipDataModule(clips=sorted(clip_folder.iterdir()), frames=6, crop=16, val_crop=16, val_frames=2)
    dm.setup("fit")
    assert [r.info.width for r in dm.train_set.readers] == [96]
    assert "ramp.y4m" in caplog.text


def test_workers_draw_different_crops_and_the_dataset_pickles(clip_folder: Path) -> None:
    dm = ClipDataModule(
        folder=clip_folder, frames=2, crop=16, val_crop=16, batch_size=1, samples_per_epoch=16, num_workers=2
    )
    dm.setup("fit")
    pickle.loads(pickle.dumps(dm.train_set))
    torch.manual_seed(0)
    items = [batch["y"] for batch in dm.train_dataloader()]
    assert len(items) == 16
    distinct = {tuple(item.flatten()[:64].tolist()) for item in items}
    assert len(distinct) > 8


def test_same_seed_same_crops(clip_folder: Path) -> None:
    def draw() -> torch.Tensor:
        torch.manual_seed(7)
        dm = ClipDataModule(
            folder=clip_folder, frames=2, crop=16, val_crop=16, batch_size=4, samples_per_epoch=8
        )
        dm.setup("fit")
        return torch.cat([b["y"] for b in dm.train_dataloader()])

    assert torch.equal(draw(), draw())


def test_embedded_data_module() -> None:
    dm = EmbeddedDataModule(
        frames=3, crop=64, batch_size=2, samples_per_epoch=4, val_frames=2, val_crop=[128, 128]
    )
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set.readers) == 4
    batch = next(iter(dm.train_dataloader()))
    assert batch["y"].shape == (2, 3, 1, 64, 64)
    val = next(iter(dm.val_dataloader()))
    assert val["y"].shape == (1, 2, 1, 128, 128)
    with pytest.raises(ValueError, match="its own clips"):
        EmbeddedDataModule(folder="/somewhere")
