"""Quantization with learned steps, a differentiable rate, and real coding of network parameters.

Why this module: a scene-adaptive codec (an INR such as HiNeRV / NVRC, or the synthesis and context
networks of a latent-grid codec such as C3) sends its network with the video. The weights are then
part of the rate, so they are quantized and entropy coded like latents, and the training loss sees
their rate. This is the one place in the project that does that; every adaptive codec uses it.

Data flow (NVRC-style, per tensor or per output channel "group" g)::

    w  --/ step_g-->  y = w / step_g  --quantize-->  q  --*step_g-->  w_hat  (what the network uses)
                                                     |
                        Laplace(theta_g) fitted to q +--> estimated bits (differentiable)
                                                     +--> integer tables --> ANS bytes (real bits)

- **Learned steps.** ``log2_step`` parameters, one per group, learn from the rate-distortion loss
  (LSQ-style gradients through the straight-through rounding, or through the noise proxy). The
  step actually used is snapped, straight-through, to a grid of ``1/STEP_RESOLUTION`` octave whose
  float32 values are built from integers by exact operations: the step index travels in the bytes,
  and training, ``"dequantize"`` and the decoder multiply the same integers by the same float32.
- **Rate model.** A zero-mean discrete Laplace (two-sided geometric, ``P(k) ∝ theta**|k|``) per
  group, FITTED rather than learned: its maximum-likelihood ``theta`` has a closed form in the mean
  ``|q|``, so the estimate needs no extra parameters, no second optimizer, and sits at the optimum a
  learned scale would converge to. At coding time the group's ``theta`` is snapped to one of
  ``NUM_LEVELS`` table levels (the level with the fewest real bits among the nearest ones).
- **Exact decoding anywhere.** The decoder builds each level's CDF with integer arithmetic only
  (``theta`` is a 32-bit fixed-point integer; masses are integer powers, normalised with integer
  remainders), so no float rounding can make encoder and decoder disagree (the failure of DCVC
  issue #118). Coding itself is the project's ANS coder (:class:`AnsEncoder`) with its escape path
  for values beyond a table.

Payload (version 3): the version byte, the CRC32 of the architecture spec (names, shapes, grouping),
then one ANS stream with the side information and all parameter symbols. Decoding needs only the
architecture. The payload travels in a container unit, whose CRC32 covers it; versions 1 and 2
(still read) began with ``b"NVP"`` and carried a CRC32 of the stream as well, 7 bytes a file that
checked nothing the unit's CRC does not. Side information (version 2), per tensor: a tensor of several groups
first sends a mode (bit 0: one step for all its groups, bit 1: one table level for all), then its
step index(es) and level(s) as deltas (from the defaults, then from the previous group); the encoder
takes one level for the whole tensor whenever that costs fewer real bits, side information included.
Version 1 (still read) sent a step and a level for every group: about 8 bits a group, ~1.2 kbit of
a Cool-Chic-sized network's ~6 kbit, paid whatever the network.
"""

from __future__ import annotations

import functools
import math
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from nvc_train.entropy.coder import (
    MAX_ESCAPE_BITS,
    MAX_HALF_RANGE,
    PRECISION,
    AnsDecoder,
    AnsEncoder,
    EntropyCoderError,
)
from nvc_train.entropy.ops import quantize

__all__ = [
    "HEADER_BYTES",
    "LEVEL_MEANS",
    "NUM_LEVELS",
    "STEP_RESOLUTION",
    "ParamCodingError",
    "ParameterCoder",
    "TensorSpec",
    "laplace_bits",
    "payload_spec_crc",
    "step_value",
]

STEP_RESOLUTION = 16
"""Quantization steps are ``2 ** (k / STEP_RESOLUTION)`` for an integer step index ``k`` (~4% apart)."""

STEP_INDEX_RANGE = (-40 * STEP_RESOLUTION, 16 * STEP_RESOLUTION)
"""Allowed step indexes: steps from 2**-40 to 2**16; a learned step is clamped into this range."""

# float32 values of 2 ** (j / 16), j = 0..15, as the shortest decimals that round-trip: a decimal
# literal parses to the same float on every machine, unlike pow() at run time.
_STEP_MANTISSA = (
    1.0,
    1.0442737340927124,
    1.0905077457427979,
    1.1387885808944702,
    1.1892070770263672,
    1.2418577671051025,
    1.2968395948410034,
    1.3542555570602417,
    1.4142135381698608,
    1.4768261909484863,
    1.5422108173370361,
    1.610490322113037,
    1.6817928552627563,
    1.7562521696090698,
    1.8340080976486206,
    1.9152065515518188,
)

