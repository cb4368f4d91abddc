#!/usr/bin/env python3
"""Make tests/fixtures/official/maskcrt/ by running the OFFICIAL MaskCRT code (NYCU-MAPL/MaskCRT).

The official code never enters this project. This script runs in the project's Python, writes the
inputs, then re-invokes itself (``_worker``) under the interpreter of a separate virtual
environment where the official checkout imports (torch, timm, einops, pyyaml, scipy); the worker
builds the published model, fills it with the deterministic rule below, codes I + 3 P frames of a
small crop of a real clip at three quality levels and writes DATA only: tensor names and shapes,
inputs, reconstructions, ideal bits, counts.

    python tools/make_maskcrt_fixtures.py --maskcrt /path/to/MaskCRT \
        --maskcrt-python /path/to/maskcrt-venv/bin/python --out tests/fixtures/official/maskcrt

The official checkout targets Python 3.8 with CUDA. The worker makes it import on a CPU-only
Python 3.11 WITHOUT touching the checkout, by entries in its own ``sys.modules`` (see
``_install_import_stand_ins``): the vendored CompressAI's compiled ``_CXX`` / ``ans`` (built for
CPython 3.8; used only for real bitstreams, which these fixtures do not need: the bits are the
ideal ones), ``comet_ml`` / ``flowiz`` / ``ptflops`` / ``torchinfo`` (logging and counting tools),
``matplotlib`` when absent, ``numpy.lib.arraysetops`` (removed in numpy 2), and ``.cuda()`` as the
identity (the training script calls it at module level).

Fill rule: the uniform stream of tools/make_official_fixtures.py (imported, not repeated); the
intra model uses its DCVC-DC rule (same tensor names as DCVC-DC's IntraNoAR); the inter modules use
``maskcrt_inter_fill`` below; the meta.json spells both out and fill_digests.json checks an
implementation.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_official_fixtures import (  # noqa: E402  (the shared fill rule and helpers)
    BIAS_HALF_RANGE,
    RULES_TEXT,
    _git_head,
    _he_range,
    crop_planes,
    dcvc_dc_fill,
    digest,
    dump_names_shapes,
    fill_tensor,
)

CLIP = "cars_320x240_30f.y4m"
SIZE = (128, 128)  # (H, W): the official test crops to a multiple of 128, so no module pads
N_FRAMES = 4  # I, first P (hyperprior motion coder), P 2 (duplicated frame, zero flow), P 3 (steady)
INTRA_PREFIX = "if_model.net."

# Three "quality levels". MaskCRT ships one checkpoint per rate (Q2..Q5); the only thing the code
# does with the level is pick the intra model's anchor (q_index = Q - 2). Random weights have no
# rate, so each level also scales the layer that produces every inter latent y by a gain: a larger
# y spans more quantization bins, so it costs more bits and is reconstructed more finely.
LEVELS = {2: 0.5, 3: 1.0, 5: 2.0}  # quality_level -> gain on the y-producing layers
Y_PRODUCERS = (
    "Motion.net.g_a.6.",  # first-P motion coder: last analysis conv
    "CondMotion.net.analysis.conv2.",  # conditional motion coder: conv before the last Swin stage
    "Residual.net.analysis.conv_for_ctm.",  # residual coder: conv before the channel transform
)

# Gains and ranges for the inter modules (weights: uniform with std gain / sqrt(fan_in)), chosen so
# that random weights behave like a codec on the fixture frames: flows of a few pixels, prior scales
# of about 1 .. 4, reconstructions mostly inside [0, 1].
INTER_SMALL_GAIN = 0.01  # prior heads: their outputs are about their biases
INTER_SMALL = (
    "Motion.net.h_s.4.",
    "CondMotion.net.PA.4.",
    "Residual.net.PA.4.",
    "Residual.net.context_model.y_spatial_prior.",
)
INTER_SCALED = {
    "MENet.net.Blocks.": 1.0,
    "MWNet.net.final_flow.": 0.1,
    "Motion.net.g_s.6.": 0.1,
    "CondMotion.net.synthesis.deconv2.": 0.1,
    "Residual.net.synthesis.deconv2.": 0.02,  # residual of a few tenths: reconstructions mostly unclamped
    "MCNet.net.d1.3.": 0.1,
    "Residual.net.analysis.conv_for_ctm.": 0.2,  # residual symbols of about 1 .. 2 at gain 1
    "CondMotion.net.analysis.conv2.": 0.5,
    "Motion.net.g_a.6.": 8.0,  # the small SPyNet flow would otherwise quantize to all zeros
}
SPY_FLOW_HEAD_GAIN = 0.1  # MENet.net.Blocks.*.8: flow updates of a pixel or less per level
INTER_BIAS_SLICES = {
    # bias -> {part: (start, end, lo, hi)}: prior heads' [scales | means] channel layout
    "Motion.net.h_s.4.bias": {"scales": (0, 128, 1.5, 4.0)},
    "CondMotion.net.PA.4.bias": {"scales": (0, 96, 1.5, 4.0)},
    "Residual.net.PA.4.bias": {"scales": (0, 192, 1.5, 4.0)},
    "Residual.net.context_model.y_spatial_prior.block.0.conv2.bias": {"scales": (0, 192, 1.5, 4.0)},
}
MC_HEAD_BIAS = "MCNet.net.d1.3.bias"  # motion-compensated frame: about mid grey before the residual
RES_HEAD_BIAS = "Residual.net.synthesis.deconv2.bias"  # residual: what the mask leaves of mid grey


def maskcrt_inter_fill(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The fill of one inter parameter (quality gain not included)."""
    leaf = name.rsplit(".", 1)[-1]
    if ".entropy_bottleneck." in name:
        if leaf == "quantiles":
            return fill_tensor(name, shape, -0.5, 0.5)  # only the medians ([:, 0, 1]) are used
        return fill_tensor(name, shape, -1.0, 1.0)  # factorized density: matrices, biases, factors
    if leaf == "relative_position_bias_table":
        return fill_tensor(name, shape, -0.02, 0.02)
    if leaf == "temperature":
        return fill_tensor(name, shape, 0.5, 1.5)
    if leaf == "beta" and len(shape) == 1:  # GDN beta (stored as the square root)
        return fill_tensor(name, shape, 0.9, 1.1)
    if leaf == "gamma" and len(shape) == 2:  # GDN gamma (stored as the square root)
        return fill_tensor(name, shape, 0.0, 0.1)
    if _is_norm_weight(name, shape):
        return fill_tensor(name, shape, 0.5, 1.5)
    if len(shape) >= 2:
        gain = 1.0
        for prefix, value in INTER_SCALED.items():
            if name.startswith(prefix):
                gain = value
        if name.startswith("MENet.net.Blocks.") and name.endswith(".8.weight"):
            gain = SPY_FLOW_HEAD_GAIN
        if name.startswith(INTER_SMALL):
            gain = INTER_SMALL_GAIN
        return fill_tensor(name, shape, *_he_range(shape, gain))
    if name == MC_HEAD_BIAS:
        return fill_tensor(name, shape, 0.3, 0.7)
    if name == RES_HEAD_BIAS:
        return fill_tensor(name, shape, 0.15, 0.35)
    arr = fill_tensor(name, shape, -BIAS_HALF_RANGE, BIAS_HALF_RANGE)
    for part, (a, b, lo, hi) in INTER_BIAS_SLICES.get(name, {}).items():
        arr[a:b] = fill_tensor(f"{name}#{part}", (b - a,), lo, hi)
    return arr


