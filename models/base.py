"""The model API every scene-agnostic codec network implements, its latent codecs, and their shared helpers.

The training LightningModule calls :meth:`NeuralVideoCodec.forward_frame` (estimated bits from
likelihoods, differentiable), and the evaluation adapter calls :meth:`NeuralVideoCodec.compress_frame`
and :meth:`NeuralVideoCodec.decompress_frame` (real bytes). Neither knows which codec it drives, so the
contract lives here, once. The adapter owns padding, the coding structure and the bitstream container;
a model only ever sees one frame whose height and width are multiples of ``pad_multiple``.

A frame payload is one type tag byte (:data:`TAG_INTRA` or :data:`TAG_INTER`) and then the frame's
single entropy-coder stream (:func:`pack_stream`): every latent of the frame (for a hyperprior codec
the hyper latent ``z``, then the latent ``y``) is coded into one ANS stream, so the frame pays the
coder's flush and word alignment once and needs no per-part lengths; the container already carries
the payload length and a CRC. The tag exists so that a payload handed to the wrong decoder call (an
intra payload decoded as a P frame) fails with :class:`PayloadError` that says what is wrong; a
stream cut short or padded is refused by the entropy decoder's end-of-stream checks, which the codec
turns into a :class:`PayloadError` too.

What is here besides the API, and why once: :class:`CodecConfig` (the base of each codec family's
frozen dataclass of architecture numbers), :class:`LatentCodec` (the one interface of a latent and
its hyper latent, every method returning a dict), :func:`update_entropy_tables` (the one walk that
builds every entropy model's integer tables, so no codec chains ``update()`` by hand and none can
forget a part), :func:`likelihood_bits` (the one count of estimated bits) and the checks and framing
around ``encode_frame`` / ``decode_frame`` that :class:`NeuralVideoCodec` runs for every codec.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from nvc_train.entropy import (
    AnsDecoder,
    AnsEncoder,
    EntropyBottleneck,
    EntropyCoderError,
    GaussianConditional,
)
from nvc_train.entropy.base import TableEntropyModel

__all__ = [
    "TAG_INTER",
    "TAG_INTRA",
    "CodecConfig",
    "FrameOutput",
    "LatentCodec",
    "MemberSet",
    "NeuralVideoCodec",
    "PayloadError",
    "eval_mode",
    "likelihood_bits",
    "pack_stream",
    "parameters_m",
    "quantize_gaussian",
    "unpack_stream",
    "update_entropy_tables",
]

TAG_INTRA = ord("I")  # payload tag of a frame coded without a reference
TAG_INTER = ord("P")  # payload tag of a frame coded against the previous frame's reference


class PayloadError(ValueError):
    """A frame payload is truncated, has trailing bytes, or does not fit the decoder call it was given."""


# ---------------------------------------------------------------------------------------------------
# Helpers every codec shares


def likelihood_bits(likelihoods: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-item information in bits, ``-sum log2 p`` over all but the batch dimension.

    ``mask`` (broadcastable to ``likelihoods``) selects the elements counted, for latents coded in
    several context steps; every element counts when it is None.
    """
    info = -torch.log2(likelihoods)
    if mask is not None:
        info = info * mask
    return info.flatten(1).sum(dim=1)


def update_entropy_tables(module: nn.Module, force: bool = False) -> None:
    """Build the integer CDF tables of every entropy model inside ``module``.

    Why a walk: a codec holds its entropy models at any depth (intra and inter halves, one per
    latent, a hyper latent each), and a part left out of a hand-written chain of ``update()`` calls
    would only fail when it first codes. Bottlenecks keep tables already built unless ``force``
    (their densities are learned: rebuild after further training); tables that depend only on fixed
    numbers (a Gaussian's scale levels) are rebuilt every time, which is cheap and exact.
    """
    for sub in module.modules():
        if isinstance(sub, EntropyBottleneck):
            sub.update(force=force)
        elif isinstance(sub, TableEntropyModel):
            sub.update()


def quantize_gaussian(
    gaussian: GaussianConditional, y: Tensor, scales: Tensor, means: Tensor, training: bool
) -> tuple[Tensor, Tensor]:
    """``(y_hat, likelihoods)`` of a latent under a Gaussian entropy model, the training way or not.

    In training the likelihoods see additive uniform noise (a smooth proxy of rounding) while
    ``y_hat`` is rounded with a straight-through gradient, so a synthesis learns on the values it
    will really decode; otherwise both come from the rounded values, as coded.
    """
    if training:
        _, likelihoods = gaussian(y, scales, means=means, quantizer="noise")
        y_hat, _ = gaussian(y, scales, means=means, quantizer="ste")
        return y_hat, likelihoods
    return gaussian(y, scales, means=means, quantizer="dequantize")


