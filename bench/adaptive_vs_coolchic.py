"""Ours (a scene-adaptive codec fitted per sequence) against Cool-Chic at equal iterations, x265 as anchor.

Not a test: a script that prints figures. Cool-Chic is the user's own checkout (``--coolchic-src``),
run in a subprocess with its own Python (``--coolchic-python``, its venv): nothing of it is imported
into or copied into this project, so its licence and its dependencies stay with it. Ours and x265
go through the ONE evaluation runner (``evaluate.py``: bits are the files' sizes, PSNR-YUV is 6:1:1
over the decoded file); Cool-Chic's decoded file is measured by the same metrics code, so the
three curves differ only in the codec::

    .venv/bin/python bench/adaptive_vs_coolchic.py --coolchic-src ../scratch/coolchic \\
        --coolchic-python ../scratch/coolchic-venv/bin/python --clips dog_352x288_32f --frames 1 \\
        --iterations 2000 --lambdas 0.008 0.002 0.0004 0.00015

Equal effort: Cool-Chic's I-frame preset runs ``--n_itr`` iterations per frame (warm-up candidates
included, its ``hop`` decoder, start lr 1e-2, as cfg/dec/intra/hop.cfg and its README give);
ours runs ``overfit.total_steps = iterations x frames`` optimiser steps for the sequence
(configs/overfit: one step is one batch of ``frames_per_step`` frames), which for the default
single frame is the same count. Rate points: ``--lambdas`` are Cool-Chic's (loss D + lambda R);
ours fits ``1 / lambda`` (loss R + lambda D). The distortion weights differ (Cool-Chic 4:1:1 in
its loss, ours 6:1:1), so the points land near each other, not on each other: the BD-rates
compare the curves. All intra by default (``structure=ai`` for ours and x265).

Low delay (``--structure ld --frames 4 --model coolchic_video``): Cool-Chic codes frame 0 with the
I preset and every later frame as a P frame with its P preset (``lop`` residue and motion decoders,
start lr 5e-3, 200 motion pre-training iterations, its warm-up of 2 x 600, ``--p-iterations``
1000); its P frames seed the motion with RAFT, which here is OpenCV's Farneback in the scratch
checkout (RAFT's weights cannot be downloaded: say so where the figures go). Ours fits frame by
frame with configs/overfit/coolchic_video.yaml (the I preset at ``--iterations``, P frames with its
``inter`` preset, Cool-Chic's P effort), seeded by nvc_train/video/motion.py's flow.

Random access (``--structure ra --frames 5 --model coolchic_video``, frames = a power of two + 1):
Cool-Chic's ``--intra_pos=0 --p_pos=-1``, frame 0 I, the last frame P from it, hierarchical B frames
between (5 frames: I0 P4 B2 B1 B3), each P or B frame with the P preset above; ours
``structure=ra structure.gop_size=<frames - 1> structure.intra_period=-1``, the same frames in the
same order (nvc_train/structure.py), B frames with the same ``inter`` preset.

Iterations per second are iterations over each encode's wall-clock seconds (model set-up,
warm-up and entropy coding included, on both sides), with the stated number of threads; the
machine may be shared, so they are lower bounds of what a quiet machine gives.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from adaptive_vs_x265 import prepare_clip  # noqa: E402 - the sibling bench script, by path

COOLCHIC = "coolchic"  # its folder under --out
COOLCHIC_LABEL = "Cool-Chic"  # in the table: ours may be model=coolchic (its hop sizes on our network)
#: Cool-Chic's points as measured on this machine kind, so that a comparison does not redo its
#: encodes (3-4 minutes a rate point at QCIF on one core): data made with Cool-Chic, no code of it.
DEFAULT_RECORD = REPO_ROOT / "bench" / "reference" / "coolchic_points.json"
RECORD_NOTE = (
    "Cool-Chic's own encodes (cc_encode.py, I-frame hop preset, start lr 1e-2, --n_itr = iterations; "
    "rows with structure ld: frame 0 so, the others P frames with its lop residue and motion "
    "decoders, start lr 5e-3, 200 motion pre-training iterations, --n_itr = p_iterations, the motion "
    "seeded by OpenCV Farneback in place of RAFT, whose weights cannot be downloaded here; "
    "bits = the .cool file's size, PSNR by nvc_train.metrics on cc_decode.py's output) of the centre "
    "crop of each clip, made by: python bench/adaptive_vs_coolchic.py --coolchic-src CHECKOUT "
    "--coolchic-python PY --coolchic-version VERSION --record --clips ... [--structure ld --frames 4] "
    "(structure ra: --intra_pos=0 --p_pos=-1, hierarchical B frames with the P frames' preset) "
    "(enc_s: wall seconds, `threads` torch threads, on a shared 2-core CPU machine)"
)


def crop_clip(cif: Path, width: int, height: int, folder: Path, name: str, frames: int) -> Path:
    """A centre crop of ``cif`` (a raw 8-bit 4:2:0 file from :func:`prepare_clip`) as ``folder/name``.

    Cool-Chic reads raw files only, with the geometry in the name, so both codecs read the very
    same bytes: ours under our naming, Cool-Chic's under its own (``_<fps>p_yuv420_8b``).
    """
    from nvc_train.video.readers import open_video

    reader = open_video(cif)
    info = reader.info
    if (width, height) > (info.width, info.height) or width % 2 or height % 2:
        sys.exit(f"--size {width}x{height} must be even and at most the clip's {info.width}x{info.height}")
    top, left = (info.height - height) // 4 * 2, (info.width - width) // 4 * 2
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with path.open("wb") as handle:
        for frame in reader.read(0, frames):
            for plane, scale in ((frame.y, 1), (frame.u, 2), (frame.v, 2)):
                rows = slice(top // scale, (top + height) // scale)
                cols = slice(left // scale, (left + width) // scale)
                handle.write(to_8bit(plane[rows, cols], info.bit_depth).tobytes())
    return path


def to_8bit(plane: np.ndarray, bit_depth: int) -> np.ndarray:
    """A plane as 8-bit samples: a 10-bit one rounded (``(v + 2) >> 2``), so a 10-bit clip (the
    shared PQ one) is compared as 8-bit content by both codecs and x265."""
    if bit_depth == 8:
        return np.ascontiguousarray(plane, dtype=np.uint8)
    shift = bit_depth - 8
    wide = (plane.astype(np.int32) + (1 << (shift - 1))) >> shift
    return np.ascontiguousarray(np.clip(wide, 0, 255), dtype=np.uint8)


def run_coolchic(
    args: argparse.Namespace, clip: str, source: Path, width: int, height: int, fps: int, folder: Path
) -> list[dict[str, Any]]:
    """One Cool-Chic point per lambda: ``cc_encode.py`` once per frame into one ``.cool``, then
    ``cc_decode.py``; bits from the file, PSNR by our metrics. A recorded point (``--coolchic-record``)
    or one finished in the run folder is reused; ``--record`` adds new points to the record."""
    from nvc_train.metrics import measure_sequence
    from nvc_train.video.frame import VideoInfo

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    info = VideoInfo(width, height, 8, float(fps), args.frames)
    recorded = load_record(args.coolchic_record)
    rows = []
    for index in args.rate_points:
        lmbda = args.lambdas[index]
        key = {"clip": clip, "size": f"{width}x{height}", "frames": args.frames,
               "iterations": args.iterations, "lambda": lmbda, "structure": args.structure}  # fmt: skip
        if args.structure != "ai":
            key["p_iterations"] = args.p_iterations
        found = [row for row in recorded if _same_point(row, key)]
        inter = f"_{args.structure}_p{args.p_iterations}" if args.structure != "ai" else ""
        workdir = (folder / f"lmbda_{lmbda:g}_n{args.iterations}{inter}").resolve()
        result = workdir / "result.json"
        if found and not args.force:
            rows.append({**found[-1], "rate_point": index})
            continue
        if result.is_file() and not args.force:
            rows.append(json.loads(result.read_text()))
            continue
        if args.coolchic_src is None:
            sys.exit(f"no recorded Cool-Chic point for {key} in {args.coolchic_record}: give "
                     "--coolchic-src (and --coolchic-python) to run it")  # fmt: skip
        src, python = args.coolchic_src.resolve(), str(args.coolchic_python.absolute())  # a venv's link kept
        workdir.mkdir(parents=True, exist_ok=True)
        bitstream = workdir / "bitstream.cool"
        bitstream.unlink(missing_ok=True)
        started = time.perf_counter()
        for k in range(args.frames):
            cmd = [
                python, str(src / "cc_encode.py"), f"--input={source.resolve()}",
                f"--output={bitstream}", f"--workdir={workdir}", f"--lmbda={lmbda}",
                f"--n_frames={args.frames}", *_coolchic_frame_options(args, src, k),
            ]  # fmt: skip
            _run(cmd, src, env, workdir / f"encode_{k}.log")
        enc_s = time.perf_counter() - started
        decoded = workdir / f"decoded_{width}x{height}_{fps}p_yuv420_8b.yuv"
        started = time.perf_counter()
        _run([python, str(src / "cc_decode.py"), "-i", str(bitstream), "-o", str(decoded)],
             src, env, workdir / "decode.log")  # fmt: skip
        dec_s = time.perf_counter() - started
        scores = measure_sequence(source, info, decoded, metrics=["psnr"], num_frames=args.frames)
        bits = bitstream.stat().st_size * 8
        row = {
            "codec": COOLCHIC, "rate_point": index, **key, "bits": bits,
            "bpp": bits / (width * height * args.frames), "psnr_yuv": scores.means["psnr_yuv"],
            "psnr_y": scores.means["psnr_y"], "enc_s": enc_s, "dec_s": dec_s, "threads": args.threads,
            "coolchic_version": args.coolchic_version, "date": time.strftime("%Y-%m-%d"),
        }  # fmt: skip
        result.write_text(json.dumps(row, indent=2))
        if args.record:
            others = [r for r in load_record(args.coolchic_record) if not _same_point(r, key)]
            save_record(args.coolchic_record, [*others, row])
        rows.append(row)
    return rows


def _coolchic_frame_options(args: argparse.Namespace, src: Path, index: int) -> list[str]:
    """``cc_encode.py``'s options for the frame at coding index ``index``: every frame an I frame
    (``ai``); frame 0 I and the others P frames (``ld``); or frame 0 I, the last frame P and
    hierarchical B frames between (``ra``). A P or B frame has Cool-Chic's P-frame preset as
    ../shared/ENVIRONMENT.md R11 gives it: the ``lop`` residue and motion decoders, start lr 5e-3,
    200 motion pre-training iterations then its hard-coded warm-up of two candidates x 600
    iterations, then ``--p-iterations``."""
    last = args.frames - 1
    if args.structure == "ai":
        positions = [f"--intra_pos=0-{last}" if last else "--intra_pos=0"]
    elif args.structure == "ld":
        positions = ["--intra_pos=0"] + ([f"--p_pos=1-{last}"] if last else [])
    elif args.structure == "ra":
        positions = ["--intra_pos=0", "--p_pos=-1"]
    else:
        sys.exit(f"Cool-Chic is run here in structure ai, ld or ra, not {args.structure!r}")
    if index == 0 or args.structure == "ai":
        preset = [f"--dec_cfg_residue={src / 'cfg/dec/intra/hop.cfg'}", "--start_lr=1e-2",
                  f"--n_itr={args.iterations}"]  # fmt: skip
    else:
        preset = [f"--dec_cfg_residue={src / 'cfg/dec/residue/lop.cfg'}",
                  f"--dec_cfg_motion={src / 'cfg/dec/motion/lop.cfg'}", "--start_lr=5e-3",
                  "--n_itr_pretrain_motion=200", f"--n_itr={args.p_iterations}"]  # fmt: skip
    return [*positions, f"--coding_idx={index}", *preset]


P_FRAME_FIXED_ITERATIONS = 200 + 2 * 600
"""Cool-Chic's P frame runs these besides --n_itr: 200 motion pre-training iterations and its
hard-coded warm-up of 2 candidates x 600; configs/overfit/coolchic_video.yaml's inter preset the same."""


