"""evaluate.py's wall time for x265 on the real clips against the bare ffmpeg encode + decode.

Not a test: a script that prints figures. It runs the real ``evaluate(cfg)`` (Hydra compose of
configs/evaluate.yaml, ``ctc=folder`` on the real clips, x265 low delay at its 4 QPs, no anchor) in
a fresh run folder, then times the same points coded by plain ffmpeg commands with the same x265
settings (encode to an elementary stream, decode to raw). The ratio evaluate / bare is the
framework's overhead: everything beyond the encoder and decoder themselves (mostly measuring).
It is measured twice: with PSNR only, and with the default metrics (PSNR, MS-SSIM, VMAF).

    .venv/bin/python bench/evaluate_overhead.py [--clips ../shared/data/clips]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def run_evaluate(clips: Path, run_dir: Path, metrics: list[str]) -> tuple[float, list[dict]]:
    from hydra import compose, initialize_config_dir

    from nvc_train.evaluation.evaluate import evaluate

    overrides = [
        "ctc=folder", f"ctc.path={clips}", "~anchor",
        f"metrics=[{','.join(metrics)}]", "bd_metrics=[psnr_yuv]", "progress=false",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=str(REPO_ROOT / "configs"), version_base="1.3"):
        cfg = compose("evaluate", overrides=overrides, return_hydra_config=False)
    cfg.run_dir = str(run_dir)
    started = time.perf_counter()
    result = evaluate(cfg)
    return time.perf_counter() - started, result["rows"]


# The settings X265Codec passes for low delay (its recorded command line), minus the QP.
X265_LD_PARAMS = "keyint=96:min-keyint=96:scenecut=0:info=0:log-level=error:bframes=0:open-gop=0"


def bare_ffmpeg(rows: list[dict], clips: Path, work: Path) -> float:
    """Encode + decode every point with plain ffmpeg and the same x265 settings; total seconds."""
    total = 0.0
    for row in rows:
        source = clips / f"{row['sequence']}.y4m"
        pix_fmt = "yuv420p10le" if int(row["bit_depth"]) == 10 else "yuv420p"
        stream, decoded = work / "bare.hevc", work / "bare.yuv"
        params = f"qp={row['rate_point']}:" + X265_LD_PARAMS
        encode = ["ffmpeg", "-v", "error", "-y", "-i", str(source), "-frames:v", str(row["frames"]),
                  "-c:v", "libx265", "-preset", "medium", "-pix_fmt", pix_fmt, "-x265-params", params,
                  "-bsf:v", "filter_units=remove_types=39|40", "-f", "hevc", str(stream)]  # fmt: skip
        decode = ["ffmpeg", "-v", "error", "-y", "-i", str(stream), "-f", "rawvideo", "-pix_fmt", pix_fmt,
                  str(decoded)]  # fmt: skip
        started = time.perf_counter()
        subprocess.run(encode, check=True)
        subprocess.run(decode, check=True)
        total += time.perf_counter() - started
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "clips")
    args = parser.parse_args()
    if not any(args.clips.glob("*.y4m")):
        sys.exit(f"no .y4m clips in {args.clips}: pass --clips DIR (see ../shared/data/clips/SOURCES.md)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results = {}
        for label, metrics in (("psnr only", ["psnr"]), ("psnr+msssim+vmaf", ["psnr", "msssim", "vmaf"])):
            seconds, rows = run_evaluate(
                args.clips, work / label.replace("+", "_").replace(" ", "_"), metrics
            )
            results[label] = (seconds, rows)
        rows = results["psnr only"][1]
        bare = bare_ffmpeg(rows, args.clips, work)
    frames = sum(int(r["frames"]) for r in rows)
    print(f"x265 ld, {len(rows)} points ({frames} frames) on {args.clips}")
    print(f"bare ffmpeg encode+decode: {bare:.1f} s")
    for label, (seconds, _) in results.items():
        print(f"evaluate.py ({label}): {seconds:.1f} s  -> ratio evaluate/bare = {seconds / bare:.2f}")


if __name__ == "__main__":
    main()
