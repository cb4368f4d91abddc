"""The adapter that puts a scene-adaptive codec behind the codec contract: encoding IS fitting.

``encode`` reads the sequence, builds the network for its (padded) size and coding structure from
the model config, has it fitted to the sequence at the rate point's lambda by the framework's
overfitting loop (:func:`nvc_train.training.overfit.fit_sequence`: one Lightning ``fit`` whose
Trainer and data module come from ``codec.trainer`` / ``codec.data``), and writes the container.
This module owns only files and structure; it loads no Lightning until a fit starts, so decoding
never does. ``decode`` needs the file and nothing else: the architecture is in it.

Units of the file (nvc_train.bitstream container, one header, CRC per unit)::

    0x82 network          the packed parameter set (class and architecture, behind its length)
                          then the weights (ParameterCoder payload: quantized, entropy-coded)
    frame units           one per frame, coding order (kind I / P / B), the frame's latents (may be empty)

Files written before the network unit carried the two parts as units 0x80 (parameter set) and 0x81
(weights), with a weights hash in the header; both layouts are read. One unit instead of two saves
a unit head (7 bytes, about 1 % of a small frame's file). Bits are counted by the runner from this
file; nothing else.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nvc_train.bitstream import (
    KIND_B,
    KIND_I,
    KIND_P,
    KIND_PARAMETER_SET,
    AdaptivePayload,
    BitstreamError,
    StreamHeader,
    Unit,
    read_stream,
    weights_hash,
    write_stream,
)
from nvc_train.bitstream.architecture import (
    PACKED_MAGIC,
    join_network,
    pack_parameter_set,
    packed_target,
    split_network,
    unpack_parameter_set,
)
from nvc_train.codecs.base import Codec, CodecError, DecodeResult, EncodeResult, RatePoint, stream_header
from nvc_train.ctc import CTCSequence
from nvc_train.structure import CodingStructure
from nvc_train.training.presets import FitSettings, OverfitConfigError, OverfitPreset
from nvc_train.video.frame import YUVFrame
from nvc_train.video.pad import crop_frame
from nvc_train.video.readers import YUVWriter

log = logging.getLogger(__name__)

KIND_WEIGHTS = 0x81
KIND_NETWORK = 0x82
FRAME_KINDS = {"I": KIND_I, "P": KIND_P, "B": KIND_B}
MAX_ARCHITECTURE_BYTES = 1 << 16


def _plain(value: Any) -> Any:
    """OmegaConf containers to plain Python (configs arrive as DictConfig under Hydra)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf ships with hydra
        pass
    return value


def network_class(target: Any, where: str = "config") -> type:
    """The registered scene-adaptive network class ``target`` names (``models.register_network``).

    A file may name only a registered class (nothing is imported for a name), and it must be a
    scene-adaptive one: a neural codec's class named in an adaptive file is refused too.
    """
    from nvc_train.networks import CheckpointError
    from nvc_train.networks import network_class as registered

    try:
        cls = registered(target, where)
    except CheckpointError as error:
        raise BitstreamError(str(error)) from None
    if not all(hasattr(cls, name) for name in ("decompress_weights", "ARCHITECTURE_FIELDS", "reconstruct")):
        raise BitstreamError(f"{where}: {target} is not a scene-adaptive network")
    return cls


def decode_memory_limit() -> int:
    """Bytes a decoder may plan to use: ``NVC_DECODE_MEMORY_GB`` (default 8), checked on a meta build."""
    value = os.environ.get("NVC_DECODE_MEMORY_GB", "8")
    try:
        gigabytes = float(value)
    except ValueError:
        raise CodecError(f"NVC_DECODE_MEMORY_GB={value!r} is not a number of gigabytes") from None
    return int(gigabytes * (1 << 30))