def sequence_iterations(args: argparse.Namespace) -> int:
    """Iterations of one encode of the sequence, each codec: every frame at ``--iterations`` (all
    intra), or the I frame at ``--iterations`` and each P or B frame at its fixed part plus
    ``--p-iterations`` (low delay, random access)."""
    if args.structure != "ai":
        return args.iterations + (args.frames - 1) * (P_FRAME_FIXED_ITERATIONS + args.p_iterations)
    return args.iterations * args.frames


def load_record(path: Path) -> list[dict[str, Any]]:
    """Cool-Chic's recorded points (the bench's own rows, one per clip, size, frames, iterations and
    lambda), or none when the file is absent."""
    if not path.is_file():
        return []
    return json.loads(path.read_text())["points"]


def _same_point(row: dict[str, Any], key: dict[str, Any]) -> bool:
    """Whether a recorded row is the point ``key`` names (clip, size, frames, iterations, lambda)."""
    # rows recorded before the structure was part of the key are all-intra ones
    return all(row.get(k, "ai" if k == "structure" else None) == v for k, v in key.items())


def save_record(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write the record sorted, with the line that says how it was made."""
    rows = sorted(rows, key=lambda r: (r["clip"], r["size"], r["frames"], r["iterations"], -r["lambda"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"made_by": RECORD_NOTE, "points": rows}, indent=1) + "\n")


def _run(cmd: list[str], cwd: Path, env: dict[str, str], log_path: Path) -> None:
    """Run a Cool-Chic command, its output kept in ``log_path``; a failure stops the bench with its tail."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    log_path.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"Cool-Chic failed ({' '.join(cmd[1:3])} ...):\n{(proc.stdout + proc.stderr)[-3000:]}")


def structure_overrides(args: argparse.Namespace) -> list[str]:
    """evaluate.py's structure for ours and x265, the frames and order Cool-Chic codes: for ``ra`` one
    GOP over the frames, only frame 0 intra (Cool-Chic's ``--intra_pos=0 --p_pos=-1``)."""
    if args.structure == "ra":
        return ["structure=ra", f"structure.gop_size={args.frames - 1}", "structure.intra_period=-1"]
    return [f"structure={args.structure}"]


def run_ours(args: argparse.Namespace, clip_dir: Path, run_dir: Path) -> list[dict[str, Any]]:
    """Ours and x265 through evaluate.py (one run: both codecs' points.csv rows)."""
    lambdas = "[" + ",".join(f"{1.0 / lmbda:.6g}" for lmbda in args.lambdas) + "]"
    cmd = [
        sys.executable, str(REPO_ROOT / "evaluate.py"), f"model={args.model}", "ctc=folder",
        f"ctc.path={clip_dir}", f"frames={args.frames}", *structure_overrides(args), "anchor=x265",
        f"anchor.rate_points={args.anchor_qps}", f"overfit.lambdas={lambdas}",
        f"overfit.total_steps={args.iterations * (1 if args.structure != 'ai' else args.frames)}",
        f"codec.threads={args.threads}",
        f"codec.rate_points=[{','.join(str(i) for i in args.rate_points)}]",
        "metrics=[psnr]", "bd_metrics=[psnr_yuv]", "progress=false", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    print("$", " ".join(cmd[1:]), flush=True)
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"evaluate.py failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    with (run_dir / "points.csv").open() as handle:
        return [
            {**row, **{k: float(row[k]) for k in ("bits", "bpp", "psnr_yuv", "psnr_y", "enc_s", "dec_s")}}
            for row in csv.DictReader(handle)
        ]


def bd(anchor: list[dict[str, Any]], test: list[dict[str, Any]]) -> str:
    """BD-rate (PSNR-YUV, pchip, the framework's function) of ``test`` against ``anchor``, or why not."""
    from nvc_train.bdrate import BDRateError, bd_rate

    try:
        value = bd_rate([r["bpp"] for r in anchor], [r["psnr_yuv"] for r in anchor],
                        [r["bpp"] for r in test], [r["psnr_yuv"] for r in test])  # fmt: skip
    except BDRateError as error:
        return f"n/a ({error})"
    return f"{value:+.1f} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--coolchic-src",
        type=Path,
        default=None,
        help="a Cool-Chic v5 checkout (needed for points not in --coolchic-record)",
    )
    parser.add_argument(
        "--coolchic-version",
        default="v5",
        help="what the checkout is (its commit), written with recorded points",
    )
    parser.add_argument(
        "--coolchic-record",
        type=Path,
        default=DEFAULT_RECORD,
        help="Cool-Chic's recorded points, reused instead of re-encoding",
    )
    parser.add_argument("--record", action="store_true", help="add the points Cool-Chic codes to the record")
    parser.add_argument("--coolchic-python", type=Path, default=Path(sys.executable),
                        help="the Python of Cool-Chic's own venv")  # fmt: skip
    parser.add_argument("--clips", nargs="+", default=["dog_352x288_32f"])
    parser.add_argument("--clips-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "clips")
    parser.add_argument("--size", default="176x144", help="centre crop WxH of the CIF clip (QCIF default)")
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=2000, help="per frame, both codecs")
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.008, 0.002, 0.0004, 0.00015],
                        help="Cool-Chic's lambdas (D + lambda R); ours fits 1/lambda")  # fmt: skip
    parser.add_argument("--rate-points", type=int, nargs="+", default=None,
                        help="indices into --lambdas to code (default all); a subset reuses "
                        "finished points (ours keeps the lambdas list, so the same description)")  # fmt: skip
    parser.add_argument("--p-iterations", type=int, default=1000,
                        help="Cool-Chic's main-stage iterations of a P or B frame (ld, ra)")  # fmt: skip
    parser.add_argument("--model", default="c3")
    parser.add_argument("--structure", default="ai")
    parser.add_argument("--anchor-qps", default="[22,27,32,37]")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each codec")
    parser.add_argument("--parallel", action="store_true",
                        help="run Cool-Chic and ours at once (two cores; both slowed alike)")  # fmt: skip
    parser.add_argument("--force", action="store_true", help="redo finished Cool-Chic points")
    parser.add_argument("--coolchic-only", action="store_true", help="Cool-Chic's points only")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "bench" / "adaptive_vs_coolchic")
    args = parser.parse_args()
    if args.coolchic_src is not None and not (args.coolchic_src / "cc_encode.py").is_file():
        sys.exit(f"--coolchic-src {args.coolchic_src} has no cc_encode.py (a Cool-Chic v5 checkout)")
    width, height = (int(v) for v in args.size.split("x"))
    if args.structure != "ai" and args.p_iterations != 1000 and not args.coolchic_only:
        sys.exit("ours fits P and B frames with configs/overfit/coolchic_video.yaml's inter preset, "
                 "written for Cool-Chic's P effort at --p-iterations 1000")  # fmt: skip
    gop = args.frames - 1
    if args.structure == "ra" and (gop < 2 or gop & (gop - 1)):
        sys.exit(f"--structure ra codes one GOP over the frames: --frames must be a power of two + 1 "
                 f"(3, 5, 9, ...), got {args.frames}")  # fmt: skip
    if args.rate_points is None:
        args.rate_points = list(range(len(args.lambdas)))

    summary = []
    for name in args.clips:
        source = args.clips_dir / f"{name}.y4m"
        if not source.is_file():
            sys.exit(f"clip not found: {source}")
        cif = prepare_clip(source, args.out / "clips" / name, args.frames)
        short, fps = name.split("_")[0], round(float(cif.stem.removesuffix("_10bit").split("_")[-1]))
        ours_clip = crop_clip(cif, width, height, args.out / "clips" / f"{name}_{args.size}",
                              f"{short}_{width}x{height}_{fps}.yuv", args.frames)  # fmt: skip
        cc_folder = args.out / COOLCHIC / f"{name}_{args.size}_f{args.frames}"
        cc_clip = crop_clip(cif, width, height, cc_folder, f"{short}_{width}x{height}_{fps}p_yuv420_8b.yuv",
                            args.frames)  # fmt: skip
        tag = f"{name}_{args.size}_{args.model}_n{args.iterations}_f{args.frames}_{args.structure}"
        run_dir = args.out / tag
        cc_rows: list[dict[str, Any]] = []

        def coolchic_job(clip: Path = cc_clip, folder: Path = cc_folder, rate: int = fps,
                         out: list[dict[str, Any]] = cc_rows, clip_name: str = name) -> None:  # fmt: skip
            out.extend(run_coolchic(args, clip_name, clip, width, height, rate, folder))

        if args.coolchic_only:
            coolchic_job()
            print(
                f"{name}: Cool-Chic "
                + ", ".join(
                    f"{r['bits'] / 1e3:.2f} kbit / {r['psnr_yuv']:.2f} dB"
                    for r in sorted(cc_rows, key=lambda r: r["bits"])
                )
            )
            continue

        started = time.perf_counter()
        worker = threading.Thread(target=coolchic_job)
        if args.parallel:
            worker.start()
            rows = run_ours(args, ours_clip.parent, run_dir)
            worker.join()
        else:
            worker.run()
            rows = run_ours(args, ours_clip.parent, run_dir)
        wall = time.perf_counter() - started
        if len(cc_rows) != len(args.rate_points):
            sys.exit("Cool-Chic did not finish every rate point (see its logs under the run folder)")
        ours = sorted((r for r in rows if r["codec"] == args.model), key=lambda r: r["bpp"])
        x265 = sorted((r for r in rows if r["codec"] != args.model), key=lambda r: r["bpp"])
        cc_rows.sort(key=lambda r: r["bpp"])
        iterations = sequence_iterations(args)

        mode = ", run in parallel" if args.parallel else ""
        print(f"\n{name}, centre {width}x{height}, {args.frames} frame(s), {args.structure}, "
              f"{args.iterations} iterations a frame, {args.threads} thread(s) each{mode}; "
              f"wall {wall / 60:.1f} min")  # fmt: skip
        print("codec       rp  lambda     kbit     bpp      PSNR-Y  PSNR-YUV  enc s   it/s")
        for label, group in ((COOLCHIC_LABEL, cc_rows), (f"ours:{args.model}", ours), ("x265", x265)):
            for row in group:
                speed = iterations / row["enc_s"] if label != "x265" else float("nan")
                lmbda = row.get("lambda", "")
                print(f"{label:<11} {row['rate_point']!s:<3} {lmbda!s:<10} {row['bits'] / 1e3:<8.2f} "
                      f"{row['bpp']:<8.4f} {row['psnr_y']:<7.2f} {row['psnr_yuv']:<9.2f} "
                      f"{row['enc_s']:<7.1f} {speed:.1f}")  # fmt: skip
        cc_speed = iterations * len(cc_rows) / sum(r["enc_s"] for r in cc_rows)
        our_speed = iterations * len(ours) / sum(r["enc_s"] for r in ours)
        figures = {
            "clip": name, "size": args.size, "frames": args.frames, "iterations": args.iterations,
            "bd_ours_vs_coolchic": bd(cc_rows, ours), "bd_ours_vs_x265": bd(x265, ours),
            "bd_coolchic_vs_x265": bd(x265, cc_rows), "it_per_s_coolchic": cc_speed,
            "it_per_s_ours": our_speed, "run_dir": str(run_dir),
        }  # fmt: skip
        print(f"BD-rate PSNR-YUV (pchip): {args.model} vs Cool-Chic {figures['bd_ours_vs_coolchic']}; "
              f"{args.model} vs x265 {figures['bd_ours_vs_x265']}; "
              f"Cool-Chic vs x265 {figures['bd_coolchic_vs_x265']}")  # fmt: skip
        print(f"iterations/s (encode wall clock): Cool-Chic {cc_speed:.1f}, {args.model} {our_speed:.1f} "
              f"({our_speed / cc_speed:.2f}x)")  # fmt: skip
        summary.append(figures)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
