"""Parameters, kMAC per pixel and encode / decode FPS of a neural video codec (the review's Table 5).

Why the framework counts, not each model: a kMAC/px figure is only comparable between codecs when one
counter with one convention produced all of them. The convention here is the NVC review's (and most
papers'):

* **Counted** (through :class:`torch.utils.flop_counter.FlopCounterMode`, which sees the aten ops a
  forward pass really dispatches): convolutions and transposed convolutions (``aten.convolution``),
  matrix products (``mm``, ``matmul``, ``addmm``, ``bmm``, ``baddbmm``; ``nn.Linear`` lowers to
  ``addmm`` / ``mm``) and scaled dot-product attention. FlopCounterMode counts one multiply-add as 2
  FLOPs for every one of these ops, so **MACs = FLOPs / 2**.
* **Not counted**: elementwise ops (activations, additions, bias terms, normalisation, quantisation
  rounding, likelihood evaluation), pooling, interpolation, and the arithmetic entropy coder itself.
  Papers leave these out too; for convolutional codecs they are a few percent of the total.

kMAC/px is the MACs of coding one frame (``forward_frame``: analysis, hyperprior, entropy parameters and
synthesis; everything an encoder runs, a superset of the decoder) divided by the luma pixels of the
*unpadded* frame, as papers report it at 1920x1080 (the network runs on the frame padded to its
``pad_multiple``, and that padding is part of the cost).

Memory and time at 1080p: counting runs real tensors on the network's device under ``torch.no_grad``
(activations are freed as the forward goes, so the peak is a few activation maps). On two CPU cores
``dcvc_lite`` at 1920x1080 (padded to 1088) takes about 11 s for an I frame and 20 s for a P frame (its
reference intra frame included), at a peak of 1.8 GB resident; ``dcvc_lite_tiny`` about 3 s each, 1.2 GB.
``device="meta"`` counts on a meta copy of the network instead (no memory, no arithmetic), but only
networks without data-dependent Python (``.item()``, ``bool(tensor)``, range checks on ``q_index``) can
run on meta tensors; ``dcvc_lite`` checks its ``q_index`` values and so cannot, which is why real
tensors are the default.

Scene-adaptive networks (``models.adaptive.SceneAdaptiveNet``: C3, Cool-Chic, HiNeRV) are built for one
sequence, so their figures hold at a stated size AND frame count (:func:`adaptive_complexity`; the
command line's ``--frames``, default :data:`ADAPTIVE_FRAMES`, UVG's 600 frames at 1080p as the review
counts HiNeRV). Their parameter count is the **network weights only** (what the parameter coder codes
once per sequence: synthesis, ARM, upsampling; for HiNeRV also its grids, which are coded with the
weights, as the official count has them); per-frame latents are not parameters of the codec and are
reported apart as ``latents_per_px`` (latent values per pixel of one frame) where the network has them.
kMAC/px is one frame's ``frames_forward`` (what the decoder runs per frame): the first frame (intra,
no reference) and, with two or more frames, the second of a low-delay order (a frame with the
previous one as context), divided by the unpadded pixels like the scene-agnostic figures. They count
on ``meta`` tensors (no memory, so HiNeRV-XXL at 1080p and 600 frames costs nothing); a network that
cannot build or run on meta is counted on real CPU tensors, whose memory grows with the frames (refused
above :data:`FALLBACK_BYTES` unless a device is named).

Run ``python -m nvc_train.complexity dcvc_lite --height 1080 --width 1920`` for a registered model,
``python -m nvc_train.complexity hinerv_m --height 1080 --width 1920 --frames 600`` for an adaptive one.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "ADAPTIVE_FRAMES",
    "FALLBACK_BYTES",
    "adaptive_complexity",
    "codec_complexity",
    "count_macs",
    "decode_chain",
    "encode_chain",
    "measure_fps",
    "padded_size",
    "synchronize",
]


def count_macs(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Multiply-accumulates of one call ``fn(*args, **kwargs)``: conv / matmul / linear / attention only.

    FlopCounterMode counts 2 FLOPs per multiply-add for every op it knows, so the MACs are exactly half
    its total; elementwise ops are not counted (see the module docstring for the full convention).
    """
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops() // 2


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """``height`` and ``width`` rounded up to ``multiple``, as the codec adapter pads a frame."""
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def _test_frame(
    height: int, width: int, device: torch.device, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random 4:2:0 frame: MACs of a convolutional net do not depend on pixel values, but a
    fixed seed keeps the count reproducible for any net whose path might."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.rand(1, 1, height, width, generator=generator)
    uv = torch.rand(1, 2, height // 2, width // 2, generator=generator)
    return y.to(device), uv.to(device)


def codec_complexity(
    net: nn.Module,
    height: int = 1080,
    width: int = 1920,
    frame_type: str = "P",
    q_index: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Parameters (M) and kMAC per pixel of one ``frame_type`` frame ("I" or "P") at ``height x width``.

    ``net`` is a ``models.base.NeuralVideoCodec`` (duck-typed: ``forward_frame``, ``pad_multiple``,
    ``num_q``). The frame is padded to ``pad_multiple`` and run through ``forward_frame`` in eval mode
    without gradients; a P frame is counted against the reference a P frame left (the steady state
    of a low-delay sequence; the intra frame and the first P frame are not counted). ``q_index``
    defaults to the middle rate point (MACs of these nets do not depend on it). ``device`` defaults
    to the net's own; ``"meta"`` counts on a meta copy (see the module docstring). The net's
    training flag, parameters and buffers are left as they were.

    Returns ``params_m`` (every parameter, as ``sum(p.numel())``), ``kmac_per_px``, ``macs`` (the
    count over the padded frame) and the ``height``, ``width`` and ``frame_type`` it was counted at.
    """
    if frame_type not in ("I", "P"):
        raise ValueError(f"frame_type must be 'I' or 'P', got {frame_type!r}")
    if height <= 0 or width <= 0 or height % 2 or width % 2:
        raise ValueError(f"a 4:2:0 frame needs even positive sizes, got {height}x{width}")
    params_m = sum(p.numel() for p in net.parameters()) / 1e6
    own = next(iter(net.parameters()), torch.empty(0)).device
    target = torch.device(device) if device is not None else own
    model = copy.deepcopy(net).to(target) if target.type == "meta" else net
    padded_h, padded_w = padded_size(height, width, int(getattr(net, "pad_multiple", 1)))
    q = int(getattr(net, "num_q", 1)) // 2 if q_index is None else int(q_index)
    y, uv = _test_frame(padded_h, padded_w, torch.device("cpu"))
    y, uv = y.to(target), uv.to(target)
    q_tensor = torch.full((1,), q, dtype=torch.long, device=target)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = None
            if frame_type == "P":
                # Steady state: the P frame after a P frame. The first P frame after an intra frame
                # may build its reference differently (DCVC-RT turns the intra picture into a
                # feature), which is not what a low-delay sequence's other P frames cost.
                ref = model.forward_frame(y, uv, q_tensor, None).ref
                ref = model.forward_frame(y, uv, q_tensor, ref).ref
            macs = count_macs(model.forward_frame, y, uv, q_tensor, ref)
    except (RuntimeError, NotImplementedError) as error:
        _refuse_meta(error, target, f"{type(net).__name__}.forward_frame cannot run on meta tensors", "")
    finally:
        model.train(was_training)
    return {
        "params_m": params_m,
        "kmac_per_px": macs / (height * width) / 1e3,
        "macs": float(macs),
        "height": height,
        "width": width,
        "frame_type": frame_type,
    }


# Frames of the sequence an adaptive network's figures are counted for: UVG's 1080p sequences are 600
# frames, where the review (Table 4) and HiNeRV's paper count HiNeRV (its grids, so its parameters,
# grow with the frame count; per-frame figures of C3 / Cool-Chic do not depend on it).
ADAPTIVE_FRAMES = 600
# The order adaptive figures are counted in: low delay, one intra frame, so frame 1 has frame 0 as context.
LOW_DELAY = {"structure": "ld", "intra_period": -1, "gop_size": 1}
# Parameters and buffers an adaptive network may take when it is counted on real tensors because it
# cannot be counted on meta ones, unless a device is named (C3 at 1080p holds 11 MB of latents a frame).
FALLBACK_BYTES = 2 << 30


def adaptive_complexity(
    net_class: type[nn.Module],
    architecture: Mapping[str, Any],
    height: int,
    width: int,
    device: str | torch.device | None = None,
    fallback_bytes: int = FALLBACK_BYTES,
) -> dict[str, Any]:
    """Parameters (M, network weights only), latents per pixel and kMAC/px of a scene-adaptive network.

    ``net_class`` is a ``models.adaptive.SceneAdaptiveNet`` subclass and ``architecture`` every keyword it
    is built with: the model config's numbers and the geometry the adapter adds (``height`` / ``width``
    padded to ``pad_multiple``, ``num_frames``, the coding structure). MACs are divided by the unpadded
    ``height x width``, as :func:`codec_complexity` does.

    ``device`` None counts on ``meta``; a network that cannot build or run there is counted on real CPU
    tensors, built for all ``num_frames`` frames, if its parameters and buffers would take at most
    ``fallback_bytes`` (estimated from one- and two-frame builds), else ValueError says so. ``"meta"``
    counts on meta only (ValueError if it cannot); another device counts there, whatever it takes.

    Returns ``params_m`` (the coded network weights: ``SceneAdaptiveNet.complexity``), ``latents_per_px``
    where the network has latents, ``kmac_per_px`` (frame 1, or frame 0 of a one-frame sequence),
    ``kmac_per_px_intra`` (frame 0: no reference), ``frames``, ``kmac_resolution``, ``height``,
    ``width``, ``counted_on`` (the device type) and, after a fallback, ``meta_error`` (why not meta).
    """
    if height <= 0 or width <= 0 or height % 2 or width % 2:
        raise ValueError(f"a 4:2:0 frame needs even positive sizes, got {height}x{width}")
    coded = (int(architecture.get("height", 0)), int(architecture.get("width", 0)))
    if coded[0] < height or coded[1] < width:
        raise ValueError(f"the architecture codes {coded[1]}x{coded[0]}, smaller than {width}x{height}")
    frames = int(architecture.get("num_frames", 0))
    if frames < 1:
        raise ValueError(f"the architecture needs num_frames >= 1, got {architecture.get('num_frames')!r}")
    if device is not None:
        return _count_adaptive(net_class, architecture, height, width, torch.device(device))
    try:
        return _count_adaptive(net_class, architecture, height, width, torch.device("meta"))
    except ValueError as error:
        meta_error = str(error.__cause__ or error)[:200]
    if frames > 2:
        one, two = (_tensor_bytes(net_class(**{**architecture, "num_frames": n})) for n in (1, 2))
        need = one + (frames - 1) * (two - one)
        if need > fallback_bytes:
            raise ValueError(
                f"{net_class.__name__} cannot build or run on meta tensors ({meta_error}), and on real "
                f"tensors its {frames} frames at {coded[1]}x{coded[0]} take about {need / 2**30:.1f} GiB "
                f"(more than {fallback_bytes / 2**30:.1f} GiB): count fewer frames, or on a device named "
                "explicitly (device='cpu')"
            )
    figures = _count_adaptive(net_class, architecture, height, width, torch.device("cpu"))
    return {**figures, "meta_error": meta_error}


def _refuse_meta(error: Exception, target: torch.device, what: str, note: str) -> None:
    """Re-raise a failure of counting on real tensors; on meta, say to count on real tensors."""
    if target.type != "meta":
        raise error
    raise ValueError(f"{what} ({error}); count on real tensors (device='cpu'){note}") from error


def _tensor_bytes(net: nn.Module) -> int:
    """Bytes of a network's parameters and buffers (what a real build of it holds)."""
    return sum(t.numel() * t.element_size() for t in [*net.parameters(), *net.buffers()])


def _count_adaptive(
    net_class: type[nn.Module], architecture: Mapping[str, Any], height: int, width: int, target: torch.device
) -> dict[str, Any]:
    """:func:`adaptive_complexity` on one device; a network that cannot use meta raises ValueError."""
    try:
        with torch.device(target):
            net = net_class(**architecture)
        net.eval()
        net.quantizer.mode = "hard"  # the decoder's latents: rounded
        # HiNeRV's own complexity() also counts kMAC/px (frame 0, padded pixels); every network's
        # frames are recounted below, one way, so only its parameters and latents are kept.
        figures = {key: value for key, value in net.complexity().items() if not key.startswith("kmac")}
        frames = int(net.num_frames)

        def frame_macs(index: int) -> int:
            indices = torch.tensor([index], dtype=torch.long, device=target)
            with torch.no_grad():
                return count_macs(net.frames_forward, indices)

        intra = frame_macs(0)
        inter = frame_macs(1) if frames >= 2 else intra
    except (RuntimeError, NotImplementedError) as error:
        _refuse_meta(error, target, f"{net_class.__name__} cannot build or run on meta tensors",
                     ", whose memory grows with num_frames")  # fmt: skip
    pixels = height * width
    return {
        **figures,
        "kmac_per_px": inter / pixels / 1e3,
        "kmac_per_px_intra": intra / pixels / 1e3,
        "frames": frames,
        "kmac_resolution": f"{width}x{height}",
        "height": height,
        "width": width,
        "counted_on": target.type,
    }


def encode_chain(net: nn.Module, frames: Sequence[tuple[torch.Tensor, torch.Tensor]], q_index: int) -> list:
    """Code ``frames`` as I P P ... with ``net.compress_frame``: ``[(payload, FrameOutput), ...]``.

    The chain every speed figure times (the complexity callback, evaluate.py's table, the bench), so
    that they all time the same work: each P frame references the encoder's own previous output.
    """
    coded, ref = [], None
    for y, uv in frames:
        payload, out = net.compress_frame(y, uv, q_index, ref)
        coded.append((payload, out))
        ref = out.ref
    return coded


def decode_chain(net: nn.Module, payloads: Sequence[bytes], q_index: int, height: int, width: int) -> list:
    """Decode an :func:`encode_chain` stream's payloads in order; returns the decoded luma planes."""
    pictures, ref = [], None
    for payload in payloads:
        y_hat, _, ref = net.decompress_frame(payload, q_index, ref, height, width)
        pictures.append(y_hat)
    return pictures


def synchronize(device: str | torch.device | None = None) -> None:
    """Wait for queued device work, so that a wall-clock reading covers it (CUDA / MPS run async).

    ``None`` synchronises CUDA if this process has initialised it; CPU needs nothing.
    """
    kind = torch.device(device).type if device is not None else None
    if kind == "cuda" or (kind is None and torch.cuda.is_available() and torch.cuda.is_initialized()):
        torch.cuda.synchronize(device if kind == "cuda" else None)
    elif kind == "mps":
        torch.mps.synchronize()


def measure_fps(
    encode_fn: Callable[[Sequence[Any]], Any],
    decode_fn: Callable[[Any], Any],
    frames: Sequence[Any],
    warmup: int = 1,
    repeats: int = 3,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Encode and decode frames per second: ``encode_fn(frames) -> coded``, ``decode_fn(coded)``.

    Why this shape: the first calls pay one-off costs (cuDNN autotuning, allocator growth, entropy
    tables, lazy imports), and on a GPU a kernel launch returns before the work is done. So ``warmup``
    untimed encode+decode rounds run first, every timed call is bracketed by :func:`synchronize`, and
    the **median** of ``repeats`` timed rounds is reported (robust to one slow outlier). FPS is
    ``len(frames)`` over that median; ``enc_s`` / ``dec_s`` are the median seconds of one round.
    """
    if not len(frames):
        raise ValueError("measure_fps needs at least one frame")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
    for _ in range(warmup):
        decode_fn(encode_fn(frames))
    synchronize(device)
    enc_times, dec_times = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        coded = encode_fn(frames)
        synchronize(device)
        middle = time.perf_counter()
        decode_fn(coded)
        synchronize(device)
        enc_times.append(middle - started)
        dec_times.append(time.perf_counter() - middle)
    enc_s, dec_s = statistics.median(enc_times), statistics.median(dec_times)
    return {
        "enc_fps": len(frames) / enc_s if enc_s > 0 else float("inf"),
        "dec_fps": len(frames) / dec_s if dec_s > 0 else float("inf"),
        "enc_s": enc_s,
        "dec_s": dec_s,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m nvc_train.complexity MODEL [--height H --width W] [--frames N]``: params and kMAC/px.

    Scene-agnostic models: an I and a P frame. Scene-adaptive ones (built per sequence): frame 0 and
    frame 1 of a low-delay sequence of ``--frames`` frames at that size (:func:`adaptive_complexity`).
    """
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("model", help="a model config name (configs/model/NAME.yaml)")
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument(
        "--frames",
        type=int,
        default=None,
        help=f"scene-adaptive models: frames of the sequence they are built for (default {ADAPTIVE_FRAMES})",
    )
    parser.add_argument(
        "--device",
        default=None,
        help="cpu, cuda, meta (default: cpu; scene-adaptive models: meta, else cpu where they cannot)",
    )
    args = parser.parse_args(argv)

    # The config group's reader and the class registry, through nvc_train.networks (the one module
    # that imports models): a name is looked up among configs/model/*.yaml, never imported.
    from nvc_train.networks import build_named_model, named_model

    try:
        net_class, numbers, adaptive = named_model(args.model)
    except ValueError as error:
        parser.error(str(error))
    if adaptive:
        _print_adaptive(args.model, net_class, numbers, args.height, args.width, args.frames, args.device)
        return
    if args.frames is not None:
        parser.error(f"--frames is for scene-adaptive models; {args.model} codes any number of frames")

    net = build_named_model(args.model).to(args.device or "cpu")
    extra = {k: v for k, v in net.complexity().items() if k != "params_m"}
    for frame_type in ("I", "P"):
        started = time.perf_counter()
        out = codec_complexity(net, args.height, args.width, frame_type, device=args.device)
        print(
            f"{args.model} {args.width}x{args.height} {frame_type}: params {out['params_m']:.3f} M, "
            f"{out['kmac_per_px']:.1f} kMAC/px ({time.perf_counter() - started:.1f} s to count)"
        )
    for key, value in extra.items():
        print(f"{args.model} {key}: {value:.3f}")


def _print_adaptive(
    name: str,
    net_class: type[nn.Module],
    numbers: Mapping[str, Any],
    height: int,
    width: int,
    frames: int | None,
    device: str | None,
) -> None:
    """The command line's lines for a scene-adaptive model (see :func:`main`)."""
    frames = ADAPTIVE_FRAMES if frames is None else frames
    if frames < 1:
        raise SystemExit(f"--frames must be at least 1, got {frames}")
    padded_h, padded_w = padded_size(height, width, int(getattr(net_class, "pad_multiple", 1)))
    architecture = {**numbers, "height": padded_h, "width": padded_w, "num_frames": frames, **LOW_DELAY}
    started = time.perf_counter()
    try:
        out = adaptive_complexity(net_class, architecture, height, width, device=device)
    except ValueError as error:
        raise SystemExit(f"{name}: {error}") from None
    took = time.perf_counter() - started
    where = f"{name} {width}x{height}, {frames} frames (scene-adaptive, low delay)"
    print(
        f"{where}: params {out['params_m']:.3f} M = {round(out['params_m'] * 1e6):,} (coded network "
        "weights only; per-frame latents apart), "
        f"{out['kmac_per_px_intra']:.2f} kMAC/px frame 0 (intra), {out['kmac_per_px']:.2f} kMAC/px "
        f"frame {min(1, frames - 1)} ({took:.1f} s to count on {out['counted_on']})"
    )
    if "latents_per_px" in out:
        print(f"{name} latents_per_px: {out['latents_per_px']:.3f} (latent values per pixel of each frame)")
    if "meta_error" in out:
        print(f"{name}: counted on real CPU tensors, not meta: {out['meta_error']}")


if __name__ == "__main__":
    main()
