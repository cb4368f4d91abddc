#!/usr/bin/env python3
"""Make the reference fixtures under tests/fixtures/official/ by running the OFFICIAL code.

The official code never enters this project: this script is run from the project with paths to
an official checkout (microsoft/DCVC) and to Python interpreters of separate virtual environments
where the official code runs (see tests/fixtures/official/README.md for how to set them up). It
re-invokes itself under those interpreters (``_worker-dcvc-rt``, ``_worker-dcvc-fm``,
``_worker-dcvc-dc``, ``_worker-ssf``); the workers import the official modules, fill them with
the deterministic rule below, run them on small crops of a real clip and write DATA only: tensor
names and shapes, inputs, outputs, counts.

    python tools/make_official_fixtures.py \
        --dcvc /path/to/DCVC --dcvc-fm /path/to/DCVC --dcvc-dc /path/to/DCVC \
        --dcvc-python /path/to/dcvc-venv/bin/python \
        --compressai-python /path/to/compressai-venv/bin/python \
        --out tests/fixtures/official

Fill rule (every parameter independently, from its name alone):
    u_i = (splitmix64(crc32(name) * 2**32 + i) >> 11) * 2**-53        (i = 0 .. numel-1, C order)
    i.e. uniform in [0, 1), reproducible with integer arithmetic alone (no library RNG involved);
    value = float32(lo + (hi - lo) * u_i), with [lo, hi) chosen per tensor (and, for a few prior
    heads, per channel slice) by ``dcvc_rt_fill`` and ``ssf_fill`` below; the README and each
    meta.json spell the rules out, fill_digests.json checks an implementation.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------------------------
# Deterministic fill (pure numpy; no torch RNG, so any implementation can reproduce it)
# --------------------------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def fill_uniform01(name: str, numel: int) -> np.ndarray:
    """float64 uniforms in [0, 1): splitmix64 of (crc32(name) << 32) + index, top 53 bits."""
    seed = np.uint64(zlib.crc32(name.encode("utf-8")))
    x = (seed << np.uint64(32)) + np.arange(numel, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (2.0**-53)


def fill_tensor(name: str, shape: tuple[int, ...], lo: float, hi: float) -> np.ndarray:
    numel = int(np.prod(shape)) if len(shape) else 1
    u = fill_uniform01(name, numel)
    return (lo + (hi - lo) * u).astype(np.float32).reshape(shape)


def _he_range(shape: tuple[int, ...], gain: float) -> tuple[float, float]:
    # uniform with standard deviation gain / sqrt(fan_in), fan_in = numel / shape[0]
    fan_in = int(np.prod(shape[1:]))
    a = math.sqrt(3.0) * gain / math.sqrt(fan_in)
    return -a, a


WEIGHT_GAIN = 1.0
BIAS_HALF_RANGE = 0.02

# DCVC-RT: gains and ranges chosen so that random weights code like a codec (|y| symbols up to
# about 5 with scales 1.3 .. 4, z symbols about +-10, reconstructions mostly inside [0, 1]) for
# every P frame of the fixture: a plain 1/sqrt(fan_in) fill makes the residual stacks explode.
DCVC_RT_PRIOR_HEADS = {
    # module: slices of its bias (official channel layout) -> [lo, hi) of that slice
    "y_prior_fusion.3": {"q": (0, 2, -2.0, 2.0), "scales": (2, 258, 1.5, 4.0)},  # intra, N = 256
    "y_spatial_prior.3": {"scales": (0, 256, 1.5, 4.0)},  # intra
    "y_prior_fusion.conv.3": {"q": (0, 128, 0.3, 1.5), "scales": (128, 256, 1.5, 4.0)},  # inter
    "y_spatial_prior.conv.2": {"scales": (0, 128, 1.5, 4.0)},  # inter
}
DCVC_RT_PRIOR_HEAD_GAIN = 0.01
DCVC_RT_RECON_PREFIXES = ("dec.dec_2.", "recon_generation_net.head.")
DCVC_RT_RECON_GAIN = 0.1
DCVC_RT_RECON_BIASES = ("dec.dec_2.ffn.2.bias", "recon_generation_net.head.bias")
DCVC_RT_RESIDUAL_END_GAIN = 0.1  # *.dc.3.weight and *.ffn.2.weight: last conv of each residual branch


def dcvc_rt_fill(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The fill of one DCVC-RT tensor (intra DMCI and inter DMC alike)."""
    module = name.rsplit(".", 1)[0]
    if "." not in name and name.startswith("q_"):
        return fill_tensor(name, shape, 0.5, 1.5)  # per-level vectors (L, C, 1, 1): positive
    if name.startswith("bit_estimator_z."):
        return fill_tensor(name, shape, -1.0, 1.0)  # factorized z density: h, b, a
    if len(shape) >= 2:
        gain = WEIGHT_GAIN
        if name.endswith(".dc.3.weight") or name.endswith(".ffn.2.weight"):
            gain = DCVC_RT_RESIDUAL_END_GAIN
        if name.startswith(DCVC_RT_RECON_PREFIXES):
            gain = DCVC_RT_RECON_GAIN
        if module in DCVC_RT_PRIOR_HEADS:
            gain = DCVC_RT_PRIOR_HEAD_GAIN
        return fill_tensor(name, shape, *_he_range(shape, gain))
    if name in DCVC_RT_RECON_BIASES:
        return fill_tensor(name, shape, 0.3, 0.7)
    arr = fill_tensor(name, shape, -BIAS_HALF_RANGE, BIAS_HALF_RANGE)
    if module in DCVC_RT_PRIOR_HEADS and name.endswith(".bias"):
        for part, (a, b, lo, hi) in DCVC_RT_PRIOR_HEADS[module].items():
            arr[a:b] = fill_tensor(f"{name}#{part}", (b - a,), lo, hi)
    return arr


# SSF: the encoders are conv + ReLU, the decoders stride-2 transposed convs + ReLU (fan_in by the
# rule above counts the transposed weight's out * k * k), so both need gains above 1 to keep the
# signal; the scale head gets a small gain and a positive bias so that scales stay in about 1 .. 4.
SSF_ENCODER_GAIN = 2.0  # img/res/motion encoders and the hyper encoders
SSF_HYPER_DECODER_GAIN = 3.0  # hyper_decoder_mean, hyper_decoder_scale (but its last layer)
SSF_SCALE_HEAD_GAIN = 0.1  # *.hyper_decoder_scale.deconv3 (bias in [1, 4))
SSF_DECODER_GAIN = 1.0  # img_decoder, res_decoder, motion_decoder (but its last layer)
SSF_FLOW_HEAD_GAIN = 0.15  # motion_decoder.6: flow in grid units and the scale field stay small