def _is_norm_weight(name: str, shape: tuple[int, ...]) -> bool:
    """LayerNorm weights (Swin norm1/norm2, CTM's LayerNorm bodies): 1-d, multiplicative."""
    if len(shape) != 1 or not name.endswith(".weight"):
        return False
    module = name.rsplit(".", 2)[-2]
    return module in ("norm1", "norm2", "body")


def maskcrt_fill(name: str, shape: tuple[int, ...], gain: float = 1.0) -> np.ndarray:
    """The fill of one Pframe parameter: intra by the DCVC-DC rule, inter by ``maskcrt_inter_fill``;
    ``gain`` multiplies the y-producing layers (weights and biases) of the quality level."""
    if name.startswith(INTRA_PREFIX):
        return dcvc_dc_fill(name[len(INTRA_PREFIX) :], shape, "intra")
    arr = maskcrt_inter_fill(name, shape)
    if name.startswith(Y_PRODUCERS):
        arr = (arr.astype(np.float64) * gain).astype(np.float32)
    return arr


MASKCRT_RULES = {
    "intra (names if_model.net.*)": "the DCVC-DC intra rule of tools/make_official_fixtures.py "
    "(dcvc_dc_fill(name without 'if_model.net.', shape, 'intra')); see ../dcvc_dc/meta.json",
    "inter *.entropy_bottleneck.quantiles": "fill(name, shape, -0.5, 0.5)",
    "inter *.entropy_bottleneck.* (other)": "fill(name, shape, -1, 1)",
    "relative_position_bias_table": "fill(name, shape, -0.02, 0.02)",
    "temperature (CTM channel attention)": "fill(name, shape, 0.5, 1.5)",
    "GDN beta (1-d) / gamma (2-d)": "fill(name, shape, 0.9, 1.1) / fill(name, shape, 0, 0.1)",
    "LayerNorm weights (*.norm1.weight, *.norm2.weight, *.body.weight)": "fill(name, shape, 0.5, 1.5)",
    "weights: gain (later rules win)": "1.0; "
    + "; ".join(f"{k}* {v}" for k, v in INTER_SCALED.items())
    + f"; MENet.net.Blocks.*.8.weight {SPY_FLOW_HEAD_GAIN}; {INTER_SMALL_GAIN} for "
    + ", ".join(f"{p}*" for p in INTER_SMALL),
    f"{MC_HEAD_BIAS}": "fill(name, shape, 0.3, 0.7)",
    f"{RES_HEAD_BIAS}": "fill(name, shape, 0.15, 0.35)",
    "prior biases": "the bias rule, then channel slices [a, b) overwritten with "
    "fill(name + '#' + part, (b - a,), lo, hi): "
    + "; ".join(
        f"{n} {p} [{a}, {b}) -> [{lo}, {hi})"
        for n, parts in INTER_BIAS_SLICES.items()
        for p, (a, b, lo, hi) in parts.items()
    ),
    "quality level": "quality_level Q in "
    + str(sorted(LEVELS))
    + ": intra anchor q_index = Q - 2 (as the official code); the filled weights AND biases of "
    + ", ".join(f"{p}*" for p in Y_PRODUCERS)
    + " are multiplied (float64, then float32) by the gain "
    + ", ".join(f"Q{q}: {g}" for q, g in LEVELS.items()),
    "buffers": "not filled (as constructed: bounds, pedestals, Swin indices and masks, SPyNet mean/std; "
    "CDF buffers empty)",
}


