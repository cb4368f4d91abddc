"""LPIPS (the ``lpips`` package, AlexNet trunk) on RGB converted from the YUV 4:2:0 frames.

LPIPS needs torchvision's ImageNet AlexNet weights (the LPIPS heads ship in the wheel). Constructing
``lpips.LPIPS(net="alex")`` without them tries a download, which on an offline machine fails after
seconds; so the weight file is looked for first (:func:`lpips_weights_path`) and, when it is absent,
:class:`MetricUnavailable` is raised with one line saying where to put it, and the column stays
empty. Random trunk weights (``pnet_rand=True``) are never used for a reported score.

YUV -> RGB follows the project's colour module: nearest (2x2) chroma upsampling, BT.709 matrix,
limited range, at the frame's bit depth; LPIPS then gets RGB scaled to [-1, 1].
"""

from __future__ import annotations

import importlib.util
import warnings
from functools import lru_cache
from pathlib import Path

from nvc_train.metrics.common import MetricUnavailable, check_pair
from nvc_train.video.frame import YUVFrame

#: torchvision checkpoint file of each LPIPS trunk, as torch.hub caches it.
TRUNK_WEIGHT_FILES: dict[str, str] = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


def lpips_weights_path(net: str = "alex") -> Path:
    """Where torch.hub looks for the trunk's ImageNet weights (``$TORCH_HOME/hub/checkpoints/...``)."""
    import torch

    if net not in TRUNK_WEIGHT_FILES:
        raise ValueError(f"unknown LPIPS net {net!r}; known: {', '.join(TRUNK_WEIGHT_FILES)}")
    return Path(torch.hub.get_dir()) / "checkpoints" / TRUNK_WEIGHT_FILES[net]


def lpips_unavailable_reason(net: str = "alex") -> str | None:
    """One-line reason why LPIPS cannot be computed here, or None when it can."""
    # find_spec, not import: importing lpips pulls in torchvision and costs seconds.
    if importlib.util.find_spec("lpips") is None:
        return "LPIPS not computed: the 'lpips' package is not installed"
    path = lpips_weights_path(net)
    if not path.is_file():
        return f"LPIPS not computed: torchvision ImageNet weights for net={net!r} not found at {path}"
    return None


@lru_cache(maxsize=4)
def _model(net: str, torch_hub_dir: str):
    """The LPIPS network, built once per (net, weight folder) and kept in eval mode."""
    import lpips

    with warnings.catch_warnings():  # lpips still passes torchvision's deprecated `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        return lpips.LPIPS(net=net, pretrained=True, pnet_rand=False, verbose=False).eval()


def load_lpips(net: str = "alex"):
    """The LPIPS model for ``net``; :class:`MetricUnavailable` (no network attempt) if weights are absent."""
    reason = lpips_unavailable_reason(net)
    if reason is not None:
        raise MetricUnavailable(reason)
    return _model(net, str(lpips_weights_path(net).parent))


def frame_to_rgb(frame: YUVFrame, matrix: str = "bt709"):
    """(1, 3, H, W) float32 R'G'B' in [0, 1]: nearest chroma upsampling, limited range ``matrix``."""
    from nvc_train.video.colour import yuv420_to_rgb

    y, u, v = frame.to_tensors()
    return yuv420_to_rgb(
        y, u, v, matrix=matrix, full_range=False, bit_depth=frame.bit_depth, upsample="nearest"
    ).float()


def frame_lpips(reference: YUVFrame, distorted: YUVFrame, net: str = "alex", matrix: str = "bt709") -> float:
    """LPIPS distance of one frame pair (lower is better; 0 for identical frames)."""
    import torch

    check_pair(reference, distorted)
    model = load_lpips(net)
    with torch.no_grad():
        ref = frame_to_rgb(reference, matrix) * 2.0 - 1.0
        dist = frame_to_rgb(distorted, matrix) * 2.0 - 1.0
        return float(model(ref, dist).reshape(-1)[0])
