"""The complexity table of an evaluation run and the speed profile of a network (the review's Table 5).

Parameters and kMAC/px come from each codec's ``complexity(height, width)``
(:func:`nvc_train.complexity.codec_complexity` for neural codecs); encode / decode frames per second
of a neural network are measured on its real coding path (``compress_frame`` /
``decompress_frame``: analysis, entropy coding to bytes, synthesis; no file I/O) by
:func:`nvc_train.complexity.measure_fps` (warm-up rounds, device synchronisation around every timed
call, median of repeats). Conventional codecs keep the runner's timings of their points.

The frames are natural content: the first embedded clip resized to the test resolution, because
the entropy coder's speed depends on the symbols it codes (random noise would code far slower).

Used by ``evaluate(cfg)`` (complexity.csv) and by the ``ComplexityProfile`` callback (at fit start),
so both report the same figures; this module loads no Lightning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from nvc_train.codecs.neural import frozen_codec
from nvc_train.complexity import decode_chain, encode_chain, measure_fps, padded_size
from nvc_train.evaluation.tables import complexity_rows, device_name
from nvc_train.video.pad import pad_to_multiple


def natural_frames(
    height: int, width: int, count: int, device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` natural 4:2:0 frames ``(y (1,1,H,W), uv (1,2,H/2,W/2))``: the first embedded clip,
    resized (bilinear, antialiased) to ``height x width``."""
    from nvc_train.embedded import EMBEDDED_CLIPS, ensure_embedded_clips
    from nvc_train.video.readers import open_video

    spec = EMBEDDED_CLIPS[0]
    path = ensure_embedded_clips()[spec.name]
    if count > spec.info.num_frames:
        raise ValueError(f"at most {spec.info.num_frames} frames can be timed, asked for {count}")
    frames = []
    for frame in open_video(path, spec.info).read(0, count):
        y, u, v = frame.to_tensors()
        y = F.interpolate(y, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        uv = F.interpolate(
            torch.cat([u, v], dim=1), size=(height // 2, width // 2), mode="bilinear", antialias=True
        )
        frames.append((y.clamp(0, 1).to(device), uv.clamp(0, 1).to(device)))
    return frames


def profile_network(
    net: torch.nn.Module,
    name: str,
    height: int = 1080,
    width: int = 1920,
    frames: int = 3,
    warmup: int = 1,
    repeats: int = 3,
    q_index: int | None = None,
    device: str | torch.device | None = None,
    figures: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The Table 5 row (``COMPLEXITY_COLUMNS``) of a ``NeuralVideoCodec`` network at ``height x width``.

    Works on a frozen copy (the live network, its mode and its entropy tables are left alone).
    ``figures``: the codec's ``complexity(height, width)`` if already counted (kMAC/px at 1080p
    costs seconds on a CPU), else it is counted here.
    """
    if height <= 0 or width <= 0 or height % 2 or width % 2:
        raise ValueError(f"a 4:2:0 test resolution needs even positive sizes, got {height}x{width}")
    own = next(iter(net.parameters())).device
    target = torch.device(device) if device is not None else own
    q = int(net.num_q) // 2 if q_index is None else int(q_index)
    codec = frozen_codec(net, name, [q], target)
    figures = dict(figures) if figures is not None else codec.complexity(height, width)
    coded_net = codec.net
    padded_h, padded_w = padded_size(height, width, int(coded_net.pad_multiple))
    padded = []
    for y, uv in natural_frames(height, width, frames, target):
        y, _ = pad_to_multiple(y, coded_net.pad_multiple)
        uv, _ = pad_to_multiple(uv, coded_net.pad_multiple // 2)
        padded.append((y, uv))

    def encode(frame_list: list[tuple[torch.Tensor, torch.Tensor]]) -> list[bytes]:
        return [payload for payload, _ in encode_chain(coded_net, frame_list, q)]

    def decode(payloads: list[bytes]) -> None:
        decode_chain(coded_net, payloads, q, padded_h, padded_w)

    speed = measure_fps(encode, decode, padded, warmup=warmup, repeats=repeats, device=target)
    return {
        "codec": name,
        "family": codec.family,
        "params_m": figures.get("params_m"),
        "kmac_per_px": figures.get("kmac_per_px"),
        "kmac_per_px_intra": figures.get("kmac_per_px_intra"),
        "kmac_resolution": figures.get("kmac_resolution"),
        "enc_fps": speed["enc_fps"],
        "dec_fps": speed["dec_fps"],
        "resolution": f"{width}x{height}",
        "device": device_name(target),
        "fps_method": "model",
    }


def complexity_table_rows(
    codecs: Sequence[Any],
    rows: Sequence[Mapping[str, Any]],
    height: int,
    width: int,
    frames: int = 3,
    warmup: int = 1,
    repeats: int = 3,
) -> list[dict[str, Any]]:
    """complexity.csv rows of every coded codec of an evaluation run (what evaluate.py writes).

    Neural codecs (a ``net`` with ``compress_frame``) are profiled like the callback does at fit
    start, at ``height x width`` on their own device (``fps_method`` "model"); the others keep the
    runner's mean timings of their points (``complexity_rows``, ``fps_method`` "runner").
    """
    known = {codec.name: codec.complexity(height, width) for codec in codecs}
    table = {str(row["codec"]): row for row in complexity_rows(rows, known)}
    for codec in codecs:
        net = getattr(codec, "net", None)
        if net is not None and hasattr(net, "compress_frame"):
            device = getattr(codec, "device", None)
            table[codec.name] = profile_network(
                net,
                codec.name,
                height,
                width,
                frames,
                warmup,
                repeats,
                device=device,
                figures=known[codec.name],
            )
    return [table[name] for name in sorted(table)]
