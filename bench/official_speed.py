"""Per-frame coding time of our DCVC-RT against the OFFICIAL code, same weights, frames and threads.

Not a test: a script that prints a table. The official code (microsoft/DCVC, ``DCVC-family/DCVC-RT``)
is the user's own checkout, imported at run time from ``--official-src`` (added to ``sys.path`` in
this process only; nothing of it enters the project). Both sides get the same weights: the official
models are filled by the deterministic rule of the official fixtures
(:func:`tools.make_official_fixtures.dcvc_rt_fill`), written as the two official files and converted
into ours by our converter (:func:`nvc_train.convert.dcvc_rt.convert`), so the timings compare the
same arithmetic; the printed ``max |x_hat ours - official|`` shows that they compute the same frame.

Two paths are timed per frame type (I; P against a reference that carries a decoder feature, the
steady state):

- **tensor path**: analysis, hyperprior, the context steps with their per-symbol coding parameters,
  synthesis; no entropy coder. Ours: ``forward_frame`` in evaluation (it also computes the
  estimated bits). Official: the module calls of its ``compress`` with the coder calls left out,
  plus its scale-index building (what its coder reads per symbol) and, for P, its reconstruction
  (``get_recon_and_feature``: its ``compress`` makes only the feature), so both sides make a picture.
- **coding path**: ours ``compress_frame`` / ``decompress_frame`` with real bytes; official
  ``compress`` / ``decompress`` with its C++ rANS coder (``MLCodec_extensions_cpp``) where that
  imports (``--official-ext DIR`` appends the folder holding the built module to ``sys.path``), else
  its tensor path again, with the reason printed.

``--model dcvc_fm`` / ``dcvc_dc`` (``DCVC-family/DCVC-FM`` / ``DCVC-DC``, see :class:`FamilyOfficial`):
the same, with their fill rules (``dcvc_fm_fill`` / ``dcvc_dc_fill``) and converters
(:mod:`nvc_train.convert.dcvc_fm` / ``dcvc_dc``); every frame at ``--q``; the official tensor path is
its own ``compress`` with a coder that keeps nothing (its rANS module ``MLCodec_rans`` is a prebuilt
binary of the checkout), so its coding rows time that tensor path, with the reason printed.

Repeats are interleaved (ours, official, ours, ...) and medians taken, so a shared machine's load hits
both sides alike. The last line is ``ours/official time ratio: I <x.xx> P <y.yy>`` (tensor path).

    .venv/bin/python bench/official_speed.py --official-src /path/to/DCVC \\
        --official-ext /path/to/venv/lib/python3.11/site-packages --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nvc_train.convert import dcvc_dc as convert_dc  # noqa: E402
from nvc_train.convert import dcvc_fm as convert_fm  # noqa: E402
from nvc_train.convert.dcvc_rt import convert  # noqa: E402
from nvc_train.networks import build_network, load_checkpoint, network_state  # noqa: E402
from tools.make_official_fixtures import (  # noqa: E402
    _dc_root,
    _fill_module,
    _fm_root,
    _RecordingCoder,
    _rt_root,
    _stub_cuda,
    dcvc_dc_fill,
    dcvc_fm_fill,
    dcvc_rt_fill,
)

CLIPS = Path("/work/shared/data/clips")
OFFICIAL_FILES = {"intra": "cvpr2025_image.pth.tar", "inter": "cvpr2025_video.pth.tar"}
LABELS = {"dcvc_rt": "DCVC-RT", "dcvc_fm": "DCVC-FM", "dcvc_dc": "DCVC-DC"}


# ---------------------------------------------------------------------------------------------------
# Frames


def load_frames(count: int, height: int, width: int, clips: Path) -> tuple[list[tuple[Any, Any]], str]:
    """``count`` 4:2:0 frames ``(y, uv)`` of ``height x width`` (centre crop of the first clip in
    ``clips`` that is large enough), or seeded uniform noise when there is none; and their source."""
    from nvc_train.video import open_video

    for path in sorted(clips.glob("*.y4m")) if clips.is_dir() else []:
        reader = open_video(path)
        if len(reader) < count or "10bit" in path.name:
            continue
        y0, u0, _ = reader.read_frame(0).to_tensors()
        full_h, full_w = y0.shape[-2:]
        if full_h < height or full_w < width:
            continue
        top, left = ((full_h - height) // 2) & ~1, ((full_w - width) // 2) & ~1
        frames = []
        for index in range(count):
            y, u, v = reader.read_frame(index).to_tensors()
            y = y[..., top : top + height, left : left + width]
            uv = torch.cat([u, v], dim=1)[
                ..., top // 2 : (top + height) // 2, left // 2 : (left + width) // 2
            ]
            frames.append((y.contiguous(), uv.contiguous()))
        return frames, f"{path.name} (centre crop)"
    generator = torch.Generator().manual_seed(0)
    frames = [
        (
            torch.rand(1, 1, height, width, generator=generator),
            torch.rand(1, 2, height // 2, width // 2, generator=generator),
        )
        for _ in range(count)
    ]
    return frames, "uniform noise (no clip found)"


# ---------------------------------------------------------------------------------------------------
# The two codecs on the same weights


class Official:
    """The official DMCI / DMC, filled, with their tensor path and (if it builds) their coder."""

    def __init__(self, source: Path, force_zero_thres: float | None) -> None:
        root = _rt_root(source)
        os.environ.setdefault("SUPPRESS_CUSTOM_KERNEL_WARNING", "1")
        sys.path.insert(0, str(root))
        _stub_cuda(torch)  # its compress/decompress call torch.cuda events and synchronize
        from src.layers.cuda_inference import round_and_to_int8
        from src.models.image_model import DMCI
        from src.models.video_model import DMC, RefFrame

        self.round_and_to_int8, self.ref_frame = round_and_to_int8, RefFrame
        self.intra, self.inter = DMCI().eval(), DMC().eval()
        self.states = {}
        with torch.no_grad():
            for half, net in (("intra", self.intra), ("inter", self.inter)):
                for name, parameter in net.named_parameters():
                    parameter.copy_(torch.from_numpy(dcvc_rt_fill(name, tuple(parameter.shape))))
                self.states[half] = {k: v.detach().clone() for k, v in net.state_dict().items()}
        self.coder_reason = None
        try:
            import MLCodec_extensions_cpp  # noqa: F401
        except ImportError as error:
            self.coder_reason = f"its C++ rANS coder does not import here ({error}); see --official-ext"
        if self.coder_reason is None:
            for net in (self.intra, self.inter):
                net.update(force_zero_thres)
                net.set_use_two_entropy_coders(False)
        else:
            for net in (self.intra, self.inter):
                net.gaussian_encoder.force_zero_thres = force_zero_thres

    def set_reference(self, frame: torch.Tensor | None, feature: torch.Tensor | None) -> None:
        """Make ``(frame, feature)`` the P model's one reference (its decoded picture buffer)."""
        ref = self.ref_frame()
        ref.frame, ref.feature, ref.poc = frame, feature, 0
        self.inter.dpb = [ref]

    def scale_indexes(self, net: torch.nn.Module, parts: tuple[torch.Tensor, ...]) -> None:
        """What its coder reads per symbol: (symbol << 8) + scale index, for each step's symbols."""
        steps = len(parts) // 2
        for symbols, scales in zip(parts[:steps], parts[steps:], strict=True):
            net.gaussian_encoder.build_indexes_encoder(symbols, scales)

    def intra_tensor(self, x: torch.Tensor, qp: int) -> torch.Tensor:
        net = self.intra
        y = net.enc(x, net.q_scale_enc[qp : qp + 1])
        z_hat, _ = self.round_and_to_int8(net.hyper_enc(net.pad_for_y(y)))
        params = net.y_prior_fusion(net.hyper_dec(z_hat))[:, :, : y.shape[2], : y.shape[3]].contiguous()
        *parts, y_hat = net.compress_prior_4x(
            y,
            params,
            net.y_spatial_prior_reduction,
            net.y_spatial_prior_adaptor_1,
            net.y_spatial_prior_adaptor_2,
            net.y_spatial_prior_adaptor_3,
            net.y_spatial_prior,
        )
        self.scale_indexes(net, tuple(parts))
        return net.dec(y_hat, net.q_scale_dec[qp : qp + 1]).clamp_(0, 1)

    def inter_tensor(self, x: torch.Tensor, qp: int) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.inter
        feature = net.apply_feature_adaptor()
        ctx, ctx_t = net.feature_extractor(feature, net.q_feature[qp : qp + 1])
        y = net.encoder(x, ctx, net.q_encoder[qp : qp + 1])
        z_hat, _ = self.round_and_to_int8(net.hyper_encoder(net.pad_for_y(y)))
        params = net.res_prior_param_decoder(z_hat, ctx_t)
        *parts, y_hat = net.compress_prior_2x(y, params, net.y_spatial_prior)
        self.scale_indexes(net, tuple(parts))
        return net.get_recon_and_feature(y_hat, ctx, net.q_decoder[qp : qp + 1], net.q_recon[qp : qp + 1])

    def sps(self, height: int, width: int) -> dict[str, int]:
        return {"height": height, "width": width, "ec_part": 0}


