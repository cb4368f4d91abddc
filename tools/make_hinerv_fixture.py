"""Make tests/fixtures/official/hinerv/: the official HiNeRV's output for known weights, in our names.

Imports the official code (github hmkx/HiNeRV, a checkout given by --hinerv-src) at run time, never
copies it. Builds a small official HiNeRV (the UVG configs' structure: ConvNeXt blocks, scales
5 3 2 2, two base grid levels, three encoding levels; narrower and shallower so the fixture is a few
hundred KB), sets every parameter to random values of a useful size (the official start has zero
biases and grids in +-1e-3, which would make every output nearly 0.5), renames and reshapes them to
ours (models.hinerv.HiNeRV), runs the official whole-frame (eval) path on a few frames and saves::

    fixture.pt: {"architecture": our HiNeRV's keywords, "state": our state_dict, "frames": (F,) long,
                 "rgb": (F, 3, H, W) the official output}

tests/test_hinerv_official.py loads the state into our network and checks that it computes the same
RGB. Run in an environment where the official model builds (torch, timm)::

    python tools/make_hinerv_fixture.py --hinerv-src /path/to/HiNeRV [--out tests/fixtures/official/hinerv]
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

import torch

HEIGHT, WIDTH, FRAMES = 120, 180, 6
# The official command line of the small model (the cfgs/models/uvg-hinerv-* structure).
OFFICIAL_ARGS = (
    "--block-type convnext --channels 32 --channels-reduce 2.0 --depths 2 1 1 1 --exps 4. 4. 4. 1. "
    "--stem-kernels 3 --kernels 3 3 3 3 --scales-t 1 1 1 1 --scales-hw 5 3 2 2 --stem-paddings -1 -1 -1 "
    "--paddings -1 -1 -1 --base-size -1 -1 -1 --base-grid-size 4 -1 -1 2 --base-grid-level 2 "
    "--base-grid-level-scale 2. 1. 1. 0.5 --enc-type normalized+temp_local_grid --enc-grid-size -1 4 "
    "--enc-grid-level 3 --enc-grid-level-scale 2. 0.5 --enc-grid-depth-scale 1. 0.5 "
    "--upsample-type trilinear --upsample-config matmul-th-w"
)
# The same network as our architecture keywords.
ARCHITECTURE = {
    "height": HEIGHT, "width": WIDTH, "num_frames": FRAMES, "structure": "ra", "intra_period": -1,
    "gop_size": 1, "channels": 32, "channels_reduce": 2.0, "depths": [2, 1, 1, 1],
    "expansions": [4.0, 4.0, 4.0, 1.0], "kernels": [3, 3, 3, 3], "scales": [5, 3, 2, 2],
    "stem_kernel": 3, "base_grid_frames": 4, "base_grid_channels": 2, "base_grid_levels": 2,
    "encoding_frames": 0, "encoding_channels": 4, "encoding_levels": 3, "encoding_depth_scale": 0.5,
    "grid_init_scale": 0.001, "colour_matrix": "bt709",
}  # fmt: skip


def our_name_and_shape(name: str, value: torch.Tensor, scales: list[int]) -> tuple[str, torch.Tensor]:
    """An official parameter's name and value in models.hinerv.HiNeRV's terms."""
    parts = name.split(".")
    if parts[0] == "encoding":  # encoding.grids.L.weight (T*H*W, C) -> base_grids.grids.L (T, H, W, C)
        level = int(parts[2])
        slices = max(ARCHITECTURE["base_grid_frames"] // 2**level, 1)
        base = (HEIGHT // 60, WIDTH // 60)
        return f"base_grids.grids.{level}", value.view(slices, *base, -1)
    if parts[1] == "stem":  # decoder.stem.conv.{weight,bias}
        return f"stem.{parts[3]}", value
    if parts[1] == "head":  # decoder.head.linear.{weight,bias}
        return f"head.{parts[3]}", value
    stage, layer = int(parts[2]), int(parts[3])  # decoder.blocks.S.L....
    scale = scales[stage]
    if layer == 1:  # the PositionalEncoder: enc.grids.L.weight (T, s*s*C) or enc.linear.*
        if parts[5] == "grids":
            return f"stages.{stage}.encoding.grids.{parts[6]}", value.view(value.shape[0], scale, scale, -1)
        return f"stages.{stage}.encoding_projection.{parts[6]}", value
    ours = {"dconv": "depthwise", "fc1": "expand", "fc2": "project"}[parts[4]]
    return f"stages.{stage}.blocks.{layer - 2}.{ours}.{parts[5]}", value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hinerv-src", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/official/hinerv"))
    options = parser.parse_args()
    sys.path.insert(0, str(options.hinerv_src))
    from models import hinerv as official  # the official package, from --hinerv-src

    args_parser = argparse.ArgumentParser()
    official.set_args(args_parser)
    args = args_parser.parse_args(shlex.split(OFFICIAL_ARGS))
    torch.manual_seed(0)
    model = official.build_model(args, logging.getLogger("hinerv"), {"video_size": (FRAMES, HEIGHT, WIDTH)})
    generator = torch.Generator().manual_seed(1)
    state = {}
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            spread = 0.5 if "grids" in name else 0.1 if name.endswith("bias") else None
            if spread is None:  # weights: keep the default init's scale, fresh values
                spread = float(parameter.abs().max())
            parameter.copy_((torch.rand(parameter.shape, generator=generator) * 2 - 1) * spread)
            ours, value = our_name_and_shape(name, parameter.detach().clone(), ARCHITECTURE["scales"])
            state[ours] = value.contiguous()
    model.eval()
    frames = torch.tensor([0, 2, 5])
    outputs = []
    with torch.no_grad():
        for frame in frames.tolist():
            batch = {"idx": torch.tensor([[frame, 0, 0]]), "idx_max": (FRAMES, 1, 1),
                     "video_size": (FRAMES, HEIGHT, WIDTH), "patch_size": (1, HEIGHT, WIDTH)}  # fmt: skip
            outputs.append(model(batch)[:, :, 0])  # (1, 3, H, W)
    options.out.mkdir(parents=True, exist_ok=True)
    path = options.out / "fixture.pt"
    torch.save(
        {"architecture": ARCHITECTURE, "state": state, "frames": frames, "rgb": torch.cat(outputs)}, path
    )
    print(f"wrote {path} ({path.stat().st_size} bytes, {len(state)} tensors)")


if __name__ == "__main__":
    main()
