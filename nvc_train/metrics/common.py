"""Pieces every metric module shares: the unavailable-metric path, one-line notices, pair checks.

A metric that cannot be computed honestly on this machine (no ffmpeg with libvmaf, no LPIPS backbone
weights, a plane too small for MS-SSIM) raises :class:`MetricUnavailable` or yields NaN; callers leave
its column empty and print one line saying why, once. A made-up score is never returned instead.
"""

from __future__ import annotations

import logging

from nvc_train.video.frame import YUVFrame

log = logging.getLogger("nvc_train.metrics")

_NOTICED: set[str] = set()


class MetricUnavailable(RuntimeError):
    """A metric cannot be computed here; the message is one line that says why and how to fix it."""


def notice_once(message: str) -> None:
    """Log ``message`` as a warning the first time it is seen in this process.

    Metrics run per frame and per sequence; a missing binary or weight file should cost the user one
    line in the log, not one line per frame.
    """
    if message not in _NOTICED:
        _NOTICED.add(message)
        log.warning(message)


def check_pair(reference: YUVFrame, distorted: YUVFrame) -> None:
    """Refuse to compare frames of different size or bit depth.

    Comparing a 10-bit reconstruction with an 8-bit source (or a padded frame with a cropped one)
    would give a plausible-looking but wrong number, so it is an error here rather than a rescale.
    """
    if reference.y.shape != distorted.y.shape:
        raise ValueError(
            f"frame sizes differ: reference {reference.width}x{reference.height}, "
            f"distorted {distorted.width}x{distorted.height}"
        )
    if reference.bit_depth != distorted.bit_depth:
        raise ValueError(
            f"bit depths differ: reference {reference.bit_depth}-bit, distorted {distorted.bit_depth}-bit"
        )