NUM_LEVELS = 64
"""Table levels of the Laplace rate model, by mean |symbol| from ``LEVEL_MEANS[0]`` to ``[-1]``."""

LEVEL_MEANS = tuple(float(m) for m in np.geomspace(0.004, 512.0, NUM_LEVELS))
"""Mean |symbol| of each level (log-spaced, ratio ~1.2); only the integer thetas below drive coding."""

_THETA_BITS = 32


def _theta(mean_abs: Tensor | float) -> Tensor | float:
    """ML ``theta`` of a discrete Laplace with mean |k| = ``mean_abs``: ``mu / (1 + sqrt(1 + mu**2))``.

    (The textbook ``(sqrt(1 + mu**2) - 1) / mu``, rewritten so that it does not cancel for small mu.)
    """
    if isinstance(mean_abs, Tensor):
        return mean_abs / (1.0 + torch.sqrt(1.0 + mean_abs * mean_abs))
    return mean_abs / (1.0 + math.sqrt(1.0 + mean_abs * mean_abs))


# theta of each level as an integer numerator over 2**32: a float-to-integer rounding done once here
# (far from a tie for every level; tests pin the result); only these integers drive coding.
_LEVEL_THETA = tuple(int(round(_theta(m) * 2**_THETA_BITS)) for m in LEVEL_MEANS)

_SIDE_LEVEL = 40
"""Level that codes the side information (step and level index deltas; mean |delta| ~ 4)."""

_DEFAULT_STEP_INDEX = -8 * STEP_RESOLUTION  # side information is coded as deltas from these
_DEFAULT_LEVEL = NUM_LEVELS // 2

_MAGIC = b"NVP"
# 3: no magic, no stream CRC (the container unit's covers it); 2: per-tensor modes for the side
# information; 1: every group's step and level. 1 and 2 are still read.
_VERSION = 3
_READABLE_VERSIONS = (1, 2, 3)
_HEADER = struct.Struct("<3sBII")  # versions 1 and 2: magic, version, spec CRC32, stream CRC32
_COMPACT_HEADER = struct.Struct("<BI")  # version 3: version, spec CRC32

HEADER_BYTES = _COMPACT_HEADER.size
"""Bytes of the payload header written now (version, architecture CRC32)."""


class ParamCodingError(EntropyCoderError):
    """Parameters cannot be coded, or bytes are not a parameter payload of this architecture."""


# ------------------------------------------------------------------------------------------- steps
def step_value(step_index: Tensor) -> Tensor:
    """float32 ``2 ** (k / STEP_RESOLUTION)`` of integer step indexes, by exact operations only.

    ``mantissa[k mod 16]`` times a power of two assembled from its exponent bits: both factors are
    exact floats and so is their product, so every device and process gets the same step.
    """
    k = step_index.to(torch.int64)
    mantissa = torch.tensor(_STEP_MANTISSA, dtype=torch.float32, device=k.device)[k % STEP_RESOLUTION]
    exponent = torch.div(k, STEP_RESOLUTION, rounding_mode="floor")
    power_of_two = ((exponent + 127) << 23).to(torch.int32).view(torch.float32)
    return mantissa * power_of_two


def _snapped_step(log2_step: Tensor) -> tuple[Tensor, Tensor]:
    """(step snapped to the grid with a straight-through gradient, integer step index)."""
    scaled = torch.clamp(log2_step.detach() * STEP_RESOLUTION, *STEP_INDEX_RANGE)
    index = torch.round(scaled).to(torch.int64)
    continuous = torch.exp2(log2_step)
    # snapped + (c - c): exactly the snapped float forward (x - x == 0), the gradient of c backward.
    return step_value(index) + (continuous - continuous.detach()), index


# -------------------------------------------------------------------------------------------- rate
def laplace_bits(abs_sum: Tensor, count: int | Tensor, min_mean: float = 1e-4) -> Tensor:
    """Bits of ``count`` symbols with the given sum of |symbol| under their ML discrete Laplace.

    ``-log2 P(k) = log2((1 + theta) / (1 - theta)) - |k| log2(theta)`` summed over the group, with
    ``theta`` fitted by maximum likelihood to the group's mean |k| (the fit carries the gradient;
    at the optimum its own contribution is zero, so the rate gradient goes to the symbols).
    """
    mean = torch.clamp(abs_sum / count, min=min_mean)
    theta = _theta(mean)
    per_symbol = torch.log2((1.0 + theta) / (1.0 - theta)) - mean * torch.log2(theta)
    return per_symbol * count