class AdaptiveCodec(Codec):
    """A scene-adaptive network evaluated through real bitstreams; rate point i fits ``lambdas[i]``.

    Args:
        model: the model config (``_target_`` + architecture numbers, no sequence geometry).
        overfit: the schedule preset (``configs/overfit``): ``lambdas``, ``phases``,
            ``frames_per_step``, ``eval_every``, ``keep_best``, ``parameter_lr_ratio`` (all
            required), ``name``, ``steps_scale`` and ``total_steps`` (optional: the fit's
            iterations per sequence, the phases scaled to add up to it); see
            :class:`~nvc_train.training.presets.OverfitPreset`.
        name: codec name (tables, folders, header codec id); null: the preset's name.
        rate_points: indices into ``lambdas`` to code (null: all).
        threads: torch threads while fitting (decoding always uses one).
        seed: fixes initialisation and frame order, so an encode is reproducible.
        init_weights: a ``.pt`` state dict of network weights to start from (PNVC-style pretrained
            initialisation: weights fitted offline, e.g. by ``save_network`` on other sequences).
        save_network: also save the fitted float network weights as ``<bitstream>.net.pt``.
        encoder_reconstruction: also write ``<bitstream>.enc.yuv``, the encoder's decoded frames.
        trainer: the fit's Trainer settings (``codec.trainer``: accelerator, devices, precision);
            null or unset keys: one CPU process in float32.
        data: the fit's data module (``codec.data``: ``_target_`` and options); null:
            ``datamodules.sequence.SequenceDataModule``.
    """

    family = "scene-adaptive"
    suffix = ".nvc"

    def __init__(
        self,
        model: Mapping[str, Any],
        overfit: Mapping[str, Any],
        name: str | None = None,
        rate_points: list[int] | None = None,
        threads: int = 1,
        seed: int = 0,
        init_weights: str | None = None,
        save_network: bool = False,
        encoder_reconstruction: bool = False,
        trainer: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        model, overfit = _plain(model), _plain(overfit)
        if not model or "_target_" not in model:
            raise CodecError("an adaptive codec needs a model config with a _target_ (model=c3_tiny)")
        if not overfit or not overfit.get("phases") or not overfit.get("lambdas"):
            raise CodecError(
                "an adaptive codec needs an overfit schedule with phases and lambdas (overfit=...)"
            )
        try:
            self.preset = OverfitPreset.from_config(overfit)
            self.fit_settings = FitSettings.from_config(trainer, data)
        except OverfitConfigError as error:
            raise CodecError(str(error)) from None
        self.model = dict(model)
        self.target = str(self.model.pop("_target_"))
        self.net_class = network_class(self.target)
        self.overfit = dict(overfit)
        self.lambdas = list(self.preset.lambdas)
        self.name = str(name or self.preset.name or self.target.rsplit(".", 1)[-1].lower())
        self.rate_points = list(rate_points) if rate_points is not None else list(range(len(self.lambdas)))
        for rp in self.rate_points:
            self._lambda(rp)
        self.threads = int(threads)
        self.seed = int(seed)
        self.init_weights = init_weights
        self.save_network = bool(save_network)
        self.encoder_reconstruction = bool(encoder_reconstruction)
        self.last_fit: dict[str, Any] = {}

    def description(self) -> str:
        """Names the network, the schedule and a hash of the configs: a stored point made with other
        architecture numbers, lambdas, steps or fit settings is stale and gets re-measured on resume.

        Fit settings enter the hash only where they differ from the defaults (another precision or
        accelerator fits other numbers), so points measured before they existed stay current.
        """
        import hashlib

        # The steps the fit runs (after steps_scale / total_steps), so the effort is readable in
        # points.csv's codec_description; total_steps enters the hash only when set, so points
        # stored before the key existed stay current.
        phases = "+".join(f"{p['name']}{p['steps']}" for p in self.preset.scaled_phases())
        if self.preset.parameter_search is not None:
            phases += "+step_search"
        if self.preset.parameter_rdoq is not None:
            phases += "+rdoq"
        overfit = {k: v for k, v in self.overfit.items() if not (k == "total_steps" and v is None)}
        hashed = [self.target, self.model, overfit, self.init_weights]
        if self.fit_settings.non_default():
            hashed.append(self.fit_settings.non_default())
        configs = json.dumps(hashed, sort_keys=True, default=str)
        digest = hashlib.sha256(configs.encode()).hexdigest()[:8]
        return f"{self.name} ({self.target.rsplit('.', 1)[-1]}, overfit {phases}, config {digest})"

    def _lambda(self, rate_point: RatePoint) -> float:
        if not isinstance(rate_point, int) or not 0 <= rate_point < len(self.lambdas):
            raise CodecError(
                f"{self.name}: rate point {rate_point!r} is not an index into lambdas {self.lambdas}"
            )
        return self.lambdas[rate_point]

    def complexity(
        self, height: int = 1080, width: int = 1920, frames: int | None = None, device: str | None = None
    ) -> dict:
        """Parameters (M, network weights only), latents per pixel and kMAC/px of one frame at
        ``height x width``, the network built for a low-delay sequence of ``frames`` frames (default
        ``ADAPTIVE_FRAMES``, 600: HiNeRV's grids grow with it). Counted by
        :func:`nvc_train.complexity.adaptive_complexity`, on ``meta`` where the network allows; none
        (an empty dict, as a conventional codec) where it would not fit in memory on real tensors."""
        from nvc_train.complexity import ADAPTIVE_FRAMES, adaptive_complexity, padded_size

        frames = ADAPTIVE_FRAMES if frames is None else int(frames)
        padded = padded_size(height, width, self.net_class.pad_multiple)
        architecture = self._architecture(*padded, frames, CodingStructure("ld", -1, 1))
        try:
            return adaptive_complexity(self.net_class, architecture, height, width, device=device)
        except ValueError as error:  # too big to count on real tensors: the table shows no figures
            log.warning("%s: no complexity figures at %dx%d: %s", self.name, width, height, error)
            return {}

    def _rate_point_model(self, rate_point: int | None) -> dict[str, Any]:
        """The architecture numbers rate point ``rate_point`` fits: the preset's ``rate_point_models``
        entry (HiNeRV's rate points are its sizes, configs/model/hinerv_{s,m,l,xl,xxl}.yaml), else the
        codec's ``model``; a named model must be of the codec's class."""
        names = self.preset.rate_point_models
        if names is None or rate_point is None:
            return self.model
        from nvc_train.networks import named_model

        try:
            cls, numbers, _ = named_model(names[rate_point])
        except ValueError as error:
            raise CodecError(f"{self.name}: rate point {rate_point}: {error}") from None
        if cls is not self.net_class:
            raise CodecError(f"{self.name}: rate point {rate_point} names {names[rate_point]!r}, a "
                             f"{cls.__name__}, not the codec's {self.net_class.__name__}")  # fmt: skip
        return numbers

    def _architecture(
        self, height: int, width: int, frames: int, structure: CodingStructure, rate_point: int | None = None
    ) -> dict:
        return {
            **self._rate_point_model(rate_point),
            "height": height,
            "width": width,
            "num_frames": frames,
            "structure": structure.kind,
            "intra_period": structure.intra_period,
            "gop_size": structure.gop_size,
        }

    # ---- encoding -----------------------------------------------------------------------------

    def encode(
        self, sequence: CTCSequence, rate_point: RatePoint, structure: CodingStructure, bitstream: Path
    ) -> EncodeResult:
        from nvc_train.training.overfit import fit_sequence
        from nvc_train.video.planes import load_planes

        lmbda = self._lambda(rate_point)
        info = sequence.info
        structure = structure.resolve(info.fps)
        started = time.perf_counter()
        threads_before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            y, uv, _ = load_planes(
                sequence.path, info, sequence.start_frame, info.num_frames, self.net_class.pad_multiple
            )
            torch.manual_seed(self.seed)
            architecture = self._architecture(
                y.shape[-2], y.shape[-1], y.shape[0], structure, int(rate_point)
            )
            net = self.net_class(**architecture)
            self._initialise(net)
            net.init_from_frames(y, uv)
            fit = fit_sequence(net, y, uv, lmbda, self.preset, self.fit_settings, seed=self.seed)
            estimate = fit.module.sequence_terms(y, uv)
            estimated_bits = float(estimate.bpp) * y.shape[0] * y.shape[-2] * y.shape[-1]
            if self.save_network:
                weights = {k: v.detach().clone() for k, v in net.network_parameters().items()}
                torch.save(weights, f"{bitstream}.net.pt")
            payload = net.compress()
            self._write(bitstream, sequence, structure, int(rate_point), net, payload)
            if self.encoder_reconstruction:
                self._write_frames(Path(f"{bitstream}.enc.yuv"), *net.reconstruct(), info.height, info.width,
                                   info.bit_depth)  # fmt: skip
        finally:
            torch.set_num_threads(threads_before)
        seconds = time.perf_counter() - started
        steps = fit.schedule.total_steps
        self.last_fit = {"fit_s": fit.fit_s, "steps": steps, "lambda": lmbda, **fit.stages.summary()}
        log.info("%s %s rp%s: fit %.1f s, %d steps", self.name, sequence.name, rate_point, fit.fit_s,
                 steps)  # fmt: skip
        return EncodeResult(Path(bitstream), seconds, estimated_bits=estimated_bits, extra=self.last_fit)

    def _initialise(self, net: torch.nn.Module) -> None:
        """PNVC-style start: network weights fitted elsewhere (shapes must match; latents stay fresh)."""
        if not self.init_weights:
            return
        path = Path(self.init_weights)
        if not path.is_file():
            raise CodecError(f"init_weights not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        own = net.network_parameters()
        mismatched = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
        if mismatched or set(own) - set(state):
            raise CodecError(f"init_weights {path} do not fit this architecture (differ: {mismatched[:5]})")
        with torch.no_grad():
            for key, value in state.items():
                own[key].copy_(value)

    def _write(self, bitstream: Path, sequence: CTCSequence, structure: CodingStructure, rate_point: int,
               net: Any, payload: AdaptivePayload) -> None:  # fmt: skip
        header = stream_header(self.name, b"", sequence, structure, rate_point)
        write_adaptive_stream(bitstream, header, self.target, net.architecture, payload)

    # ---- decoding -----------------------------------------------------------------------------

    def decode(self, bitstream: Path, sequence: CTCSequence, output: Path) -> DecodeResult:
        started = time.perf_counter()
        header = decode_file(bitstream, output, expected_codec_id=self.name[:32])
        info = sequence.info
        if (header.width, header.height, header.num_frames) != (info.width, info.height, info.num_frames):
            raise CodecError(
                f"{bitstream} holds {header.num_frames} frames of {header.width}x{header.height}, "
                f"but {sequence.name} codes {info.num_frames} frames of {info.width}x{info.height}"
            )
        return DecodeResult(Path(output), time.perf_counter() - started)

    @staticmethod
    def _write_frames(
        output: Path, y: torch.Tensor, uv: torch.Tensor, height: int, width: int, depth: int
    ) -> None:
        with YUVWriter(output) as writer:
            for index in range(y.shape[0]):
                frame = YUVFrame.from_tensors(
                    y[index].clamp(0, 1), uv[index, 0].clamp(0, 1), uv[index, 1].clamp(0, 1), depth
                )
                writer.write(crop_frame(frame, (height, width)))


def write_adaptive_stream(
    path: str | Path,
    header: StreamHeader,
    target: str,
    architecture: Mapping[str, Any],
    payload: AdaptivePayload,
) -> None:
    """Write the container of a fitted network: parameter set, weights, one unit per frame.

    The header's weights hash is left empty: the network travels in the stream (unit 0), whose CRC
    chain already ties it to the header, so a hash of it would only cost 16 bytes a file (about 1 %
    of a small frame's). Files of format 1 carried one; :func:`decode_file` checks it.
    """
    net_class = network_class(target, "write_adaptive_stream")
    # The parameter set leaves these fields to the header: the two must say the same.
    _check_geometry(architecture, header_geometry(net_class, header), "write_adaptive_stream")
    parameter_set = pack_parameter_set(target, architecture, net_class.ARCHITECTURE_FIELDS)
    units = [Unit(KIND_NETWORK, header.rate_point, join_network(parameter_set, payload.parameters))]
    for frame in header.coding_structure().frames(header.num_frames):
        units.append(Unit(FRAME_KINDS[frame.frame_type], header.rate_point, payload.frames[frame.poc]))
    write_stream(path, dataclasses.replace(header, weights_hash=b""), units)


def network_parts(units: list[Unit], where: str) -> tuple[bytes, bytes, list[Unit]]:
    """``(parameter set, weights, the units after them)`` of a file in either layout: one network
    unit, or (files written before it) a parameter-set unit then a weights unit."""
    if units and units[0].kind == KIND_NETWORK:
        return (
            *split_network(units[0].payload, MAX_ARCHITECTURE_BYTES, f"{where}, unit 0 (network)"),
            units[1:],
        )
    if len(units) >= 2 and units[0].kind == KIND_PARAMETER_SET and units[1].kind == KIND_WEIGHTS:
        return units[0].payload, units[1].payload, units[2:]
    raise BitstreamError(
        f"{where}: expected a network unit (or a parameter set and a weights unit) before the frames"
    )


def decode_file(
    bitstream: str | Path,
    output: str | Path,
    expected_codec_id: str | None = None,
    memory_limit: int | None = None,
) -> StreamHeader:
    """Decode an adaptive-codec file into a raw 4:2:0 ``.yuv`` from the file alone; returns its header.

    Untrusted bytes are checked before anything is allocated, in this order: the container (CRCs,
    bounded fields), the weights hash, the parameter set (size, JSON, a registered scene-adaptive
    class), its architecture record (every field typed and bounded, :mod:`nvc_train.bitstream.
    architecture`), its agreement with the header (padded size, frames, structure), the network's
    shapes against the weights unit (built on ``meta``: no memory), and the decoder's estimated
    memory against ``memory_limit`` (default :func:`decode_memory_limit`). Every defect is a
    :class:`BitstreamError` naming the file and the unit; the output appears only when whole.
    """
    where = str(bitstream)
    header, units = read_stream(bitstream, expected_codec_id)
    parameter_set, weights, rest = network_parts(units, where)
    expected_hash = weights_hash([("parameter_set", parameter_set), ("weights", weights)])
    if header.weights_hash and header.weights_hash != expected_hash:
        raise BitstreamError(f"{where}: the weights hash does not match the network the file carries")
    net_class, architecture = read_parameter_set(parameter_set, header, f"{where}, the parameter set")
    frames = [u for u in rest if u.is_frame]
    order = header.coding_structure().frames(header.num_frames)
    if len(frames) != len(order):
        raise BitstreamError(f"{where}: {len(frames)} frame units for {header.num_frames} frames")
    by_poc = [b""] * header.num_frames
    for index, (unit, frame) in enumerate(zip(frames, order, strict=True)):
        if unit.kind != FRAME_KINDS[frame.frame_type]:
            raise BitstreamError(
                f"{where}, frame unit {index}: frame {frame.poc} has unit kind {unit.kind}, "
                f"not {frame.frame_type}"
            )
        by_poc[frame.poc] = unit.payload
    _check_before_building(net_class, architecture, weights, memory_limit, where)
    step = "the network"
    try:
        net = net_class(**architecture)
        step = "the weights"
        net.decompress_weights(weights)
        step = "the frame units (latents)"
        with torch.no_grad():
            net.decompress_latents(by_poc)
        step = "the reconstruction"
        y, uv = net.eval().reconstruct()
        step = f"the output {output}"
        AdaptiveCodec._write_frames(Path(output), y, uv, header.height, header.width, header.bit_depth)
    except BitstreamError:
        raise
    except MemoryError:
        raise BitstreamError(f"{where}: {step}: out of memory; the stream needs more than is free") from None
    except OSError:
        raise  # the output cannot be written: not the stream's fault
    except Exception as error:  # noqa: BLE001 - any failure on a checked stream is the stream's defect
        raise BitstreamError(
            f"{where}: {step} cannot be decoded: {type(error).__name__}: {str(error)[:300]}"
        ) from error
    return header


def read_parameter_set(payload: bytes, header: StreamHeader, where: str) -> tuple[type, dict[str, Any]]:
    """The network class and its checked architecture, which must agree with the header."""
    if len(payload) > MAX_ARCHITECTURE_BYTES:
        raise BitstreamError(
            f"{where}: {len(payload)} bytes is more than the {MAX_ARCHITECTURE_BYTES} allowed"
        )
    if payload[:1] == PACKED_MAGIC:
        net_class = network_class(packed_target(payload, where), where)
        expected = header_geometry(net_class, header)
        architecture = unpack_parameter_set(payload, net_class.ARCHITECTURE_FIELDS, where, expected)
    else:  # the JSON parameter set of files written before the packed one
        try:
            parameter_set = json.loads(payload.decode("utf-8"))
            target, architecture = parameter_set["target"], parameter_set["architecture"]
        except (UnicodeDecodeError, ValueError, KeyError, TypeError, RecursionError) as error:
            raise BitstreamError(
                f"{where}: not a valid parameter set ({type(error).__name__}: {error})"
            ) from None
        net_class = network_class(target, where)
        architecture = net_class.checked_architecture(architecture, where)
        expected = header_geometry(net_class, header)
    _check_geometry(architecture, expected, where)
    return net_class, architecture


def _check_geometry(architecture: Mapping[str, Any], given: Mapping[str, Any], where: str) -> None:
    """BitstreamError unless ``architecture`` has the header's geometry (:func:`header_geometry`)."""
    differ = [
        f"{key} {architecture.get(key)!r} (header: {value!r})"
        for key, value in given.items()
        if architecture.get(key) != value
    ]
    if differ:
        raise BitstreamError(f"{where}: the architecture disagrees with the header: {', '.join(differ)}")


def header_geometry(net_class: type, header: StreamHeader) -> dict[str, Any]:
    """The architecture fields the container header gives (``HEADER_GIVEN_FIELDS``): the coded size
    rounded up to the class's padding, the frame count and the coding structure."""
    pad = net_class.pad_multiple
    return {
        "height": -(-header.height // pad) * pad,
        "width": -(-header.width // pad) * pad,
        "num_frames": header.num_frames,
        "structure": header.structure,
        "intra_period": header.intra_period,
        "gop_size": header.gop_size,
    }


def _check_before_building(
    net_class: type, architecture: dict[str, Any], weights: bytes, memory_limit: int | None, where: str
) -> None:
    """Build on ``meta`` (shapes only): the weights unit must code these shapes, the memory must fit."""
    from nvc_train.entropy.param_coding import ParamCodingError, payload_spec_crc

    try:
        with torch.device("meta"):
            meta = net_class(**architecture)
        coder = meta.parameter_coder()
        spec_crc = coder.spec_crc
        need = meta.decode_memory_bytes()
    except (ValueError, TypeError, ZeroDivisionError, OverflowError, RuntimeError) as error:
        raise BitstreamError(
            f"{where}, the parameter set: the architecture does not build "
            f"{net_class.__name__}: {type(error).__name__}: {str(error)[:300]}"
        ) from None
    try:
        # a network with its own weight coding reads its own payload header (HiNeRV's)
        coded_crc = getattr(coder, "payload_spec_crc", payload_spec_crc)(weights)
    except ParamCodingError as error:
        raise BitstreamError(f"{where}, the weights: {error}") from None
    if coded_crc != spec_crc:
        raise BitstreamError(f"{where}, the weights: coded for other shapes than the architecture's network")
    limit = decode_memory_limit() if memory_limit is None else int(memory_limit)
    if need > limit:
        raise BitstreamError(
            f"{where}: decoding this {net_class.__name__} needs about {need / 2**30:.2f} GiB, more than the "
            f"{limit / 2**30:.2f} GiB allowed (NVC_DECODE_MEMORY_GB raises the limit)"
        )


def main(argv: list[str] | None = None) -> None:
    """``python -m nvc_train.codecs.adaptive BITSTREAM OUTPUT.yuv``: decode from the file alone."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("bitstream")
    parser.add_argument("output")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    try:
        header = decode_file(args.bitstream, args.output)
    except (BitstreamError, CodecError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"decoded {header.num_frames} frames of {header.width}x{header.height} into {args.output}")


if __name__ == "__main__":
    main()