def parameters_m(*modules: nn.Module) -> float:
    """Parameters of ``modules`` together, in millions (the unit of the complexity table)."""
    return sum(p.numel() for module in modules for p in module.parameters()) / 1e6


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Run ``module`` in eval mode without gradients, then restore its training flag.

    Real coding must compute entropy parameters the same way on both sides; any train-only
    behaviour (dropout, noise, batch statistics) would break that, so coding always runs in eval
    mode, whatever mode the caller (e.g. a Lightning validation hook) left the module in.
    """
    was_training = module.training
    # Switching walks every sub-module through nn.Module.__setattr__ (~10 ms each way for a model
    # of DCVC-RT's 800 modules, per coded frame): skip both walks when nothing is in training mode.
    switch = any(m.training for m in module.modules())
    if switch:
        module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if switch:
            module.train(was_training)


# ---------------------------------------------------------------------------------------------------
# Typed architecture numbers


@dataclass(frozen=True, kw_only=True)
class CodecConfig:
    """Base of the frozen dataclass that holds one codec family's architecture numbers.

    Why typed and frozen: the numbers are read in many sub-modules, and a misspelt or missing one
    must fail when the codec is built (the dataclass refuses unknown and missing keywords), not as
    a wrong shape later; frozen, because the modules were built from them and a later edit would
    describe another network. The values themselves live in ``configs/model/<name>.yaml`` only: the
    fields have no defaults, so every build names every number.
    """

    def as_dict(self) -> dict[str, Any]:
        """The numbers as plain values (tuples as lists), as a YAML file or a checkpoint holds them."""
        return {key: list(v) if isinstance(v, tuple) else v for key, v in asdict(self).items()}


# ---------------------------------------------------------------------------------------------------
# The frame-level API


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

    Subclasses set ``pad_multiple`` and ``num_q`` and implement ``forward_frame``, ``encode_frame``
    and ``decode_frame``. The base class owns what every codec does alike around the last two:
    :meth:`compress_frame` and :meth:`decompress_frame` check the frame, the rate point and the
    payload's tag, run in eval mode, frame the stream and turn entropy-decoder failures into
    :class:`PayloadError`, so every codec refuses the same inputs with the same words; ``update``
    builds every entropy model's tables by itself. ``q_index`` selects the rate point of a
    variable-rate model: ``0`` is the lowest quality and rate, ``num_q - 1`` the highest. ``ref`` is
    opaque to callers: whatever ``forward_frame`` or ``decompress_frame`` returned for the previous
    frame, or ``None`` for an intra frame.
    """

    colour_space: str = "yuv420"
    pad_multiple: int = 1
    num_q: int = 1

    def forward_frame(self, y: Tensor, uv: Tensor, q_index: Tensor, ref: Any | None) -> FrameOutput:
        """Training / evaluation path: reconstruction and estimated bits; ``q_index`` is (B,) long."""
        raise NotImplementedError

    def update(self, force: bool = False) -> None:
        """Build the entropy coders' integer tables (once; ``force`` rebuilds the learned ones)."""
        update_entropy_tables(self, force=force)

    def compress_frame(
        self, y: Tensor, uv: Tensor, q_index: int, ref: Any | None
    ) -> tuple[bytes, FrameOutput]:
        """Code one frame (batch 1) to bytes; the output pictures equal what the decoder will return."""
        self.check_coded_frame(y, uv)
        q = self.check_q_index(q_index)
        with eval_mode(self):
            stream, out = self.encode_frame(y, uv, q, ref)
        return pack_stream(TAG_INTRA if ref is None else TAG_INTER, stream), out

    def decompress_frame(
        self, data: bytes, q_index: int, ref: Any | None, height: int, width: int
    ) -> tuple[Tensor, Tensor, Any]:
        """Decode one frame's payload into ``(y_hat, uv_hat, new ref)``."""
        self.check_size(height, width)
        q = self.check_q_index(q_index)
        stream = self.frame_stream(data, ref)
        with self.decoding():
            return self.decode_frame(stream, q, ref, height, width)

    def encode_frame(self, y: Tensor, uv: Tensor, q_index: int, ref: Any | None) -> tuple[bytes, FrameOutput]:
        """The frame's entropy-coder stream and its output (clamped pictures, estimated bits, new ref).

        Called by :meth:`compress_frame` with checked inputs (batch 1, a valid ``q_index``) in eval
        mode without gradients; ``ref`` is None for an intra frame.
        """
        raise NotImplementedError

    def decode_frame(
        self, stream: bytes, q_index: int, ref: Any | None, height: int, width: int
    ) -> tuple[Tensor, Tensor, Any]:
        """``(y_hat, uv_hat, new ref)`` from a frame's stream, equal to what :meth:`encode_frame` returned.

        Called by :meth:`decompress_frame` with the stream behind the checked tag, a checked size and
        ``q_index``, in eval mode; an entropy-decoder error becomes a :class:`PayloadError` there.
        """
        raise NotImplementedError

    def complexity(self) -> dict[str, float]:
        """Numbers for the complexity table that only the model knows; parameters by default."""
        return {"params_m": parameters_m(self)}

    def split_parameters(self, intra: Sequence[nn.Module], inter: Sequence[nn.Module]) -> dict[str, float]:
        """``params_m`` and its intra / inter parts, for a codec whose two halves are separate modules.

        Papers quote the P-frame model alone (DCVC-RT's 20.7 M), so the table shows both halves.
        """
        return {
            "params_m": parameters_m(self),
            "params_intra_m": parameters_m(*intra),
            "params_inter_m": parameters_m(*inter),
        }

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

    def check_coded_frame(self, y: Tensor, uv: Tensor) -> None:
        """:meth:`check_frame`, and batch 1: real coding writes one frame's payload at a time."""
        self.check_frame(y, uv)
        if y.shape[0] != 1:
            raise ValueError(f"compress_frame codes one frame at a time (batch 1), got batch {y.shape[0]}")

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

    def q_tensor(self, q_index: Tensor | int, batch: int, device: torch.device) -> Tensor:
        """A (B,) long tensor of valid rate points; a bad index must not reach a gather (device assert).

        On the meta device (complexity counting without memory) values are unknown and not checked.
        """
        q = torch.as_tensor(q_index, device=device).long().reshape(-1)
        if q.numel() == 1 and batch > 1:
            q = q.expand(batch)
        if q.numel() != batch:
            raise ValueError(f"q_index has {q.numel()} entries for a batch of {batch}")
        if not q.is_meta and (bool((q < 0).any()) or bool((q >= self.num_q).any())):
            raise ValueError(f"q_index values must lie in [0, {self.num_q}), got {q.tolist()}")
        return q

    @staticmethod
    def check_reference(ref: Any, kind: type, frame: Tensor) -> None:
        """``ref`` must be the codec's own reference state (``kind``) for a frame the size of ``frame``.

        Compared: batch and spatial size of ``ref.frame`` against ``frame`` (the tensor the
        networks see; its channels are the codec's business).
        """
        if not isinstance(ref, kind):
            raise TypeError(f"ref must be the Reference a previous frame returned, got {type(ref).__name__}")
        if ref.frame.shape[0] != frame.shape[0] or ref.frame.shape[-2:] != frame.shape[-2:]:
            raise ValueError(
                f"reference frame {tuple(ref.frame.shape)} does not match the frame {tuple(frame.shape)}"
            )

    @staticmethod
    def frame_stream(data: bytes, ref: Any | None) -> bytes:
        """The entropy-coder stream of a payload, after checking its tag against the decoder call.

        An intra payload (tag ``I``) needs ``ref is None`` and a P payload (tag ``P``) a reference;
        the mismatch is named, since it is the likely mistake of a caller that lost a frame.
        """
        tag = TAG_INTRA if ref is None else TAG_INTER
        if data and data[0] in (TAG_INTRA, TAG_INTER) and data[0] != tag:
            kind = "an intra (I)" if data[0] == TAG_INTRA else "a predicted (P)"
            raise PayloadError(f"payload is {kind} frame but ref is {'None' if ref is None else 'given'}")
        return unpack_stream(data, tag)

    @contextlib.contextmanager
    def decoding(self) -> Iterator[None]:
        """Decode in eval mode; a stream the entropy decoder refuses becomes a :class:`PayloadError`.

        The entropy decoder raises its own error for a stream cut short, padded or not matching its
        tables; to the caller of ``decompress_frame`` that is a bad payload, whatever the codec.
        """
        try:
            with eval_mode(self):
                yield
        except EntropyCoderError as error:
            raise PayloadError(f"frame payload does not decode: {error}") from error