# ------------------------------------------------------------------------------------------ tables
def _normalised_counts(weights: list[int], total: int) -> np.ndarray:
    """Integer counts summing to ``total``, each >= 1, proportional to integer ``weights``.

    Integer arithmetic only (floor shares, then the largest remainders, ties to the lower index;
    an excess from raising zeros to one is taken from the largest counts): the same on any machine.
    """
    weight_sum = sum(weights)
    shares = [w * total // weight_sum for w in weights]
    remainders = [w * total % weight_sum for w in weights]
    counts = np.array([max(1, s) for s in shares], dtype=np.int64)
    diff = total - int(counts.sum())
    if diff > 0:
        for i in sorted(range(len(counts)), key=lambda i: (-remainders[i], i))[:diff]:
            counts[i] += 1
    while diff < 0:
        for i in sorted(range(len(counts)), key=lambda i: (-int(counts[i]), i)):
            if diff == 0:
                break
            if counts[i] > 1:
                counts[i] -= 1
                diff += 1
    return counts


@functools.lru_cache(maxsize=NUM_LEVELS)
def _level_table(level: int) -> tuple[np.ndarray, int]:
    """(integer CDF of symbols -H..H then the escape, H) of one level, from its integer theta only.

    Masses ``theta**|k|`` in 2**40 fixed point by integer multiplication; H is where a symbol's mass
    falls below about a quarter count (beyond it the escape path is cheaper), at most
    ``MAX_HALF_RANGE``; the escape takes the geometric tail's mass.
    """
    if not 0 <= level < NUM_LEVELS:
        raise ParamCodingError(f"table level {level} outside [0, {NUM_LEVELS})")
    numerator = _LEVEL_THETA[level]
    one = 1 << 40
    masses = [one]
    cutoff = one >> (PRECISION + 2)
    while len(masses) <= MAX_HALF_RANGE:
        nxt = (masses[-1] * numerator) >> _THETA_BITS
        if nxt < cutoff and len(masses) > 1:
            break
        masses.append(nxt)
    half = len(masses) - 1
    beyond = (masses[-1] * numerator) >> _THETA_BITS
    tail = 2 * beyond * (1 << _THETA_BITS) // max((1 << _THETA_BITS) - numerator, 1)
    counts = _normalised_counts(masses[:0:-1] + masses + [max(tail, 1)], 1 << PRECISION)
    cdf = np.zeros(len(counts) + 1, dtype=np.int32)
    cdf[1:] = np.cumsum(counts)
    return cdf, half


def _tables(levels: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The coder's ``(cdf, cdf_length, offset)`` arrays, one row per level in ``levels``."""
    rows = [_level_table(int(level)) for level in levels]
    width = max(len(cdf) for cdf, _ in rows)
    cdf = np.full((len(rows), width), 1 << PRECISION, dtype=np.int32)
    for r, (row, _) in enumerate(rows):
        cdf[r, : len(row)] = row
    cdf_length = np.array([len(row) - 1 for row, _ in rows], dtype=np.int32)
    offset = np.array([-half for _, half in rows], dtype=np.int32)
    return cdf, cdf_length, offset


def _level_bits(level: int, values: np.ndarray, counts: np.ndarray) -> float:
    """Real bits (the coder's flush aside) of a histogram (``values``, ``counts``) under ``level``."""
    cdf, half = _level_table(level)
    bits = -np.log2(np.diff(cdf.astype(np.int64)) / float(1 << PRECISION))
    inside = np.abs(values) <= half
    total = float((bits[values[inside] + half] * counts[inside]).sum())
    if not inside.all():
        excess = np.abs(values[~inside]) - half
        escape = bits[-1] + 2.0 + 2.0 * np.floor(np.log2(excess + 1.0))  # sign + gamma-coded excess
        total += float((escape * counts[~inside]).sum())
    return total


def _best_level(symbols: np.ndarray) -> int:
    """The level that codes ``symbols`` in the fewest bits, among the five nearest their ML fit."""
    mean = float(np.abs(symbols).mean())
    nearest = int(np.argmin(np.abs(np.log(np.asarray(LEVEL_MEANS)) - math.log(max(mean, 1e-6)))))
    values, counts = np.unique(symbols, return_counts=True)
    candidates = range(max(0, nearest - 2), min(NUM_LEVELS, nearest + 3))
    return min(candidates, key=lambda level: (_level_bits(level, values, counts), level))


# ------------------------------------------------------------------------------------------- coder
@dataclass(frozen=True)
class TensorSpec:
    """One coded tensor: its name, shape, and whether it has one step per output channel (axis 0)."""

    name: str
    shape: tuple[int, ...]
    per_channel: bool

    @property
    def groups(self) -> int:
        """Number of (step, table level) groups: axis-0 slices, or the whole tensor."""
        return self.shape[0] if self.per_channel else 1

    @property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    def step_shape(self) -> tuple[int, ...]:
        """Shape that broadcasts the per-group steps over the tensor."""
        return (self.shape[0],) + (1,) * (len(self.shape) - 1) if self.per_channel else ()


def payload_spec_crc(data: bytes) -> int:
    """The architecture CRC a weights payload was coded for, read from its header alone.

    A decoder compares it with the CRC of the network an untrusted file describes before building
    that network for real (shapes only, on the ``meta`` device).
    """
    return _split_payload(data)[1]


def _split_payload(data: bytes) -> tuple[int, int, bytes]:
    """``(version, spec_crc, stream)`` of a payload of any readable version; a version 1 or 2 stream
    is checked against its own CRC32 here."""
    data = bytes(data)
    if data[:3] == _MAGIC:
        if len(data) < _HEADER.size:
            raise ParamCodingError(f"parameter payload of {len(data)} bytes is shorter than its header")
        _, version, spec_crc, stream_crc = _HEADER.unpack_from(data)
        if version not in (1, 2):
            raise ParamCodingError(
                f"parameter payload version {version} is not supported after b'NVP' (only 1 and 2)"
            )
        stream = data[_HEADER.size :]
        if zlib.crc32(stream) != stream_crc:
            raise ParamCodingError("parameter payload is corrupt or truncated (CRC32 mismatch)")
        return version, int(spec_crc), stream
    if len(data) < _COMPACT_HEADER.size:
        raise ParamCodingError(f"parameter payload of {len(data)} bytes is shorter than its header")
    version, spec_crc = _COMPACT_HEADER.unpack_from(data)
    if version != _VERSION:
        raise ParamCodingError(
            f"not a parameter payload: version {version} (readable: {_READABLE_VERSIONS}; "
            f"versions 1 and 2 start with {_MAGIC!r})"
        )
    return version, int(spec_crc), data[_COMPACT_HEADER.size :]


class ParameterCoder(nn.Module):
    """Learned-step quantizer, rate estimate and real coder of a fixed set of parameter tensors.

    Parameters
    ----------
    shapes:
        name -> shape of every tensor to code, in coding order (e.g. from ``named_parameters()``).
    per_channel:
        one step and one table level per output channel (axis 0) instead of per tensor; a bool for
        all tensors or a mapping by name. 0-d and 1-d tensors always form one group.
    init_log2_step:
        initial log2 of every step (:meth:`init_steps` sets them from the tensors instead).

    The coder holds only the learned ``log2_step`` parameters; decoding does not need them (steps
    travel in the payload), so a decoder builds a fresh coder from the architecture alone.
    """

    def __init__(
        self,
        shapes: Mapping[str, Sequence[int]],
        per_channel: Mapping[str, bool] | bool = True,
        init_log2_step: float = -8.0,
    ) -> None:
        super().__init__()
        if not shapes:
            raise ValueError("ParameterCoder needs at least one tensor to code")
        specs = []
        for name, shape in shapes.items():
            shape = tuple(int(s) for s in shape)
            if any(s <= 0 for s in shape):
                raise ValueError(f"tensor {name!r} has shape {shape}: every dimension must be positive")
            grouped = per_channel.get(name, False) if isinstance(per_channel, Mapping) else per_channel
            specs.append(TensorSpec(name, shape, bool(grouped) and len(shape) >= 2))
        self.specs: tuple[TensorSpec, ...] = tuple(specs)
        self.log2_step = nn.ParameterList(
            nn.Parameter(torch.full((spec.groups,), float(init_log2_step))) for spec in self.specs
        )
        text = ";".join(f"{s.name}:{'x'.join(map(str, s.shape))}:{int(s.per_channel)}" for s in self.specs)
        self.spec_crc = zlib.crc32(text.encode())

    @classmethod
    def from_module(
        cls,
        module: nn.Module,
        per_channel: bool = True,
        include: Callable[[str, Tensor], bool] | None = None,
        init_log2_step: float = -8.0,
    ) -> ParameterCoder:
        """A coder of every floating-point parameter of ``module`` that ``include`` accepts.

        Call it on the network itself, not on a module that holds the coder: the coder's own steps
        are parameters and must not be coded as weights.
        """
        shapes = {
            name: tuple(p.shape)
            for name, p in module.named_parameters()
            if p.is_floating_point() and (include is None or include(name, p))
        }
        return cls(shapes, per_channel=per_channel, init_log2_step=init_log2_step)

    @property
    def names(self) -> tuple[str, ...]:
        """Coded tensor names, in coding order."""
        return tuple(spec.name for spec in self.specs)

    def num_groups(self) -> int:
        """Total (step, level) groups: what the side information grows with."""
        return sum(spec.groups for spec in self.specs)

    # ---------------------------------------------------------------------------------- learning
    @torch.no_grad()
    def init_steps(self, params: Mapping[str, Tensor], bits: int = 8) -> None:
        """Set each group's step so that its largest |w| is ``2**(bits-1) - 1`` steps."""
        if bits < 2:
            raise ValueError(f"bits must be >= 2, got {bits}")
        for spec, log2_step in zip(self.specs, self.log2_step, strict=True):
            magnitude = self._checked(params, spec).detach().float().abs().reshape(spec.groups, -1)
            peak = torch.clamp(magnitude.amax(dim=1), min=2.0**-30)
            log2_step.copy_(torch.log2(peak / (2 ** (bits - 1) - 1)).to(log2_step.device))

    @torch.no_grad()
    def set_step_indexes(self, indexes: Mapping[str, Tensor]) -> None:
        """Set every group's step to the integer step index given by tensor name (what
        :meth:`decompress_with_steps` returns), e.g. to code a part of a file's weights again."""
        for spec, log2_step in zip(self.specs, self.log2_step, strict=True):
            log2_step.copy_(indexes[spec.name].to(log2_step.dtype).reshape(spec.groups) / STEP_RESOLUTION)

    def _checked(self, params: Mapping[str, Tensor], spec: TensorSpec) -> Tensor:
        """The tensor of ``spec`` from ``params``, refusing a missing name or another shape."""
        if spec.name not in params:
            raise ParamCodingError(f"parameter {spec.name!r} is missing (the coder codes {list(self.names)})")
        w = params[spec.name]
        if tuple(w.shape) != spec.shape:
            raise ParamCodingError(
                f"parameter {spec.name!r} has shape {tuple(w.shape)}, the coder was built for {spec.shape}"
            )
        return w

    def _steps(self, spec_index: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """(broadcastable snapped step with straight-through gradient, integer step indexes)."""
        step, index = _snapped_step(self.log2_step[spec_index].to(device))
        return step.view(self.specs[spec_index].step_shape()), index

    @torch.no_grad()
    def element_steps(self, spec_index: int) -> Tensor:
        """The snapped step of every element of coded tensor ``spec_index`` (that tensor's shape)."""
        step, _ = self._steps(spec_index, self.log2_step[spec_index].device)
        return step.expand(self.specs[spec_index].shape)

    def forward(self, params: Mapping[str, Tensor], mode: str = "noise") -> tuple[dict[str, Tensor], Tensor]:
        """``(quantized tensors by name, estimated bits)``; bits is a differentiable scalar.

        ``"noise"``: ``w + step * U(-0.5, 0.5)``; ``"ste"``: ``round(w / step) * step`` with identity
        gradient to ``w`` (steps get LSQ gradients); ``"dequantize"``: exactly what
        :meth:`decompress` returns. Tensors of ``params`` the coder does not code pass unchanged.
        """
        if mode not in ("noise", "ste", "dequantize"):
            raise ValueError(f"mode must be 'noise', 'ste' or 'dequantize', got {mode!r}")
        out = dict(params)
        total: Tensor | None = None
        for i, spec in enumerate(self.specs):
            w = self._checked(params, spec)
            step, _ = self._steps(i, w.device)
            y = quantize(w.float() / step, mode)
            out[spec.name] = (y * step).to(w.dtype)
            abs_sum = y.abs().reshape(spec.groups, -1).sum(dim=1)
            bits = laplace_bits(abs_sum, spec.numel // spec.groups).sum()
            total = bits if total is None else total + bits
        assert total is not None  # the constructor refuses an empty spec list
        return out, total

    def quantize(self, params: Mapping[str, Tensor], mode: str = "noise") -> dict[str, Tensor]:
        """The quantized tensors of :meth:`forward` (all of ``params``, coded ones replaced)."""
        return self.forward(params, mode)[0]

    def rate_bits(self, params: Mapping[str, Tensor], mode: str = "noise") -> Tensor:
        """The estimated bits of :meth:`forward` (payload header and coder flush not included)."""
        return self.forward(params, mode)[1]

    # ------------------------------------------------------------------------------------ coding
    @torch.no_grad()
    def compress(self, params: Mapping[str, Tensor]) -> bytes:
        """Code the quantized tensors (exactly ``quantize(params, "dequantize")``) into a payload."""
        side: list[list[int]] = []
        previous: dict[bool, tuple[int, int]] = {}
        symbol_parts: list[np.ndarray] = []
        level_parts: list[np.ndarray] = []
        for i, spec in enumerate(self.specs):
            w = self._checked(params, spec)
            step, index = self._steps(i, w.device)
            y = torch.round(w.detach().float() / step)
            if not bool((y.abs() < 2.0**MAX_ESCAPE_BITS).all()):  # also false for NaN
                raise ParamCodingError(
                    f"parameter {spec.name!r} has NaN, infinite or uncodably large values for its step"
                )
            symbols = y.to(torch.int64).cpu().numpy().reshape(spec.groups, -1)
            kind = len(spec.shape) >= 2  # weights and 1-D tensors (biases) each continue their own deltas
            step_list = index.cpu().tolist()
            tensor_side, levels = _tensor_side(step_list, symbols, previous.get(kind, _DEFAULTS))
            previous[kind] = (step_list[-1], levels[-1])
            side += tensor_side
            symbol_parts.append(symbols.ravel())
            level_parts.append(np.repeat(np.asarray(levels, dtype=np.int64), symbols.shape[1]))
        levels = np.concatenate(level_parts)
        used = np.unique(levels)
        encoder = AnsEncoder()
        side_tables = _tables([_SIDE_LEVEL])
        for block in side:
            encoder.encode(np.asarray(block, np.int64), np.zeros(len(block), np.int64), *side_tables)
        encoder.encode(np.concatenate(symbol_parts), np.searchsorted(used, levels), *_tables(used.tolist()))
        stream = encoder.to_bytes()
        return _COMPACT_HEADER.pack(_VERSION, self.spec_crc) + stream

    def decompress(self, data: bytes) -> dict[str, Tensor]:
        """float32 CPU tensors by name, bit-exact to the encoder's ``quantize(params, "dequantize")``."""
        return self.decompress_with_steps(data)[0]

    def decompress_with_steps(self, data: bytes) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """:meth:`decompress` and the integer step index of every group by tensor name: what the
        payload chose, so a part of the weights can be coded again on its own (its share of a file)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ParamCodingError(f"parameter payload must be bytes, got {type(data).__name__}")
        version, spec_crc, stream = _split_payload(data)
        if spec_crc != self.spec_crc:
            raise ParamCodingError(
                "parameter payload was coded for another architecture (names, shapes or grouping differ)"
            )
        try:
            return self._decode_stream(stream, version)
        except ParamCodingError:
            raise
        except EntropyCoderError as error:
            raise ParamCodingError(f"parameter payload cannot be decoded: {error}") from error

    def _decode_stream(self, stream: bytes, version: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Side information, then the symbols; tables come from the decoded level indexes only."""
        decoder = AnsDecoder(stream)

        def side(count: int) -> np.ndarray:
            return decoder.decode(np.zeros(count, np.int64), *_tables([_SIDE_LEVEL]))

        if version == 1:
            pairs = side(2 * self.num_groups())
        step_indexes: list[np.ndarray] = []
        level_parts: list[np.ndarray] = []
        previous: dict[bool, tuple[int, int]] = {}
        position = 0
        low, high = STEP_INDEX_RANGE
        for spec in self.specs:
            if version == 1:
                deltas = pairs[position : position + 2 * spec.groups].reshape(spec.groups, 2)
                position += 2 * spec.groups
                step_deltas, level_deltas = deltas[:, 0], deltas[:, 1]
            else:
                mode = int(side(1)[0]) if spec.groups > 1 else _ONE_STEP | _ONE_LEVEL
                if not 0 <= mode <= _ONE_STEP | _ONE_LEVEL:
                    raise ParamCodingError(f"parameter payload has side mode {mode} for {spec.name!r}")
                step_deltas = np.resize(side(1 if mode & _ONE_STEP else spec.groups), spec.groups)
                level_deltas = np.resize(side(1 if mode & _ONE_LEVEL else spec.groups), spec.groups)
                if mode & _ONE_STEP:
                    step_deltas[1:] = 0
                if mode & _ONE_LEVEL:
                    level_deltas[1:] = 0
            kind = len(spec.shape) >= 2
            first_step, first_level = previous.get(kind, _DEFAULTS) if version > 1 else _DEFAULTS
            steps = first_step + np.cumsum(step_deltas)
            levels = first_level + np.cumsum(level_deltas)
            if steps.min() < low or steps.max() > high or levels.min() < 0 or levels.max() >= NUM_LEVELS:
                raise ParamCodingError(f"parameter payload has out-of-range side information ({spec.name!r})")
            previous[kind] = (int(steps[-1]), int(levels[-1]))
            step_indexes.append(steps)
            level_parts.append(np.repeat(levels, spec.numel // spec.groups))
        levels = np.concatenate(level_parts)
        used = np.unique(levels)
        symbols = decoder.decode(np.searchsorted(used, levels), *_tables(used.tolist()))
        decoder.finish()
        out: dict[str, Tensor] = {}
        indexes: dict[str, Tensor] = {}
        position = 0
        for spec, steps in zip(self.specs, step_indexes, strict=True):
            part = np.ascontiguousarray(symbols[position : position + spec.numel])
            position += spec.numel
            indexes[spec.name] = torch.from_numpy(np.asarray(steps, dtype=np.int64))
            step = step_value(indexes[spec.name]).view(spec.step_shape())
            out[spec.name] = torch.from_numpy(part).view(spec.shape).to(torch.float32) * step
        return out, indexes


_DEFAULTS = (_DEFAULT_STEP_INDEX, _DEFAULT_LEVEL)
_ONE_STEP, _ONE_LEVEL = 1, 2  # side mode bits of a tensor of several groups (payload version 2)


def _deltas(values: list[int], default: int) -> list[int]:
    """``values`` as differences from the previous one, the first from ``default``."""
    return [b - a for a, b in zip([default, *values[:-1]], values, strict=True)]


def _histogram_bits(level: int, symbols: np.ndarray) -> float:
    return _level_bits(level, *np.unique(symbols, return_counts=True))


def _tensor_side(
    step_indexes: list[int], symbols: np.ndarray, previous: tuple[int, int]
) -> tuple[list[list[int]], list[int]]:
    """(side blocks, table level of every group) of one tensor's (groups, n) symbols, version 2.

    The blocks are coded as the decoder reads them (the coder's escapes are per block): one tensor
    of a single group sends [step] [level]; one of several, [mode] [step(s)] [level(s)]. Deltas start
    from ``previous``: the last step and level of the previous tensor of the same kind.

    One step is sent when every group has the same (the step search gives one per module); one
    level when a single table for the whole tensor costs no more real bits, its side information
    included, than a level per group.
    """
    groups = symbols.shape[0]
    row_levels = [_best_level(row) for row in symbols]
    if groups == 1:
        return [[step_indexes[0] - previous[0]], [row_levels[0] - previous[1]]], row_levels
    mode = 0
    step_side = _deltas(step_indexes, previous[0])
    if len(set(step_indexes)) == 1:
        mode, step_side = mode | _ONE_STEP, step_side[:1]
    level_side = _deltas(row_levels, previous[1])
    per_group = sum(_histogram_bits(level, row) for level, row in zip(row_levels, symbols, strict=True))
    per_group += _histogram_bits(_SIDE_LEVEL, np.asarray(level_side))
    one = _best_level(symbols.ravel())
    if (
        _histogram_bits(one, symbols) + _histogram_bits(_SIDE_LEVEL, np.asarray([one - previous[1]]))
        <= per_group
    ):
        mode, level_side, row_levels = mode | _ONE_LEVEL, [one - previous[1]], [one] * groups
    return [[mode], step_side, level_side], row_levels
