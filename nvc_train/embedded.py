"""The built-in default data set: short camera-motion clips made from photographs in scikit-image.

A newcomer with no data and no GPU must be able to train and evaluate end to end, so the framework
ships a data set that needs no download: real photographs bundled in the scikit-image wheel
(astronaut, coffee, chelsea, rocket), each turned into a short clip by a virtual camera that pans
and zooms over it with smooth sub-pixel motion. Real texture plus real (if global) motion is what
an inter codec needs to show that motion compensation works; noise or synthetic shapes would not.

Clips are rendered deterministically (float64 throughout, fixed paths, no randomness), converted
R'G'B' -> Y'CbCr 4:2:0 BT.709 limited range, 8-bit, and written as raw ``.yuv`` with a SHA-256
sidecar. :func:`ensure_embedded_clips` renders only what is missing or fails its sidecar.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nvc_train.atomic import atomic_write_text
from nvc_train.video.frame import VideoInfo, YUVFrame
from nvc_train.video.readers import YUVWriter

if TYPE_CHECKING:  # torch is imported where clips are rendered, so reading the table stays cheap
    import torch

# One row per clip. The camera moves from `start` to `end` with a cosine ease-in/ease-out:
# centre is (x, y) in source-image pixels, scale is source pixels per output pixel (> 1 shows more
# of the photograph; decreasing scale zooms in).
#   name                source        centre start   centre end    scale start, end  W    H   frames fps
_CLIP_TABLE = (
    ("astronaut_pan", "astronaut", (195.0, 200.0), (315.0, 200.0), 1.20, 1.20, 320, 256, 32, 30),
    ("coffee_zoom", "coffee", (300.0, 200.0), (320.0, 195.0), 1.45, 1.00, 320, 256, 32, 30),
    ("chelsea_zoom_out", "chelsea", (250.0, 140.0), (225.0, 150.0), 0.85, 1.10, 320, 256, 32, 30),
    ("rocket_tilt", "rocket", (330.0, 255.0), (320.0, 170.0), 1.30, 1.25, 320, 256, 32, 30),
)

# Bump when the rendering changes, so cached clips made by an older version are rendered again.
_GENERATOR_VERSION = 2
# Anti-alias blur (source pixels) applied before sampling at scale s: sigma = k * sqrt(s^2 - 1).
_ANTIALIAS_SIGMA_PER_SCALE = 0.45
_MATRIX = "bt709"
_BIT_DEPTH = 8


@dataclass(frozen=True)
class CameraMotion:
    """A virtual camera path over a photograph, eased in and out between two key poses."""

    start_center: tuple[float, float]
    end_center: tuple[float, float]
    start_scale: float
    end_scale: float

    def pose(self, t: float) -> tuple[float, float, float]:
        """(centre x, centre y, scale) at normalised time ``t`` in [0, 1].

        The cosine ease starts and stops the camera smoothly, like an operator would, so motion
        vectors vary across the clip instead of being one constant shift.
        """
        w = 0.5 - 0.5 * math.cos(math.pi * t)
        x = self.start_center[0] + w * (self.end_center[0] - self.start_center[0])
        y = self.start_center[1] + w * (self.end_center[1] - self.start_center[1])
        scale = self.start_scale + w * (self.end_scale - self.start_scale)
        return x, y, scale


@dataclass(frozen=True)
class ClipSpec:
    """One embedded clip: its name, the scikit-image photograph, the camera motion and the format."""

    name: str
    source: str
    motion: CameraMotion
    width: int
    height: int
    frames: int
    fps: int

    @property
    def file_name(self) -> str:
        """``<name>_<W>x<H>_<fps>.yuv``: the CTC naming habit, so tools can read it without metadata."""
        return f"{self.name}_{self.width}x{self.height}_{self.fps}.yuv"

    @property
    def info(self) -> VideoInfo:
        return VideoInfo(self.width, self.height, _BIT_DEPTH, float(self.fps), self.frames)

    def fingerprint(self) -> str:
        """Hash of everything that decides the clip's bytes; a change re-renders the cached file."""
        text = f"{self!r} version={_GENERATOR_VERSION} matrix={_MATRIX} depth={_BIT_DEPTH}"
        return hashlib.sha256(text.encode()).hexdigest()


EMBEDDED_CLIPS: tuple[ClipSpec, ...] = tuple(
    ClipSpec(name, source, CameraMotion(c0, c1, s0, s1), w, h, n, fps)
    for name, source, c0, c1, s0, s1, w, h, n, fps in _CLIP_TABLE
)


