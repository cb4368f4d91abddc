"""Vimeo90kDataModule and BVIDVCDataModule on miniature copies of the two data sets.

The miniatures are built from an embedded clip (real camera motion, 320x256): Vimeo-90k as
septuplets of 96x64 RGB PNGs in the published folder layout with list files, BVI-DVC as an x264
mp4 and a raw 10-bit .yuv made with ffmpeg. Because each septuplet / file is a window of a known
clip, frame order and colour conversion can be checked against frames read directly.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.bvi_dvc import BVIDVCDataModule
from datamodules.vimeo90k import Vimeo90kDataModule
from nvc_train.embedded import ensure_embedded_clips
from nvc_train.video import open_video
from nvc_train.video.colour import rgb_to_yuv420, yuv420_to_rgb

CLIP = "astronaut_pan"
W, H = 96, 64  # miniature Vimeo frame size (the real one is 448x256)
# (list file, entry, first clip frame, crop top, crop left) of each miniature septuplet
SEPTUPLETS = [
    ("train", "00001/0001", 0, 0, 0),
    ("train", "00001/0002", 7, 40, 64),
    ("train", "00002/0001", 14, 100, 200),
    ("test", "00002/0002", 21, 60, 100),
]
ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not on PATH")


@pytest.fixture(scope="module")
def clip_path() -> Path:
    return ensure_embedded_clips()[CLIP]


def write_vimeo(root: Path, clip: Path) -> Path:
    """A Vimeo-90k-shaped tree: sequences/<a>/<b>/im1..im7.png and both list files."""
    reader = open_video(clip)
    lists: dict[str, list[str]] = {"train": [], "test": []}
    for split, entry, first, top, left in SEPTUPLETS:
        folder = root / "sequences" / entry
        folder.mkdir(parents=True)
        for k, frame in enumerate(reader.read(first, 7)):
            y, u, v = frame.to_tensors()
            rgb = yuv420_to_rgb(y[0], u[0], v[0])[:, top : top + H, left : left + W]
            array = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(array).save(folder / f"im{k + 1}.png")
        lists[split].append(entry)
    (root / "sep_trainlist.txt").write_text("\n".join(lists["train"]) + "\n")
    (root / "sep_testlist.txt").write_text("\n".join(lists["test"]) + "\n")
    return root


@pytest.fixture(scope="module")
def vimeo_root(tmp_path_factory, clip_path: Path) -> Path:
    return write_vimeo(tmp_path_factory.mktemp("vimeo") / "vimeo_septuplet", clip_path)


def png_yuv(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The expected (y, uv) of one PNG: BT.709 limited range, rounded to 8-bit codes."""
    rgb = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255
    y, u, v = (torch.round(p * 255) / 255 for p in rgb_to_yuv420(rgb))
    return y, torch.cat([u, v], dim=0)


def vimeo_dm(root: Path, **kwargs) -> Vimeo90kDataModule:
    settings = dict(frames=3, crop=[32, 48], batch_size=2, val_crop=[32, 32], val_batch_size=1, num_workers=0)
    return Vimeo90kDataModule(root, **{**settings, **kwargs})


# --------------------------------------------------------------------------------------------------
# Vimeo-90k


def test_vimeo_batches_have_the_clip_layout_and_limited_range(vimeo_root: Path) -> None:
    dm = vimeo_dm(vimeo_root)
    dm.setup("fit")
    assert len(dm.train_set) == 3, "one item per septuplet of sep_trainlist.txt"
    batch = next(iter(dm.train_dataloader()))
    assert batch["y"].shape == (2, 3, 1, 32, 48) and batch["uv"].shape == (2, 3, 2, 16, 24)
    assert batch["y"].dtype == torch.float32
    # limited range: luma in [16, 235], chroma in [16, 240] (codes / 255)
    assert float(batch["y"].min()) >= 16 / 255 - 1e-6 and float(batch["y"].max()) <= 235 / 255 + 1e-6
    assert float(batch["uv"].min()) >= 16 / 255 - 1e-6 and float(batch["uv"].max()) <= 240 / 255 + 1e-6
    val = next(iter(dm.val_dataloader()))
    assert val["y"].shape == (1, 3, 1, 32, 32)