def build_ours(states: dict[str, dict[str, torch.Tensor]], force_zero_thres: float | None) -> Any:
    """Our DCVC-RT from the official states, through the real converter (official files -> ckpt)."""
    with tempfile.TemporaryDirectory() as folder:
        paths = {half: Path(folder) / name for half, name in OFFICIAL_FILES.items()}
        for half, path in paths.items():
            torch.save(states[half], path)
        out = Path(folder) / "dcvc_rt.ckpt"
        convert(
            argparse.Namespace(
                image=paths["intra"], video=paths["inter"], out=out, force_zero_thres=force_zero_thres
            )
        )
        loaded = load_checkpoint(str(out))
        net = build_network(loaded["nvc_config"]["model"], str(out), network_state(loaded, str(out)))
    return net.eval()


class FamilyOfficial:
    """The official DCVC-FM or DCVC-DC (intra model + DMC), filled by the fixtures' rule.

    Its C++ rANS coder is a prebuilt module of the checkout (``MLCodec_rans``); where it does not
    import, ``compress`` runs with a coder that keeps nothing (the fixtures' ``_RecordingCoder``):
    every module call and the per-symbol index building of its ``compress``, no entropy coding, which
    is its tensor path. Its ``decompress`` needs the real coder, so the coding rows then time the
    tensor path again and say why.
    """

    def __init__(self, model: str, source: Path) -> None:
        spec = FAMILY[model]
        root = spec["root"](source)
        os.environ.setdefault("SUPPRESS_CUSTOM_KERNEL_WARNING", "1")
        sys.path.insert(0, str(root))
        _stub_cuda(torch)
        from src.models import image_model
        from src.models.video_model import DMC

        self.spec = spec
        self.intra, self.inter = getattr(image_model, spec["intra_class"])().eval(), DMC().eval()
        self.states = {}
        for half, net in (("intra", self.intra), ("inter", self.inter)):
            _fill_module(net, lambda name, shape, h=half: spec["fill"](name, shape, h))
            if spec["rebuild_rate_tables"]:  # DC's load_state_dict builds its 64-level *_fine tables
                net.load_state_dict(net.state_dict())
            self.states[half] = {k: v.detach().clone() for k, v in net.state_dict().items()}
        try:
            from src.models import MLCodec_rans  # noqa: F401

            self.coder_reason = "its C++ rANS coder imports, but this bench times FM/DC's tensor path only"
        except ImportError as error:
            self.coder_reason = f"its C++ rANS coder does not import here ({error})"
        coder = _RecordingCoder()
        for net in (self.intra, self.inter):
            net.entropy_coder = coder
            for part in ("bit_estimator_z", "bit_estimator_z_mv", "gaussian_encoder"):
                module = getattr(net, part, None)
                if module is not None:
                    module.entropy_coder = coder

    def intra_tensor(self, x: torch.Tensor, qp: int) -> torch.Tensor:
        return self.spec["intra_compress"](self.intra, x, qp)["x_hat"]

    def inter_tensor(self, x: torch.Tensor, dpb: dict, qp: int, position: int, adaptor: int) -> dict:
        """The new decoded picture buffer (``ref_frame``: the picture) of P frame ``position``."""
        return self.spec["inter_compress"](self.inter, x, dict(dpb), qp, position, adaptor)["dpb"]


