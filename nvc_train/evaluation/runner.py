"""The one evaluation runner: every codec family goes through the same jobs.

For each job (codec, sequence, rate point): encode the coded frames to a file, decode that file,
measure the decoded frames against the source, count bits from the file, and leave
``result.json`` beside the bitstream. A re-run skips points whose result.json measured the same
thing; several processes share the job list by rank (``jobs[rank::world_size]``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nvc_train.atomic import atomic_write_json
from nvc_train.codecs.base import Codec
from nvc_train.ctc import CTCSequence
from nvc_train.evaluation.points import Job, is_same_point, point_identity, rate_columns
from nvc_train.structure import CodingStructure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    """Which slice of the job list this process runs; rank 0 also merges the results."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls, rank: int | None = None, world_size: int | None = None) -> Shard:
        """Rank and world size from arguments, else torchrun's or SLURM's environment, else 0 / 1.

        Under SLURM a job array counts too (``sbatch --array=0-7``: one shard per array task, e.g.
        one point each for scene-adaptive codecs): the array index times the tasks per job plus
        ``SLURM_PROCID``, so arrays of multi-task jobs shard as well. Not under Hydra's submitit
        launcher, whose array tasks are the points of a sweep (shard there with
        ``shard.rank=range(0,N) shard.world_size=N``).
        """
        env = os.environ
        slurm_rank, slurm_world = int(env.get("SLURM_PROCID", 0)), int(env.get("SLURM_NTASKS", 1))
        if "SLURM_ARRAY_TASK_ID" in env and "SUBMITIT_EXECUTOR" not in env:
            step = int(env.get("SLURM_ARRAY_TASK_STEP", 1))
            index = (int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))) // step
            slurm_rank += index * slurm_world
            slurm_world *= int(env["SLURM_ARRAY_TASK_COUNT"])
        if rank is None:
            rank = int(env.get("RANK", slurm_rank))
        if world_size is None:
            world_size = int(env.get("WORLD_SIZE", slurm_world))
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        return cls(rank, world_size)

    def take(self, jobs: Sequence[Job]) -> list[Job]:
        return list(jobs[self.rank :: self.world_size])


@dataclass
class MeasureOptions:
    """What the runner measures and keeps; numbers come from the evaluate config."""

    metrics: tuple[str, ...] = ("psnr", "msssim", "vmaf", "lpips")
    vmaf_ffmpeg: str | None = None
    keep_reconstructions: bool = False
    force: bool = False
    progress: bool = True


def make_jobs(codecs: Iterable[Codec], sequences: Sequence[CTCSequence]) -> list[Job]:
    """Every (codec, sequence, rate point) in a fixed order, so that all ranks agree on it."""
    return [Job(codec, seq, rp) for codec in codecs for seq in sequences for rp in codec.rate_points]


def run_jobs(
    jobs: Sequence[Job],
    structure: CodingStructure,
    run_dir: Path,
    options: MeasureOptions,
    shard: Shard = Shard(),
) -> list[dict[str, Any]]:
    """Run this rank's share of ``jobs`` (skipping finished points) and return their rows."""
    mine = shard.take(jobs)
    rows: list[dict[str, Any]] = []
    bar = _progress(mine, options.progress, f"rank {shard.rank}" if shard.world_size > 1 else "evaluate")
    # One line per codec once its last point is done: a run of many codecs over hours shows which
    # are finished and what each cost, where the bar alone shows only the whole run's count.
    remaining = {
        name: sum(1 for job in mine if job.codec.name == name) for name in {j.codec.name for j in mine}
    }
    spent: dict[str, list[float]] = {name: [0.0, 0, 0] for name in remaining}  # seconds, coded, reused
    for job in bar:
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(job.key, refresh=False)
        started = time.monotonic()
        reused = not options.force and _stored_result(job, structure, run_dir) is not None
        rows.append(run_job(job, structure, run_dir, options))
        tally = spent[job.codec.name]
        tally[0] += time.monotonic() - started
        tally[2 if reused else 1] += 1
        remaining[job.codec.name] -= 1
        if remaining[job.codec.name] == 0:
            log.info(
                "%s done: %d points (%d coded, %d already measured) in %.1f s",
                job.codec.name, tally[1] + tally[2], tally[1], tally[2], tally[0],
            )  # fmt: skip
    return rows