def test_vimeo_frames_are_consecutive_pngs_converted_bt709(vimeo_root: Path, clip_path: Path) -> None:
    dm = vimeo_dm(vimeo_root, frames=4, crop=[H, W], flip_p=0.0, reverse_p=0.0)
    dm.setup("fit")
    folder = vimeo_root / "sequences" / "00001" / "0002"
    expected = [png_yuv(folder / f"im{k}.png") for k in range(1, 8)]
    for _ in range(6):  # random starts
        item = dm.train_set[1]
        start = next(s for s in range(4) if torch.equal(item["y"][0], expected[s][0]))
        for t in range(4):
            assert torch.equal(item["y"][t], expected[start + t][0]), f"frame {t} is im{start + t + 1}"
            assert torch.equal(item["uv"][t], expected[start + t][1])
    # the YUV -> RGB -> YUV round trip through the PNG keeps the source clip's luma
    source = list(open_video(clip_path).read(7, 7))
    for t in range(7):
        original = source[t].y[40 : 40 + H, 64 : 64 + W].astype(np.float32)
        assert np.abs(expected[t][0][0].numpy() * 255 - original).mean() < 1.0


def test_vimeo_flip_reversal_and_fixed_validation(vimeo_root: Path) -> None:
    plain = vimeo_dm(vimeo_root, frames=3, crop=[H, W], flip_p=0.0, reverse_p=0.0, val_crop=None)
    plain.setup("fit")
    flipped = vimeo_dm(vimeo_root, frames=7, crop=[H, W], flip_p=1.0, reverse_p=1.0)
    flipped.setup("fit")
    item = flipped.train_set[0]
    folder = vimeo_root / "sequences" / "00001" / "0001"
    y7, uv7 = png_yuv(folder / "im7.png")
    assert torch.equal(item["y"][0], y7.flip(-1)) and torch.equal(item["uv"][0], uv7.flip(-1))
    val = plain.val_set[0]  # whole frames of the test septuplet, from im1
    y1, _ = png_yuv(vimeo_root / "sequences" / "00002" / "0002" / "im1.png")
    assert val["y"].shape == (3, 1, H, W) and torch.equal(val["y"][0], y1)
    assert torch.equal(plain.val_set[0]["y"], val["y"])


def test_vimeo_worker_loading(vimeo_root: Path) -> None:
    dm = vimeo_dm(vimeo_root, num_workers=2, samples_per_epoch=8)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 4 and all(b["y"].shape == (2, 3, 1, 32, 48) for b in batches)


def test_vimeo_layout_errors(tmp_path: Path, vimeo_root: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match=r"Vimeo-90k root not found: .*nowhere.*nothing is downloaded"
    ):
        vimeo_dm(tmp_path / "nowhere").setup("fit")
    (tmp_path / "flat").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no sep_trainlist.txt in .*flat: Vimeo-90k septuplet root"):
        vimeo_dm(tmp_path / "flat").setup("fit")
    broken = tmp_path / "broken"
    shutil.copytree(vimeo_root, broken)
    missing = [f"{90000 + i:05d}/0001" for i in range(13)]
    with (broken / "sep_trainlist.txt").open("a") as handle:
        handle.write("\n".join(missing) + "\n")
    with pytest.raises(FileNotFoundError) as error:
        vimeo_dm(broken).setup("fit")
    message = str(error.value)
    assert "13 of 16 septuplets listed in" in message and "90000/0001" in message
    assert "90009/0001" in message and "90010/0001" not in message and "and 3 more" in message
    shutil.rmtree(broken / "sequences")
    with pytest.raises(FileNotFoundError, match="no sequences/ folder"):
        vimeo_dm(broken).setup("fit")
    with pytest.raises(ValueError, match="larger than the Vimeo-90k frames"):
        vimeo_dm(vimeo_root, crop=128).setup("fit")
    with pytest.raises(ValueError, match="7 frames"):
        vimeo_dm(vimeo_root, frames=8)


# --------------------------------------------------------------------------------------------------
# BVI-DVC


@pytest.fixture(scope="module")
def bvi_root(tmp_path_factory, clip_path: Path) -> Path:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not on PATH")
    root = tmp_path_factory.mktemp("bvi") / "BVI-DVC"
    (root / "mp4").mkdir(parents=True)
    (root / "yuv").mkdir()
    source = ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", "320x256", "-r", "25", "-i", str(clip_path)]
    common = ["ffmpeg", "-v", "error", "-y", *source, "-frames:v", "16"]
    subprocess.run(
        [*common, "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv420p", "-g", "8",
         "-color_primaries", "bt709", "-color_trc", "bt709", "-colorspace", "bt709",
         str(root / "mp4" / "AAstronautPan_320x256_25fps_8bit_420.mp4")],
        check=True,
    )  # fmt: skip
    subprocess.run(
        [*common, "-f", "rawvideo", "-pix_fmt", "yuv420p10le",
         str(root / "yuv" / "AAstronautPan_320x256_25fps_10bit_420.yuv")],
        check=True,
    )  # fmt: skip
    return root


def bvi_dm(root: Path, **kwargs) -> BVIDVCDataModule:
    settings = dict(
        frames=3,
        crop=[64, 96],
        batch_size=2,
        samples_per_epoch=4,
        val_crop=[64, 64],
        val_frames=2,
        num_workers=0,
    )
    return BVIDVCDataModule(root, **{**settings, **kwargs})