# --------------------------------------------------------------------------------------------
# Inputs (project Python)
# --------------------------------------------------------------------------------------------


def write_inputs(clip: Path, out: Path) -> dict:
    """uint8 YUV 4:2:0 planes and the uint8 RGB frames the model reads (as the official test reads PNGs)."""
    import torch

    from nvc_train.video.colour import yuv420_to_rgb
    from nvc_train.video.readers import open_video

    reader = open_video(clip)
    frames = [reader.read_frame(i) for i in range(N_FRAMES)]
    h, w = SIZE
    ys, us, vs, origin = crop_planes(frames, h, w)
    planes = [torch.from_numpy(a.astype(np.float32) / 255.0) for a in (ys, us, vs)]
    rgb = yuv420_to_rgb(planes[0][:, None], planes[1][:, None], planes[2][:, None])
    rgb_u8 = (rgb.clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()  # (T, 3, H, W)
    key = f"{h}x{w}"
    buf = io.BytesIO()
    np.savez(buf, **{f"y_{key}": ys, f"u_{key}": us, f"v_{key}": vs, f"rgb_{key}": rgb_u8})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buf.getvalue())
    return {
        "clip": clip.name,
        "frames": list(range(N_FRAMES)),
        "crop": {"top": origin[0], "left": origin[1], "height": h, "width": w},
        "format": f"inputs.npz: uint8 YUV 4:2:0 planes y_{key} (T,H,W), u_{key}, v_{key} (T,H/2,W/2); "
        f"rgb_{key} (T,3,H,W) uint8 = round(255 * clamp(nvc_train.video.colour.yuv420_to_rgb(y,u,v), 0, 1)) "
        "(BT.709 limited range, bilinear chroma); the model input is rgb / 255 as float32 (1,3,H,W), "
        "like the official test's PNG frames",
    }


# --------------------------------------------------------------------------------------------
# Worker (official interpreter)
# --------------------------------------------------------------------------------------------