FAMILY: dict[str, dict[str, Any]] = {
    "dcvc_fm": {
        "root": _fm_root,
        "intra_class": "DMCI",
        "fill": dcvc_fm_fill,
        "rebuild_rate_tables": False,
        "convert": convert_fm.convert,
        "intra_compress": lambda net, x, q: net.compress(x, q),
        "inter_compress": lambda net, x, dpb, q, position, adaptor: net.compress(x, dpb, q, adaptor),
    },
    "dcvc_dc": {
        "root": _dc_root,
        "intra_class": "IntraNoAR",
        "fill": dcvc_dc_fill,
        "rebuild_rate_tables": True,
        "convert": convert_dc.convert,
        "intra_compress": lambda net, x, q: net.compress(x, False, q),
        # DC maps the frame index (mod 4, as its test loop passes it) to the adaptor itself
        "inter_compress": lambda net, x, dpb, q, position, adaptor: net.compress(
            x, dpb, False, q, position % 4
        ),
    },
}


def build_ours_family(model: str, states: dict[str, dict[str, torch.Tensor]]) -> Any:
    """Our DCVC-FM / DCVC-DC from the official states, through its real converter."""
    with tempfile.TemporaryDirectory() as folder:
        paths = {half: Path(folder) / f"{half}.pth.tar" for half in ("intra", "inter")}
        for half, path in paths.items():
            torch.save(states[half], path)
        out = Path(folder) / f"{model}.ckpt"
        FAMILY[model]["convert"](argparse.Namespace(image=paths["intra"], video=paths["inter"], out=out))
        loaded = load_checkpoint(str(out))
        net = build_network(loaded["nvc_config"]["model"], str(out), network_state(loaded, str(out)))
    return net.eval()


