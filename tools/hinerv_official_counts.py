"""Parameters and kMAC/px of the official HiNeRV sizes, counted on the official code itself.

Makes again the reference figures of ``models.hinerv.REFERENCE`` (pinned by
tests/test_hinerv_official.py), from a checkout of github hmkx/HiNeRV that is imported at run time,
never copied. Run it in an environment where the official model builds (it needs ``timm``; the
training script's deepspeed is not imported)::

    python tools/hinerv_official_counts.py --hinerv-src /path/to/HiNeRV [--sizes s m l xl xxl]

Each size is built from ``cfgs/models/uvg-hinerv-<size>_1920x1080.txt`` for a video of
``--frames`` x ``--height`` x ``--width`` (600 x 1080 x 1920 by default); parameters are
``sum(p.numel())`` of the model, MACs are ``FlopCounterMode``'s FLOPs / 2 of one frame in eval mode
(the official whole-frame path), per pixel. A 1080p XXL frame needs about 10 GB of memory.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode


def build_official(source: Path, size: str, frames: int, height: int, width: int) -> torch.nn.Module:
    """The official HiNeRV of ``size`` for a ``frames`` x ``height`` x ``width`` video."""
    sys.path.insert(0, str(source))
    from models import hinerv as official  # the official package, from --hinerv-src

    parser = argparse.ArgumentParser()
    official.set_args(parser)
    config = source / "cfgs" / "models" / f"uvg-hinerv-{size}_1920x1080.txt"
    tokens = [t for t in shlex.split(config.read_text()) if t not in ("--model", "HiNeRV")]
    args = parser.parse_args(tokens)
    return official.build_model(args, logging.getLogger("hinerv"), {"video_size": (frames, height, width)})


def count(model: torch.nn.Module, frames: int, height: int, width: int) -> tuple[int, float]:
    """(parameters, kMAC per pixel) of one frame, whole-frame (eval) path."""
    model = model.eval().requires_grad_(False)
    batch = {
        "idx": torch.tensor([[frames // 2, 0, 0]]),
        "idx_max": (frames, 1, 1),
        "video_size": (frames, height, width),
        "patch_size": (1, height, width),
    }
    with FlopCounterMode(display=False) as counter:
        model(batch)
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() / 2 / (height * width) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hinerv-src", type=Path, required=True, help="a checkout of github hmkx/HiNeRV")
    parser.add_argument("--sizes", nargs="+", default=["s", "m", "l", "xl", "xxl"])
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--width", type=int, default=1920)
    options = parser.parse_args()
    if not (options.hinerv_src / "models" / "hinerv.py").is_file():
        parser.error(f"{options.hinerv_src} is not a HiNeRV checkout (no models/hinerv.py)")
    print("size  parameters  kMAC/px")
    for size in options.sizes:
        torch.manual_seed(0)
        model = build_official(options.hinerv_src, size, options.frames, options.height, options.width)
        params, kmac = count(model, options.frames, options.height, options.width)
        print(f"{size:<5} {params:>10,}  {kmac:.2f}")
        del model


if __name__ == "__main__":
    main()