def _install_import_stand_ins(torch) -> None:
    """Make the official modules import on a CPU-only Python 3.11, in this process only."""

    class _NoCoder:
        """Constructible (every entropy model builds one); any coding call fails loudly."""

        def __getattr__(self, name):
            raise NotImplementedError(f"the vendored rANS binary (CPython 3.8) is not loadable: {name}")

    def _unavailable(*a, **k):
        raise NotImplementedError("not available in the fixture worker (a stand-in)")

    stand_ins = {
        "compressai._CXX": {"pmf_to_quantized_cdf": _unavailable},
        "compressai.ans": {"BufferedRansEncoder": _NoCoder, "RansDecoder": _NoCoder, "RansEncoder": _NoCoder},
        "comet_ml": {"Experiment": _NoCoder, "ExistingExperiment": _NoCoder},
        "flowiz": {},
        "ptflops": {"get_model_complexity_info": _unavailable},
        "torchinfo": {"summary": _unavailable},
    }
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        stand_ins["matplotlib"] = {}
        stand_ins["matplotlib.pyplot"] = {"sca": None, "get_cmap": None}
        stand_ins["matplotlib.lines"] = {"Line2D": object}
    try:
        import numpy.lib.arraysetops  # noqa: F401
    except ImportError:
        stand_ins["numpy.lib.arraysetops"] = {"isin": np.isin}
    for mod_name, attrs in stand_ins.items():
        mod = types.ModuleType(mod_name)
        for k, v in attrs.items():
            setattr(mod, k, v)
        sys.modules[mod_name] = mod
    if "matplotlib" in stand_ins:
        sys.modules["matplotlib"].pyplot = sys.modules["matplotlib.pyplot"]
        sys.modules["matplotlib"].lines = sys.modules["matplotlib.lines"]
    if not torch.cuda.is_available():
        torch.nn.Module.cuda = lambda self, *a, **k: self
        torch.Tensor.cuda = lambda self, *a, **k: self


def _ideal_bits(likelihood) -> float:
    """The official rate: sum of -log2(max(likelihood, 1e-9)) (util.estimate_bpp times H*W), float64."""
    import torch

    return float((-torch.log2(likelihood.double().clamp_min(1e-9))).sum())


def _dcvc_bits(likelihood) -> float:
    """DCVC-DC's own intra bit count for the same probabilities: sum of max(0, -log2(p + 1e-5))."""
    import torch

    return float((-torch.log2(likelihood.double() + 1e-5)).clamp_min(0).sum())


PROBE_STRIDE = 8  # intermediate tensors are kept on a strided grid (every 8th row and column)


def _probe(t):
    """A small exact sample of an intermediate tensor: float32 [..., ::8, ::8] and the full mean."""
    return {
        "grid": t[0, :, ::PROBE_STRIDE, ::PROBE_STRIDE].detach().float().clone(),
        "mean": float(t.double().mean()),
    }


