"""One RD point = one (codec, sequence, rate point) job, and the row it leaves in points.csv.

Bits are counted by the runner (:mod:`nvc_train.evaluation.runner`) from the size of the bitstream
file on disk; :func:`rate_columns` turns that count into the row's bits, bpp and kbps, and
:func:`estimated_bpp` reads the entropy model's estimate logged beside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nvc_train.codecs.base import Codec, RatePoint
from nvc_train.ctc import CTCSequence
from nvc_train.structure import CodingStructure

# points.csv columns, in order (DESIGN.md "Results"); extra bookkeeping columns follow them.
POINT_COLUMNS = [
    "codec", "family", "class", "sequence", "rate_point", "width", "height", "frames", "fps",
    "bit_depth", "bits", "bpp", "kbps", "psnr_y", "psnr_u", "psnr_v", "psnr_yuv", "msssim_y",
    "msssim_yuv", "vmaf", "lpips", "enc_s", "dec_s", "enc_fps", "dec_fps", "est_bits", "structure",
    "bitstream", "codec_description",
]  # fmt: skip


@dataclass(frozen=True)
class Job:
    """Encode ``sequence`` at ``rate_point`` with ``codec``, decode the file, measure it.

    ``store`` / ``store_key``: a point of a several-codec run lives in the shared point store
    (:mod:`nvc_train.evaluation.store`) under a folder named by the hash of what it measured, so that
    other runs find it; a single-codec run keeps its points inside its run folder.
    """

    codec: Codec
    sequence: CTCSequence
    rate_point: RatePoint
    store: Path | None = None
    store_key: str = ""

    @property
    def key(self) -> str:
        return f"{self.codec.name}/{self.sequence.test_set}/{self.sequence.name}/{self.rate_point}"

    def base(self, run_dir: Path) -> Path:
        """The folder that the row's ``bitstream`` path is relative to: the store, else the run folder."""
        return self.store if self.store is not None else run_dir

    def folder(self, run_dir: Path) -> Path:
        """Where the bitstream, the (optional) reconstruction and result.json of this point live."""
        if self.store is not None:
            return (
                self.store
                / self.codec.name
                / self.sequence.test_set
                / self.sequence.name
                / f"rp{self.rate_point}-{self.store_key}"
            )
        return (
            run_dir
            / "points"
            / self.codec.name
            / self.sequence.test_set
            / self.sequence.name
            / (f"rp{self.rate_point}")
        )


def rate_columns(bits: int, sequence: CTCSequence) -> dict[str, float]:
    """bits per pixel and kbit/s of a stream of ``bits`` covering the coded frames of ``sequence``."""
    info = sequence.info
    seconds = info.num_frames / info.fps
    return {
        "bits": bits,
        "bpp": bits / (info.width * info.height * info.num_frames),
        "kbps": bits / seconds / 1000.0,
    }


def estimated_bpp(row: Mapping[str, Any]) -> float:
    """The entropy model's estimate of a points.csv row, in bpp; NaN for codecs that give none.

    Shown beside the file's bpp (the CTC callback's scalars, its W&B tables), so that the coding
    overhead, file bits over estimated bits, stays visible.
    """
    est = row.get("est_bits")
    if est in (None, ""):
        return math.nan
    return float(est) / (float(row["width"]) * float(row["height"]) * float(row["frames"]))


def point_identity(job: Job, structure: CodingStructure) -> dict[str, Any]:
    """The columns that say what was coded; a stored result whose identity differs is stale."""
    info = job.sequence.info
    return {
        "codec": job.codec.name,
        "family": job.codec.family,
        "class": job.sequence.test_set,
        "sequence": job.sequence.name,
        "rate_point": job.rate_point,
        "width": info.width,
        "height": info.height,
        "frames": info.num_frames,
        "fps": info.fps,
        "bit_depth": info.bit_depth,
        "structure": structure_label(structure),
        "codec_description": job.codec.description(),
    }


def is_same_point(stored: dict[str, Any], identity: dict[str, Any]) -> bool:
    """True when a result.json on disk measured exactly the point now asked for."""
    for key, value in identity.items():
        other = stored.get(key)
        if isinstance(value, float) or isinstance(other, float):
            if other is None or not math.isclose(float(other), float(value), rel_tol=1e-9):
                return False
        elif str(other) != str(value):
            return False
    return True


def structure_label(structure: CodingStructure) -> str:
    """A short text for tables: kind, intra period and GOP size (e.g. 'ld ip=96 gop=1')."""
    return f"{structure.kind} ip={structure.intra_period} gop={structure.gop_size}"
