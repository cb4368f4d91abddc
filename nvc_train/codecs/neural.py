"""The adapter that puts a scene-agnostic neural codec behind the codec contract.

A model (``models.base.NeuralVideoCodec``) codes one padded frame at a time; this adapter owns
everything around that, once for every model: reading the source, padding to the model's multiple
and cropping back, the coding structure (low delay with intra period, or all intra), the bitstream
container (codec id, weights hash, sizes, per-unit CRC) and writing the reconstruction. Bits are
counted by the runner from the file written here; the model's estimate is returned beside them.

    frames --pad--> [compress_frame I, P, P, ... I, P ...] --units--> container file
    file --read/check--> [decompress_frame ...] --crop--> decoded.yuv
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nvc_train.bitstream import (
    KIND_I,
    KIND_P,
    BitstreamError,
    Unit,
    read_stream,
    weights_hash,
    write_stream,
)
from nvc_train.codecs.base import Codec, CodecError, DecodeResult, EncodeResult, RatePoint, stream_header
from nvc_train.complexity import codec_complexity
from nvc_train.ctc import CTCSequence
from nvc_train.entropy.coder import EntropyCoderError
from nvc_train.structure import CodingStructure
from nvc_train.video.frame import YUVFrame
from nvc_train.video.pad import crop_frame, pad_frame
from nvc_train.video.readers import YUVWriter, open_video


def spread_rate_points(num_q: int, count: int = 4) -> list[int]:
    """``count`` q_index values spread evenly over [0, num_q) (DCVC test practice: 4 points)."""
    count = min(count, num_q)
    return sorted({int(round(v)) for v in np.linspace(0, num_q - 1, count)})


class NeuralCodec(Codec):
    """A ``NeuralVideoCodec`` network evaluated through real bitstreams; rate points are q_index values."""

    family = "scene-agnostic"
    suffix = ".nvc"

    def __init__(
        self,
        net: torch.nn.Module,
        name: str,
        rate_points: list[int] | None = None,
        device: str = "cpu",
        encoder_reconstruction: bool = False,
        coding_threads: int | None = 1,
    ) -> None:
        # coding_threads: torch's CPU intra-op threads while coding (None: leave the process's count).
        # float32 convolutions give other results with other thread counts on the CPU (measured in
        # tests/test_determinism.py), and a P frame's prior is computed from the decoder's previous
        # float output, so an encoder and a decoder started with other thread counts could drift.
        # Pinning the count while coding makes the decoded pictures independent of how the decoding
        # process was started. GPU coding is not affected by this setting.
        self.coding_threads = coding_threads
        # encoder_reconstruction: also write what the encoder reconstructed, beside the bitstream
        # (``<bitstream>.enc.yuv``), so that a decoder elsewhere can be checked against it byte for byte.
        self.encoder_reconstruction = encoder_reconstruction
        self.net = net.to(device).eval()
        self._kmac_cache: dict[tuple[int, int], dict] = {}  # (height, width) -> kMAC/px figures
        self.name = name
        self.device = torch.device(device)
        self.rate_points = list(rate_points) if rate_points else spread_rate_points(net.num_q)
        for q in self.rate_points:
            net.check_q_index(q)
        self.net.update(force=False)
        self.weights_hash = weights_hash(
            (key, value.detach().cpu().contiguous().numpy().tobytes())
            for key, value in net.state_dict().items()
        )

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        name: str | None = None,
        rate_points: list[int] | None = None,
        device: str = "cpu",
        encoder_reconstruction: bool = False,
        coding_threads: int | None = 1,
    ) -> NeuralCodec:
        """Rebuild the network from the checkpoint's own resolved config (loaded with weights_only=True).

        The config names a registered network class and numbers only (:mod:`nvc_train.networks`);
        a checkpoint that names anything else is refused before anything is built.
        """
        from nvc_train.networks import build_network, checked_model_name, load_checkpoint, network_state

        checkpoint = load_checkpoint(path)
        config: dict[str, Any] | None = checkpoint.get("nvc_config")
        if not config or "model" not in config:
            raise CodecError(f"{path} carries no nvc-train config (was it written by train.py?)")
        net = build_network(config["model"], str(path), network_state(checkpoint, str(path)))
        model_name = name or config.get("model_name") or type(net).__name__.lower()
        model_name = checked_model_name(model_name, str(path))
        return cls(net, model_name, rate_points, device, encoder_reconstruction, coding_threads)

    @contextlib.contextmanager
    def _pinned_threads(self) -> Iterator[None]:
        """Code with ``coding_threads`` CPU threads, then give the process its own count back."""
        if self.coding_threads is None or self.device.type != "cpu":
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(self.coding_threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def description(self) -> str:
        return f"{self.name} ({type(self.net).__name__}, weights {self.weights_hash.hex()[:8]})"

    def complexity(self, height: int = 1080, width: int = 1920) -> dict:
        """The model's own figures (parameters, split intra/inter if it reports them) and kMAC/px.

        ``kmac_per_px`` is a P frame's (the review's Table 5 reports inter coding; most frames of a
        low-delay sequence are P frames), ``kmac_per_px_intra`` an I frame's, both counted by
        :func:`nvc_train.complexity.codec_complexity` at ``height x width``. Counting a full-size
        model at 1080p costs tens of seconds on a CPU, so each size is counted once per codec.
        """
        key = (int(height), int(width))
        if key not in self._kmac_cache:
            inter = codec_complexity(self.net, *key, frame_type="P", device=self.device)
            intra = codec_complexity(self.net, *key, frame_type="I", device=self.device)
            self._kmac_cache[key] = {
                "kmac_per_px": inter["kmac_per_px"],
                "kmac_per_px_intra": intra["kmac_per_px"],
                "kmac_resolution": f"{key[1]}x{key[0]}",
            }
        return {**self.net.complexity(), **self._kmac_cache[key]}

    def check_structure(self, structure: CodingStructure) -> None:
        if structure.kind not in ("ld", "ai"):
            raise CodecError(
                f"{self.name} codes low delay (ld) and all intra (ai) only; structure {structure.kind} "
                "needs B frames, which this model does not have"
            )

    # ---- encoding ------------------------------------------------------------------------------

    def encode(
        self, sequence: CTCSequence, rate_point: RatePoint, structure: CodingStructure, bitstream: Path
    ) -> EncodeResult:
        self.check_structure(structure)
        q = self.net.check_q_index(int(rate_point))
        info = sequence.info
        reader = open_video(sequence.path, info)
        units, estimated, ref = [], 0.0, None
        writer = YUVWriter(Path(f"{bitstream}.enc.yuv")) if self.encoder_reconstruction else None
        started = time.perf_counter()
        for index, frame in enumerate(reader.read(sequence.start_frame, info.num_frames)):
            intra = structure.is_intra(index)
            y, uv = self._to_model(frame)
            try:
                with self._pinned_threads():
                    payload, out = self.net.compress_frame(y, uv, q, None if intra else ref)
            except EntropyCoderError as error:  # non-finite or huge latents: the weights, not the code
                raise CodecError(
                    f"{self.name} cannot code frame {index} of {sequence.name} at q_index {q}: {error}; "
                    "are the model's weights sane (a diverged run gives huge or NaN latents)?"
                ) from error
            ref = out.ref
            estimated += float(out.bits.sum())
            units.append(Unit(KIND_I if intra else KIND_P, q, payload))
            if writer is not None:
                writer.write(self._to_frame(out.y_hat, out.uv_hat, info.height, info.width, info.bit_depth))
        if writer is not None:
            writer.close()
        header = stream_header(self.name, self.weights_hash, sequence, structure, q)
        write_stream(bitstream, header, units)
        return EncodeResult(Path(bitstream), time.perf_counter() - started, estimated_bits=estimated)

    # ---- decoding ------------------------------------------------------------------------------

    def decode(self, bitstream: Path, sequence: CTCSequence, output: Path) -> DecodeResult:
        """Decode ``bitstream`` for ``sequence``; every defect of the file is a BitstreamError.

        The container is checked first (CRCs, codec id, this model's weights hash); then the fields
        the model will use, before it uses them: size, frame count and bit depth against the
        sequence, each unit's kind (the first frame intra) and rate point against the model's range.
        """
        started = time.perf_counter()
        header, units = read_stream(bitstream, self.name[:32], self.weights_hash)
        info = sequence.info
        if (header.width, header.height, header.num_frames) != (info.width, info.height, info.num_frames):
            raise CodecError(
                f"{bitstream} holds {header.num_frames} frames of {header.width}x{header.height}, "
                f"but {sequence.name} codes {info.num_frames} frames of {info.width}x{info.height}"
            )
        if header.bit_depth != info.bit_depth:
            raise BitstreamError(
                f"{bitstream}: header bit depth {header.bit_depth}, but {sequence.name} is "
                f"{info.bit_depth}-bit; was it made from another version of the sequence?"
            )
        frames = [(index, unit) for index, unit in enumerate(units) if unit.is_frame]
        for number, (index, unit) in enumerate(frames):
            where = f"{bitstream}, unit {index} (frame {number})"
            if unit.kind not in (KIND_I, KIND_P) or (number == 0 and unit.kind != KIND_I):
                expected = "I" if number == 0 else "I or P"
                raise BitstreamError(
                    f"{where}: unit kind {unit.kind}, expected {expected} ({KIND_I}/{KIND_P})"
                )
            if not 0 <= unit.rate_point < self.net.num_q:
                raise BitstreamError(
                    f"{where}: rate point {unit.rate_point} is outside this model's q_index range "
                    f"[0, {self.net.num_q})"
                )
        padded_h, padded_w = self._padded_size(info.height, info.width)
        ref = None
        with YUVWriter(output) as writer:
            for number, (index, unit) in enumerate(frames):
                try:
                    with self._pinned_threads():
                        y, uv, ref = self.net.decompress_frame(
                            unit.payload,
                            unit.rate_point,
                            None if unit.kind == KIND_I else ref,
                            padded_h,
                            padded_w,
                        )
                except (ValueError, RuntimeError, IndexError, KeyError, OverflowError) as error:
                    # PayloadError, EntropyCoderError and torch's shape errors: the payload is wrong.
                    raise BitstreamError(
                        f"{bitstream}, unit {index} (frame {number}): the payload cannot be decoded by "
                        f"{self.name}: {type(error).__name__}: {str(error)[:300]}"
                    ) from error
                writer.write(self._to_frame(y, uv, info.height, info.width, header.bit_depth))
        return DecodeResult(Path(output), time.perf_counter() - started)

    # ---- frames <-> model tensors ---------------------------------------------------------------

    def _padded_size(self, height: int, width: int) -> tuple[int, int]:
        m = self.net.pad_multiple
        return -(-height // m) * m, -(-width // m) * m

    def _to_model(self, frame: YUVFrame) -> tuple[torch.Tensor, torch.Tensor]:
        """Float planes in [0, 1], replicate-padded at the bottom and right to the model's multiple."""
        padded, _ = pad_frame(frame, self.net.pad_multiple)
        y, u, v = padded.to_tensors()
        return y.to(self.device), torch.cat([u, v], dim=1).to(self.device)

    @staticmethod
    def _to_frame(y: torch.Tensor, uv: torch.Tensor, height: int, width: int, bit_depth: int) -> YUVFrame:
        """Round to code values of the source bit depth and crop back to the source size."""
        decoded = YUVFrame.from_tensors(y.clamp(0, 1), uv[:, 0].clamp(0, 1), uv[:, 1].clamp(0, 1), bit_depth)
        return crop_frame(decoded, (height, width))


def frozen_codec(
    net: torch.nn.Module, name: str, rate_points: Sequence[int], device: torch.device
) -> NeuralCodec:
    """A :class:`NeuralCodec` around a frozen copy of the live ``net`` with freshly built entropy tables.

    What the CTC callback codes and the complexity profile times while a model trains. A copy,
    because coding must not touch what the optimizer and DDP see: ``NeuralCodec`` puts its
    net in eval mode and ``update`` replaces table buffers. The tables are rebuilt (``force``) since
    the weights moved since the last build.
    """
    frozen = copy.deepcopy(net).to(device).eval()
    for parameter in frozen.parameters():
        parameter.grad = None
        parameter.requires_grad_(False)
    with torch.no_grad():
        frozen.update(force=True)
    return NeuralCodec(frozen, name, list(rate_points), device=str(device))
