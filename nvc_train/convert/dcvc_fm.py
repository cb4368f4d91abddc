"""DCVC-FM: microsoft/DCVC's ``cvpr2024_image.pth.tar`` + ``cvpr2024_video.pth.tar`` -> one checkpoint.

``python -m nvc_train.convert dcvc_fm --image IMAGE.pth.tar --video VIDEO.pth.tar --out OUT.ckpt``

The official code keeps its intra model (``DMCI``) and its P model (``DMC``) in two files; ours is one
network (:class:`models.dcvc_fm.DCVCFM`, ``configs/model/dcvc_fm.yaml``) with an ``intra`` and an
``inter`` half whose parameters carry the official names and shapes exactly, so the rename is the
half's prefix and nothing else (``intra.`` + a DMCI name, ``inter.`` + a DMC name). The expected
names and shapes are read from our model's own parameters (never from a file), so the check cannot
drift from the model it loads into. The official models hold no buffers; our coder tables
(``update()``) are built after loading and written with the weights.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import OmegaConf

from nvc_train.convert.official import ConversionError, convert_intra_inter
from nvc_train.networks import build_network

__all__ = ["HALVES", "add_arguments", "convert", "expected_official", "to_ours"]

MODEL_NAME = "dcvc_fm"  # configs/model/dcvc_fm.yaml: the published architecture
HALVES = {"intra": "DCVC-FM intra DMCI", "inter": "DCVC-FM P DMC"}  # our half -> what the file holds


def expected_official(net: torch.nn.Module) -> dict[str, dict[str, tuple[int, ...]]]:
    """Per half, the official names and shapes of our ``net``'s parameters (in its order)."""
    return {
        half: {name: tuple(p.shape) for name, p in getattr(net, half).named_parameters()} for half in HALVES
    }


def to_ours(official: Mapping[str, torch.Tensor], half: str) -> dict[str, torch.Tensor]:
    """An official state dict of one half (already checked) under our names: ``half.`` prefixed."""
    if half not in HALVES:
        raise ConversionError(f"unknown half {half!r}; expected one of {sorted(HALVES)}")
    return {f"{half}.{name}": tensor for name, tensor in official.items()}


def _model_config(model_name: str = MODEL_NAME) -> dict:
    """``configs/model/<model_name>.yaml`` as a plain dict (the architecture numbers of the checkpoint)."""
    path = Path(__file__).resolve().parents[2] / "configs" / "model" / f"{model_name}.yaml"
    config = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    assert isinstance(config, dict)
    return config


def add_arguments(
    parser: argparse.ArgumentParser,
    image: str = "cvpr2024_image.pth.tar",
    video: str = "cvpr2024_video.pth.tar",
) -> None:
    """The subcommand's options."""
    parser.add_argument("--image", required=True, type=Path, help=f"official intra model ({image})")
    parser.add_argument("--video", required=True, type=Path, help=f"official P model ({video})")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint to write (.ckpt)")


def convert(
    args: argparse.Namespace, model_name: str = MODEL_NAME, halves: Mapping[str, str] = HALVES
) -> Path:
    """Read both official files, check every tensor, load them into our model, build its tables, write."""
    config = _model_config(model_name)
    net = build_network(config, f"configs/model/{model_name}.yaml")
    expected = expected_official(net)
    files = {"intra": args.image, "inter": args.video}
    return convert_intra_inter(net, config, model_name, files, expected, to_ours, halves, args.out)
