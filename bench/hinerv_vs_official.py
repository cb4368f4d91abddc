"""HiNeRV side by side with its official trainer: same clip, size, schedule and number of steps.

Runs the official code (github hmkx/HiNeRV, a checkout given by ``--hinerv-src``, in its own Python
``--hinerv-python``; nothing of it is imported here) and ours (``configs/overfit/hinerv_tiny.yaml``,
``model=hinerv_tiny``) on the first ``--frames`` frames of each clip, cropped to ``--width`` x
``--height`` (the official trainer needs sides divisible by the patch and by the network's total
upsampling), and prints per clip and trainer::

    PSNR (YUV 4:2:0, 6:1:1, of the decoded 8-bit frames against the clip), file bits, ms per step

The official trainer reads RGB PNGs: the clip's 4:2:0 frames are converted here (BT.709 limited
range, chroma upsampled by nearest neighbour); its decoded frames (the PNGs it writes after
decoding its Q6 bitstream) are converted back to 4:2:0 the way our network's RGB output is, and
both are measured against the same source planes. Its file is its bitstream folder's ``Q6.zip``;
ours is the project's container (``.nvc``), decoded again in a fresh process to check it. Also
printed: the arithmetic-coded symbols alone (its ``.bit`` entries; our ANS stream), which leave
out each file's side information (its pickled histograms, scales, biases and the zip; our scales,
histograms, float16 biases and the container).

ms per step: ours from the fit's own clock around the updates (HiNeRVStages); the official one
from its log (the median of its training epochs' "img/s", frames' worth of patches per second).
Both on the CPU, ``--threads`` threads.

    python bench/hinerv_vs_official.py --hinerv-src /path/to/HiNeRV --hinerv-python /path/to/venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from models import build_model  # noqa: E402
from nvc_train.bitstream.container import StreamHeader  # noqa: E402
from nvc_train.codecs.adaptive import write_adaptive_stream  # noqa: E402
from nvc_train.training.overfit import fit_sequence  # noqa: E402
from nvc_train.video.colour import ycbcr_to_rgb, yuv420_to_444  # noqa: E402
from nvc_train.video.readers import open_video  # noqa: E402

CLIPS = ("dog_352x288_32f.y4m", "cars_320x240_30f.y4m")

# deepspeed is only imported by the official trainer for its FLOP profiler; this stand-in (written to
# a temporary folder on its PYTHONPATH) returns no counts, which the trainer only logs.
_PROFILER_STUB = "def get_model_profile(*args, **kwargs):\n    return 0, 0, 0\n"


def official_model_args(architecture: dict) -> list[str]:
    """The official trainer's model arguments for one of our HiNeRV architectures (same network)."""
    stages = len(architecture["scales"])
    return [
        "--model", "HiNeRV", "--block-type", "convnext",
        "--channels", str(architecture["channels"]),
        "--channels-reduce", str(architecture["channels_reduce"]),
        "--depths", *map(str, architecture["depths"]), "--exps", *map(str, architecture["expansions"]),
        "--stem-kernels", str(architecture["stem_kernel"]), "--kernels", *map(str, architecture["kernels"]),
        "--scales-t", *["1"] * stages, "--scales-hw", *map(str, architecture["scales"]),
        "--stem-paddings", "-1", "-1", "-1", "--paddings", "-1", "-1", "-1", "--base-size", "-1", "-1", "-1",
        "--base-grid-size", str(architecture["base_grid_frames"]), "-1", "-1",
        str(architecture["base_grid_channels"]), "--base-grid-level", str(architecture["base_grid_levels"]),
        "--base-grid-level-scale", "2.", "1.", "1.", "0.5",
        "--enc-type", "normalized+temp_local_grid",
        "--enc-grid-size", str(architecture["encoding_frames"] or -1), str(architecture["encoding_channels"]),
        "--enc-grid-level", str(architecture["encoding_levels"]), "--enc-grid-level-scale", "2.", "0.5",
        "--enc-grid-depth-scale", "1.", str(architecture["encoding_depth_scale"]),
        "--upsample-type", "trilinear", "--upsample-config", "matmul-th-w",
    ]  # fmt: skip


