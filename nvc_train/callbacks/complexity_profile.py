"""``ComplexityProfile``: the model's row of the review's Table 5, measured when the fit starts.

Parameters, kMAC/px (P and I frame, :func:`nvc_train.complexity.codec_complexity` through
``NeuralCodec.complexity``, the same count evaluate.py reports) and encode / decode frames per
second of the network's real coding path (``compress_frame`` / ``decompress_frame``: analysis,
entropy coding to bytes, synthesis; no file I/O), timed by :func:`nvc_train.complexity.measure_fps`
(warm-up rounds, device synchronisation around every timed call, median of repeats).

The frames are natural content: the first embedded clip resized to the test resolution, because
the entropy coder's speed depends on the symbols it codes (random noise would code far slower).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer

from nvc_train.complexity import decode_chain, encode_chain, measure_fps, padded_size
from nvc_train.evaluation.tables import COMPLEXITY_COLUMNS, complexity_rows, device_name, write_complexity

log = logging.getLogger(__name__)

FPS_RULE_MODEL = (
    "FPS marked *: frames over the median seconds of {repeats} timed rounds after {warmup} warm-up "
    "round(s) of compress_frame / decompress_frame on {frames} frames (1 I + P frames) at {resolution}, "
    "entropy coding to bytes included, file I/O excluded, device synchronised around each timed call"
)


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
    from nvc_train.callbacks.ctc_evaluation import frozen_codec
    from nvc_train.video.pad import pad_to_multiple

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


class ComplexityProfile(Callback):
    """At fit start (rank 0): the model's Table 5 row, logged and written as complexity.csv / .md.

    Args:
        height, width: the test resolution (papers: 1080 x 1920; the default config uses the
            embedded clips' 256 x 320 so that a CPU run pays seconds, not minutes).
        frames: frames coded per timed round (1 I frame, then P frames).
        warmup, repeats: untimed and timed rounds (the median of the timed ones is reported).
        q_index: the rate point timed; None: the middle one.
        out_dir: where complexity.csv / .md go; None: the run folder.
    """

    def __init__(
        self,
        height: int = 256,
        width: int = 320,
        frames: int = 3,
        warmup: int = 1,
        repeats: int = 2,
        q_index: int | None = None,
        out_dir: str | Path | None = None,
    ) -> None:
        if frames < 1 or warmup < 0 or repeats < 1:
            raise ValueError(
                f"frames and repeats must be >= 1, warmup >= 0; got {frames}, {repeats}, {warmup}"
            )
        self.height, self.width = int(height), int(width)
        self.frames, self.warmup, self.repeats = int(frames), int(warmup), int(repeats)
        self.q_index = q_index
        self.out_dir = Path(out_dir) if out_dir is not None else None
        #: The measured row (rank 0), also returned by :meth:`profile`.
        self.row: dict[str, Any] | None = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            self.profile(trainer, pl_module)

    def profile(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        config: Mapping[str, Any] = getattr(pl_module, "nvc_config", None) or {}
        name = str(config.get("model_name") or type(pl_module.net).__name__.lower())
        row = profile_network(
            pl_module.net,
            name,
            self.height,
            self.width,
            self.frames,
            self.warmup,
            self.repeats,
            self.q_index,
            pl_module.device,
        )
        self.row = row
        rule = FPS_RULE_MODEL.format(
            repeats=self.repeats, warmup=self.warmup, frames=self.frames, resolution=row["resolution"]
        )
        write_complexity(self.out_dir or Path(trainer.default_root_dir), [row], fps_rule=rule)
        scalars = {
            f"complexity/{key}": float(row[key])
            for key in ("params_m", "kmac_per_px", "kmac_per_px_intra", "enc_fps", "dec_fps")
            if row.get(key) is not None
        }
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=trainer.global_step)
        from nvc_train.callbacks.wandb_media import log_complexity_to_wandb

        log_complexity_to_wandb(trainer, row, COMPLEXITY_COLUMNS)
        log.info(
            "complexity of %s at %s on %s: %.3f M params, %.1f kMAC/px (P), encode %.2f fps, decode %.2f fps",
            name,
            row["resolution"],
            row["device"],
            row["params_m"],
            row["kmac_per_px"],
            row["enc_fps"],
            row["dec_fps"],
        )
        return row
