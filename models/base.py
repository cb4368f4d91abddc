"""The model API every scene-agnostic codec network implements, and the framing of its frame payloads.

The training LightningModule calls :meth:`NeuralVideoCodec.forward_frame` (estimated bits from
likelihoods, differentiable), and the evaluation adapter calls :meth:`NeuralVideoCodec.compress_frame`
and :meth:`NeuralVideoCodec.decompress_frame` (real bytes). Neither knows which codec it drives, so the
contract lives here, once. The adapter owns padding, the coding structure and the bitstream container;
a model only ever sees one frame whose height and width are multiples of ``pad_multiple``.

A frame payload is one type tag byte and then the frame's single entropy-coder stream
(:func:`pack_stream`): every latent of the frame (for a hyperprior codec the hyper latent ``z``, then
the latent ``y``) is coded into one ANS stream, so the frame pays the coder's flush and word
alignment once and needs no per-part lengths; the container already carries the payload length and
a CRC. The tag exists so that a payload handed to the wrong decoder call (an intra payload decoded
as a P frame) fails with :class:`PayloadError` that says what is wrong; a stream cut short or
padded is refused by the entropy decoder's end-of-stream checks, which the codec turns into a
:class:`PayloadError` too. :func:`pack_payload` frames several separately coded byte strings, for
codecs whose parts cannot share one stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "FrameOutput",
    "NeuralVideoCodec",
    "PayloadError",
    "eval_mode",
    "pack_payload",
    "pack_stream",
    "unpack_payload",
    "unpack_stream",
]


class PayloadError(ValueError):
    """A frame payload is truncated, has trailing bytes, or does not fit the decoder call it was given."""


@dataclass
class FrameOutput:
    """What coding one frame yields, in training (estimated) and in inference (real bytes beside it).

    ``y_hat`` and ``uv_hat`` are not clamped in training (the distortion sees what the network
    produced); :meth:`NeuralVideoCodec.compress_frame` returns exactly the pictures the decoder will
    produce. ``bits`` is per batch item and sums every latent, hyper latents included, so that
    ``bits / (H * W)`` is the estimated bpp the rate term and the logs use.
    """

    y_hat: Tensor  # (B, 1, H, W)
    uv_hat: Tensor  # (B, 2, H/2, W/2)
    bits: Tensor  # (B,)
    ref: Any  # the state the next P frame is coded against


class NeuralVideoCodec(nn.Module):
    """Base class of scene-agnostic neural video codecs: YUV 4:2:0 in and out, one frame at a time.

    Subclasses set ``pad_multiple`` and ``num_q`` and implement the five methods below. ``q_index``
    selects the rate point of a variable-rate model: ``0`` is the lowest quality and rate,
    ``num_q - 1`` the highest. ``ref`` is opaque to callers: whatever ``forward_frame`` or
    ``decompress_frame`` returned for the previous frame, or ``None`` for an intra frame.
    """

    colour_space: str = "yuv420"
    pad_multiple: int = 1
    num_q: int = 1

    def forward_frame(self, y: Tensor, uv: Tensor, q_index: Tensor, ref: Any | None) -> FrameOutput:
        """Training / evaluation path: reconstruction and estimated bits; ``q_index`` is (B,) long."""
        raise NotImplementedError

    def update(self, force: bool = False) -> None:
        """Build the entropy coders' integer tables (once; ``force`` rebuilds them)."""
        raise NotImplementedError

    def compress_frame(
        self, y: Tensor, uv: Tensor, q_index: int, ref: Any | None
    ) -> tuple[bytes, FrameOutput]:
        """Code one frame (batch 1) to bytes; the output pictures equal what the decoder will return."""
        raise NotImplementedError

    def decompress_frame(
        self, data: bytes, q_index: int, ref: Any | None, height: int, width: int
    ) -> tuple[Tensor, Tensor, Any]:
        """Decode one frame's payload into ``(y_hat, uv_hat, new ref)``."""
        raise NotImplementedError

    def complexity(self) -> dict[str, float]:
        """Numbers for the complexity table that only the model knows; parameters by default."""
        return {"params_m": sum(p.numel() for p in self.parameters()) / 1e6}

    # Checks shared by every codec, so each error reads the same whatever the model.

    def check_frame(self, y: Tensor, uv: Tensor) -> None:
        """Refuse planes that are not 4:2:0 of each other or not padded to ``pad_multiple``."""
        if y.dim() != 4 or y.shape[1] != 1:
            raise ValueError(f"luma must be (B, 1, H, W), got {tuple(y.shape)}")
        b, _, h, w = y.shape
        if tuple(uv.shape) != (b, 2, h // 2, w // 2):
            raise ValueError(
                f"chroma must be (B, 2, H/2, W/2) = {(b, 2, h // 2, w // 2)}, got {tuple(uv.shape)}"
            )
        self.check_size(h, w)

    def check_size(self, height: int, width: int) -> None:
        """The adapter pads to ``pad_multiple``; a size that is not a multiple is a caller bug."""
        m = self.pad_multiple
        if height <= 0 or width <= 0 or height % m or width % m:
            raise ValueError(f"frame size {height}x{width} must be positive multiples of pad_multiple={m}")

    def check_q_index(self, q_index: int) -> int:
        """An out-of-range rate point would silently index another gain vector (or wrap); refuse it."""
        q = int(q_index)
        if not 0 <= q < self.num_q:
            raise ValueError(f"q_index {q} out of range [0, {self.num_q})")
        return q


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Run ``module`` in eval mode without gradients, then restore its training flag.

    Real coding must compute entropy parameters the same way on both sides; any train-only
    behaviour (dropout, noise, batch statistics) would break that, so coding always runs in eval
    mode, whatever mode the caller (e.g. a Lightning validation hook) left the module in.
    """
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


# Payload framing: one tag byte, then per part an unsigned LEB128 length, then the parts back to back.
# LEB128 keeps the overhead at 1-3 bytes per part for any realistic frame.

_MAX_VARINT_BYTES = 5  # lengths below 2**35 bytes; a longer run of continuation bits is corruption


def _write_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise PayloadError(f"payload truncated inside the length of {what} ({len(data)} bytes in all)")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, pos + i + 1
    raise PayloadError(f"length of {what} is not a valid varint (more than {_MAX_VARINT_BYTES} bytes)")


def pack_payload(tag: int, parts: Sequence[bytes]) -> bytes:
    """Frame ``parts`` behind a one-byte ``tag`` (e.g. the frame type) and their lengths."""
    if not 0 <= tag < 256:
        raise ValueError(f"payload tag must fit one byte, got {tag}")
    header = bytearray([tag])
    for part in parts:
        header += _write_varint(len(part))
    return bytes(header) + b"".join(parts)


def unpack_payload(data: bytes, tag: int, names: Sequence[str]) -> list[bytes]:
    """Split a payload made by :func:`pack_payload`; check its tag and that its length adds up exactly.

    ``names`` name the parts in error messages. A payload with another tag, cut short, or with bytes
    left over raises :class:`PayloadError`.
    """
    data = bytes(data)
    if not data:
        raise PayloadError("empty frame payload")
    if data[0] != tag:
        raise PayloadError(f"frame payload has type tag {data[0]:#04x}, this decoder call expects {tag:#04x}")
    pos = 1
    lengths = []
    for name in names:
        length, pos = _read_varint(data, pos, name)
        lengths.append(length)
    expected = pos + sum(lengths)
    if len(data) != expected:
        detail = "truncated" if len(data) < expected else "has trailing bytes"
        sizes = ", ".join(f"{n}={k}" for n, k in zip(names, lengths, strict=True))
        raise PayloadError(
            f"frame payload {detail}: header declares {sizes} bytes ({expected} in all), got {len(data)}"
        )
    parts = []
    for length in lengths:
        parts.append(data[pos : pos + length])
        pos += length
    return parts


# Single-stream framing: one tag byte, then the frame's one entropy-coder stream to the end of the
# payload. No length: the container carries the payload's, and the stream is the rest of it.


def pack_stream(tag: int, stream: bytes) -> bytes:
    """Frame one entropy-coder ``stream`` behind a one-byte ``tag`` (e.g. the frame type).

    An empty stream is refused: the decoder refuses a payload without coded data, so a frame must
    not be written that its decoder would reject (real frames code hundreds of bits at least).
    """
    if not 0 <= tag < 256:
        raise ValueError(f"payload tag must fit one byte, got {tag}")
    if not stream:
        raise ValueError("the frame coded to an empty stream, which the decoder would refuse")
    return bytes([tag]) + bytes(stream)


def unpack_stream(data: bytes, tag: int) -> bytes:
    """The stream of a payload made by :func:`pack_stream`, after checking its tag.

    An empty payload, another tag, or a tag with nothing behind it raises :class:`PayloadError`;
    whether the stream's own length is right is for its entropy decoder to check.
    """
    data = bytes(data)
    if not data:
        raise PayloadError("empty frame payload")
    if data[0] != tag:
        raise PayloadError(f"frame payload has type tag {data[0]:#04x}, this decoder call expects {tag:#04x}")
    if len(data) == 1:
        raise PayloadError("frame payload truncated: a type tag and no coded data")
    return data[1:]
