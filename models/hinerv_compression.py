"""HiNeRV's model compression (Kwan et al., NeurIPS 2023), in the project's container and coder.

What the published method does to the fitted network, and how each step is done here:

1. **Global pruning** (:meth:`HiNeRVWeightCodec.prune`): a share of all the network's parameters
   (grids and biases count in the total) is set to zero, chosen among the weights of the decoder's
   convolutions and linear layers only (never the grids nor the hierarchical encodings'
   projections), by the score ``|w| / sqrt(weights still alive in its layer)``: small layers keep
   relatively more. The masks then stay fixed while the network is fine-tuned.
2. **Quant-Noise** (:meth:`HiNeRVWeightCodec.forward`, mode ``noise``): during the last fine-tuning,
   each multi-dimensional tensor has a random ``noise_ratio`` share of its entries replaced by their
   quantized value (no gradient through the rounding), so the network learns to survive the
   quantizer it will be coded with.
3. **The quantizer** (:func:`slice_scales`, :func:`quantize`): symmetric, ``bits`` bits, one scale
   per slice: along the tensor's longest axis of more than 20 entries, each position of the other
   axes gets ``scale = 2 max|w| / (2**bits - 1) + 1e-6`` (stored in float16) and
   ``q = clamp(round(w / scale), -2**(bits-1), 2**(bits-1) - 1)``. Tensors of one dimension
   (biases) are sent as float16.
4. **Arithmetic coding** (:meth:`HiNeRVWeightCodec.compress`): each quantized tensor with its OWN
   histogram (the symbols' counts, normalised to 16 bits, are written in the payload), and each
   pruning mask likewise; pruned positions are not coded. The coder is the project's ANS
   (:mod:`nvc_train.entropy.coder`, constriction), one stream for the whole network.

Payload layout (version 1; every integer a LEB128 varint unless said)::

    u8 version=1, u8 bits, u32 CRC-32 of the tensors' names, shapes and prunability (refuses a
    payload made for another architecture)
    per network tensor, in the network's parameter order:
      1-D: numel float16 values (little endian)
      n-D: [if prunable: mask histogram (count of zeros, as a 16-bit normalised count)]
           scales: one float16 per slice (count known from the shape)
           histogram: zigzag(min symbol), L, then L normalised counts
    the ANS stream (the rest): per tensor, its mask bits, then the symbols of its kept entries

The decoder knows every shape and which tensors are prunable from the architecture alone, so the
payload holds no names. Everything the decoder computes from the payload is integer (the CDFs are
cumulative sums of the stored counts), so a fresh process decodes the same weights, bit for bit.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from nvc_train.entropy.coder import PRECISION, AnsDecoder, AnsEncoder, _cdf_tables
from nvc_train.entropy.param_coding import ParamCodingError

__all__ = ["HiNeRVWeightCodec", "HiNeRVCodingError", "quantize", "quantization_axis", "slice_scales"]

PAYLOAD_VERSION = 1
#: An axis is a "slice" axis only if a slice along it holds under 5% of the tensor (HiNeRV's rule,
#: after HNeRV): a dimension longer than 20.
MIN_SLICE_AXIS = 20
#: Added to every scale so that an all-zero slice still divides.
SCALE_EPSILON = 1e-6
#: Parameter modes of :meth:`HiNeRVWeightCodec.forward` (``SceneAdaptiveNet.quantize_parameters``).
CODEC_MODES = ("prune", "noise", "ste", "dequantize")


class HiNeRVCodingError(ParamCodingError):
    """A HiNeRV weights payload that cannot be decoded (truncated, corrupt, another network)."""


# ---- the quantizer ------------------------------------------------------------------------------


def quantization_axis(shape: Iterable[int]) -> int | None:
    """The slice axis of a tensor of ``shape``: the longest axis longer than 20 (the first of equals),
    or None (one scale for the whole tensor)."""
    best, best_length = None, 0
    for axis, length in enumerate(shape):
        if length > MIN_SLICE_AXIS and length > best_length:
            best, best_length = axis, length
    return best


def slice_scales(weight: Tensor, bits: int) -> Tensor:
    """Per-slice scales of ``weight`` (float, differentiable; size 1 along the slice axis)."""
    axis = quantization_axis(weight.shape)
    peak = weight.abs().amax(dim=axis, keepdim=True) if axis is not None else weight.abs().amax()
    return 2.0 * peak / (2.0**bits - 1.0) + SCALE_EPSILON


def quantize(weight: Tensor, scale: Tensor, bits: int) -> Tensor:
    """Integer symbols (as floats) of ``weight`` under ``scale``: rounded and clamped to ``bits``."""
    return torch.round(weight / scale).clamp(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


# ---- varints ------------------------------------------------------------------------------------


def _put_varint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError(f"varint of a negative value {value}")
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return


class _Reader:
    """Reads the side information of a payload; every overrun is a :class:`HiNeRVCodingError`."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, count: int) -> bytes:
        if count < 0 or self.pos + count > len(self.data):
            raise HiNeRVCodingError("HiNeRV weights payload is truncated")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            (byte,) = self.take(1)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise HiNeRVCodingError("HiNeRV weights payload has a malformed varint")


