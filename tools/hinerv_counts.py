"""Parameters and kMAC/px of our HiNeRV sizes, counted on the ``meta`` device (seconds, no memory).

    python tools/hinerv_counts.py [--sizes hinerv_s hinerv_m ...] [--height 1080 --width 1920 --frames 600]

The same counter as every model's (``nvc_train.complexity.count_macs``: conv / matmul MACs of one
whole frame); tools/hinerv_official_counts.py prints the official code's figures to compare.
"""

from __future__ import annotations

import argparse

import torch

from models import build_model
from nvc_train.complexity import count_macs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", nargs="+", default=["hinerv_s", "hinerv_m", "hinerv_l", "hinerv_xl", "hinerv_xxl"]
    )
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--width", type=int, default=1920)
    options = parser.parse_args()
    print("model        parameters  kMAC/px")
    for name in options.sizes:
        with torch.device("meta"):
            net = build_model(name, height=options.height, width=options.width, num_frames=options.frames)
        macs = count_macs(net.frames_forward, torch.zeros(1, dtype=torch.long, device="meta"))
        params = sum(p.numel() for p in net.parameters())
        print(f"{name:<12} {params:>10,}  {macs / (options.height * options.width) / 1e3:.2f}")


if __name__ == "__main__":
    main()