def _stored_result(job: Job, structure: CodingStructure, run_dir: Path) -> dict[str, Any] | None:
    """The point's result.json when it measured exactly this point (the runner then skips it)."""
    path = job.folder(run_dir) / "result.json"
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return stored if is_same_point(stored, point_identity(job, structure)) else None


def run_job(job: Job, structure: CodingStructure, run_dir: Path, options: MeasureOptions) -> dict[str, Any]:
    """Encode, decode from the file, measure, and write result.json (resumable, atomic)."""
    from nvc_train.metrics import measure_sequence  # torch-backed metrics load only when measuring

    folder = job.folder(run_dir)
    result_path = folder / "result.json"
    identity = point_identity(job, structure)
    if not options.force and result_path.is_file():
        stored = json.loads(result_path.read_text())
        if is_same_point(stored, identity):
            return stored
        log.info("re-measuring %s: the stored result measured a different point", job.key)

    folder.mkdir(parents=True, exist_ok=True)
    job.codec.check_structure(structure)
    bitstream = folder / f"bitstream{job.codec.suffix or '.bin'}"
    encoded = job.codec.encode(job.sequence, job.rate_point, structure, bitstream)
    reconstruction = folder / "decoded.yuv"
    decoded = job.codec.decode(encoded.bitstream, job.sequence, reconstruction)
    scores = measure_sequence(
        job.sequence.path,
        job.sequence.info,
        decoded.reconstruction,
        metrics=options.metrics,
        start_frame=job.sequence.start_frame,
        vmaf_ffmpeg=options.vmaf_ffmpeg,
        num_frames=job.sequence.info.num_frames,
    )
    if not options.keep_reconstructions:
        Path(decoded.reconstruction).unlink(missing_ok=True)

    frames = job.sequence.info.num_frames
    bits = Path(encoded.bitstream).stat().st_size * 8  # bits are counted from the file, nowhere else
    row: dict[str, Any] = {
        **identity,
        **rate_columns(bits, job.sequence),
        **{name: _finite_or_none(value) for name, value in scores.means.items()},
        "enc_s": encoded.seconds,
        "dec_s": decoded.seconds,
        "enc_fps": frames / encoded.seconds if encoded.seconds > 0 else None,
        "dec_fps": frames / decoded.seconds if decoded.seconds > 0 else None,
        "est_bits": encoded.estimated_bits,
        "bitstream": str(Path(encoded.bitstream).relative_to(job.base(run_dir))),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_json(result_path, row)
    return row


def collect_rows(jobs: Sequence[Job], run_dir: Path, wait_s: float = 0.0, poll_s: float = 2.0) -> list[dict]:
    """Read every job's result.json (rank 0 after sharding), waiting up to ``wait_s`` for other ranks."""
    deadline = time.monotonic() + wait_s
    while True:
        missing = [job for job in jobs if not (job.folder(run_dir) / "result.json").is_file()]
        if not missing or time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    if missing:
        listed = "\n  ".join(job.key for job in missing[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise RuntimeError(
            f"{len(missing)} of {len(jobs)} points have no result in {run_dir} "
            f"(another rank failed or is still running):\n  {listed}{more}"
        )
    return [json.loads((job.folder(run_dir) / "result.json").read_text()) for job in jobs]


def _finite_or_none(value: Any) -> Any:
    if value is None:
        return None
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


def _progress(items: list, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    # The bar spans every point of every codec of the run; its time left is tqdm's estimate from
    # the mean seconds per point so far (points already measured pass in no time, so a resumed run's
    # estimate starts low and settles as coding proceeds).
    return tqdm(
        items,
        desc=desc,
        unit="point",
        dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} points "
        "[{elapsed} spent, {remaining} left, {rate_fmt}]{postfix}",
    )
