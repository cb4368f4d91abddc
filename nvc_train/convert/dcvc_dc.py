"""DCVC-DC: microsoft/DCVC's ``cvpr2023_image_*.pth.tar`` + ``cvpr2023_video_*.pth.tar`` -> one checkpoint.

``python -m nvc_train.convert dcvc_dc --image IMAGE.pth.tar --video VIDEO.pth.tar --out OUT.ckpt``

The published pairs are ``psnr`` (RGB), ``ssim`` and ``yuv420_psnr``; ``dcvc_dc`` codes YCbCr 4:4:4
upsampled from 4:2:0, the input the ``yuv420_psnr`` pair was trained on. As for DCVC-FM
(:mod:`nvc_train.convert.dcvc_fm`, whose steps this reuses), our parameters carry the official names
and shapes under ``intra.`` (``IntraNoAR``) and ``inter.`` (``DMC``), so the rename is the prefix;
any missing, unexpected or mis-shaped tensor is refused by name.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nvc_train.convert import dcvc_fm

__all__ = ["HALVES", "add_arguments", "convert"]

MODEL_NAME = "dcvc_dc"  # configs/model/dcvc_dc.yaml
HALVES = {"intra": "DCVC-DC intra IntraNoAR", "inter": "DCVC-DC P DMC"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommand's options."""
    dcvc_fm.add_arguments(parser, "cvpr2023_image_yuv420_psnr.pth.tar", "cvpr2023_video_yuv420_psnr.pth.tar")


def convert(args: argparse.Namespace) -> Path:
    """Check and load both official files into ``dcvc_dc``, build its coder tables, write the checkpoint."""
    return dcvc_fm.convert(args, MODEL_NAME, HALVES)