def ssf_fill(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """The fill of one CompressAI ScaleSpaceFlow parameter."""
    leaf = name.rsplit(".", 1)[-1]
    if ".entropy_bottleneck." in name:
        if leaf == "quantiles":  # (C, 1, 3): median m in [-0.5, 0.5), lower m - 10, upper m + 10
            m = fill_tensor(name, (shape[0],), -0.5, 0.5).astype(np.float64)
            return np.stack([m - 10.0, m, m + 10.0], axis=-1).reshape(shape).astype(np.float32)
        if leaf.startswith("_matrix"):
            return fill_tensor(name, shape, -2.0, 0.0)  # softplus: 0.13 .. 0.69 per link
        return fill_tensor(name, shape, -1.0, 1.0)  # _bias*, _factor*
    scale_head = ".hyper_decoder_scale.deconv3." in name
    if len(shape) >= 2:
        if scale_head:
            gain = SSF_SCALE_HEAD_GAIN
        elif name.startswith("motion_decoder.6."):
            gain = SSF_FLOW_HEAD_GAIN
        elif "encoder" in name.rsplit(".", 2)[0]:
            gain = SSF_ENCODER_GAIN
        elif ".hyper_decoder_" in name:
            gain = SSF_HYPER_DECODER_GAIN
        else:
            gain = SSF_DECODER_GAIN
        return fill_tensor(name, shape, *_he_range(shape, gain))
    if scale_head:
        return fill_tensor(name, shape, 1.0, 4.0)
    if name == "img_decoder.6.bias":
        return fill_tensor(name, shape, 0.4, 0.6)
    return fill_tensor(name, shape, -BIAS_HALF_RANGE, BIAS_HALF_RANGE)


def dump_names_shapes(groups: dict) -> str:
    """JSON with one tensor per line: {"group": {"name": [shape...], ...}, ...}."""
    lines = ["{"]
    for gi, (group, shapes) in enumerate(groups.items()):
        lines.append(f"  {json.dumps(group)}: {{")
        items = list(shapes.items())
        for i, (name, shape) in enumerate(items):
            lines.append(
                f"    {json.dumps(name)}: {json.dumps(list(shape))}" + ("," if i + 1 < len(items) else "")
            )
        lines.append("  }" + ("," if gi + 1 < len(groups) else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"


def module_counts(net) -> dict:
    counts: dict = {}
    for name, p in net.named_parameters():
        top = name.split(".", 1)[0]
        counts[top] = counts.get(top, 0) + p.numel()
    return counts


def digest(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr, dtype="<f4").tobytes()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Inputs (run in the project's Python: reads the clip with the project's reader)
# --------------------------------------------------------------------------------------------

CLIP = "cars_320x240_30f.y4m"
N_FRAMES = 4  # I, P (+8), P (+0), P (+4): every hierarchical offset of the official schedule
DCVC_SIZES = [(64, 96), (72, 104)]  # (H, W): a multiple of 16 and one that is not
SSF_SIZES = [(128, 128), (72, 104)]  # a multiple of 128 and one that CompressAI pads
SSF_FRAMES = 3


def crop_planes(frames, h: int, w: int):
    fh, fw = frames[0].y.shape
    y0 = ((fh - h) // 2) & ~1
    x0 = ((fw - w) // 2) & ~1
    ys = np.stack([f.y[y0 : y0 + h, x0 : x0 + w] for f in frames]).astype(np.uint8)
    us = np.stack([f.u[y0 // 2 : (y0 + h) // 2, x0 // 2 : (x0 + w) // 2] for f in frames]).astype(np.uint8)
    vs = np.stack([f.v[y0 // 2 : (y0 + h) // 2, x0 // 2 : (x0 + w) // 2] for f in frames]).astype(np.uint8)
    return ys, us, vs, (y0, x0)


def write_inputs(clip: Path, out: Path, sizes, n_frames: int) -> dict:
    from nvc_train.video.readers import open_video

    reader = open_video(clip)
    frames = [reader.read_frame(i) for i in range(n_frames)]
    arrays, crops = {}, {}
    for h, w in sizes:
        ys, us, vs, origin = crop_planes(frames, h, w)
        key = f"{h}x{w}"
        arrays[f"y_{key}"], arrays[f"u_{key}"], arrays[f"v_{key}"] = ys, us, vs
        crops[key] = {"top": origin[0], "left": origin[1], "height": h, "width": w}
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # uncompressed npz: byte-for-byte deterministic
    out.write_bytes(buf.getvalue())
    return {"clip": clip.name, "frames": list(range(n_frames)), "crops": crops}


# --------------------------------------------------------------------------------------------
# Helpers shared by the workers (run under the official code's interpreter)
# --------------------------------------------------------------------------------------------


def _torch_setup():
    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    return torch


def _save_pt(obj, path: Path):
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    path.write_bytes(buf.getvalue())


def _fill_module(net, fill_fn):
    """Fill every parameter (sorted by name) by the rule; returns (names->shape, names->digest)."""
    import torch

    params = dict(net.named_parameters())
    shapes, digests = {}, {}
    with torch.no_grad():
        for name in sorted(params):
            shape = tuple(params[name].shape)
            arr = fill_fn(name, shape)
            params[name].copy_(torch.from_numpy(arr))
            digests[name] = digest(arr)
    for name, t in net.state_dict().items():
        shapes[name] = list(t.shape)
    return shapes, digests


def _gauss_bits(sym, scale):
    """-log2 P(sym) for integer-valued sym under N(0, scale) integrated over [sym-.5, sym+.5].

    float64; uses the lower tail (-|sym|) of the symmetric density to avoid cancellation."""
    import torch

    a = -sym.abs().double()
    s = scale.double()
    p = torch.special.ndtr((a + 0.5) / s) - torch.special.ndtr((a - 0.5) / s)
    return -torch.log2(p)


# --------------------------------------------------------------------------------------------
# DCVC-RT worker
# --------------------------------------------------------------------------------------------

DCVC_QPS = [0, 31, 63]
# 0.12: the official README's value (on these weights no scale is that small, so it must code
# exactly as None); 2.0: large enough to skip about a fifth of the y elements of the fill
DCVC_FORCE_ZERO = [0.12, 2.0]
DCVC_FORCE_ZERO_QP = 31
# official low-delay schedule: P frame k uses offset-table entry OFFSET_INDEX[k % 8]
# (entries index the P model's qp_shift list); reproduced here as data.
OFFSET_INDEX = [0, 1, 0, 2, 0, 2, 0, 2]
RESET_INTERVAL = 32  # official default of test_video.py


def _stub_cuda(torch):
    """The official coding path calls torch.cuda events/streams/synchronize; on a machine
    without CUDA make them no-ops (in this process only; the checkout is not modified)."""
    if torch.cuda.is_available():
        return False

    class _Event:
        def record(self, *a, **k):
            pass

        def wait(self, *a, **k):
            pass

    class _Stream:
        def __init__(self, *a, **k):
            pass

    torch.cuda.Event = _Event
    torch.cuda.Stream = _Stream
    torch.cuda.stream = lambda *a, **k: contextlib.nullcontext()
    torch.cuda.synchronize = lambda *a, **k: None
    return True


def _rt_root(path: Path) -> Path:
    for cand in (path / "DCVC-family" / "DCVC-RT", path):
        if (cand / "src" / "models" / "video_model.py").is_file():
            return cand
    raise SystemExit(f"no DCVC-RT source under {path} (expected DCVC-family/DCVC-RT/src)")


class _NullCoder:
    """Stands in for the C++ rANS coder when it is not built: the tensor path runs unchanged."""

    def reset(self):
        pass

    def encode_z(self, *a):
        pass

    def encode_y(self, *a):
        pass

    def flush(self):
        pass

    def get_encoded_stream(self):
        return b""

    def set_use_two_entropy_coders(self, *a):
        pass


def worker_dcvc_rt(args):
    torch = _torch_setup()
    os.environ.setdefault("SUPPRESS_CUSTOM_KERNEL_WARNING", "1")
    root = _rt_root(Path(args.dcvc))
    sys.path.insert(0, str(root))
    stubbed = _stub_cuda(torch)
    from src.layers.cuda_inference import replicate_pad  # noqa: E402
    from src.models.image_model import DMCI  # noqa: E402
    from src.models.video_model import DMC  # noqa: E402
    from src.utils import stream_helper  # noqa: E402

    try:
        import MLCodec_extensions_cpp  # noqa: F401

        have_rans = not args.no_rans
    except ImportError:
        have_rans = False

    out = Path(args.out)
    inputs = np.load(args.inputs)

    i_net, p_net = DMCI(), DMC()
    names, digests, counts = {}, {}, {}
    for key, net in (("intra", i_net), ("inter", p_net)):
        names[key], digests[key] = _fill_module(net, dcvc_rt_fill)
        counts[key] = sum(p.numel() for p in net.parameters())
        counts[key + "_by_module"] = module_counts(net)
        net.eval()
    levels = {"intra": i_net.q_scale_enc.shape[0], "inter": p_net.q_encoder.shape[0]}

    # ---- recorders around the official entropy-coding calls (symbols as they are coded) ----
    records: list = []

    def wrap(net):
        be, ge = net.bit_estimator_z, net.gaussian_encoder
        orig_z, orig_y = be.encode_z, ge.encode_y

        def enc_z(x, qp):
            records.append(("z", x.clone(), int(qp)))
            return orig_z(x, qp)

        def enc_y(x, scales):
            records.append(("y", x.clone(), scales.clone()))
            return orig_y(x, scales)

        be.encode_z, ge.encode_y = enc_z, enc_y

    wrap(i_net)
    wrap(p_net)

    def prepare(net, fz):
        if have_rans:
            net.update(fz)
            net.set_use_two_entropy_coders(False)
        else:
            coder = _NullCoder()
            net.entropy_coder = coder
            net.gaussian_encoder.entropy_coder = coder
            net.gaussian_encoder.force_zero_thres = fz
            net.bit_estimator_z.entropy_coder = coder
            net.bit_estimator_z.cdf_group_index = 0
            net.gaussian_encoder.cdf_group_index = 0

    ge = i_net.gaussian_encoder
    scale_min, scale_max = ge.scale_min, ge.scale_max
    scale_table = ge.scale_table.double()

    def y_bits(sym, scales, fz):
        s = scales.clamp(scale_min, scale_max)
        idx = ((torch.log(s) - ge.log_scale_min) * ge.log_step_recip).to(torch.uint8).long()
        coded = s > fz if fz is not None else torch.ones_like(s, dtype=torch.bool)
        b_cont = _gauss_bits(sym, s)[coded].sum().item()
        b_tab = _gauss_bits(sym, scale_table[idx])[coded].sum().item()
        return b_cont, b_tab, int(coded.sum().item()), idx

    def z_bits(net, z_int8, qp):
        be = net.bit_estimator_z
        zf = z_int8.double()
        index = torch.tensor([qp], dtype=torch.int64)
        be64 = {n: p.detach().double() for n, p in be.named_parameters()}
        orig = {n: p.data for n, p in be.named_parameters()}
        try:
            for n, p in be.named_parameters():
                p.data = be64[n]
            p_ = be.get_cdf(zf + 0.5, index) - be.get_cdf(zf - 0.5, index)
        finally:
            for n, p in be.named_parameters():
                p.data = orig[n]
        return (-torch.log2(p_)).sum().item()

    runs = [(*DCVC_SIZES[0], q, None) for q in DCVC_QPS]
    runs += [(*DCVC_SIZES[0], DCVC_FORCE_ZERO_QP, fz) for fz in DCVC_FORCE_ZERO]
    runs += [(*DCVC_SIZES[1], DCVC_QPS[-1], None)]  # the highest level, at a size not a multiple of 16

    results = {}
    enc_dec_maxdiff = 0.0
    with torch.no_grad():
        for h, w, q, fz in runs:
            key = f"{h}x{w}"
            ys = inputs[f"y_{key}"].astype(np.float32)
            us = inputs[f"u_{key}"].astype(np.float32)
            vs = inputs[f"v_{key}"].astype(np.float32)
            prepare(i_net, fz)
            prepare(p_net, fz)
            pad_r, pad_b = DMCI.get_padding_size(h, w, 16)
            frames, streams = [], []
            sps_helper = stream_helper.SPSHelper()
            header_buf = io.BytesIO()
            p_net.set_curr_poc(0)
            last_qp = 0
            for t in range(ys.shape[0]):
                # YUV 4:2:0 -> 4:4:4 by pixel repetition (what the official nearest-neighbour
                # zoom gives for an exact 2x), [0, 1] float32
                x = np.stack([ys[t], us[t].repeat(2, 0).repeat(2, 1), vs[t].repeat(2, 0).repeat(2, 1)])
                x = torch.from_numpy(x)[None] / 255.0
                x_pad = replicate_pad(x, pad_b, pad_r)
                records.clear()
                use_ada_i = 0
                if t == 0:
                    qp_t, offset = q, 0
                    enc = i_net.compress(x_pad, qp_t)
                    p_net.clear_dpb()
                    p_net.add_ref_frame(None, enc["x_hat"])
                    x_hat_enc = enc["x_hat"]
                    net = i_net
                else:
                    fa_idx = OFFSET_INDEX[t % 8]
                    if RESET_INTERVAL > 0 and t % RESET_INTERVAL == 1:
                        use_ada_i = 1
                        p_net.prepare_feature_adaptor_i(last_qp)
                    qp_t = p_net.shift_qp(q, fa_idx)
                    offset = qp_t - q
                    enc = p_net.compress(x_pad, qp_t)
                    last_qp = qp_t
                    # the decoder's reconstruction from the encoder's decoded feature
                    x_hat_enc = p_net.recon_generation_net(
                        p_net.dpb[0].feature, p_net.q_recon[qp_t : qp_t + 1]
                    )
                    net = p_net
                sps = {"sps_id": -1, "height": h, "width": w, "ec_part": 0, "use_ada_i": use_ada_i}
                sps_id, sps_new = sps_helper.get_sps_id(sps)
                sps["sps_id"] = sps_id
                sps_bytes = stream_helper.write_sps(header_buf, sps) if sps_new else 0
                frame_bytes = stream_helper.write_ip(header_buf, t == 0, sps_id, qp_t, enc["bit_stream"])
                streams.append((enc["bit_stream"], dict(sps), qp_t, t == 0))

                zrec = [r for r in records if r[0] == "z"]
                yrec = [r for r in records if r[0] == "y"]
                assert len(zrec) == 1 and len(yrec) == (4 if t == 0 else 2), (len(zrec), len(yrec))
                bz = z_bits(net, zrec[0][1], zrec[0][2])
                by = byt = 0.0
                n_coded = 0
                y_syms, y_scales = [], []
                for _, sym, sc in yrec:
                    b1, b2, nc, _ = y_bits(sym, sc, fz)
                    by, byt, n_coded = by + b1, byt + b2, n_coded + nc
                    y_syms.append(sym.to(torch.int8))
                    y_scales.append(sc.float())
                frames.append(
                    {
                        "type": "I" if t == 0 else "P",
                        "qp": qp_t,
                        "offset": offset,
                        "x_hat": x_hat_enc[0, :, :h, :w].float().clone(),
                        "bits_z": bz,
                        "bits_y": by,
                        "bits_y_table": byt,
                        "bits": bz + by,
                        "y_coded_symbols": n_coded,
                        "z_hat": zrec[0][1].to(torch.int8).clone(),
                        "y_steps": y_syms,
                        "y_step_scales": y_scales,
                        "stream_bytes": len(enc["bit_stream"]) if have_rans else -1,
                        "stream_bytes_with_headers": (frame_bytes + sps_bytes) if have_rans else -1,
                    }
                )
            if have_rans:  # decode with the official decoder: x_hat of every frame
                p_net.set_curr_poc(0)
                for t, (bs, sps, qp_t, is_i) in enumerate(streams):
                    if is_i:
                        dec = i_net.decompress(bs, sps, qp_t)
                        p_net.clear_dpb()
                        p_net.add_ref_frame(None, dec["x_hat"])
                    else:
                        if sps["use_ada_i"]:
                            p_net.reset_ref_feature()
                        dec = p_net.decompress(bs, sps, qp_t)
                    x_dec = dec["x_hat"][0, :, :h, :w].float()
                    diff = (x_dec - frames[t]["x_hat"]).abs().max().item()
                    enc_dec_maxdiff = max(enc_dec_maxdiff, diff)
                    frames[t]["x_hat"] = x_dec.clone()
            name = f"{key}_q{q}" + ("" if fz is None else f"_fz{fz}")
            results[name] = {"height": h, "width": w, "qp": q, "force_zero_thres": fz, "frames": frames}
            print(
                name,
                " ".join(f"{f['type']}{f['qp']}:{f['bits']:.0f}b/{f['stream_bytes']}B" for f in frames),
                file=sys.stderr,
            )

    _save_pt(results, out / "outputs.pt")
    (out / "names_shapes.json").write_text(dump_names_shapes(names))
    (out / "fill_digests.json").write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    import torch as _t

    meta = {
        "parameter_counts": counts,
        "levels": levels,
        "qp_shift": list(p_net.qp_shift),
        "offset_index_by_frame_mod_8": OFFSET_INDEX,
        "reset_interval": RESET_INTERVAL,
        "runs": sorted(results),
        "rans_extension_built": have_rans,
        "cuda_stubbed": stubbed,
        "decoder_vs_encoder_recon_max_abs_diff": enc_dec_maxdiff,
        "torch": _t.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }
    (out / "meta_worker.json").write_text(json.dumps(meta, indent=1) + "\n")


# --------------------------------------------------------------------------------------------
# DCVC-FM worker
# --------------------------------------------------------------------------------------------

FM_QPS = [0, 31, 63]
FM_FRAMES = 10  # frames in inputs.npz; runs code 6 (I, P 1..5: picture-built feature, adaptors 0, 2, 0, 2)
FM_LONG_RUN = (31, 10)  # q and frames of the one 64x96 run long enough to reach adaptor 1 (frame 9)
FM_ADAPTOR_INDEX = [0, 1, 0, 2, 0, 2, 0, 2]  # official index_map of test_helper.py (data)
FM_RESET_INTERVAL = 32  # official default: the reference feature is dropped at t % 32 == 1

# Per-module gains and bias slices that keep random DCVC-FM weights in the regime of a working
# codec on the fixture frames (see tests/fixtures/official/README.md, "DCVC-FM").
FM_RESIDUAL_ENDS = (
    ".block.0.conv2.weight",  # DepthConv: last conv of the depth-wise branch
    ".block.0.out_conv.weight",  # gated DepthConv
    ".block.1.conv.2.weight",  # plain FFN
    ".block.1.conv_out.weight",  # two-half FFNs
)
FM_RESIDUAL_END_GAIN = 0.1
# modules whose weights get FM_SMALL_GAIN: prior heads and the last layers of the spatial-context
# networks, so that their outputs are about their biases
FM_SMALL_PREFIXES = (
    "y_prior_fusion.",
    "y_spatial_prior.",
    "y_spatial_prior_adaptor_",
    "y_prior_fusion_adaptor_",
    "mv_y_prior_fusion.",
    "mv_y_spatial_prior.",
    "mv_y_spatial_prior_adaptor_",
    "mv_y_prior_fusion_adaptor_",
    "align.conv_offset.4.",
    "contextual_hyper_prior_decoder.2.",
    "mv_hyper_prior_decoder.2.",
    "temporal_prior_encoder.2.",
)
FM_SMALL_GAIN = 0.01
FM_SCALED = {  # name prefix -> weight gain
    "y_spatial_prior_reduction.": 0.1,
    "refine.1.": 0.1,
    "recon_generation_net.recon_conv.": 0.1,
    "optic_flow.": 1.0,
}
FM_FLOW_HEAD_GAIN = 0.1  # optic_flow.me_*.conv5: flow updates of a pixel or less
FM_RECON_BIASES = ("refine.1.bias", "recon_generation_net.recon_conv.bias")
FM_BIAS_SLICES = {
    # bias name -> {part: (start, end, lo, hi)}; channel layouts of the official prior tensors
    # intra (N = 256): fused params [q (2) | scales (N) | means (N)]; spatial [scales | means]
    "y_prior_fusion.1.block.0.adaptor.bias": {"q": (0, 2, -2.0, 2.0), "scales": (2, 258, 1.5, 4.0)},
    "y_spatial_prior_adaptor_1.block.0.conv2.bias": {"scales": (0, 256, 0.5, 1.0)},
    "y_spatial_prior_adaptor_2.block.0.conv2.bias": {"scales": (0, 256, 0.5, 1.0)},
    "y_spatial_prior_adaptor_3.block.0.conv2.bias": {"scales": (0, 256, 0.5, 1.0)},
    "y_spatial_prior.0.block.0.conv2.bias": {"scales": (0, 256, 0.5, 1.0)},
    "y_spatial_prior.1.block.0.conv2.bias": {"scales": (0, 256, 0.5, 1.0)},
    "y_spatial_prior.2.block.0.conv2.bias": {"scales": (0, 256, 0.5, 1.0)},
}
FM_INTER_BIAS_SLICES = {
    # inter: fused params [step (C) | scales (C) | means (C)], C = 128 (y) or 64 (motion)
    "y_prior_fusion_adaptor_0.block.0.adaptor.bias": {
        "step": (0, 128, 0.3, 0.7),
        "scales": (128, 256, 0.75, 2.0),
    },
    "y_prior_fusion_adaptor_1.block.0.conv2.bias": {
        "step": (0, 128, 0.3, 0.7),
        "scales": (128, 256, 0.75, 2.0),
    },
    "y_prior_fusion.0.block.0.conv2.bias": {"step": (0, 128, 0.2, 0.4), "scales": (128, 256, 0.5, 1.0)},
    "y_prior_fusion.1.block.0.conv2.bias": {"step": (0, 128, 0.2, 0.4), "scales": (128, 256, 0.5, 1.0)},
    "y_spatial_prior.2.block.0.adaptor.bias": {"scales": (0, 128, 1.5, 4.0)},
    "mv_y_prior_fusion_adaptor_0.block.0.adaptor.bias": {
        "step": (0, 64, 0.3, 0.7),
        "scales": (64, 128, 0.75, 2.0),
    },
    "mv_y_prior_fusion_adaptor_1.block.0.conv2.bias": {
        "step": (0, 64, 0.3, 0.7),
        "scales": (64, 128, 0.75, 2.0),
    },
    "mv_y_prior_fusion.0.block.0.adaptor.bias": {"step": (0, 64, 0.2, 0.4), "scales": (64, 128, 0.5, 1.0)},
    "mv_y_prior_fusion.1.block.0.conv2.bias": {"step": (0, 64, 0.2, 0.4), "scales": (64, 128, 0.5, 1.0)},
    "mv_y_spatial_prior.2.block.0.adaptor.bias": {"scales": (0, 64, 1.5, 4.0)},
}


def dcvc_fm_fill(name: str, shape: tuple[int, ...], half: str) -> np.ndarray:
    """The fill of one DCVC-FM tensor; ``half`` is "intra" (DMCI) or "inter" (DMC)."""
    if "." not in name and ("q_scale" in name or name.endswith(("_q_enc", "_q_dec"))):
        return fill_tensor(name, shape, 0.5, 1.5)  # per-level vectors / rate pairs: positive
    if name.startswith("bit_estimator_z"):
        return fill_tensor(name, shape, -1.0, 1.0)  # factorized z densities: h, b, a
    if len(shape) >= 2:
        gain = WEIGHT_GAIN
        if name.endswith(FM_RESIDUAL_ENDS) or (".res_block" in f".{name}" and name.endswith(".conv2.weight")):
            gain = FM_RESIDUAL_END_GAIN
        for prefix, value in FM_SCALED.items():
            if name.startswith(prefix):
                gain = value
        if name.startswith("optic_flow.") and name.endswith(".conv5.weight"):
            gain = FM_FLOW_HEAD_GAIN
        if name.startswith(FM_SMALL_PREFIXES):
            gain = FM_SMALL_GAIN
        return fill_tensor(name, shape, *_he_range(shape, gain))
    if name in FM_RECON_BIASES:
        return fill_tensor(name, shape, 0.3, 0.7)
    arr = fill_tensor(name, shape, -BIAS_HALF_RANGE, BIAS_HALF_RANGE)
    slices = (FM_BIAS_SLICES if half == "intra" else FM_INTER_BIAS_SLICES).get(name, {})
    for part, (a, b, lo, hi) in slices.items():
        arr[a:b] = fill_tensor(f"{name}#{part}", (b - a,), lo, hi)
    return arr


def _laplace_bits(sym, scale):
    """-log2 P(sym) for integer sym under Laplace(0, scale) over [sym - .5, sym + .5], float64."""
    import torch

    d = sym.abs().double()
    s = scale.double()
    outer = torch.exp(-(d + 0.5) / s)
    far = 0.5 * torch.exp(-(d - 0.5).clamp_min(0) / s) - 0.5 * outer
    near = 1.0 - 0.5 * torch.exp(-(0.5 - d).clamp_min(0) / s) - 0.5 * outer
    return -torch.log2(torch.where(d >= 0.5, far, near))


def _fm_root(path: Path) -> Path:
    for cand in (path / "DCVC-family" / "DCVC-FM", path):
        if (cand / "src" / "models" / "video_model.py").is_file() and (
            cand / "src" / "models" / "block_mc.py"
        ).is_file():
            return cand
    raise SystemExit(f"no DCVC-FM source under {path} (expected DCVC-family/DCVC-FM/src)")


DC_ADAPTOR_INDEX = [0, 1, 0, 2]  # DMC.multi_scale_feature_extractor's index_map (frame_idx % 4)
DC_EXTRA_SMALL = ("contextual_hyper_prior_decoder.8.", "mv_hyper_prior_decoder.8.")
DC_INTRA_BIAS_SLICES = {
    # intra IntraNoAR (N = 256): fused params [step | scales | means]; spatial output [scales | means]
    "y_prior_fusion.1.block.0.adaptor.bias": {"step": (0, 256, 0.5, 1.5), "scales": (256, 512, 1.5, 4.0)},
    "y_spatial_prior.1.block.0.adaptor.bias": {"scales": (0, 256, 1.5, 4.0)},
}


def dcvc_dc_fill(name: str, shape: tuple[int, ...], half: str) -> np.ndarray:
    """The fill of one DCVC-DC tensor: the DCVC-FM rules, DC's rate tensors, hyper decoders and heads."""
    if "." not in name and ("q_basic" in name or "q_scale" in name):
        return fill_tensor(name, shape, 0.5, 1.5)  # rate vectors and anchors: positive
    if len(shape) >= 2 and name.startswith(DC_EXTRA_SMALL):
        return fill_tensor(name, shape, *_he_range(shape, FM_SMALL_GAIN))
    bottleneck_end = name.startswith(("contextual_encoder.res", "contextual_decoder.res")) and name.endswith(
        ".conv2.weight"
    )
    if bottleneck_end:  # the bottleneck residual's last conv
        return fill_tensor(name, shape, *_he_range(shape, FM_RESIDUAL_END_GAIN))
    if half == "intra" and name in DC_INTRA_BIAS_SLICES:
        arr = fill_tensor(name, shape, -BIAS_HALF_RANGE, BIAS_HALF_RANGE)
        for part, (a, b, lo, hi) in DC_INTRA_BIAS_SLICES[name].items():
            arr[a:b] = fill_tensor(f"{name}#{part}", (b - a,), lo, hi)
        return arr
    if half == "intra" and name in FM_BIAS_SLICES:
        return fill_tensor(name, shape, -BIAS_HALF_RANGE, BIAS_HALF_RANGE)  # FM's intra slices do not apply
    return dcvc_fm_fill(name, shape, half)


def _dc_root(path: Path) -> Path:
    for cand in (path / "DCVC-family" / "DCVC-DC", path):
        if (cand / "src" / "models" / "image_model.py").is_file() and (
            cand / "src" / "models" / "video_net.py"
        ).is_file():
            if (cand / "src" / "models" / "block_mc.py").is_file():
                continue  # that is DCVC-FM
            return cand
    raise SystemExit(f"no DCVC-DC source under {path} (expected DCVC-family/DCVC-DC/src)")


class _RecordingCoder:
    """Stands in for the official rANS coder: keeps nothing; the encode calls are recorded above it."""

    def reset(self):
        pass

    def encode_with_indexes(self, *a):
        pass

    def flush(self):
        pass

    def get_encoded_stream(self):
        return b""


def worker_dcvc_fm(args):
    return _worker_dcvc_family(args, "fm")


def worker_dcvc_dc(args):
    return _worker_dcvc_family(args, "dc")


def _worker_dcvc_family(args, variant):
    """DCVC-FM (``variant`` "fm") or DCVC-DC ("dc"): the same recording run, their own calls."""
    torch = _torch_setup()
    os.environ.setdefault("SUPPRESS_CUSTOM_KERNEL_WARNING", "1")
    root = _fm_root(Path(args.dcvc_fm)) if variant == "fm" else _dc_root(Path(args.dcvc_dc))
    sys.path.insert(0, str(root))
    stubbed = _stub_cuda(torch)
    import torch.nn.functional as F  # noqa: E402
    from src.models.video_model import DMC  # noqa: E402

    if variant == "fm":
        from src.models import block_mc  # noqa: E402
        from src.models.image_model import DMCI as Intra  # noqa: E402, N814

        fill_fn, adaptor_index, reset_interval = dcvc_fm_fill, FM_ADAPTOR_INDEX, FM_RESET_INTERVAL
        cuda_kernel = bool(block_mc.CUSTOMIZED_CUDA)
    else:
        from src.models.image_model import IntraNoAR as Intra  # noqa: E402, N814

        fill_fn, adaptor_index, reset_interval = dcvc_dc_fill, DC_ADAPTOR_INDEX, 0
        cuda_kernel = False

    out = Path(args.out)
    inputs = np.load(args.inputs)
    i_net, p_net = Intra(), DMC()
    names, digests, counts = {}, {}, {}
    for key, net in (("intra", i_net), ("inter", p_net)):
        names[key], digests[key] = _fill_module(net, lambda n, s, k=key: fill_fn(n, s, k))
        counts[key] = sum(p.numel() for p in net.parameters())
        counts[key + "_by_module"] = module_counts(net)
        net.eval()
        if variant == "dc":  # the official load_state_dict builds the 64-level *_fine rate tables
            net.load_state_dict(net.state_dict())

    records: list = []
    coder = _RecordingCoder()
    for net in (i_net, p_net):
        net.entropy_coder = coder
        for part in ("bit_estimator_z", "bit_estimator_z_mv", "gaussian_encoder"):
            module = getattr(net, part)
            if module is None:
                continue
            module.entropy_coder = coder
            original = module.encode

            def recorded(x, *extra, _part=part, _original=original):
                kept = (
                    extra[0].clone() if extra and torch.is_tensor(extra[0]) else int(extra[0] if extra else 0)
                )
                records.append((_part, x.clone(), kept))
                return _original(x, *extra)

            module.encode = recorded

    def z_bits(estimator, z, qp):
        index = torch.tensor([qp], dtype=torch.int32)
        originals = {n: p.data for n, p in estimator.named_parameters()}
        try:
            for _, p in estimator.named_parameters():
                p.data = p.data.double()
            zf = z.double()
            if variant == "fm":
                prob = estimator.get_cdf(zf + 0.5, index) - estimator.get_cdf(zf - 0.5, index)
            else:  # one density per channel, no level
                prob = estimator.get_cdf(zf + 0.5) - estimator.get_cdf(zf - 0.5)
        finally:
            for n, p in estimator.named_parameters():
                p.data = originals[n]
        return -torch.log2(prob)

    long_run = FM_LONG_RUN if variant == "fm" else (-1, 6)
    runs = [(64, 96, q, long_run[1] if q == long_run[0] else 6) for q in FM_QPS]
    runs.append((72, 104, FM_QPS[-1], 6))
    results = {}
    stats = {}
    with torch.no_grad():
        for h, w, q, frame_count in runs:
            key = f"{h}x{w}"
            ys = inputs[f"y_{key}"].astype(np.float32)
            us = inputs[f"u_{key}"].astype(np.float32)
            vs = inputs[f"v_{key}"].astype(np.float32)
            pad_b, pad_r = -h % 16, -w % 16
            frames, dpb = [], None
            worst = {
                "bits_per_symbol_max": 0.0,
                "symbols_over_16_bits": 0,
                "abs_symbol_max": 0,
                "clamped_fraction": 0.0,
            }
            for t in range(frame_count):
                x = np.stack([ys[t], us[t].repeat(2, 0).repeat(2, 1), vs[t].repeat(2, 0).repeat(2, 1)])
                x = torch.from_numpy(x)[None] / 255.0
                x_pad = F.pad(x, (0, pad_r, 0, pad_b), mode="replicate")
                records.clear()
                if t == 0:
                    enc = i_net.compress(x_pad, q) if variant == "fm" else i_net.compress(x_pad, False, q)
                    x_hat = enc["x_hat"]
                    dpb = {
                        "ref_frame": x_hat,
                        "ref_feature": None,
                        "ref_mv_feature": None,
                        "ref_y": None,
                        "ref_mv_y": None,
                    }
                    fa_idx, refresh = -1, False
                    y_dist = "gaussian"
                    net = i_net
                else:
                    refresh = reset_interval > 0 and t % reset_interval == 1
                    if refresh:
                        dpb["ref_feature"] = None
                    fa_idx = adaptor_index[t % len(adaptor_index)]
                    if variant == "fm":
                        enc = p_net.compress(x_pad, dpb, q, fa_idx)
                    else:  # DC maps frame_idx % 4 to the adaptor itself
                        enc = p_net.compress(x_pad, dpb, False, q, t % 4)
                    dpb = enc["dpb"]
                    x_hat = dpb["ref_frame"]
                    y_dist = "laplace"
                    net = p_net
                ge = net.gaussian_encoder
                bits = {}
                coded_y = 0
                for part, sym, extra in records:
                    if part == "gaussian_encoder":
                        s = extra.double().clamp(ge.scale_min, ge.scale_max)
                        b = _gauss_bits(sym, s) if y_dist == "gaussian" else _laplace_bits(sym, s)
                        label = "y" if (t == 0 or coded_y >= 4) else "mv_y"
                        coded_y += 1
                    else:
                        b = z_bits(getattr(net, part), sym, extra)
                        label = "z" if part == "bit_estimator_z" else "mv_z"
                    bits[label] = bits.get(label, 0.0) + b.sum().item()
                    worst["bits_per_symbol_max"] = max(worst["bits_per_symbol_max"], b.max().item())
                    worst["symbols_over_16_bits"] += int((b > 16).sum().item())
                    worst["abs_symbol_max"] = max(worst["abs_symbol_max"], int(sym.abs().max().item()))
                if t > 0:
                    assert coded_y == 8, coded_y  # motion y then y, four steps each
                frame_x = x_hat[0, :, :h, :w].float().clone()
                worst["clamped_fraction"] = max(
                    worst["clamped_fraction"], ((frame_x <= 0) | (frame_x >= 1)).float().mean().item()
                )
                frames.append(
                    {
                        "type": "I" if t == 0 else "P",
                        "qp": q,
                        "feature_adaptor": fa_idx,
                        "refresh": refresh,
                        "x_hat": frame_x,
                        "bits_parts": bits,
                        "bits": sum(bits.values()),
                        "psnr_yuv444": float(-10 * torch.log10(((frame_x - x[0]) ** 2).mean())),
                    }
                )
            name = f"{key}_q{q}"
            results[name] = {"height": h, "width": w, "qp": q, "frames": frames}
            stats[name] = worst
            print(
                name,
                " ".join(f"{f['type']}:{f['bits']:.0f}b/{f['psnr_yuv444']:.1f}dB" for f in frames),
                json.dumps(worst),
                file=sys.stderr,
            )

    _save_pt(results, out / "outputs.pt")
    (out / "names_shapes.json").write_text(dump_names_shapes(names))
    (out / "fill_digests.json").write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    meta = {
        "parameter_counts": counts,
        "levels": 64,
        "feature_adaptor_index_by_frame": adaptor_index,
        "reset_interval": reset_interval,
        "runs": sorted(results),
        "fill_statistics": stats,
        "block_mc_cuda_kernel": cuda_kernel,
        "cuda_stubbed": stubbed,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }
    (out / "meta_worker.json").write_text(json.dumps(meta, indent=1) + "\n")


# --------------------------------------------------------------------------------------------
# CompressAI ScaleSpaceFlow worker
# --------------------------------------------------------------------------------------------


def worker_ssf(args):
    torch = _torch_setup()
    import compressai
    from compressai.utils.video.eval_model.__main__ import (
        convert_rgb_to_yuv420,
        convert_yuv420_to_rgb,
        crop,
        pad,
    )
    from compressai.zoo import ssf2020

    out = Path(args.out)
    inputs = np.load(args.inputs)

    net = ssf2020(quality=1, metric="mse", pretrained=False)
    names_before = {n: list(t.shape) for n, t in net.state_dict().items()}
    other_q = {q: {n: list(t.shape) for n, t in ssf2020(quality=q).state_dict().items()} for q in (5, 9)}
    same_across_q = all(v == names_before for v in other_q.values())
    _, digests = _fill_module(net, ssf_fill)
    count = sum(p.numel() for p in net.parameters())
    net.eval()
    net.update(force=True)
    names_after = {n: list(t.shape) for n, t in net.state_dict().items()}

    results = {}
    with torch.no_grad():
        for h, w in SSF_SIZES:
            key = f"{h}x{w}"
            ys, us, vs = inputs[f"y_{key}"], inputs[f"u_{key}"], inputs[f"v_{key}"]
            rgb_in, rgb_pad, paddings = [], [], None
            for t in range(ys.shape[0]):
                x = convert_yuv420_to_rgb((ys[t], us[t], vs[t]), torch.device("cpu"), 255)
                rgb_in.append(x[0].clone())
                xp, paddings = pad(x)
                rgb_pad.append(xp)
            # (1) training-style forward of the whole clip (likelihoods), x_ref not clamped
            fwd = net(rgb_pad)
            # (2) the entropy-estimation evaluation (eval_model_entropy_estimation): per frame,
            #     forward_keyframe / forward_inter, reference clamped to [0, 1]
            # (3) real coding: encode_keyframe / encode_inter, then the official decoder
            frames = []
            x_ref_est = x_ref_enc = None
            enc_strings, enc_shapes = [], []
            for t, xp in enumerate(rgb_pad):
                if t == 0:
                    x_est, lk = net.forward_keyframe(xp)
                    x_enc, info = net.encode_keyframe(xp)
                else:
                    x_est, lk = net.forward_inter(xp, x_ref_est)
                    x_enc, info = net.encode_inter(xp, x_ref_enc)
                x_ref_est, x_ref_enc = x_est.clamp(0, 1), x_enc.clamp(0, 1)
                enc_strings.append(info["strings"])
                enc_shapes.append(info["shape"])
                bits = {}
                for part, d in lk.items():
                    for k in ("y", "z"):
                        bits[f"{part}_{k}"] = (-torch.log2(d[k].double())).sum().item()
                if t == 0:
                    nbytes = {"keyframe": sum(len(s[0]) for s in info["strings"])}
                else:
                    nbytes = {p: sum(len(s[0]) for s in info["strings"][p]) for p in ("motion", "residual")}
                fb = {}
                for part, d in fwd["likelihoods"][t].items():
                    for k in ("y", "z"):
                        fb[f"{part}_{k}"] = (-torch.log2(d[k].double())).sum().item()
                x_est_c = crop(x_ref_est, paddings)[0]
                x_enc_c = crop(x_ref_enc, paddings)[0]
                frames.append(
                    {
                        "type": "I" if t == 0 else "P",
                        "bits_est": bits,
                        "bits_est_total": sum(bits.values()),
                        "bits_forward": fb,
                        "bits_forward_total": sum(fb.values()),
                        "string_bytes": nbytes,
                        "string_bytes_total": sum(nbytes.values()),
                        "_x_est": x_est_c.clone(),
                        "_x_enc": x_enc_c.clone(),
                        "_x_fwd": crop(fwd["x_hat"][t], paddings)[0].clamp(0, 1).clone(),
                    }
                )
            # decode frame by frame with the official decode_keyframe / decode_inter, the
            # reference clamped to [0, 1] as the encoder side of the evaluation had it
            diffs = {"dec_vs_enc": 0.0, "dec_vs_est": 0.0, "dec_vs_forward": 0.0, "decompress_vs_dec": 0.0}
            whole = net.decompress(enc_strings, enc_shapes)  # references NOT clamped (see README)
            ref_dec = None
            for t, f in enumerate(frames):
                if t == 0:
                    xd = net.decode_keyframe(enc_strings[0], enc_shapes[0])
                else:
                    xd = net.decode_inter(ref_dec, enc_strings[t], enc_shapes[t])
                ref_dec = xd.clamp(0, 1)
                xd = crop(ref_dec, paddings)[0]
                xw = crop(whole[t].clamp(0, 1), paddings)[0]
                for k, other in (
                    ("dec_vs_enc", f.pop("_x_enc")),
                    ("dec_vs_est", f.pop("_x_est")),
                    ("dec_vs_forward", f.pop("_x_fwd")),
                    ("decompress_vs_dec", xw),
                ):
                    diffs[k] = max(diffs[k], (xd - other).abs().max().item())
                f["x_hat"] = xd.clone()
                yy, uu, vv = convert_rgb_to_yuv420(xd[None])
                f["yuv420_float"] = [yy[0, 0].clone(), uu[0, 0].clone(), vv[0, 0].clone()]
            results[key] = {
                "height": h,
                "width": w,
                "padding_lrtb": list(paddings),
                "rgb_input": torch.stack(rgb_in),
                "frames": frames,
                "max_abs_diff": diffs,
            }
            print(
                key,
                " ".join(
                    f"{f['type']}:{f['bits_est_total']:.0f}b/{f['string_bytes_total']}B" for f in frames
                ),
                " ".join(f"{k} {v:.2e}" for k, v in diffs.items()),
                file=sys.stderr,
            )

    _save_pt(results, out / "outputs.pt")
    (out / "names_shapes.json").write_text(
        dump_names_shapes({"init": names_before, "after_update": names_after})
    )
    (out / "fill_digests.json").write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    meta = {
        "parameter_count": count,
        "parameter_count_by_module": module_counts(net),
        "shapes_same_for_qualities_1_5_9": same_across_q,
        "compressai": compressai.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }
    (out / "meta_worker.json").write_text(json.dumps(meta, indent=1) + "\n")


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def _git_head(path: Path) -> str | None:
    for cmd in (["git", "-C", str(path), "rev-parse", "HEAD"],):
        try:
            return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            pass
    return None


RULES_TEXT = {
    "uniform01": "u_i = (splitmix64(crc32(utf8(name)) * 2**32 + i) >> 11) * 2**-53, "
    "i = 0..numel-1 (C order); "
    "splitmix64(x): z = x + 0x9E3779B97F4A7C15; z = (z ^ z>>30) * 0xBF58476D1CE4E5B9; "
    "z = (z ^ z>>27) * 0x94D049BB133111EB; z ^ z>>31 (all mod 2**64)",
    "fill(name, shape, lo, hi)": "float32(lo + (hi - lo) * u_i), computed in float64, reshaped to shape",
    "weight (>= 2-d) with gain g": "fill(name, shape, -a, a), a = sqrt(3) * g / sqrt(fan_in), "
    "fan_in = numel / shape[0]",
    "bias (1-d) unless listed": f"fill(name, shape, -{BIAS_HALF_RANGE}, {BIAS_HALF_RANGE})",
    "order": "every parameter independently, by name; buffers are not filled",
}

DCVC_RT_RULES = {
    "q_* (top-level per-level vectors, (L, C, 1, 1))": "fill(name, shape, 0.5, 1.5)",
    "bit_estimator_z.* (h, b, a)": "fill(name, shape, -1, 1)",
    "weights: gain": f"{WEIGHT_GAIN}, except: names ending .dc.3.weight or .ffn.2.weight (last conv of "
    f"each residual branch) {DCVC_RT_RESIDUAL_END_GAIN}; "
    f"names starting {' or '.join(DCVC_RT_RECON_PREFIXES)} "
    f"{DCVC_RT_RECON_GAIN}; the prior heads {sorted(DCVC_RT_PRIOR_HEADS)} {DCVC_RT_PRIOR_HEAD_GAIN} "
    "(later rules win)",
    "reconstruction biases " + ", ".join(DCVC_RT_RECON_BIASES): "fill(name, shape, 0.3, 0.7)",
    "prior-head biases": "the bias rule, then these channel slices [a, b) overwritten with "
    "fill(name + '#' + part, (b - a,), lo, hi): "
    + "; ".join(
        f"{m}.bias {part} [{a}, {b}) -> [{lo}, {hi})"
        for m, parts in DCVC_RT_PRIOR_HEADS.items()
        for part, (a, b, lo, hi) in parts.items()
    ),
}

FAMILY_CLASSES = {
    "fm": {
        "intra": "src.models.image_model.DMCI()  (N=256, z_channel=128)",
        "inter": "src.models.video_model.DMC()",
    },
    "dc": {
        "intra": "src.models.image_model.IntraNoAR()  (N=256, anchor_num=4)",
        "inter": "src.models.video_model.DMC()  (anchor_num=4)",
    },
}
FAMILY_CHECKPOINTS = {
    "fm": {"intra": "cvpr2024_image.pth.tar", "inter": "cvpr2024_video.pth.tar"},
    "dc": {
        "intra": "cvpr2023_image_{psnr,ssim,yuv420_psnr}.pth.tar",
        "inter": "cvpr2023_video_{psnr,ssim,yuv420_psnr}.pth.tar",
    },
}
FAMILY_FRAMES = {
    "fm": "I then P; P frame t uses feature_adaptor[index_map[t % 8]] and drops the reference feature at "
    "t % 32 == 1 (test_helper.run_one_point_fast)",
    "dc": "I then P; P frame t is coded with frame_idx = t % 4 (test_video.py), i.e. feature_adaptor"
    "[[0, 1, 0, 2][t % 4]]; q_in_ckpt False: the 64-level *_fine rate tables the official load_state_dict "
    "builds, the P frames at the intra q_index; no refresh",
}
DCVC_DC_RULES = {
    "DC: q_basic_*, q_scale_* (intra), mv_y_q_basic_*, mv_y_q_scale_*, y_q_basic_*, y_q_scale_* (inter)": (
        "fill(name, shape, 0.5, 1.5)"
    ),
    "DC: weights": "the DCVC-FM rules, and gain 0.01 for names starting "
    + ", ".join(DC_EXTRA_SMALL)
    + "; gain 0.1 for contextual_encoder.res*.conv2.weight and contextual_decoder.res*.conv2.weight",
    "DC: intra biases": "the bias rule (DCVC-FM's intra slices do not apply), then "
    + "; ".join(
        f"{n} {part} [{a}, {b}) -> [{lo}, {hi})"
        for n, parts in DC_INTRA_BIAS_SLICES.items()
        for part, (a, b, lo, hi) in parts.items()
    )
    + "; inter biases as DCVC-FM's",
}

DCVC_FM_RULES = {
    "q_scale_enc, q_scale_dec (intra), mv_y_q_enc, mv_y_q_dec, y_q_enc, y_q_dec (inter)": (
        "fill(name, shape, 0.5, 1.5)"
    ),
    "bit_estimator_z*.* (h, b, a)": "fill(name, shape, -1, 1)",
    "weights: gain (later rules win)": f"{WEIGHT_GAIN}; {FM_RESIDUAL_END_GAIN} for names ending "
    f"{', '.join(FM_RESIDUAL_ENDS)} or res_block*.conv2.weight; "
    + "; ".join(f"{k}* {v}" for k, v in FM_SCALED.items())
    + f"; optic_flow.*.conv5 {FM_FLOW_HEAD_GAIN}; {FM_SMALL_GAIN} for names starting "
    + ", ".join(FM_SMALL_PREFIXES),
    "reconstruction biases " + ", ".join(FM_RECON_BIASES): "fill(name, shape, 0.3, 0.7)",
    "prior biases": "the bias rule, then these channel slices [a, b) overwritten with "
    "fill(name + '#' + part, (b - a,), lo, hi): intra "
    + "; ".join(
        f"{n} {part} [{a}, {b}) -> [{lo}, {hi})"
        for n, parts in FM_BIAS_SLICES.items()
        for part, (a, b, lo, hi) in parts.items()
    )
    + "; inter "
    + "; ".join(
        f"{n} {part} [{a}, {b}) -> [{lo}, {hi})"
        for n, parts in FM_INTER_BIAS_SLICES.items()
        for part, (a, b, lo, hi) in parts.items()
    ),
}

SSF_RULES = {
    "entropy_bottleneck.quantiles (C, 1, 3)": "m = fill(name, (C,), -0.5, 0.5); [m - 10, m, m + 10]",
    "entropy_bottleneck._matrix*": "fill(name, shape, -2, 0)",
    "entropy_bottleneck._bias*, _factor*": "fill(name, shape, -1, 1)",
    "weights: gain (first match)": f"*.hyper_decoder_scale.deconv3 {SSF_SCALE_HEAD_GAIN}; "
    f"motion_decoder.6 {SSF_FLOW_HEAD_GAIN}; "
    f"modules whose path (less the last two name parts) contains 'encoder' {SSF_ENCODER_GAIN}; "
    f"*.hyper_decoder_* {SSF_HYPER_DECODER_GAIN}; all else (img/res/motion decoders) {SSF_DECODER_GAIN}",
    "biases": "*.hyper_decoder_scale.deconv3.bias fill(name, shape, 1, 4); img_decoder.6.bias "
    "fill(name, shape, 0.4, 0.6)",
    "buffers": "left as constructed; net.update(force=True) then builds the CDF tables "
    "(default scale table: 64 levels 0.11 .. 256)",
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "mode",
        nargs="?",
        default="make",
        choices=["make", "_worker-dcvc-rt", "_worker-dcvc-fm", "_worker-dcvc-dc", "_worker-ssf"],
    )
    ap.add_argument("--dcvc", help="checkout of github microsoft/DCVC (or its DCVC-family/DCVC-RT folder)")
    ap.add_argument("--dcvc-fm", help="checkout of github microsoft/DCVC (or its DCVC-family/DCVC-FM folder)")
    ap.add_argument("--dcvc-dc", help="checkout of github microsoft/DCVC (or its DCVC-family/DCVC-DC folder)")
    ap.add_argument("--dcvc-python", help="interpreter with torch (+ optionally MLCodec_extensions_cpp)")
    ap.add_argument("--compressai-python", help="interpreter with compressai==1.2.8")
    ap.add_argument("--dcvc-commit", help="commit of the checkout when it is not a git work tree")
    ap.add_argument("--clip", default=None, help=f"source clip (default shared/data/clips/{CLIP})")
    ap.add_argument("--out", default="tests/fixtures/official")
    ap.add_argument("--inputs", help=argparse.SUPPRESS)
    ap.add_argument("--no-rans", action="store_true", help="DCVC-RT: skip the C++ rANS coder even if built")
    args = ap.parse_args(argv)

    if args.mode == "_worker-dcvc-rt":
        return worker_dcvc_rt(args)
    if args.mode == "_worker-dcvc-fm":
        return worker_dcvc_fm(args)
    if args.mode == "_worker-dcvc-dc":
        return worker_dcvc_dc(args)
    if args.mode == "_worker-ssf":
        return worker_ssf(args)

    repo = Path(__file__).resolve().parents[1]
    clip = Path(args.clip) if args.clip else repo.parent / "shared" / "data" / "clips" / CLIP
    if not clip.is_file():
        clip = Path("/work/shared/data/clips") / CLIP
    out = Path(args.out)
    me = str(Path(__file__).resolve())
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    if not args.dcvc and not args.dcvc_fm and not args.dcvc_dc and not args.compressai_python:
        ap.error("nothing to do: give --dcvc and/or --dcvc-fm (and --dcvc-python) and/or --compressai-python")

    if args.dcvc:
        d = out / "dcvc_rt"
        d.mkdir(parents=True, exist_ok=True)
        src = write_inputs(clip, d / "inputs.npz", DCVC_SIZES, N_FRAMES)
        py = args.dcvc_python or sys.executable
        subprocess.run(
            [
                py,
                me,
                "_worker-dcvc-rt",
                "--dcvc",
                args.dcvc,
                "--inputs",
                str(d / "inputs.npz"),
                "--out",
                str(d),
            ]
            + (["--no-rans"] if args.no_rans else []),
            check=True,
            env=env,
        )
        worker_meta = json.loads((d / "meta_worker.json").read_text())
        (d / "meta_worker.json").unlink()
        meta = {
            "official": {
                "repository": "github microsoft/DCVC",
                "folder": "DCVC-family/DCVC-RT",
                "commit": args.dcvc_commit or _git_head(Path(args.dcvc)),
                "classes": {
                    "intra": "src.models.image_model.DMCI()",
                    "inter": "src.models.video_model.DMC()",
                },
                "checkpoints": {"intra": "cvpr2025_image.pth.tar", "inter": "cvpr2025_video.pth.tar"},
            },
            "input": src
            | {
                "format": "uint8 YUV 4:2:0 planes y_HxW (T,H,W), u_HxW and v_HxW (T,H/2,W/2) in inputs.npz",
                "model_input": "x = cat(y, u repeated 2x2, v repeated 2x2) / 255 as float32 (1,3,H,W), "
                "replicate-padded on the right/bottom to a multiple of 16",
            },
            "fill_rule": RULES_TEXT | DCVC_RT_RULES,
            "settings": {
                "dtype": "float32 on the CPU (the official test_video.py runs .half() on CUDA)",
                "qp": DCVC_QPS,
                "qp_p_equals_qp_i": True,
                "force_zero_thres": {
                    "default": None,
                    "also_at_qp": DCVC_FORCE_ZERO_QP,
                    "values": DCVC_FORCE_ZERO,
                },
                "frames": "I then P; P frame t codes at qp + qp_shift[offset_index[t % 8]]",
                "use_two_entropy_coders": False,
            },
        } | worker_meta
        (d / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")

    family = [("fm", args.dcvc_fm), ("dc", args.dcvc_dc)]
    for variant, checkout in [(v, c) for v, c in family if c]:
        d = out / f"dcvc_{variant}"
        d.mkdir(parents=True, exist_ok=True)
        src = write_inputs(clip, d / "inputs.npz", DCVC_SIZES, FM_FRAMES)
        subprocess.run(
            [
                args.dcvc_python or sys.executable,
                me,
                f"_worker-dcvc-{variant}",
                f"--dcvc-{variant}",
                checkout,
                "--inputs",
                str(d / "inputs.npz"),
                "--out",
                str(d),
            ],
            check=True,
            env=env,
        )
        worker_meta = json.loads((d / "meta_worker.json").read_text())
        (d / "meta_worker.json").unlink()
        meta = {
            "official": {
                "repository": "github microsoft/DCVC",
                "folder": f"DCVC-family/DCVC-{variant.upper()}",
                "commit": args.dcvc_commit or _git_head(Path(checkout)),
                "classes": FAMILY_CLASSES[variant],
                "checkpoints": FAMILY_CHECKPOINTS[variant],
            },
            "input": src
            | {
                "format": "uint8 YUV 4:2:0 planes y_HxW (T,H,W), u_HxW and v_HxW (T,H/2,W/2) in inputs.npz",
                "model_input": "x = cat(y, u repeated 2x2, v repeated 2x2) / 255 as float32 (1,3,H,W), "
                "replicate-padded on the right/bottom to a multiple of 16",
            },
            "fill_rule": RULES_TEXT | DCVC_FM_RULES | (DCVC_DC_RULES if variant == "dc" else {}),
            "settings": {
                "dtype": "float32 on the CPU; warps by grid_sample (FM: block_mc's own fallback)",
                "qp": FM_QPS,
                "qp_p_equals_qp_i": True,
                "frames": FAMILY_FRAMES[variant],
                "bits": "ideal bits of the symbols official compress() hands to its coder (recorded), "
                "float64: "
                "z, mv_z by the official BitEstimator (cdf(z + .5) - cdf(z - .5), coded index), y (intra "
                "Gaussian) and y, mv_y (inter Laplace) with the scale clamped to the coder's [scale_min, "
                "scale_max] (0.11 / 0.01 .. 64)",
            },
        } | worker_meta
        (d / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")

    if args.compressai_python:
        d = out / "ssf"
        d.mkdir(parents=True, exist_ok=True)
        src = write_inputs(clip, d / "inputs.npz", SSF_SIZES, SSF_FRAMES)
        subprocess.run(
            [args.compressai_python, me, "_worker-ssf", "--inputs", str(d / "inputs.npz"), "--out", str(d)],
            check=True,
            env=env,
        )
        worker_meta = json.loads((d / "meta_worker.json").read_text())
        (d / "meta_worker.json").unlink()
        meta = {
            "official": {
                "package": "compressai==1.2.8 (PyPI)",
                "model": "compressai.zoo.ssf2020(quality=1, metric='mse', pretrained=False) "
                "= ScaleSpaceFlow()",
            },
            "input": src
            | {
                "format": "uint8 YUV 4:2:0 planes as for dcvc_rt; rgb_input in outputs.pt is the exact RGB "
                "tensor CompressAI's video evaluation makes of them (bicubic 4:2:0->4:4:4, "
                "BT.709 YCbCr->RGB), "
                "zero-padded (centred) to a multiple of 128 before coding",
            },
            "fill_rule": RULES_TEXT | SSF_RULES,
        } | worker_meta
        (d / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
