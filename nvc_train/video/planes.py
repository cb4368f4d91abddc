"""A whole sequence as tensors: what a per-sequence fit and the tests of scene-adaptive codecs hold.

A scene-adaptive codec is fitted to every coded frame at once, so its frames live in memory as two
stacked tensors (a CIF clip of 32 frames is 19 MB as float32 4:2:0), padded to the network's
multiple with replicated edges (never resized; the codec crops its output back). Generic frame
loading, so it sits with the readers rather than with any data module.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from nvc_train.video.frame import VideoInfo
from nvc_train.video.pad import pad_frame
from nvc_train.video.readers import open_video


def load_planes(
    path: str | Path,
    info: VideoInfo | None = None,
    start: int = 0,
    count: int | None = None,
    multiple: int = 1,
) -> tuple[Tensor, Tensor, VideoInfo]:
    """All coded frames of a file as ``(y (T,1,H,W), uv (T,2,H/2,W/2))``, replicate-padded to ``multiple``.

    ``info`` describes a raw file (None: from the y4m header or the raw file's name); ``start`` and
    ``count`` select the frames. Returns the planes (float in [0, 1]) and the file's ``VideoInfo``.
    """
    reader = open_video(path, info)
    ys, uvs = [], []
    for frame in reader.read(start, count):
        padded, _ = pad_frame(frame, multiple)
        y, u, v = padded.to_tensors()
        ys.append(y[0])
        uvs.append(torch.cat([u, v], dim=1)[0])
    if not ys:
        raise ValueError(f"{path}: no frames to read from frame {start}")
    return torch.stack(ys), torch.stack(uvs), reader.info