def worker(args) -> None:
    import torch

    torch.set_num_threads(int(os.environ.get("MASKCRT_THREADS", "1")))
    torch.use_deterministic_algorithms(True)
    _install_import_stand_ins(torch)
    src = Path(args.maskcrt).resolve()
    sys.path.insert(0, str(src))
    import yaml

    official = __import__("CondMo_CondResTransformerCodec")
    from compressai.models import __CODER_TYPES__

    confs = {
        "motion_coder": "config/DVC_motion.yml",
        "cond_motion_coder": "config/CondMo_predprior.yml",
        "residual_coder": "config/CondInter_with_CTM_Checkerboard_Context.yml",
    }

    def coder(path):
        cfg = yaml.safe_load((src / path).read_text())
        return __CODER_TYPES__[cfg["model_architecture"]](**cfg["model_params"])

    def build(quality):
        argv = [
            "--MENet", "SPy", "--if_coder", "DCVC-DC_Intra",
            "--motion_coder_conf", confs["motion_coder"],
            "--cond_motion_coder_conf", confs["cond_motion_coder"],
            "--residual_coder_conf", confs["residual_coder"],
            "--quality_level", str(quality), "--gop", "32", "--test", "-c",
        ]  # fmt: skip
        a = official.parse_args(argv)
        return official.Pframe(a, coder(a.motion_coder_conf), coder(a.cond_motion_coder_conf),
                               coder(a.residual_coder_conf), None).eval()  # fmt: skip

    data = np.load(args.inputs)
    key = f"{SIZE[0]}x{SIZE[1]}"
    frames = torch.from_numpy(data[f"rgb_{key}"].astype(np.float32) / 255.0)  # (T, 3, H, W)
    out = Path(args.out)
    runs, digests, shapes, counts = {}, {}, None, None
    for quality, gain in LEVELS.items():
        net = build(quality)
        params = dict(net.named_parameters())
        with torch.no_grad():
            for name in sorted(params):
                arr = maskcrt_fill(name, tuple(params[name].shape), gain)
                params[name].copy_(torch.from_numpy(arr))
                if gain == 1.0:
                    digests[name] = digest(arr)
        if shapes is None:
            sd = net.state_dict()
            shapes = {
                "state_dict": {k: list(v.shape) for k, v in sd.items()},
                "non_persistent_buffers": {k: list(b.shape) for k, b in net.named_buffers() if k not in sd},
            }
            total = sum(p.numel() for p in net.parameters())
            intra = sum(p.numel() for p in net.if_model.parameters())
            counts = {
                "total": total,
                "intra (if_model)": intra,
                "inter": total - intra,
                "inter without the first-P motion coder (Motion)": total
                - intra
                - sum(p.numel() for p in net.Motion.parameters()),
                "per module": {n: sum(p.numel() for p in m.parameters()) for n, m in net.named_children()},
            }
        runs[f"{key}_Q{quality}"] = _code_sequence(net, frames, quality, gain)
        print(
            f"Q{quality}: "
            + ", ".join(f"{f['type']} {f['bits']:.0f} b" for f in runs[f"{key}_Q{quality}"]["frames"])
        )
    buf = io.BytesIO()
    torch.save(runs, buf)
    (out / "outputs.pt").write_bytes(buf.getvalue())
    (out / "names_shapes.json").write_text(dump_names_shapes(shapes))
    (out / "fill_digests.json").write_text(json.dumps(digests, indent=0, sort_keys=True) + "\n")
    (out / "meta_worker.json").write_text(
        json.dumps(
            {
                "parameter_counts": counts,
                "torch": torch.__version__,
                "numpy": np.__version__,
                "python": sys.version.split()[0],
            }
        )
    )


def _code_sequence(net, frames, quality, gain):
    """The official test_step's frame loop (GOP start, first P, later P; buffers of the last 3
    reconstructions and last 2 decoded flows), driving the official modules; records what it gives."""
    import torch

    net.frame_buffer.clear()
    net.flow_buffer.clear()
    out_frames = []
    ref = None  # the previous reconstruction (set after the I frame)
    with torch.no_grad():
        for t in range(frames.shape[0]):
            x = frames[t : t + 1]
            if t == 0:
                net.frame_buffer.clear()
                net.flow_buffer.clear()
                rec, (lik_y, lik_z) = net.if_model(x)
                rec = rec.clamp(0, 1)
                info = {
                    "type": "I",
                    "bits_y": _ideal_bits(lik_y),
                    "bits_z": _ideal_bits(lik_z),
                    "bits_dcvc_y": _dcvc_bits(lik_y),
                    "bits_dcvc_z": _dcvc_bits(lik_z),
                }
                info["bits"] = info["bits_y"] + info["bits_z"]
            else:
                predict = t != 1
                pred_flow = None
                if predict:  # the extrapolated flow as Pframe.motion_forward computes it (probe only)
                    fb = net.frame_buffer
                    frame_buffer = [fb[0], fb[1], fb[2]] if len(fb) == 3 else [fb[0], fb[0], fb[1]]
                    flows = (
                        net.flow_buffer
                        if len(net.flow_buffer) == 2
                        else [torch.zeros_like(net.flow_buffer[0]), net.flow_buffer[0]]
                    )
                    _, pred_flow = net.MWNet(frame_buffer, flows, True)
                rec, likelihoods, m_info, r_info = net(ref, x, predict)
                rec = rec.clamp(0, 1)
                names = ("bits_motion_y", "bits_motion_z", "bits_residual_y", "bits_residual_z")
                info = {"type": "P", "path": "later-P" if predict else "first-P"}
                for n, lik in zip(names, likelihoods, strict=True):
                    info[n] = _ideal_bits(lik)
                info["bits"] = sum(info[n] for n in names)
                probes = {
                    "flow": m_info["flow"],
                    "flow_hat": m_info["flow_hat"],
                    "warped": m_info["warped_frame"],
                    "mc": m_info["mc_frame"],
                    "mask": r_info["mask"],
                    "res": r_info["res"],
                    "res_hat": r_info["res_hat"],
                }
                if pred_flow is not None:
                    probes["pred_flow"] = pred_flow
                info["probes"] = {k: _probe(v) for k, v in probes.items()}
                info["y_symbols"] = {
                    "motion": int(likelihoods[0].numel()),
                    "residual": int(likelihoods[2].numel()),
                }
            info["x_hat"] = rec[0].float().clone()
            info["psnr"] = float(-10 * torch.log10(((rec - x) ** 2).mean()))
            out_frames.append(info)
            net.frame_buffer.append(rec.detach())
            if len(net.frame_buffer) == 4:
                net.frame_buffer.pop(0)
            ref = rec
    return {
        "height": int(frames.shape[-2]),
        "width": int(frames.shape[-1]),
        "quality_level": quality,
        "intra_q_index": quality - 2,
        "y_gain": gain,
        "frames": out_frames,
    }