def run_family(args: argparse.Namespace) -> dict[str, Any]:
    """``run`` for DCVC-FM / DCVC-DC: every frame at ``q`` (their P frames have no level offset)."""
    torch.manual_seed(0)
    official = FamilyOfficial(args.model, args.official_src)
    ours = build_ours_family(args.model, official.states)
    height, width, q, last = args.height, args.width, args.q, args.frames - 1
    frames, source = load_frames(args.frames, height, width, args.clips)
    x = [ours._to_444(y, uv) for y, uv in frames]

    def official_p(dpb: dict, ref: Any, index: int) -> dict:
        """The official P frame ``index`` against ``dpb``, with ours' adaptor and refresh rules."""
        adaptor, refresh = ours.position_rules(ref)
        if refresh:
            dpb = {**dpb, "ref_feature": None}
        return official.inter_tensor(x[index], dpb, q, index, adaptor)

    with torch.no_grad():
        ref, dpb = None, None
        for index in range(last):
            out = ours.forward_frame(*frames[index], q, ref)
            if ref is None:
                x_hat = official.intra_tensor(x[index], q)
                diff_i = float((out.ref.frame - x_hat).abs().max())
                dpb = {"ref_frame": x_hat, "ref_feature": None, "ref_mv_feature": None}
                dpb.update(ref_y=None, ref_mv_y=None)
            else:
                dpb = official_p(dpb, ref, index)
            ref = out.ref
        ref_p, dpb_p = ref, dpb
        ours_p = ours.forward_frame(*frames[last], q, ref_p).ref.frame
        official_x_p = official_p(dpb_p, ref_p, last)["ref_frame"]
        diff = {"I": diff_i, "P": float((ours_p - official_x_p).abs().max())}

    data_i, out = ours.compress_frame(*frames[0], q, None)
    ref_enc = out.ref
    for index in range(1, last):
        ref_enc = ours.compress_frame(*frames[index], q, ref_enc)[1].ref
    data_p = ours.compress_frame(*frames[last], q, ref_enc)[0]

    def official_i() -> None:
        official.intra_tensor(x[0], q)

    def official_p_tensor() -> None:
        official_p(dpb_p, ref_p, last)

    with torch.no_grad():
        jobs: dict[str, dict[str, Callable[[], Any]]] = {
            "I tensor": {"ours": lambda: ours.forward_frame(*frames[0], q, None), "official": official_i},
            "P tensor": {
                "ours": lambda: ours.forward_frame(*frames[last], q, ref_p),
                "official": official_p_tensor,
            },
        }
        if not args.tensor_only:
            jobs.update(
                {
                    "I encode": {
                        "ours": lambda: ours.compress_frame(*frames[0], q, None),
                        "official": official_i,
                    },
                    "I decode": {
                        "ours": lambda: ours.decompress_frame(data_i, q, None, height, width),
                        "official": official_i,
                    },
                    "P encode": {
                        "ours": lambda: ours.compress_frame(*frames[last], q, ref_enc),
                        "official": official_p_tensor,
                    },
                    "P decode": {
                        "ours": lambda: ours.decompress_frame(data_p, q, ref_enc, height, width),
                        "official": official_p_tensor,
                    },
                }
            )
        medians = interleaved(jobs, args.repeats, args.warmup)
    return {
        "medians": medians,
        "diff": diff,
        "sizes": {"I": (len(data_i), None), "P": (len(data_p), None)},
        "source": source,
        "official_coder": f"{official.coder_reason}; its rows time its tensor path",
        "levels": {"I": q, "P": q},
    }