# ---------------------------------------------------------------------------------------------------
# Latent codecs


class LatentCodec(nn.Module):
    """One latent ``y`` (with whatever hyper latent it brings): the interface every latent codec keeps.

    After CompressAI's latent codecs, every method returns a dict, so that a codec composes parts
    without knowing which parts it holds:

    - ``forward(y, q_index, side)`` -> ``{"y_hat", "bits"}``: training and evaluation (estimated bits
      per item, differentiable);
    - ``encode_into(encoder, y, q_index, side)`` -> ``{"y_hat", "bits"}``: write this latent as the
      next blocks of a frame's one ANS stream (a codec with several latents shares the stream);
    - ``decode_from(decoder, q_index, latent_size, side)`` -> ``{"y_hat"}``: read them back;
    - ``compress(y, q_index, side)`` -> ``{"stream", "y_hat", "bits"}`` and
      ``decompress(stream, q_index, latent_size, side)`` -> ``{"y_hat"}``: the same for a frame whose
      only latent this is. :meth:`compress` decodes its own stream with :meth:`decompress`, so the
      encoder's ``y_hat`` is the decoder's by construction, not by floating-point luck.

    ``q_index`` is a (B,) long tensor in ``forward`` and an int in coding; ``side`` is an optional
    prior the decoder also has (a temporal prior), None for a plain hyperprior; ``latent_size`` is
    the spatial size of ``y``. :meth:`update` builds the tables of every entropy model inside.
    """

    def forward(self, y: Tensor, q_index: Tensor, side: Tensor | None = None) -> dict[str, Tensor]:
        raise NotImplementedError

    def encode_into(
        self, encoder: AnsEncoder, y: Tensor, q_index: int, side: Tensor | None = None
    ) -> dict[str, Tensor]:
        raise NotImplementedError

    def decode_from(
        self, decoder: AnsDecoder, q_index: int, latent_size: tuple[int, int], side: Tensor | None = None
    ) -> dict[str, Tensor]:
        raise NotImplementedError

    def compress(self, y: Tensor, q_index: int, side: Tensor | None = None) -> dict[str, Any]:
        """Code ``y`` (batch 1) into one ``stream`` (bytes); ``y_hat`` is decoded back from it."""
        encoder = AnsEncoder()
        coded = self.encode_into(encoder, y, q_index, side)
        stream = encoder.to_bytes()
        y_hat = self.decompress(stream, q_index, (y.shape[-2], y.shape[-1]), side)["y_hat"]
        return {"stream": stream, "y_hat": y_hat, "bits": coded["bits"]}

    def decompress(
        self, stream: bytes, q_index: int, latent_size: tuple[int, int], side: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Decode ``stream`` into ``y_hat`` of spatial size ``latent_size``.

        Raises :class:`EntropyCoderError` for a stream that does not decode to exactly its end.
        """
        decoder = AnsDecoder(stream)
        out = self.decode_from(decoder, q_index, latent_size, side)
        decoder.finish()
        return out

    def update(self, force: bool = False) -> None:
        """Build the tables of every entropy model of this latent codec."""
        update_entropy_tables(self, force=force)


# ---------------------------------------------------------------------------------------------------
# Frame payloads: one tag byte, then the frame's one entropy-coder stream to the end of the
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


class MemberSet(NeuralVideoCodec):
    """Several single-rate codecs as one: rate point ``i`` is ``self.members[i]`` (set by the subclass).

    Some codecs are published as one model per quality (CompressAI's ssf2020, MaskCRT's Q2..Q5); a
    benchmark wants one codec with several rate points. A subclass builds ``members`` and its
    ``forward_frame`` (how a batch of mixed rate points is routed); coding a frame is the chosen
    member's own, at its single rate point.
    """

    members: nn.ModuleList

    def encode_frame(self, y: Tensor, uv: Tensor, q_index: int, ref: Any) -> tuple[bytes, FrameOutput]:
        return self.members[q_index].encode_frame(y, uv, 0, ref)

    def decode_frame(
        self, stream: bytes, q_index: int, ref: Any, height: int, width: int
    ) -> tuple[Tensor, Tensor, Any]:
        return self.members[q_index].decode_frame(stream, 0, ref, height, width)

    def complexity(self) -> dict[str, float]:
        """Parameters of all members, and the intra / inter split of one (what a frame runs)."""
        one = self.members[0].complexity()
        return {**one, "params_m": sum(p.numel() for p in self.parameters()) / 1e6}