@ffmpeg
def test_bvi_raw_10bit_frames_are_consecutive_and_exact(bvi_root: Path, clip_path: Path) -> None:
    dm = bvi_dm(bvi_root, source="auto", crop=[256, 320], flip_p=0.0, reverse_p=0.0, frames=4)
    dm.setup("fit")
    (reader,) = dm.train_set.readers
    assert reader.path.suffix == ".yuv" and reader.info.bit_depth == 10 and len(reader) == 16
    source = list(open_video(clip_path).read(0, 16))
    for _ in range(4):
        item = dm.train_set[0]
        assert item["y"].shape == (4, 1, 256, 320) and item["uv"].shape == (4, 2, 128, 160)
        assert float(item["y"].min()) >= 0.0 and float(item["y"].max()) <= 1.0
        codes = (item["y"][:, 0] * 1023).round().numpy()
        start = next(s for s in range(13) if np.abs(codes[0] / 4 - source[s].y).max() <= 1)
        for t in range(4):  # ffmpeg's 8 -> 10 bit scaling is x4 (+ at most one code)
            assert np.abs(codes[t] / 4 - source[start + t].y).max() <= 1, f"frame {t} is source {start + t}"


@ffmpeg
def test_bvi_mp4_through_decord_in_workers(bvi_root: Path) -> None:
    dm = bvi_dm(bvi_root, source="mp4", num_workers=2, samples_per_epoch=8, flip_p=0.0, reverse_p=0.0)
    dm.setup("fit")
    (reader,) = dm.train_set.readers
    assert (
        reader.path.suffix == ".mp4"
        and len(reader) == 16
        and (reader.info.width, reader.info.height) == (320, 256)
    )
    assert not reader._handles, "no decoder stays open in the main process (workers open their own)"
    batches = list(dm.train_dataloader())
    assert len(batches) == 4
    for batch in batches:
        assert batch["y"].shape == (2, 3, 1, 64, 96) and batch["uv"].shape == (2, 3, 2, 32, 48)
        assert float(batch["y"].min()) >= 0.0 and float(batch["y"].max()) <= 1.0
    val = next(iter(dm.val_dataloader()))
    assert val["y"].shape == (1, 2, 1, 64, 64)


@ffmpeg
def test_bvi_mp4_frames_are_consecutive(bvi_root: Path) -> None:
    dm = bvi_dm(bvi_root, source="mp4", crop=[256, 320], frames=3, flip_p=0.0, reverse_p=0.0)
    dm.setup("fit")
    direct = [f.y for f in open_video(next((bvi_root / "mp4").iterdir())).read()]
    for _ in range(4):
        codes = (dm.train_set[0]["y"][:, 0] * 255).round().numpy().astype(np.uint8)
        start = next(s for s in range(14) if np.array_equal(codes[0], direct[s]))
        assert all(np.array_equal(codes[t], direct[start + t]) for t in range(3))


def test_bvi_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"BVI-DVC root not found: .*nowhere"):
        bvi_dm(tmp_path / "nowhere").setup("fit")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.txt").write_text("not a video")
    with pytest.raises(FileNotFoundError, match=r"no BVI-DVC video files \(\*.mp4 or \*.yuv\) under .*empty"):
        bvi_dm(tmp_path / "empty").setup("fit")
    with pytest.raises(ValueError, match="data.source"):
        bvi_dm(tmp_path, source="avi")


# --------------------------------------------------------------------------------------------------
# The data modules in the real training config


def test_train_runs_on_vimeo90k(vimeo_root: Path, tmp_path: Path) -> None:
    from nvc_train.training.train import train
    from tests.test_train import SMALL_RUN, make_cfg

    cfg = make_cfg(
        tmp_path / "run", "data=vimeo90k", f"data.root={vimeo_root}", *SMALL_RUN, "data.num_workers=0",
        "data.pin_memory=false", "data.samples_per_epoch=null",
    )  # fmt: skip
    assert cfg.data._target_ == "datamodules.vimeo90k.Vimeo90kDataModule"
    out = train(cfg)
    assert out["global_step"] == 2


@ffmpeg
def test_train_runs_on_bvi_dvc(bvi_root: Path, tmp_path: Path) -> None:
    from nvc_train.training.train import train
    from tests.test_train import SMALL_RUN, make_cfg

    cfg = make_cfg(
        tmp_path / "run", "data=bvi_dvc", f"data.root={bvi_root}", "data.source=mp4", *SMALL_RUN,
        "data.num_workers=0", "data.pin_memory=false",
    )  # fmt: skip
    out = train(cfg)
    assert out["global_step"] == 2
