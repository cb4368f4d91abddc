"""A scene-adaptive codec (C3-like, fitted per sequence on this CPU) against x265 medium on real clips.

Not a test: a script that prints figures. Each clip goes through the ONE evaluation runner
(``evaluate.py``, so bits are the files' sizes, PSNR-YUV is 6:1:1 over the decoded files, and the
BD-rate is the framework's pchip BD-rate of the adaptive codec against x265 at the same low-delay
structure), then this script adds what the runner does not show: encode minutes per rate point and
per clip, and the share of the bits spent on the network weights.

    .venv/bin/python bench/adaptive_vs_x265.py --clips dog_352x288_32f --frames 32 --steps-scale 0.5

Clips come from ``--clips-dir`` (default ../shared/data/clips, see SOURCES.md there); each runs in
its own run folder under ``--out`` (re-running resumes finished points). Clips larger than CIF are
centre-cropped to 352x288 (never resized). The machine may be shared: wall-clock minutes are what
was measured, with the number of torch threads stated; they are an upper bound of CPU minutes.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

CIF = (352, 288)


def prepare_clip(source: Path, folder: Path, frames: int) -> Path:
    """The clip as a raw 8-bit 4:2:0 file of at most CIF size (centre crop), in its own folder."""
    from nvc_train.video.readers import open_video

    reader = open_video(source)
    info = reader.info
    width, height = min(info.width, CIF[0]), min(info.height, CIF[1])
    top, left = (info.height - height) // 2 // 2 * 2, (info.width - width) // 2 // 2 * 2
    folder.mkdir(parents=True, exist_ok=True)
    fps = round(info.fps)
    depth = "_10bit" if info.bit_depth == 10 else ""
    short = source.stem.split("_")[0]  # the size and frame count in the stem would confuse the name parser
    path = folder / f"{short}_{width}x{height}_{fps}{depth}.yuv"
    dtype = "<u2" if info.bit_depth == 10 else "u1"
    frame_bytes = width * height * 3 // 2 * np.dtype(dtype).itemsize
    if path.is_file() and path.stat().st_size >= min(frames, len(reader)) * frame_bytes:
        return path  # made before, with at least the frames asked for
    with path.open("wb") as handle:
        for frame in reader.read(0, min(frames, len(reader))):
            for plane, scale in ((frame.y, 1), (frame.u, 2), (frame.v, 2)):
                crop = plane[top // scale : (top + height) // scale, left // scale : (left + width) // scale]
                handle.write(crop.astype(dtype).tobytes())
    return path


def weights_bytes(bitstream: Path) -> int:
    """Bytes of the parameter-set and weights units (everything that is not a frame)."""
    from nvc_train.bitstream import read_stream

    _, units = read_stream(bitstream)
    return sum(len(u.payload) for u in units if not u.is_frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", nargs="+", default=["dog_352x288_32f"])
    parser.add_argument("--clips-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "clips")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--model", default="c3_tiny")
    parser.add_argument("--steps-scale", type=float, default=1.0)
    parser.add_argument("--rate-points", default="[0,1,2,3]")
    parser.add_argument("--anchor-qps", default="[38,42,46,51]",
                        help="x265 QPs: chosen to overlap the adaptive codec's quality range")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "bench" / "adaptive_vs_x265")
    parser.add_argument("--tag", default="", help="run-folder suffix (give one with extra overrides)")
    parser.add_argument("extra", nargs="*", help="more evaluate.py overrides")
    args = parser.parse_args()

    summary = []
    for name in args.clips:
        source = args.clips_dir / f"{name}.y4m"
        if not source.is_file():
            sys.exit(f"clip not found: {source}")
        clip = prepare_clip(source, args.out / "clips" / name, args.frames)
        run_dir = args.out / f"{name}_{args.model}_s{args.steps_scale:g}_f{args.frames}{args.tag}"
        cmd = [
            sys.executable, str(REPO_ROOT / "evaluate.py"), f"model={args.model}", "ctc=folder",
            f"ctc.path={clip.parent}", f"frames={args.frames}", "structure=ld", "anchor=x265",
            f"anchor.rate_points={args.anchor_qps}", f"codec.rate_points={args.rate_points}",
            f"codec.threads={args.threads}", f"overfit.steps_scale={args.steps_scale}",
            "metrics=[psnr]", "bd_metrics=[psnr_yuv]", "progress=false", f"hydra.run.dir={run_dir}",
            *args.extra,
        ]  # fmt: skip
        print("$", " ".join(cmd[1:]), flush=True)
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"evaluate.py failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        wall = time.perf_counter() - started
        with (run_dir / "points.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        bd, note = None, ""
        if (run_dir / "bdrate.csv").is_file():
            with (run_dir / "bdrate.csv").open() as handle:
                for row in csv.DictReader(handle):
                    wanted = (row.get("codec"), row.get("metric"), row.get("method")) == (
                        args.model,
                        "psnr_yuv",
                        "pchip",
                    )
                    if wanted:
                        bd, note = row.get("bd_rate") or None, row.get("note", "")
        print(f"\n{name} ({args.frames} frames), {args.model}, steps_scale {args.steps_scale}, "
              f"{args.threads} torch thread(s); evaluate.py wall time {wall / 60:.1f} min")  # fmt: skip
        print("codec     rp   kbit    bpp     PSNR-YUV  enc min  weights bytes")
        enc_total = 0.0
        for row in sorted(rows, key=lambda r: (r["codec"], float(r["rate_point"]))):
            extra = ""
            if row["codec"] == args.model:
                enc_total += float(row["enc_s"])
                extra = str(weights_bytes(run_dir / row["bitstream"]))
            bits, bpp, psnr, minutes = (float(row[k]) for k in ("bits", "bpp", "psnr_yuv", "enc_s"))
            print(f"{row['codec']:<9} {row['rate_point']:<4} {bits / 1e3:<7.1f} {bpp:<7.4f} {psnr:<9.2f} "
                  f"{minutes / 60:<8.2f} {extra}")  # fmt: skip
        print(f"BD-rate (PSNR-YUV, pchip) of {args.model} vs x265 medium: {bd} %; "
              f"encode {enc_total / 60:.1f} min for all rate points {note}")  # fmt: skip
        summary.append(
            {"clip": name, "bd_rate_psnr_yuv": bd, "encode_min": enc_total / 60, "run_dir": str(run_dir)}
        )
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
