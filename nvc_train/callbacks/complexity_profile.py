"""``ComplexityProfile``: the model's row of the review's Table 5, measured when the fit starts.

A thin user of :func:`nvc_train.evaluation.complexity.profile_network`, the same profile
evaluate.py writes into complexity.csv: parameters, kMAC/px (P and I frame) and encode / decode
frames per second of the network's real coding path on natural frames. The callback only picks
the moment (fit start, rank 0), writes the table into the run folder and logs it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from nvc_train.evaluation.complexity import profile_network
from nvc_train.evaluation.tables import COMPLEXITY_COLUMNS, write_complexity

log = logging.getLogger(__name__)

FPS_RULE_MODEL = (
    "FPS marked *: frames over the median seconds of {repeats} timed rounds after {warmup} warm-up "
    "round(s) of compress_frame / decompress_frame on {frames} frames (1 I + P frames) at {resolution}, "
    "entropy coding to bytes included, file I/O excluded, device synchronised around each timed call"
)


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