# ---------------------------------------------------------------------------------------------------
# Timing


def interleaved(
    jobs: dict[str, dict[str, Callable[[], Any]]], repeats: int, warmup: int
) -> dict[str, dict[str, float]]:
    """Median seconds of every job, ``jobs[measure][side]``; each round runs every measure's sides
    back to back (ours, official), so load changes during the run hit both sides alike."""
    times: dict[str, dict[str, list[float]]] = {m: {s: [] for s in sides} for m, sides in jobs.items()}
    for round_index in range(warmup + repeats):
        for measure, sides in jobs.items():
            order = list(sides.items())
            if round_index % 2:
                order.reverse()  # alternate who goes first, so neither always follows the other
            for side, job in order:
                started = time.perf_counter()
                job()
                if round_index >= warmup:
                    times[measure][side].append(time.perf_counter() - started)
    return {m: {s: statistics.median(v) for s, v in sides.items()} for m, sides in times.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.model in FAMILY:
        return run_family(args)
    torch.manual_seed(0)
    official = Official(args.official_src, args.force_zero_thres)
    ours = build_ours(official.states, args.force_zero_thres)
    height, width, q, last = args.height, args.width, args.q, args.frames - 1
    frames, source = load_frames(args.frames, height, width, args.clips)
    x = [ours._to_444(y, uv) for y, uv in frames]  # the same 4:4:4 input on both sides

    def level(index: int) -> int:
        """Frame ``index``'s level: q, plus for a P frame the offset of its position (ours' rule)."""
        return q + (ours.qp_offsets[index % len(ours.qp_offsets)] if index else 0)

    # The references of the timed P frame (the last one): frames 0 .. last-1 coded I P P ... on both
    # sides, each P at our level (q + the offset of its position), which the official call is given.
    with torch.no_grad():
        ref, official_ref = None, (None, None)
        for index in range(last):
            out = ours.forward_frame(*frames[index], q, ref)
            if ref is None:
                official_x_hat = official.intra_tensor(x[index], q)
                official_ref = (official_x_hat, None)
                diff_i = float((out.ref.frame - official_x_hat).abs().max())
            else:
                official.set_reference(*official_ref)
                official_ref = (None, official.inter_tensor(x[index], level(index))[1])
            ref = out.ref
        ref_p, qp_p = ref, level(last)
        ours_p = ours.forward_frame(*frames[last], q, ref_p).ref.frame
        official.set_reference(*official_ref)
        diff = {"I": diff_i, "P": float((ours_p - official.inter_tensor(x[last], qp_p)[0]).abs().max())}

    def official_p_tensor() -> None:
        official.set_reference(*official_ref)
        official.inter_tensor(x[last], qp_p)

    # Coding path, ours: real bytes; the decoder's input is the encoder's own payload
    data_i, out = ours.compress_frame(*frames[0], q, None)
    ref_enc = out.ref
    for index in range(1, last):
        ref_enc = ours.compress_frame(*frames[index], q, ref_enc)[1].ref
    data_p = ours.compress_frame(*frames[last], q, ref_enc)[0]
    jobs_code: dict[str, dict[str, Callable[[], Any]]] = {
        "I encode": {"ours": lambda: ours.compress_frame(*frames[0], q, None)},
        "I decode": {"ours": lambda: ours.decompress_frame(data_i, q, None, height, width)},
        "P encode": {"ours": lambda: ours.compress_frame(*frames[last], q, ref_enc)},
        "P decode": {"ours": lambda: ours.decompress_frame(data_p, q, ref_enc, height, width)},
    }
    official_coder = official.coder_reason or "compress / decompress with its C++ rANS coder"
    with torch.no_grad():
        if official.coder_reason is None:
            enc = official.intra.compress(x[0], q)
            stream_i, coded_ref = enc["bit_stream"], (enc["x_hat"], None)
            for index in range(1, last):
                official.set_reference(*coded_ref)
                official.inter.compress(x[index], level(index))
                coded_ref = (None, official.inter.dpb[0].feature)
            official.set_reference(*coded_ref)
            stream_p = official.inter.compress(x[last], qp_p)["bit_stream"]
            sps = official.sps(height, width)

            def official_p_encode() -> None:
                official.set_reference(*coded_ref)
                official.inter.compress(x[last], qp_p)

            def official_p_decode() -> None:
                official.set_reference(*coded_ref)
                official.inter.decompress(stream_p, sps, qp_p)

            jobs_code["I encode"]["official"] = lambda: official.intra.compress(x[0], q)
            jobs_code["I decode"]["official"] = lambda: official.intra.decompress(stream_i, sps, q)
            jobs_code["P encode"]["official"] = official_p_encode
            jobs_code["P decode"]["official"] = official_p_decode
            sizes = {"I": (len(data_i), len(stream_i)), "P": (len(data_p), len(stream_p))}
        else:
            for kind in ("encode", "decode"):
                jobs_code[f"I {kind}"]["official"] = lambda: official.intra_tensor(x[0], q)
                jobs_code[f"P {kind}"]["official"] = official_p_tensor
            sizes = {"I": (len(data_i), None), "P": (len(data_p), None)}

        jobs: dict[str, dict[str, Callable[[], Any]]] = {
            "I tensor": {
                "ours": lambda: ours.forward_frame(*frames[0], q, None),
                "official": lambda: official.intra_tensor(x[0], q),
            },
            "P tensor": {
                "ours": lambda: ours.forward_frame(*frames[last], q, ref_p),
                "official": official_p_tensor,
            },
        }
        if not args.tensor_only:
            jobs.update(jobs_code)
        medians = interleaved(jobs, args.repeats, args.warmup)
    return {
        "medians": medians,
        "diff": diff,
        "sizes": sizes,
        "source": source,
        "official_coder": official_coder,
        "levels": {"I": q, "P": qp_p},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--official-src", type=Path, required=True, help="microsoft/DCVC checkout (or its DCVC-RT)"
    )
    parser.add_argument(
        "--official-ext",
        type=Path,
        default=None,
        help="folder appended to sys.path for MLCodec_extensions_cpp",
    )
    parser.add_argument("--model", default="dcvc_rt", choices=sorted(LABELS), help="the codec to compare")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=448)
    parser.add_argument(
        "--frames", type=int, default=3, help="I P .. P; the last P is timed against the one before it"
    )
    parser.add_argument("--q", type=int, default=31, help="q_index of the I frame (P: plus its offset)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, both sides")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per measure (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--force-zero-thres", type=float, default=None, help="both sides (official: 0.12)")
    parser.add_argument("--clips", type=Path, default=CLIPS, help="folder of .y4m clips (else noise)")
    parser.add_argument("--tensor-only", action="store_true", help="time the tensor path only")
    args = parser.parse_args(argv)
    if args.height % 16 or args.width % 16:
        parser.error(
            "--height and --width must be multiples of 16 (both codecs pad to it; time the padded size)"
        )
    if not 2 <= args.frames <= 32:
        parser.error("--frames must be in [2, 32] (2: the P frame's reference is the intra picture)")
    if not 0 <= args.q < 64:
        parser.error("--q must be in [0, 63]")
    if args.official_ext is not None:
        sys.path.append(str(args.official_ext))
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads")
    result = run(args)
    print(
        f"{LABELS[args.model]} {args.width}x{args.height}, frames: {result['source']}, "
        f"levels I {result['levels']['I']} P {result['levels']['P']}, "
        f"{args.repeats} interleaved repeats (median)"
    )
    print(f"official coding path: {result['official_coder']}")
    print(
        f"max |x_hat ours - official|: I {result['diff']['I']:.2e} P {result['diff']['P']:.2e} "
        "(same weights, same frames)"
    )
    for kind, (ours_bytes, official_bytes) in result["sizes"].items():
        other = "-" if official_bytes is None else f"{official_bytes} B"
        print(f"{kind} frame bytes: ours {ours_bytes} B, official {other}")
    print("| measure | ours (s/frame) | official (s/frame) | ours/official |")
    print("|---|---|---|---|")
    for measure, sides in result["medians"].items():
        print(
            f"| {measure} | {sides['ours']:.3f} | {sides['official']:.3f} "
            f"| {sides['ours'] / sides['official']:.2f} |"
        )
    ratio = {k: result["medians"][f"{k} tensor"] for k in ("I", "P")}
    print(
        f"ours/official time ratio: I {ratio['I']['ours'] / ratio['I']['official']:.2f} "
        f"P {ratio['P']['ours'] / ratio['P']['official']:.2f}"
    )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
