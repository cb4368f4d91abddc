"""How well the classical flow that seeds P frames predicts real frames, and what it costs.

Not a test: prints, for consecutive frames of shared clips (luma, a centre crop), the PSNR of the
previous frame as the prediction (no motion), of ``warp(previous, estimate_flow(...))`` with the flow
rounded to 1/64 pel as a decoder would use it, and the estimate's milliseconds (one thread)::

    .venv/bin/python bench/motion_flow.py --clips dog_352x288_32f cars_320x240_30f --frames 4

``--opencv-python PY`` (a Python that has ``cv2``, e.g. Cool-Chic's venv) adds OpenCV's Farneback
flow with the parameters our Cool-Chic checkout uses in place of RAFT, warped by the same filter:
the stand-in Cool-Chic's own P frames are seeded with on this machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from nvc_train.video.motion import estimate_flow, warp  # noqa: E402

_FARNEBACK = """
import sys, numpy as np, cv2
frames = np.load(sys.argv[1])
flows = [cv2.calcOpticalFlowFarneback(frames[k], frames[k - 1], None, 0.5, 4, 15, 5, 7, 1.5, 0)
         for k in range(1, len(frames))]
np.save(sys.argv[2], np.stack(flows).transpose(0, 3, 1, 2))
"""


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10((a - b).pow(2).mean()))


def luma_frames(path: Path, frames: int, width: int, height: int) -> np.ndarray:
    """``frames`` 8-bit luma centre crops of a clip, ``[T, H, W]`` uint8."""
    from nvc_train.video.readers import open_video

    reader = open_video(path)
    info = reader.info
    top, left = (info.height - height) // 2, (info.width - width) // 2
    out = []
    for frame in reader.read(0, min(frames, len(reader))):
        y = frame.y[top : top + height, left : left + width].astype(np.int32)
        out.append((y >> (info.bit_depth - 8)).astype(np.uint8))
    return np.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", nargs="+", default=["dog_352x288_32f", "cars_320x240_30f"])
    parser.add_argument("--clips-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "clips")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", default="176x144", help="centre crop WxH")
    parser.add_argument("--opencv-python", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    width, height = (int(v) for v in args.size.split("x"))
    print("clip          frame  no motion dB  ours dB  ours ms  Farneback dB")
    for name in args.clips:
        source = args.clips_dir / f"{name}.y4m"
        if not source.is_file():
            sys.exit(f"clip not found: {source}")
        luma = luma_frames(source, args.frames, width, height)
        farneback = None
        if args.opencv_python is not None:
            with tempfile.TemporaryDirectory() as tmp:
                np.save(Path(tmp) / "frames.npy", luma)
                command = [str(args.opencv_python), "-c", _FARNEBACK, f"{tmp}/frames.npy", f"{tmp}/flows.npy"]
                subprocess.run(command, check=True)
                farneback = torch.from_numpy(np.load(Path(tmp) / "flows.npy")).float()
        frames = torch.from_numpy(luma).float().div(255)[:, None]
        for k in range(1, len(frames)):
            previous, current = frames[k - 1 : k], frames[k : k + 1]
            started = time.perf_counter()
            flow = estimate_flow(current, previous)
            ms = (time.perf_counter() - started) * 1e3
            ours = psnr(warp(previous, flow, accuracy=64), current)
            other = (
                ""
                if farneback is None
                else f"{psnr(warp(previous, farneback[k - 1 : k], accuracy=64), current):.2f}"
            )
            still = psnr(previous, current)
            print(f"{name.split('_')[0]:<13} {k:<6} {still:<13.2f} {ours:<8.2f} {ms:<8.1f} {other}")


if __name__ == "__main__":
    main()