def official_train_args(
    preset: dict, epochs: list[int], warmup_epochs: int, height: int, width: int
) -> list[str]:
    """The official trainer's schedule arguments from our preset's numbers (cfgs/train's form)."""
    float_phase, prune_phase, quant_phase = preset["phases"]
    options = preset["hinerv"]
    patch = str(options["patch_size"])
    return [
        "--loss", "0.7", "l1", "0.3", "ms-ssim_5x5", "--train-metric", "psnr",
        "--eval-metric", "psnr", "ms-ssim",
        "--crop-size", "-1", "-1", "--input-size", str(height), str(width), "--patch-size", "1", patch, patch,
        "--cached", "patch", "--epochs", str(epochs[0]), "--eval-epochs", str(sum(epochs)),
        "--log-epochs", "-1",
        "--warmup-epochs", str(warmup_epochs), "--prune-epochs", str(epochs[1]), "--prune-warmup-epochs", "0",
        "--prune-ratio", str(prune_phase["prune_ratio"]), "--prune-weight", str(options["prune_weight"]),
        "--quant-epochs", str(epochs[2]), "--quant-warmup-epochs", "0",
        "--quant-lr-scale", str(quant_phase["lr"] / prune_phase["lr"]),
        "--quant-level", str(quant_phase["quant_bits"]), "--quant-noise", str(quant_phase["quant_noise"]),
        "--opt", "adam", "--lr", str(float_phase["lr"]), "--warmup-lr", str(float_phase["warmup_lr"]),
        "--min-lr", str(float_phase["min_lr"]), "--max-norm", str(options["gradient_clip"]),
        "--auto-lr-scaling", str(options["lr_pixel_scaling"]).lower(),
        "--batch-size", str(options["patches_per_step"]), "--eval-batch-size", "1", "--grad-accum", "1",
        "--log-eval", "true", "--seed", "0",
    ]  # fmt: skip


