"""Shared fixtures: the real test clips of ../shared/data/clips and the repository root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _clips_dir() -> Path:
    override = os.environ.get("NVC_TEST_CLIPS")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "data" / "clips"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def clips_dir() -> Path:
    """Folder of real .y4m clips (CI has it beside the clone); tests skip with the reason if absent."""
    directory = _clips_dir()
    if not directory.is_dir() or not any(directory.glob("*.y4m")):
        pytest.skip(f"real test clips not found in {directory} (set NVC_TEST_CLIPS to their folder)")
    return directory


_DECODE_FROM_CHECKPOINT = """
import sys
from pathlib import Path
from nvc_train.codecs.neural import NeuralCodec
from nvc_train.ctc import scan_folder
checkpoint, clips, bitstream, out, frames = sys.argv[1:]
sequence = scan_folder(clips, max_frames=int(frames))[0]
NeuralCodec.from_checkpoint(checkpoint).decode(Path(bitstream), sequence, Path(out))
"""


def decode_in_fresh_process(
    checkpoint: Path, clips: Path, bitstream: Path, out: Path, frames: int = 3
) -> subprocess.CompletedProcess[str]:
    """Decode ``bitstream`` in a new Python process that has only the checkpoint and the clip folder:
    the proof that a stream needs nothing of the encoding process."""
    return subprocess.run(
        [sys.executable, "-c", _DECODE_FROM_CHECKPOINT, str(checkpoint), str(clips), str(bitstream), str(out),
         str(frames)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def evaluate_fixture_clip(
    checkpoint: Path, inputs_npz: Path, size: str, folder: Path, *overrides: str
) -> tuple[Path, Path, list[dict[str, str]]]:
    """``evaluate.py ckpt=`` on the official fixture's frames of ``size`` ("72x104": H x W) written as a
    raw clip, no anchor, PSNR only, 3 frames, encoder reconstructions kept: the clip folder, the run
    folder and the rows of points.csv (the process must succeed)."""
    import csv

    import numpy as np

    clips, run_dir = folder / "clips", folder / "eval"
    clips.mkdir(parents=True, exist_ok=True)
    inputs = np.load(inputs_npz)
    planes = [inputs[f"{c}_{size}"] for c in "yuv"]
    height, width = size.split("x")
    raw = b"".join(b"".join(p[t].tobytes() for p in planes) for t in range(planes[0].shape[0]))
    (clips / f"cars_{width}x{height}_30.yuv").write_bytes(raw)
    command = [
        sys.executable, str(REPO_ROOT / "evaluate.py"), f"ckpt={checkpoint}", "ctc=folder",
        f"ctc.path={clips}", "~anchor", "frames=3", "metrics=[psnr]", "progress=false",
        "codec.encoder_reconstruction=true", *overrides, f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    with (run_dir / "points.csv").open() as handle:
        return clips, run_dir, list(csv.DictReader(handle))