def _zigzag(value: int) -> int:
    return 2 * value if value >= 0 else -2 * value - 1


def _unzigzag(value: int) -> int:
    return value // 2 if value % 2 == 0 else -(value + 1) // 2


# ---- histograms ---------------------------------------------------------------------------------


def _histogram_table(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-row coder tables from the normalised counts (the escape symbol takes what is left)."""
    total = 1 << PRECISION
    escape = total - int(counts.sum())
    if len(counts) < 1 or (counts < 1).any() or escape < 1:
        raise HiNeRVCodingError("HiNeRV weights payload has an invalid histogram")
    cdf = np.zeros((1, len(counts) + 2), dtype=np.int64)
    cdf[0, 1 : len(counts) + 1] = np.cumsum(counts)
    cdf[0, -1] = total
    return cdf.astype(np.int32), np.array([len(counts) + 1], dtype=np.int32), np.zeros(1, dtype=np.int32)


def _mask_zero_count(mask_symbols: np.ndarray) -> int:
    """The 16-bit normalised count of zeros of a mask (ones get the rest but one, the escape's)."""
    total = (1 << PRECISION) - 1
    zeros = int((mask_symbols == 0).sum())
    share = round(total * zeros / max(len(mask_symbols), 1))
    return min(max(share, 1), total - 1)


def _normalised_counts(symbols: np.ndarray) -> tuple[int, np.ndarray]:
    """(lowest symbol, counts of lowest..highest normalised to 2**16 with one left for the escape)."""
    low, high = int(symbols.min()), int(symbols.max())
    histogram = np.bincount(symbols - low, minlength=high - low + 1).astype(np.float64)
    cdf, _ = _cdf_tables(histogram[None] / histogram.sum(), np.array([len(histogram)]), np.zeros(1))
    counts = np.diff(cdf[0, : len(histogram) + 1].astype(np.int64))
    return low, counts


# ---- the codec ----------------------------------------------------------------------------------


class HiNeRVWeightCodec(nn.Module):
    """Pruning masks, Quant-Noise and the coded payload of one HiNeRV network's weights.

    Plays the part of :class:`nvc_train.entropy.param_coding.ParameterCoder` for
    :class:`models.hinerv.HiNeRV` (``forward(params, mode)``, ``compress``, ``decompress``,
    ``init_steps``), so the framework's fit and container drive it unchanged. It has no learnable
    parameters (HiNeRV's quantizer is not learned and it trains without a rate term); its buffers
    are the pruning masks.

    Args:
        shapes: name -> shape of every coded tensor as the method sees it (the slice axis is chosen
            on it; a parameter stored in another shape of the same size is reshaped to it), in the
            network's order.
        prunable: the names whose entries pruning may remove.
        bits: bits of the quantizer (HiNeRV codes at 6; ``init_steps(bits=)`` sets it).
        noise_ratio: the share of entries replaced by their quantized value in mode ``noise``.
    """

    def __init__(
        self, shapes: Mapping[str, tuple[int, ...]], prunable: Iterable[str], bits: int = 8,
        noise_ratio: float = 0.9,
    ) -> None:  # fmt: skip
        super().__init__()
        self.shapes = {name: tuple(int(s) for s in shape) for name, shape in shapes.items()}
        self.prunable = [name for name in self.shapes if name in set(prunable)]
        unknown = set(prunable) - set(self.shapes)
        if unknown:
            raise ValueError(f"prunable tensors {sorted(unknown)} are not coded tensors")
        self.set_bits(bits)
        self.noise_ratio = float(noise_ratio)
        self.last_sizes: dict[str, int] = {}  # of the last payload: side information, ANS stream
        for index, name in enumerate(self.prunable):
            self.register_buffer(f"mask_{index}", torch.ones(self.shapes[name], dtype=torch.bool))

    @classmethod
    def from_module(cls, module: nn.Module, include: Callable[[str, Tensor], bool],
                    prunable: Callable[[str], bool],
                    coded_shape: Callable[[str, Tensor], tuple[int, ...]] | None = None,
                    ) -> HiNeRVWeightCodec:  # fmt: skip
        """The codec of ``module``'s parameters that ``include`` selects; ``prunable`` picks those
        pruning may thin; ``coded_shape`` gives the shape a parameter is quantized in (default: its own)."""
        shapes = {
            n: tuple(coded_shape(n, p) if coded_shape else p.shape)
            for n, p in module.named_parameters()
            if include(n, p)
        }
        return cls(shapes, [n for n in shapes if prunable(n) and len(shapes[n]) > 1])

    # ---- settings -----------------------------------------------------------------------------

    def set_bits(self, bits: int) -> None:
        if not 2 <= int(bits) <= 16:
            raise ValueError(f"HiNeRV's quantizer takes 2..16 bits, got {bits}")
        self.bits = int(bits)

    def init_steps(self, params: Mapping[str, Tensor], bits: int = 8) -> None:
        """The framework's hook for "start quantizing at ``bits``": here it only sets the bit depth
        (HiNeRV's scales follow each tensor's peak; there is nothing to initialise)."""
        self.set_bits(bits)

    @property
    def layout_crc(self) -> int:
        """CRC-32 of what the payload's layout depends on: every tensor's name, shape, prunability."""
        text = ";".join(
            f"{n}:{'x'.join(map(str, s))}:{int(n in self.prunable)}" for n, s in self.shapes.items()
        )
        return zlib.crc32(text.encode())

    @property
    def spec_crc(self) -> int:
        """What a decoder compares with :meth:`payload_spec_crc` before building a network for real
        (the name :class:`~nvc_train.entropy.param_coding.ParameterCoder` gives it)."""
        return self.layout_crc

    @staticmethod
    def payload_spec_crc(data: bytes) -> int:
        """The layout CRC a payload was coded for, from its header alone."""
        if len(data) < 6 or data[0] != PAYLOAD_VERSION:
            raise HiNeRVCodingError(f"not a version {PAYLOAD_VERSION} HiNeRV weights payload")
        return int(struct.unpack_from("<I", data, 2)[0])

    def masks(self) -> dict[str, Tensor]:
        return {name: getattr(self, f"mask_{i}") for i, name in enumerate(self.prunable)}

    def sparsity(self) -> tuple[int, int]:
        """(pruned entries, all coded entries): HiNeRV's sparsity counts against every parameter."""
        zeros = sum(int((~mask).sum()) for mask in self.masks().values())
        return zeros, sum(math.prod(shape) for shape in self.shapes.values())

    @torch.no_grad()
    def prune(self, params: Mapping[str, Tensor], ratio: float, weight: float = 0.5) -> tuple[int, int]:
        """Prune until ``ratio`` of ALL coded entries are zero, globally across the prunable tensors.

        Score of an entry: ``|w| / (alive entries of its tensor ** weight + 1e-6)``, already pruned
        ones never come back. Returns :meth:`sparsity`.
        """
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"prune ratio must be in [0, 1), got {ratio}")
        zeros, total = self.sparsity()
        target = int(total * ratio)
        masks = self.masks()
        if target <= zeros or not masks:
            return zeros, total
        scores = []
        for name, mask in masks.items():
            value = params[name].detach().to(mask.device, torch.float32)
            alive = float(mask.sum()) ** weight + 1e-6
            scores.append(torch.where(mask, value.abs() / alive, torch.full_like(value, math.inf)).flatten())
        flat = torch.cat(scores)
        if target > flat.numel():
            raise ValueError(f"cannot prune {target} entries: only {flat.numel()} are prunable")
        threshold = torch.sort(flat).values[target - 1]
        offset = 0
        for mask in masks.values():
            count = mask.numel()
            mask &= (flat[offset : offset + count] > threshold).view_as(mask)
            offset += count
        return self.sparsity()

    # ---- training forward ---------------------------------------------------------------------

    def forward(self, params: Mapping[str, Tensor], mode: str = "noise") -> tuple[dict[str, Tensor], Tensor]:
        """(weights the network runs with, estimated bits) under ``mode``.

        ``prune``: masked weights. ``noise``: masked, then Quant-Noise (``noise_ratio`` of each
        multi-dimensional tensor's entries replaced by their quantized value, no gradient through
        the rounding). ``ste``: every entry quantized, straight-through gradient. ``dequantize``:
        exactly the decoder's weights, and the bits their symbols cost (an entropy estimate; not
        differentiable: HiNeRV trains without a rate term). Other modes give zero bits.
        """
        if mode not in CODEC_MODES:
            raise ValueError(f"HiNeRV weight mode must be one of {CODEC_MODES}, got {mode!r}")
        masks = self.masks()
        out: dict[str, Tensor] = {}
        bits = torch.zeros((), device=next(iter(params.values())).device)
        for name, shape in self.shapes.items():
            weight = params[name].reshape(shape)
            if name in masks:
                weight = weight * masks[name].to(weight.device, weight.dtype)  # masks may sit elsewhere
            if weight.dim() < 2 and mode == "dequantize":  # biases travel as float16
                out[name] = weight.detach().half().to(weight.dtype)
                bits = bits + 16.0 * weight.numel()
                continue
            if mode == "prune" or weight.dim() < 2:
                out[name] = weight
                continue
            if mode == "dequantize":
                with torch.no_grad():
                    scale = slice_scales(weight.float(), self.bits).half().float()
                    symbols = quantize(weight.float(), scale, self.bits)
                    out[name] = (symbols * scale).to(weight.dtype)
                    bits = bits + self._estimated_bits(name, symbols, scale)
                continue
            scale = slice_scales(weight, self.bits)
            symbols = quantize(weight.detach(), scale.detach(), self.bits)
            quantized = symbols * scale
            if mode == "ste":
                out[name] = weight + (quantized - weight).detach()
                continue
            keep = (torch.rand_like(weight) > self.noise_ratio).to(weight.dtype)
            out[name] = weight * keep + quantized * (1.0 - keep)
        return {name: value.view_as(params[name]) for name, value in out.items()}, bits

    def _estimated_bits(self, name: str, symbols: Tensor, scale: Tensor) -> Tensor:
        """Empirical entropy of the kept symbols plus the scales and histogram (a close estimate of
        what :meth:`compress` writes for this tensor)."""
        masks = self.masks()
        kept = symbols[masks[name].to(symbols.device)] if name in masks else symbols.flatten()
        _, counts = torch.unique(kept, return_counts=True)
        p = counts.double() / counts.sum()
        entropy = float(-(counts.double() * torch.log2(p)).sum())
        side = 16.0 * scale.numel() + 16.0 * len(counts) + 16.0
        if name in masks:
            alive = masks[name].double().mean().clamp(1e-12, 1 - 1e-12)
            side += float(
                masks[name].numel() * -(alive * torch.log2(alive) + (1 - alive) * torch.log2(1 - alive))
            )
        return torch.tensor(entropy + side, device=symbols.device)

    # ---- coding -------------------------------------------------------------------------------

    @torch.no_grad()
    def compress(self, params: Mapping[str, Tensor]) -> bytes:
        """The payload of ``params`` (pruned by the masks, quantized at :attr:`bits`); see the module
        docstring for the layout."""
        side = bytearray([PAYLOAD_VERSION, self.bits]) + struct.pack("<I", self.layout_crc)
        stream = AnsEncoder()
        masks = self.masks()
        for name, shape in self.shapes.items():
            weight = params[name].detach().to("cpu", torch.float32)
            if weight.numel() != math.prod(shape):
                raise ValueError(f"{name}: shape {tuple(weight.shape)}, the codec expects {shape}")
            weight = weight.reshape(shape)
            if len(shape) < 2:
                side += weight.numpy().astype("<f2").tobytes()
                continue
            mask = masks[name].cpu() if name in masks else None
            if mask is not None:
                weight = weight * mask
                mask_symbols = mask.flatten().numpy().astype(np.int64)
                self._code_block(side, stream, mask_symbols, binary=True)
            scale = slice_scales(weight, self.bits).half()
            side += scale.numpy().astype("<f2").tobytes()
            symbols = quantize(weight, scale.float(), self.bits).to(torch.int64)
            kept = symbols[mask] if mask is not None else symbols.flatten()
            self._code_block(side, stream, kept.numpy(), binary=False)
        coded = stream.to_bytes()
        self.last_sizes = {"side_bytes": len(side), "stream_bytes": len(coded)}  # for benches and logs
        return bytes(side) + coded

    @staticmethod
    def _code_block(side: bytearray, stream: AnsEncoder, symbols: np.ndarray, binary: bool) -> None:
        """Write a block's histogram into ``side`` and its symbols into ``stream``."""
        if binary:  # a mask: only the normalised count of zeros is written (both counts >= 1)
            zeros = _mask_zero_count(symbols)
            _put_varint(side, zeros)
            low, counts = 0, np.array([zeros, (1 << PRECISION) - 1 - zeros])
        elif symbols.size == 0:
            _put_varint(side, 0)
            return
        else:
            low, counts = _normalised_counts(symbols)
            _put_varint(side, _zigzag(low))
            _put_varint(side, len(counts))
            for count in counts:
                _put_varint(side, int(count))
        cdf, length, offset = _histogram_table(counts)
        offset[0] = low
        stream.encode(symbols.astype(np.int64), np.zeros(len(symbols), dtype=np.int32), cdf, length, offset)

    @torch.no_grad()
    def decompress(self, data: bytes) -> dict[str, Tensor]:
        """The float weights a payload of :meth:`compress` holds (name -> tensor, float32)."""
        reader = _Reader(bytes(data))
        version, bits = reader.take(2)
        if version != PAYLOAD_VERSION:
            raise HiNeRVCodingError(f"HiNeRV weights payload version {version}, this decoder reads 1")
        if not 2 <= bits <= 16:
            raise HiNeRVCodingError(f"HiNeRV weights payload says {bits} bits (2..16)")
        (layout,) = struct.unpack("<I", reader.take(4))
        if layout != self.layout_crc:
            raise HiNeRVCodingError("HiNeRV weights payload was made for another architecture")
        plans: list[tuple[str, Tensor | None, Tensor | None, tuple | None, tuple | None]] = []
        prunable = set(self.prunable)
        for name, shape in self.shapes.items():
            count = math.prod(shape)
            if len(shape) < 2:
                raw = np.frombuffer(reader.take(2 * count), dtype="<f2").astype(np.float32)
                plans.append((name, torch.from_numpy(raw.copy()).view(shape), None, None, None))
                continue
            mask_table = None
            if name in prunable:
                zeros = reader.varint()
                if not 1 <= zeros <= (1 << PRECISION) - 2:
                    raise HiNeRVCodingError(f"{name}: invalid mask histogram")
                mask_table = _histogram_table(np.array([zeros, (1 << PRECISION) - 1 - zeros]))
            axis = quantization_axis(shape)
            scale_shape = (
                tuple(1 if a == axis else s for a, s in enumerate(shape)) if axis is not None else ()
            )
            raw = np.frombuffer(reader.take(2 * math.prod(scale_shape)), dtype="<f2").astype(np.float32)
            scale = torch.from_numpy(raw.copy()).view(scale_shape)
            low = _unzigzag(reader.varint())
            length = reader.varint()
            table = None
            if length:
                if length > (1 << PRECISION) - 1:
                    raise HiNeRVCodingError(f"{name}: histogram of {length} symbols")
                counts = np.array([reader.varint() for _ in range(length)], dtype=np.int64)
                cdf, cdf_length, offset = _histogram_table(counts)
                offset[0] = low
                table = (cdf, cdf_length, offset)
            plans.append((name, None, scale, mask_table, table))
        decoder = AnsDecoder(reader.data[reader.pos :])
        out: dict[str, Tensor] = {}
        for name, raw_value, scale, mask_table, table in plans:
            if raw_value is not None:
                out[name] = raw_value
                continue
            shape = self.shapes[name]
            count = math.prod(shape)
            if mask_table is not None:
                mask_np = decoder.decode(np.zeros(count, dtype=np.int32), *mask_table)
                if ((mask_np != 0) & (mask_np != 1)).any():
                    raise HiNeRVCodingError(f"{name}: mask symbols other than 0 and 1")
                mask = torch.from_numpy(mask_np.astype(bool)).view(shape)
            else:
                mask = torch.ones(shape, dtype=torch.bool)
            kept = int(mask.sum())
            if kept and table is None:
                raise HiNeRVCodingError(f"{name}: {kept} kept entries but no histogram")
            symbols = torch.zeros(shape, dtype=torch.float32)
            if kept:
                values = decoder.decode(np.zeros(kept, dtype=np.int32), *table)
                limit = 2 ** (bits - 1)
                if (values < -limit).any() or (values >= limit).any():
                    raise HiNeRVCodingError(f"{name}: symbols outside {bits} bits")
                symbols[mask] = torch.from_numpy(values.astype(np.float32))
            assert scale is not None
            out[name] = symbols * scale
        decoder.finish()
        return out


def _check_packing() -> None:  # the float16 layout the payload assumes (little endian IEEE half)
    if struct.pack("<e", 1.0) != b"\x00\x3c":
        raise RuntimeError("this platform does not pack IEEE float16 as HiNeRV payloads expect")


_check_packing()
