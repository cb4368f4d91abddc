"""Published checkpoints into this project: ``python -m nvc_train.convert <codec> ...``.

A converter reads an official checkpoint the way the official code does (weights only, with the
usual ``state_dict`` / ``net`` nesting and ``module.`` prefix), renames its tensors to ours by a
documented table, refuses any mismatch with one message naming every missing, unexpected or
mis-shaped tensor, and writes a checkpoint that ``evaluate.py ckpt=`` evaluates and ``train.py``
starts from (``callbacks.init_weights.path=``). The shared steps are in :mod:`nvc_train.convert.official`;
each codec's table and arguments are in its own module, listed in :data:`CONVERTERS`.
"""

from __future__ import annotations

CONVERTERS: dict[str, str] = {
    "dcvc_dc": "nvc_train.convert.dcvc_dc",  # microsoft/DCVC DCVC-DC: cvpr2023_image_* / _video_*.pth.tar
    "dcvc_fm": "nvc_train.convert.dcvc_fm",  # microsoft/DCVC DCVC-FM: cvpr2024_image / _video.pth.tar
    "dcvc_rt": "nvc_train.convert.dcvc_rt",  # microsoft/DCVC DCVC-RT: cvpr2025_image / _video.pth.tar
    "maskcrt": "nvc_train.convert.maskcrt",  # NYCU-MAPL/MaskCRT: models/PSNR/PSNR_Q2..Q5.pth.tar
    "ssf": "nvc_train.convert.ssf",  # CompressAI ssf2020 (ScaleSpaceFlow), one file per quality
}
"""Codec name -> the module with ``add_arguments(parser)`` and ``convert(args) -> Path``."""
