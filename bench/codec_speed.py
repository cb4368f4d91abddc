"""Encode / decode frames per second, parameters and kMAC/px of a registered neural codec.

Not a test: a script that prints a table. It codes an I P P ... chain of real frames (the embedded
astronaut_pan clip, tiled to the requested size) through the model API the evaluation adapter
uses (``compress_frame`` / ``decompress_frame``: analysis, entropy parameters, the ANS coder,
synthesis; real bytes), times it with :func:`nvc_train.complexity.measure_fps` (warm-up rounds,
device synchronisation, median of ``--repeats``), checks that the decoder reproduced the encoder's
pictures, and counts parameters and kMAC/px with :func:`nvc_train.complexity.codec_complexity`.

    .venv/bin/python bench/codec_speed.py ssf --height 256 --width 448 --frames 4
    .venv/bin/python bench/codec_speed.py dcvc_rt --device cuda --height 1080 --width 1920 \\
        --fp16 --cuda-graphs
    .venv/bin/python bench/codec_speed.py dcvc_rt_tiny --precision bf16 --compile  # CPU: same options

Precision, compilation and CUDA graphs: ``--precision fp16|bf16`` runs the coding path under
``torch.autocast`` (the transforms' convolutions and GEMMs in half precision, the parameters stay
float32; ``--fp16`` is ``--precision fp16``, for a CUDA device only, bf16 runs on the CPU too). The
entropy parameters stay float32 (the model casts them before the coder sees them; the likelihoods
are float32 under autocast), and the coder gets integers, so the decoder reproduces the encoder's
pictures whenever both run the same kernels; a stream encoded on one GPU is not promised to decode
on another machine: the transforms' float results, and so the scales that pick the tables, depend
on the kernels. ``--compile`` runs ``torch.compile`` on the transforms (a model's
``compile_transforms`` if it has one, else each sub-network), on any device; ``--cuda-graphs`` does
the same with ``mode="reduce-overhead"``, which replays CUDA graphs of them at the fixed frame size
(the context loop and the coder stay eager between them).
Untrained weights (the default) give different symbol statistics from trained ones, so the coder's
share of the time is indicative; ``--ckpt`` times a train.py checkpoint instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nvc_train.complexity import (  # noqa: E402
    codec_complexity,
    decode_chain,
    encode_chain,
    measure_fps,
    padded_size,
)
from nvc_train.embedded import ensure_embedded_clips  # noqa: E402
from nvc_train.video import open_video  # noqa: E402


def mirror_tile(plane: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Tile ``plane`` to at least ``height x width``, mirroring alternate tiles (no hard seams)."""
    reps_h, reps_w = -(-height // plane.shape[-2]), -(-width // plane.shape[-1])
    row = torch.cat([plane if i % 2 == 0 else plane.flip(-1) for i in range(reps_w)], dim=-1)
    tiled = torch.cat([row if i % 2 == 0 else row.flip(-2) for i in range(reps_h)], dim=-2)
    return tiled[..., :height, :width].contiguous()


def load_frames(count: int, height: int, width: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` consecutive embedded frames, tiled (mirrored) to ``height x width``; 4:2:0 planes."""
    reader = open_video(ensure_embedded_clips()["astronaut_pan"])
    frames = []
    for index in range(count):
        y, u, v = reader.read_frame(index).to_tensors()
        uv = torch.cat([u, v], dim=1)
        frames.append((mirror_tile(y, height, width), mirror_tile(uv, height // 2, width // 2)))
    return frames


def build(args: argparse.Namespace) -> Any:
    import importlib

    if args.ckpt:
        from nvc_train.codecs.neural import NeuralCodec

        return NeuralCodec.from_checkpoint(args.ckpt).net
    torch.manual_seed(0)
    net = importlib.import_module("models").build_model(args.model)
    net.update()
    return net.eval()


PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}  # None: no autocast


def compile_transforms(net: Any, options: dict[str, Any]) -> list[str]:
    """``torch.compile`` the network's transforms: its own ``compile_transforms`` where it has one
    (it knows which parts the coding path calls), else each direct sub-network's forward."""
    if hasattr(net, "compile_transforms"):
        return net.compile_transforms(**options)
    names = []
    for name, child in net.named_children():
        child.compile(**options)
        names.append(name)
    return names


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    dtype = PRECISIONS[args.precision]
    if dtype is torch.float16 and device.type != "cuda":
        raise SystemExit("--precision fp16 is for a CUDA device (on the CPU use --precision bf16)")
    if args.cuda_graphs and device.type != "cuda":
        raise SystemExit("--cuda-graphs needs a CUDA device (--compile compiles without them)")
    net = build(args).to(device)
    net.update(force=True)  # tables follow the weights (and the device)
    # Counted first, on the plain float32 network: MACs do not depend on precision or compilation.
    kmac_h, kmac_w = args.kmac_height or args.height, args.kmac_width or args.width
    started = time.perf_counter()
    cx = {t: codec_complexity(net, kmac_h, kmac_w, t, device=device) for t in ("I", "P")}
    count_s = time.perf_counter() - started
    notes = []
    if args.compile or args.cuda_graphs:
        options = {"mode": "reduce-overhead"} if args.cuda_graphs else {}
        compiled = compile_transforms(net, options)
        notes.append(
            f"torch.compile({', '.join(f'{k}={v!r}' for k, v in options.items())}) of {len(compiled)} parts"
        )
    height, width = padded_size(args.height, args.width, net.pad_multiple)
    frames = [(y.to(device), uv.to(device)) for y, uv in load_frames(args.frames, height, width)]

    def precision() -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)

    q = net.num_q // 2 if args.q is None else args.q

    def encode(chain: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[bytes, Any]]:
        with precision():
            return encode_chain(net, chain, q)

    def decode(coded: list[tuple[bytes, Any]]) -> list[torch.Tensor]:
        with precision():
            return decode_chain(net, [data for data, _ in coded], q, height, width)

    timing = measure_fps(encode, decode, frames, warmup=args.warmup, repeats=args.repeats, device=device)
    coded = encode(frames)
    decoded = decode(coded)
    exact = all(torch.equal(d, out.y_hat) for d, (_, out) in zip(decoded, coded, strict=True))
    bits = [8 * len(data) for data, _ in coded]
    return {
        "model": args.ckpt or args.model,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu x{torch.get_num_threads()}",
        "precision": args.precision,
        "notes": ", ".join(notes) or "-",
        "size": f"{args.width}x{args.height}"
        + ("" if (height, width) == (args.height, args.width) else f" (run {width}x{height})"),
        "frames": args.frames,
        "q": q,
        "enc_fps": timing["enc_fps"],
        "dec_fps": timing["dec_fps"],
        "bits_i": bits[0],
        "bits_p": sum(bits[1:]) / max(len(bits) - 1, 1),
        "decode_exact": exact,
        "params_m": cx["P"]["params_m"],
        "kmac_i": cx["I"]["kmac_per_px"],
        "kmac_p": cx["P"]["kmac_per_px"],
        "kmac_at": f"{kmac_w}x{kmac_h}",
        "count_s": count_s,
    }


def print_table(row: dict[str, Any]) -> None:
    header = (
        "| model | device | precision | size | frames | enc fps | dec fps | I bits | P bits (mean) "
        "| decode exact | params (M) | kMAC/px I | kMAC/px P | kMAC at |"
    )
    print(header)
    print("|" + "---|" * header.count(" | ") + "---|")
    notes = "" if row["notes"] == "-" else f" ({row['notes']})"
    print(
        f"| {row['model']} | {row['device']} | {row['precision']}{notes} "
        f"| {row['size']} | {row['frames']} (q {row['q']}) | {row['enc_fps']:.2f} | {row['dec_fps']:.2f} "
        f"| {row['bits_i']} | {row['bits_p']:.0f} | {'yes' if row['decode_exact'] else 'NO'} "
        f"| {row['params_m']:.2f} | {row['kmac_i']:.1f} | {row['kmac_p']:.1f} | {row['kmac_at']} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="dcvc_lite_tiny", help="a registered model name")
    parser.add_argument("--ckpt", default=None, help="time a train.py checkpoint instead of a fresh model")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=448)
    parser.add_argument("--frames", type=int, default=4, help="I + (frames - 1) P frames per round")
    parser.add_argument("--q", type=int, default=None, help="q_index (default: the middle one)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32", help="autocast dtype")
    parser.add_argument("--fp16", action="store_true", help="--precision fp16")
    parser.add_argument("--compile", action="store_true", help="torch.compile the transforms")
    parser.add_argument(
        "--cuda-graphs", action="store_true", help="torch.compile(mode='reduce-overhead'): CUDA graphs"
    )
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--kmac-height", type=int, default=None, help="count kMAC/px at this size (default: --height)"
    )
    parser.add_argument("--kmac-width", type=int, default=None)
    args = parser.parse_args(argv)
    if args.fp16:
        args.precision = "fp16"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.frames < 1:
        parser.error("--frames must be at least 1")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads")
    print_table(run(args))


if __name__ == "__main__":
    main()
