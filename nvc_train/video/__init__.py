"""Raw YUV / y4m / container readers and writers, colour conversion, pad and crop.

Importing this package pulls in numpy only; torch is imported by the colour, pad and planes modules
and by the container reader when they are used, so metadata tools stay fast to start.
"""

from __future__ import annotations

import importlib
from typing import Any

from nvc_train.video.frame import VideoInfo, YUVFrame
from nvc_train.video.readers import (
    DecordReader,
    RawYUVReader,
    VideoFormatError,
    VideoReader,
    Y4MReader,
    Y4MWriter,
    YUVWriter,
    open_video,
    parse_yuv_name,
    write_y4m,
    write_yuv,
)

# Names served lazily (PEP 562) because their modules import torch.
_LAZY = {
    "rgb_to_ycbcr": "colour",
    "ycbcr_to_rgb": "colour",
    "rgb_to_yuv420": "colour",
    "yuv420_to_rgb": "colour",
    "yuv420_to_444": "colour",
    "yuv444_to_420": "colour",
    "pad_to_multiple": "pad",
    "crop_to": "pad",
    "pad_yuv420": "pad",
    "crop_yuv420": "pad",
    "pad_frame": "pad",
    "crop_frame": "pad",
    "load_planes": "planes",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"nvc_train.video.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    *_LAZY,
    "DecordReader",
    "RawYUVReader",
    "VideoFormatError",
    "VideoInfo",
    "VideoReader",
    "YUVFrame",
    "Y4MReader",
    "Y4MWriter",
    "YUVWriter",
    "open_video",
    "parse_yuv_name",
    "write_y4m",
    "write_yuv",
]