def default_cache_dir() -> Path:
    """``$NVC_CACHE_DIR/embedded``, else ``~/.cache/nvc_train/embedded``."""
    root = os.environ.get("NVC_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "nvc_train"
    return base / "embedded"


def _load_photograph(source: str) -> torch.Tensor:
    """The photograph as a float64 (3, H, W) tensor in [0, 1]; only images bundled in the wheel."""
    import numpy as np
    import skimage.data
    import torch

    bundled = ("astronaut", "coffee", "chelsea", "rocket")
    if source not in bundled:
        raise ValueError(f"{source!r} is not a bundled scikit-image photograph; use one of {bundled}")
    image = np.ascontiguousarray(getattr(skimage.data, source)())
    return torch.from_numpy(image).permute(2, 0, 1).to(torch.float64) / 255.0


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (3, H, W), reflect-padded: the camera's anti-alias filter."""
    import torch
    import torch.nn.functional as F

    if sigma <= 0.0:
        return image
    radius = max(1, math.ceil(3.0 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    batch = image[:, None]  # (3, 1, H, W): each channel filtered alone
    batch = F.pad(batch, (radius, radius, radius, radius), mode="reflect")
    batch = F.conv2d(batch, kernel.view(1, 1, 1, -1))
    batch = F.conv2d(batch, kernel.view(1, 1, -1, 1))
    return batch[:, 0]


def _check_inside(spec: ClipSpec, src_h: int, src_w: int, x: float, y: float, scale: float, t: float) -> None:
    half_w = 0.5 * (spec.width - 1) * scale
    half_h = 0.5 * (spec.height - 1) * scale
    if x - half_w < 0 or y - half_h < 0 or x + half_w > src_w - 1 or y + half_h > src_h - 1:
        raise ValueError(
            f"clip {spec.name}: the camera window at t={t:.2f} (centre {x:.1f},{y:.1f}, scale {scale:.2f}) "
            f"leaves the {src_w}x{src_h} photograph {spec.source!r}"
        )


def render_clip(spec: ClipSpec) -> list[YUVFrame]:
    """Render one clip: bicubic resampling of the (anti-aliased) photograph along the camera path.

    Sampling positions are pixel centres mapped through the camera pose, so motion is sub-pixel
    and smooth; the window never leaves the photograph (checked), so no border is invented.
    """
    import torch
    import torch.nn.functional as F

    from nvc_train.video.colour import rgb_to_yuv420

    photo = _load_photograph(spec.source)
    src_h, src_w = photo.shape[-2:]
    cols = torch.arange(spec.width, dtype=torch.float64) - 0.5 * (spec.width - 1)
    rows = torch.arange(spec.height, dtype=torch.float64) - 0.5 * (spec.height - 1)
    frames = []
    for index in range(spec.frames):
        t = index / (spec.frames - 1) if spec.frames > 1 else 0.0
        x, y, scale = spec.motion.pose(t)
        _check_inside(spec, src_h, src_w, x, y, scale, t)
        sigma = _ANTIALIAS_SIGMA_PER_SCALE * math.sqrt(max(scale * scale - 1.0, 0.0))
        blurred = _gaussian_blur(photo, sigma)
        # grid_sample with align_corners=True maps -1 / +1 to the centres of the edge pixels.
        gx = (x + scale * cols) / (src_w - 1) * 2.0 - 1.0
        gy = (y + scale * rows) / (src_h - 1) * 2.0 - 1.0
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None]
        rgb = F.grid_sample(blurred[None], grid, mode="bicubic", padding_mode="border", align_corners=True)
        rgb = rgb[0].clamp(0.0, 1.0)  # bicubic overshoots a little at sharp edges
        planes = rgb_to_yuv420(rgb, matrix=_MATRIX, full_range=False, bit_depth=_BIT_DEPTH)
        frames.append(YUVFrame.from_tensors(*planes, bit_depth=_BIT_DEPTH))
    return frames


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _is_current(path: Path, spec: ClipSpec) -> bool:
    """True when the clip exists, its sidecar was written for this spec and the bytes match it."""
    sidecar = _sidecar(path)
    if not path.is_file() or not sidecar.is_file():
        return False
    try:
        stored = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(stored, dict) or stored.get("spec") != spec.fingerprint():
        return False
    return stored.get("sha256") == _sha256(path)


def ensure_embedded_clips(directory: Path | None = None) -> dict[str, Path]:
    """Make sure every embedded clip is on disk and intact; return ``{clip name: .yuv path}``.

    A clip is rendered only when its file or its SHA-256 sidecar is missing, or they disagree
    (a corrupted or truncated file, or one made by another generator version). Files and sidecars
    are written atomically (temporary file + ``os.replace``), so concurrent callers (DDP ranks) and
    killed runs never leave a clip that passes the check but is wrong. The sidecar is written
    after the clip, so a run killed in between just renders it again.
    """
    directory = Path(directory) if directory is not None else default_cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for spec in EMBEDDED_CLIPS:
        path = directory / spec.file_name
        if not _is_current(path, spec):
            with YUVWriter(path) as writer:
                for frame in render_clip(spec):
                    writer.write(frame)
            record = {"sha256": _sha256(path), "spec": spec.fingerprint(), "file": spec.file_name}
            atomic_write_text(_sidecar(path), json.dumps(record, indent=2) + "\n")
        paths[spec.name] = path
    return paths