# --------------------------------------------------------------------------------------------
# Main (project Python)
# --------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", default="make", choices=["make", "_worker"])
    ap.add_argument("--maskcrt", required=True, help="checkout of github NYCU-MAPL/MaskCRT")
    ap.add_argument(
        "--maskcrt-python", help="interpreter where the checkout imports (torch, timm, einops, pyyaml, scipy)"
    )
    ap.add_argument("--maskcrt-commit", help="commit of the checkout when it is not a git work tree")
    ap.add_argument("--clip", default=None, help=f"source clip (default shared/data/clips/{CLIP})")
    ap.add_argument("--out", default="tests/fixtures/official/maskcrt")
    ap.add_argument("--inputs", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.mode == "_worker":
        return worker(args)

    repo = Path(__file__).resolve().parents[1]
    clip = Path(args.clip) if args.clip else repo.parent / "shared" / "data" / "clips" / CLIP
    if not clip.is_file():
        clip = Path("/work/shared/data/clips") / CLIP
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    src = write_inputs(clip, out / "inputs.npz")
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    subprocess.run(
        [args.maskcrt_python or sys.executable, str(Path(__file__).resolve()), "_worker",
         "--maskcrt", args.maskcrt, "--inputs", str(out / "inputs.npz"), "--out", str(out)],
        check=True,
        env=env,
    )  # fmt: skip
    worker_meta = json.loads((out / "meta_worker.json").read_text())
    (out / "meta_worker.json").unlink()
    meta = {
        "official": {
            "repository": "github NYCU-MAPL/MaskCRT",
            "commit": args.maskcrt_commit or _git_head(Path(args.maskcrt)),
            "class": "CondMo_CondResTransformerCodec.Pframe(args, mo_coder, cond_mo_coder, res_coder, None)",
            "configs": {
                "motion_coder (first P)": "config/DVC_motion.yml (GoogleHyperPrior)",
                "cond_motion_coder": "config/CondMo_predprior.yml (QualcommCondSwinHyperPriorCoder)",
                "residual_coder": "config/CondInter_with_CTM_Checkerboard_Context.yml "
                "(QualcommCondSwinHyperPriorCoder_Context)",
                "command line": "--MENet SPy --if_coder DCVC-DC_Intra --quality_level Q --gop 32 --test -c",
            },
            "checkpoints": "models/{PSNR,SSIM}/{PSNR,SSIM}_Q{2..5}.pth.tar ['state_dict']; the loader drops "
            "the second dotted component of every key (DataParallel 'module') and skips 'criterion.*'",
        },
        "input": src,
        "fill_rule": RULES_TEXT | MASKCRT_RULES,
        "settings": {
            "dtype": "float32 on the CPU, eval mode, torch.no_grad, 1 thread, deterministic algorithms",
            "frames": "I (if_model), P 1 forward(predict=False), P 2 and 3 forward(predict=True); every "
            "reconstruction clamped to [0, 1] before it becomes the reference (official test_step)",
            "bits": "ideal: sum of -log2(max(likelihood, 1e-9)) over the likelihood tensors the official "
            "forward returns (util.estimate_bpp x H x W): I (y, z), P (motion y, motion z, residual y, "
            "residual z); bits_dcvc_* = DCVC-DC's own count of the same intra probabilities, "
            "max(0, -log2(p + 1e-5))",
            "probes": f"P frames: float32 [0, :, ::{PROBE_STRIDE}, ::{PROBE_STRIDE}] of intermediate tensors "
            "and their full means, to find the first differing step",
            "levels": {f"Q{q}": {"intra_q_index": q - 2, "y_gain": g} for q, g in LEVELS.items()},
        },
    } | worker_meta
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