def read_clip(path: Path, frames: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``frames`` 4:2:0 frames, top-left ``width`` x ``height``, as planes in [0, 1]."""
    ys, uvs = [], []
    for frame in open_video(path).read(0, frames):
        if frame.y.shape[0] < height or frame.y.shape[1] < width:
            raise SystemExit(f"{path.name} is smaller than {width}x{height}")
        ys.append(torch.from_numpy(frame.y[:height, :width].astype(np.float32))[None])
        chroma = np.stack([frame.u[: height // 2, : width // 2], frame.v[: height // 2, : width // 2]])
        uvs.append(torch.from_numpy(chroma.astype(np.float32)))
    return torch.stack(ys) / 255.0, torch.stack(uvs) / 255.0


def psnr_611(y_hat: torch.Tensor, uv_hat: torch.Tensor, y: torch.Tensor, uv: torch.Tensor) -> float:
    """PSNR (dB) of the 6:1:1 MSE of 8-bit planes, averaged over frames."""

    def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a8, b8 = torch.round(a.clamp(0, 1) * 255), torch.round(b * 255)
        return ((a8 - b8) ** 2).flatten(1).mean(1)

    m = (6 * mse(y_hat, y) + mse(uv_hat[:, :1], uv[:, :1]) + mse(uv_hat[:, 1:], uv[:, 1:])) / 8
    return float((10 * torch.log10(255.0**2 / m.clamp_min(1e-10))).mean())


def write_pngs(y: torch.Tensor, uv: torch.Tensor, folder: Path) -> None:
    """The frames as 8-bit RGB PNGs (BT.709 limited, chroma by nearest neighbour): the official input."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rgb = ycbcr_to_rgb(
        yuv420_to_444(y, uv[:, :1], uv[:, 1:], mode="nearest"), matrix="bt709", full_range=False
    )
    for index, frame in enumerate(rgb):
        pixels = torch.round(frame.clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(folder / f"{index + 1:04d}.png")


def run_official(args: argparse.Namespace, y: torch.Tensor, uv: torch.Tensor, work: Path, preset: dict,
                 epochs: list[int], warmup: int) -> dict:  # fmt: skip
    """Train, compress and decode with the official trainer; its decoded frames measured like ours."""
    from PIL import Image

    dataset = work / "dataset"
    write_pngs(y, uv, dataset / "clip")
    stub = work / "stub" / "deepspeed" / "profiling"
    stub.mkdir(parents=True, exist_ok=True)
    for package in (stub.parent, stub):
        (package / "__init__.py").write_text("")
    (stub / "flops_profiler.py").write_text(_PROFILER_STUB)
    architecture = build_model(
        "hinerv_tiny", height=y.shape[-2], width=y.shape[-1], num_frames=y.shape[0]
    ).architecture
    command = [
        args.hinerv_python, "hinerv_main.py", "--dataset", str(dataset), "--dataset-name", "clip",
        "--output", str(work / "out"), *official_train_args(preset, epochs, warmup, y.shape[-2], y.shape[-1]),
        *official_model_args(architecture),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(work / "stub"), "OMP_NUM_THREADS": str(args.threads),
           "CUDA_VISIBLE_DEVICES": ""}  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(command, cwd=args.hinerv_src, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    log = result.stdout + result.stderr
    (work / "official.log").write_text(log)
    if result.returncode != 0:
        raise SystemExit(f"the official trainer failed (log: {work / 'official.log'}):\n{log[-3000:]}")
    run = next((work / "out").iterdir())
    quant_bits = preset["phases"][2]["quant_bits"]
    archive = run / "bitstreams" / f"Q{quant_bits}.zip"
    bits = archive.stat().st_size * 8
    with zipfile.ZipFile(archive) as entries:  # its arithmetic-coded tensors alone (the rest: a pickle)
        coded_bits = 8 * sum(e.file_size for e in entries.infolist() if e.filename.endswith(".bit"))
    # its own numbers: patches per second of every training epoch, and its RGB PSNR of the decoded file
    rates = [float(v) for v in re.findall(r"Train.*?img/s: ([0-9.]+)", log)]
    own_psnr = re.findall(rf"Eval \(Q{quant_bits}\).*?psnr: ([0-9.]+)", log)
    folders = [f for f in (run / "eval_output").iterdir() if f.name.lower().endswith(f"q{quant_bits}")]
    pngs = sorted(folders[-1].glob("*.png"))
    rgb = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy()) for p in pngs])
    rgb = rgb.permute(0, 3, 1, 2).float() / 255.0
    net = build_model("hinerv_tiny", height=y.shape[-2], width=y.shape[-1], num_frames=y.shape[0])
    y_hat, uv_hat = net.rgb_to_planes(rgb)
    patch = preset["hinerv"]["patch_size"]
    images_per_step = preset["hinerv"]["patches_per_step"] / ((y.shape[-2] // patch) * (y.shape[-1] // patch))
    return {
        "psnr": psnr_611(y_hat, uv_hat, y, uv), "bits": bits, "coded_bits": coded_bits,
        # its img/s counts frames' worth of patches: a step is patches_per_step / patches_per_frame
        "ms_per_step": 1e3 * images_per_step / statistics.median(rates),
        "own_rgb_psnr": float(own_psnr[-1]) if own_psnr else math.nan, "wall_s": wall,
    }  # fmt: skip


_DECODE = "import sys; from nvc_train.codecs.adaptive import main; main(sys.argv[1:])"


def run_ours(args: argparse.Namespace, y: torch.Tensor, uv: torch.Tensor, work: Path, preset: dict,
             total_steps: int) -> dict:  # fmt: skip
    """Fit, code into the container, decode that file in a fresh process; measure the decoded frames."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    frames, height, width = y.shape[0], y.shape[-2], y.shape[-1]
    net = build_model("hinerv_tiny", height=height, width=width, num_frames=frames)
    started = time.perf_counter()
    fit = fit_sequence(net, y, uv, preset["lambdas"][0], {**preset, "total_steps": total_steps})
    payload = net.compress()
    wall = time.perf_counter() - started
    header = StreamHeader(codec_id="hinerv_tiny", weights_hash=b"", width=width, height=height, bit_depth=8,
                          num_frames=frames, fps_num=30, fps_den=1, structure="ld", intra_period=-1,
                          gop_size=1,
                          rate_point=0)  # fmt: skip
    stream = work / "ours.nvc"
    write_adaptive_stream(stream, header, "models.hinerv.HiNeRV", net.architecture, payload)
    decoded = work / "ours_decoded.yuv"
    result = subprocess.run([sys.executable, "-c", _DECODE, str(stream), str(decoded)], cwd=REPO_ROOT,
                            capture_output=True, text=True)  # fmt: skip
    if result.returncode != 0:
        raise SystemExit(f"decoding our file failed:\n{result.stderr[-3000:]}")
    raw = np.fromfile(decoded, dtype=np.uint8).reshape(frames, -1)
    luma = height * width
    y_dec = torch.from_numpy(raw[:, :luma].reshape(frames, 1, height, width).astype(np.float32)) / 255
    uv_dec = (
        torch.from_numpy(raw[:, luma:].reshape(frames, 2, height // 2, width // 2).astype(np.float32)) / 255
    )
    y_enc, uv_enc = net.reconstruct()
    same = bool(torch.equal(torch.round(y_enc.clamp(0, 1) * 255) / 255, y_dec))
    return {
        "psnr": psnr_611(y_dec, uv_dec, y, uv), "bits": stream.stat().st_size * 8,
        "weights_bits": 8 * len(payload.parameters), "ms_per_step": fit.stages.summary()["ms_per_step"],
        "coded_bits": 8 * net.parameter_coder().last_sizes["stream_bytes"],
        "wall_s": wall, "fresh_decode_equals_encoder": same,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    import yaml

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hinerv-src", required=True, type=Path, help="a checkout of github hmkx/HiNeRV")
    parser.add_argument("--hinerv-python", default=sys.executable, help="the Python of its environment")
    parser.add_argument("--clips", nargs="+", default=list(CLIPS))
    parser.add_argument("--clips-dir", type=Path, default=Path("/work/shared/data/clips"))
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--epochs", type=int, nargs=3, default=[30, 6, 3], help="float, prune, quant epochs")
    parser.add_argument("--warmup-epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None, help="keep the runs here (default: a temp folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if not (args.hinerv_src / "hinerv_main.py").is_file():
        raise SystemExit(f"--hinerv-src {args.hinerv_src} has no hinerv_main.py (a checkout of hmkx/HiNeRV)")
    preset = yaml.safe_load((REPO_ROOT / "configs" / "overfit" / "hinerv_tiny.yaml").read_text())
    patch, per_step = preset["hinerv"]["patch_size"], preset["hinerv"]["patches_per_step"]
    if args.height % patch or args.width % patch:
        raise SystemExit(f"--height and --width must be multiples of the patch ({patch}): the official "
                         "trainer tiles the frame exactly")  # fmt: skip
    patches = args.frames * (args.height // patch) * (args.width // patch)
    if patches % per_step:
        raise SystemExit(f"{patches} patches an epoch is not a whole number of {per_step}-patch steps")
    steps_per_epoch = patches // per_step
    total_steps = sum(args.epochs) * steps_per_epoch
    # our preset's phases in the same proportions, its warm-up as the official one's
    preset["phases"] = [
        {**p, "steps": e * steps_per_epoch, **({"warmup_steps": args.warmup_epochs * steps_per_epoch}
                                               if "warmup_steps" in p else {})}
        for p, e in zip(preset["phases"], args.epochs, strict=True)
    ]  # fmt: skip
    print(f"{args.frames} frames {args.width}x{args.height}, {per_step} patches of {patch}x{patch} a step, "
          f"epochs {args.epochs} (warm-up {args.warmup_epochs}) = {total_steps} steps, "
          f"{args.threads} thread(s)")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        root = args.work or Path(temporary)
        for clip in args.clips:
            y, uv = read_clip(args.clips_dir / clip, args.frames, args.height, args.width)
            work = root / Path(clip).stem
            (work / "official").mkdir(parents=True, exist_ok=True)
            official = run_official(args, y, uv, work / "official", preset, args.epochs, args.warmup_epochs)
            ours = run_ours(args, y, uv, work, preset, total_steps)
            rows.append({"clip": clip, "official": official, "ours": ours})
            print(f"{clip}: official PSNR {official['psnr']:.2f} dB "
                  f"(its RGB PSNR {official['own_rgb_psnr']:.2f}), {official['bits']} bits, "
                  f"{official['ms_per_step']:.1f} ms/step | ours PSNR {ours['psnr']:.2f} dB, "
                  f"{ours['bits']} bits (weights {ours['weights_bits']}), {ours['ms_per_step']:.1f} ms/step, "
                  f"arithmetic-coded symbols: official {official['coded_bits']} bits, "
                  f"ours {ours['coded_bits']}, "
                  f"fresh decode equal: {ours['fresh_decode_equals_encoder']}", flush=True)  # fmt: skip
    print(
        "\n| clip | PSNR official | PSNR ours | delta dB | bits official | bits ours | size ratio "
        "| coded-symbol ratio | ms/step official | ms/step ours |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        o, u = row["official"], row["ours"]
        print(f"| {row['clip']} | {o['psnr']:.2f} | {u['psnr']:.2f} | {u['psnr'] - o['psnr']:+.2f} | "
              f"{o['bits']} | {u['bits']} | {u['bits'] / o['bits']:.3f} | "
              f"{u['coded_bits'] / o['coded_bits']:.3f} | "
              f"{o['ms_per_step']:.1f} | "
              f"{u['ms_per_step']:.1f} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
