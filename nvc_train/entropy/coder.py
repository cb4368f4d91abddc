"""Integer CDF tables and the grouped ANS coding that every entropy model here shares.

Why a separate, torch-free module: the decoder must rebuild *exactly* the probability model the
encoder used, on another process, machine or GPU. Float arithmetic that differs by one ulp between
two machines changes a rounded CDF entry, and an arithmetic decoder then returns noise from that
point on (DCVC issue #118 is this failure). So everything that drives the coder is an integer
from the moment ``update()`` has run, and this module only ever sees integers:

1. ``_cdf_tables`` is the single function that turns float probability masses into integer CDFs
   (``PRECISION`` = 16 bits, every symbol of a table >= 1 count, one escape symbol last). It runs
   once, in the entropy model's ``update()`` on the encoder side; the tables then live in registered
   buffers and travel in the checkpoint, so a decoder never recomputes them from floats.
2. Which table codes which symbol is an integer too: the channel for the factorized bottleneck, the
   result of ``GaussianConditional.scale_indexes`` (comparisons against a stored boundary table,
   no ``log``) for the Gaussian. Both sides call the same function on the same inputs. (That the
   inputs, e.g. scales from a hyper decoder, are bit-identical on both sides is the codec's part:
   it must compute them from decoded values only, with the same arithmetic.)
3. Handing a table to constriction involves no inexact float operation. ``_row_model`` passes
   ``counts / 2**16`` as float64: those are dyadic numbers with 16 fractional bits, so their
   running sum is exact and equals 1.0 exactly. constriction 0.5.0 (``Categorical(perfect=False)``,
   Rust ``fast_quantized_cdf``, 24-bit precision) computes each left CDF entry as
   ``trunc(cumulative * (2**24 - n) / 1.0) + i``; the product needs at most 17 + 24 = 41
   significant bits, far below float64's 53, so every step is exact and the resulting 24-bit model
   is a pure function of our integers: equal tables give equal models on every IEEE-754 machine.
   (``perfect=True`` runs an iterative float optimisation and is avoided; ``lazy`` is not used.)
4. Escaped values (outside a table's range) are coded losslessly with constriction's integer-only
   ``Uniform`` model (sign, and the excess in chunks of <= 16 bits) after an Elias-gamma-like
   bit-length symbol drawn from a fixed integer table, so no value is ever lost or refused.

Symbols are coded grouped by table row (one constriction model per row, at most ``num_scales`` or
``channels`` groups) in an order the decoder derives from the row indexes alone: a stable sort of
the row index, i.e. raster order inside each row. A payload of :func:`encode_symbols` is the
coder's 32-bit words in little-endian byte order. Several calls can also share ONE stream
(:class:`AnsEncoder` / :class:`AnsDecoder`): a codec's frame then pays the coder's flush and word
alignment once instead of once per latent, which is most of the coding overhead of a small frame.
"""

from __future__ import annotations

from typing import NoReturn

import constriction
import numpy as np

PRECISION = 16
"""Bits of the integer CDF tables: every probability the coder uses is ``count / 2**PRECISION``."""

MAX_HALF_RANGE = 2048
"""Largest table half range (symbols): beyond it values take the escape path. Keeps tables small
enough that the >= 1 count each symbol is given stays a negligible share of 2**PRECISION."""

MAX_ESCAPE_BITS = 62
"""Largest excess bit length an escape can carry; |symbol| must stay below 2**62 (int64 headroom)."""

_CHUNK_BITS = 16  # excess bits are coded in Uniform(2**k) chunks of at most this many bits


class EntropyCoderError(RuntimeError):
    """Coding is impossible or a payload is not what the tables can decode.

    Raised for coding before ``update()``, inputs of the wrong shape or non-finite values, and
    corrupt or truncated payloads (constriction's own exceptions are wrapped into this one).
    """


def _integer_counts(probabilities: np.ndarray, total: int) -> np.ndarray:
    """Integer counts summing to ``total`` with every entry >= 1, close to ``probabilities``.

    Float steps happen only here, at ``update()`` time (the result is stored, never recomputed by
    a decoder). Rounding ``p * total`` and raising zeros to one leaves a surplus or deficit; it is
    spread in proportion to the entries that can absorb it (what keeps the KL to ``p`` smallest),
    and the last few counts go one by one to the largest remainders.
    """
    p = np.clip(np.nan_to_num(probabilities.astype(np.float64), nan=0.0, posinf=0.0), 0.0, None)
    if 2 * len(p) > total:
        raise EntropyCoderError(f"a table of {len(p)} symbols is too long for {total} counts")
    if p.sum() <= 0:
        p = np.ones_like(p)
    p = p / p.sum()
    counts = np.maximum(1, np.floor(p * total + 0.5)).astype(np.int64)
    diff = total - int(counts.sum())
    if diff:
        weights = p if diff > 0 else np.where(counts > 1, counts, 0).astype(np.float64)
        exact = diff * weights / weights.sum()
        step = np.trunc(exact).astype(np.int64)  # toward zero: never takes an entry below 1
        counts += step
        diff -= int(step.sum())
        for i in np.argsort(-np.abs(exact - step), kind="stable"):
            if diff == 0:
                break
            if diff > 0 or counts[i] > 1:
                counts[i] += 1 if diff > 0 else -1
                diff += -1 if diff > 0 else 1
    if diff:  # cannot happen for tables up to total / 2 symbols; refuse rather than mis-code
        raise EntropyCoderError(f"could not normalise a table of {len(p)} symbols to {total} counts")
    return counts


def _cdf_tables(pmf: np.ndarray, lengths: np.ndarray, tails: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """THE conversion from float masses to the integer CDF tables both coding directions use.

    ``pmf`` is (rows, L) with row r's table masses in its first ``lengths[r]`` entries (lowest symbol
    first), ``tails`` (rows,) the mass outside the table, given to the escape symbol appended last.
    Returns ``cdf`` int32 (rows, max(lengths) + 2), each row ``0, c0, c0+c1, ..., 2**PRECISION``
    padded with ``2**PRECISION``, and ``cdf_length`` int32 (rows,): symbols per row incl. escape.
    """
    pmf = np.asarray(pmf, dtype=np.float64)
    lengths = np.asarray(lengths, dtype=np.int64)
    tails = np.asarray(tails, dtype=np.float64)
    total = 1 << PRECISION
    rows = pmf.shape[0]
    width = int(lengths.max()) + 2 if rows else 2
    cdf = np.full((rows, width), total, dtype=np.int64)
    for r in range(rows):
        n = int(lengths[r])
        counts = _integer_counts(np.concatenate([pmf[r, :n], tails[r : r + 1]]), total)
        cdf[r, 0] = 0
        cdf[r, 1 : n + 2] = np.cumsum(counts)
    return cdf.astype(np.int32), (lengths + 1).astype(np.int32)


def _length_table() -> np.ndarray:
    """Fixed integer CDF of the escape bit length k (1..MAX_ESCAPE_BITS), P(k) ~ 2**-k: Elias gamma.

    Built at import on both sides; every float step on these powers of two is exact, and the
    golden-payload test pins the result.
    """
    masses = np.array([2.0**-k for k in range(1, MAX_ESCAPE_BITS + 1)])
    cdf, _ = _cdf_tables(masses[None, :-1], np.array([MAX_ESCAPE_BITS - 1]), masses[-1:])
    return cdf[0]


_LENGTH_CDF = _length_table()


def _row_model(cdf_row: np.ndarray, n: int) -> constriction.stream.model.Categorical:
    """constriction model of one table row; exact-by-construction (see the module docstring)."""
    counts = np.diff(cdf_row[: n + 1].astype(np.int64))
    probabilities = counts.astype(np.float64) / float(1 << PRECISION)
    return constriction.stream.model.Categorical(probabilities, perfect=False)


def check_tables(cdf: np.ndarray, cdf_length: np.ndarray, offset: np.ndarray, rows: int) -> None:
    """Refuse tables that are missing, of another row count, or not valid integer CDFs.

    Buffers come from checkpoints, so they are checked before use: a table that is not monotone or
    does not end at 2**PRECISION would make the two sides disagree silently.
    """
    if cdf.ndim != 2 or cdf.shape[0] == 0:
        raise EntropyCoderError(
            "entropy model tables are not built: call update() (or load a checkpoint made after it)"
        )
    if cdf.shape[0] != rows or cdf_length.shape != (rows,) or offset.shape != (rows,):
        raise EntropyCoderError(
            f"entropy model tables have {cdf.shape[0]} rows, expected {rows}: call update() again"
        )
    total = 1 << PRECISION
    if (cdf_length < 2).any() or (cdf_length > cdf.shape[1] - 1).any():
        raise EntropyCoderError("entropy model tables are corrupt (row lengths out of range): call update()")
    # Row r is valid when cdf[r, 0] == 0, cdf[r, length] == 2**PRECISION and it rises by at least 1
    # at every step up to its length: all rows at once (a Python loop over rows cost ~30 ms per
    # coded frame with DCVC-RT's 9,216 z rows).
    table = cdf.astype(np.int64)
    lengths = cdf_length.astype(np.int64)
    ends = table[np.arange(rows), lengths]
    inside = np.arange(table.shape[1] - 1)[None, :] < lengths[:, None]
    falling = ((np.diff(table, axis=1) < 1) & inside).any(axis=1)
    bad = (table[:, 0] != 0) | (ends != total) | falling
    if bad.any():
        raise EntropyCoderError(
            f"entropy model table row {int(np.argmax(bad))} is not a valid {PRECISION}-bit CDF: call update()"
        )


def _reraise(error: BaseException, what: str) -> NoReturn:
    """Re-raise constriction's failure as an EntropyCoderError; interrupts and ours pass unchanged.

    Rust panics surface as ``pyo3_runtime.PanicException``, a ``BaseException``, hence the broad net.
    """
    if isinstance(error, EntropyCoderError | KeyboardInterrupt | SystemExit | GeneratorExit):
        raise error
    raise EntropyCoderError(f"{what}: {type(error).__name__}: {error}") from error


def _group_order(rows_of_symbols: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Coding order: stable sort by table row (raster order inside a row), and symbols per row.

    Derived from the row indexes alone, so the decoder reproduces it without any symbol.
    """
    if rows_of_symbols.size and (rows_of_symbols.min() < 0 or rows_of_symbols.max() >= rows):
        raise EntropyCoderError(f"table row indexes must lie in [0, {rows})")
    key = rows_of_symbols.astype(np.int16 if rows < 2**15 else np.int64, copy=False)  # int16: radix sort
    order = np.argsort(key, kind="stable")
    counts = np.bincount(rows_of_symbols, minlength=rows)
    return order, counts


def _escape_segments(
    excess: np.ndarray, signs: np.ndarray
) -> list[tuple[np.ndarray, object, tuple[np.ndarray, ...]]]:
    """Segments (symbols, model, params) that code escaped values losslessly, in decode order."""
    uniform = constriction.stream.model.Uniform
    value = excess.astype(np.uint64) + np.uint64(1)
    bits = np.zeros(len(value), dtype=np.int64)  # bit length of value (>= 1)
    v = value.copy()
    while (v > 0).any():
        bits += v > 0
        v >>= np.uint64(1)
    segments: list[tuple[np.ndarray, object, tuple[np.ndarray, ...]]] = [
        (signs.astype(np.int32), uniform(2), ()),
        (
            (bits - 1).astype(np.int32),
            _row_model(_LENGTH_CDF, MAX_ESCAPE_BITS),
            (),
        ),
    ]
    mantissa_bits = bits - 1  # bits below the leading one
    for start in range(0, MAX_ESCAPE_BITS, _CHUNK_BITS):
        has = mantissa_bits > start
        if not has.any():
            break
        width = np.minimum(mantissa_bits[has] - start, _CHUNK_BITS)
        chunk = (value[has] >> np.uint64(start)) & ((np.uint64(1) << width.astype(np.uint64)) - np.uint64(1))
        segments.append((chunk.astype(np.int32), uniform(), ((1 << width).astype(np.int32),)))
    return segments


_Segment = tuple[np.ndarray, object, tuple[np.ndarray, ...]]  # (symbols, model, model params)


def _block(
    symbols: np.ndarray,
    rows_of_symbols: np.ndarray,
    cdf: np.ndarray,
    cdf_length: np.ndarray,
    offset: np.ndarray,
) -> list[_Segment]:
    """The segments that code one call's symbols, in decode order: the rows, then the escapes.

    A block is self-contained (its escapes follow its own rows), so blocks of several calls can be
    stacked in one ANS stream and each decoded by the matching call, in the order they were written.
    """
    symbols = np.asarray(symbols, dtype=np.int64).ravel()
    rows_of_symbols = np.asarray(rows_of_symbols).ravel()
    if symbols.shape != rows_of_symbols.shape:
        raise EntropyCoderError(f"{symbols.size} symbols but {rows_of_symbols.size} table row indexes")
    rows = cdf.shape[0]
    limit = 2**MAX_ESCAPE_BITS
    if symbols.size and (symbols.min() <= -limit or symbols.max() >= limit):
        raise EntropyCoderError(f"a symbol's magnitude is 2**{MAX_ESCAPE_BITS} or more: not codable")
    order, counts = _group_order(rows_of_symbols, rows)
    ordered = symbols[order]

    segments: list[_Segment] = []
    excess: list[np.ndarray] = []
    negative: list[np.ndarray] = []
    start = 0
    for r in range(rows):
        stop = start + int(counts[r])
        if stop == start:
            continue
        top = int(cdf_length[r]) - 1  # the escape symbol; the table's own values are 0 .. top - 1
        values = ordered[start:stop] - int(offset[r])
        if values.min() < 0 or values.max() >= top:  # rare: per-row test keeps the common path lean
            below = values < 0
            escaped = below | (values >= top)
            excess.append(np.where(below, -values - 1, values - top)[escaped])
            negative.append(below[escaped])
            values = np.where(escaped, top, values)
        segments.append((values.astype(np.int32), _row_model(cdf[r], top + 1), ()))
        start = stop
    if excess:  # in coding order, as the decoder meets the escape symbols
        segments += _escape_segments(np.concatenate(excess), np.concatenate(negative))
    return segments


def _code_segments(segments: list[_Segment]) -> np.ndarray:
    """Push ``segments`` (given in decode order) on a fresh ANS stack; returns its 32-bit words."""
    coder = constriction.stream.stack.AnsCoder()
    try:
        for data, model, params in reversed(segments):  # a stack: last pushed is decoded first
            coder.encode_reverse(data, model, *params)
        return coder.get_compressed()
    except BaseException as error:
        _reraise(error, "constriction refused to encode")


def _decode_block(
    coder: constriction.stream.stack.AnsCoder,
    rows_of_symbols: np.ndarray,
    cdf: np.ndarray,
    cdf_length: np.ndarray,
    offset: np.ndarray,
) -> np.ndarray:
    """Pop one :func:`_block` off ``coder``: int64 symbols in the order of ``rows_of_symbols``.

    Leaves whatever follows in the stream on the coder; checking that nothing does is the caller's
    part (once per stream, after its last block).
    """
    rows_of_symbols = np.asarray(rows_of_symbols).ravel()
    order, counts = _group_order(rows_of_symbols, cdf.shape[0])
    ordered = np.empty(len(order), dtype=np.int64)  # symbols in coding order
    escapes: list[tuple[np.ndarray, int, int]] = []  # (positions in coding order, top, offset)
    try:
        start = 0
        for r in range(cdf.shape[0]):
            stop = start + int(counts[r])
            if stop == start:
                continue
            top = int(cdf_length[r]) - 1
            coded = coder.decode(_row_model(cdf[r], top + 1), stop - start)
            if coded.max() == top:  # rare: escapes are resolved after all rows, as they were coded
                escapes.append((start + np.flatnonzero(coded == top), top, int(offset[r])))
            ordered[start:stop] = coded
            ordered[start:stop] += int(offset[r])
            start = stop
        if escapes:
            positions = np.concatenate([p for p, _, _ in escapes])
            tops = np.concatenate([np.full(len(p), t, dtype=np.int64) for p, t, _ in escapes])
            offsets = np.concatenate([np.full(len(p), o, dtype=np.int64) for p, _, o in escapes])
            excess, below = _decode_escapes(coder, len(positions))
            ordered[positions] = np.where(below, -excess - 1, tops + excess) + offsets
    except BaseException as error:
        _reraise(error, "payload cannot be decoded")
    symbols = np.empty(len(order), dtype=np.int64)
    symbols[order] = ordered
    return symbols


def _check_empty(coder: constriction.stream.stack.AnsCoder) -> None:
    """Refuse words left over after the last block: the cheap corruption check ANS offers."""
    if not coder.is_empty():
        raise EntropyCoderError(
            f"payload inconsistent with the tables: {coder.num_words()} words left after decoding"
        )


def encode_symbols(
    symbols: np.ndarray,
    rows_of_symbols: np.ndarray,
    cdf: np.ndarray,
    cdf_length: np.ndarray,
    offset: np.ndarray,
) -> bytes:
    """ANS-code int64 ``symbols``, each with the table row given in ``rows_of_symbols``.

    Values outside a row's range ``[offset, offset + cdf_length - 2]`` are coded as the escape symbol
    followed by their excess (see the module docstring); |symbol| must be below 2**62. The payload is
    a stream of its own (whole 32-bit words); :class:`AnsEncoder` shares one stream between calls.
    """
    words = _code_segments(_block(symbols, rows_of_symbols, cdf, cdf_length, offset))
    return words.astype("<u4").tobytes()


def decode_symbols(
    data: bytes, rows_of_symbols: np.ndarray, cdf: np.ndarray, cdf_length: np.ndarray, offset: np.ndarray
) -> np.ndarray:
    """Inverse of :func:`encode_symbols`: int64 symbols in the order of ``rows_of_symbols``.

    A payload that does not decode to exactly the expected words raises :class:`EntropyCoderError`;
    a corrupt one may also decode to wrong symbols (ANS has no redundancy; the container's CRC is
    what detects corruption), but the work is bounded by the number of symbols: it never hangs.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EntropyCoderError(f"payload must be bytes, got {type(data).__name__}")
    if len(data) % 4:
        raise EntropyCoderError(f"payload of {len(data)} bytes is not a whole number of 32-bit words")
    words = np.frombuffer(bytes(data), dtype="<u4").astype(np.uint32)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
    except BaseException as error:
        _reraise(error, "payload cannot be decoded")
    symbols = _decode_block(coder, rows_of_symbols, cdf, cdf_length, offset)
    _check_empty(coder)
    return symbols


class AnsEncoder:
    """One ANS stream that several coding calls (e.g. a frame's ``z``, then its ``y``) write into.

    Why: every separate stream pays its own flush (constriction writes the coder's final state,
    up to 64 bits) and its own padding to whole 32-bit words; a frame coded as one stream pays both
    once. Blocks are added in the order the decoder reads them; ANS is a stack, so :meth:`to_bytes`
    pushes them in reverse, and callers never have to think about the stack order.

    The bytes are the stream's 32-bit words, little endian, with the zero high bytes of the last
    word dropped (that word is the top of the coder's state and never zero, so at most 3 bytes go
    and the length needs no word alignment). Whoever carries the bytes must carry their length: a
    frame payload gets it from the container.
    """

    def __init__(self) -> None:
        self._segments: list[_Segment] = []

    def encode(
        self,
        symbols: np.ndarray,
        rows_of_symbols: np.ndarray,
        cdf: np.ndarray,
        cdf_length: np.ndarray,
        offset: np.ndarray,
    ) -> None:
        """Add a block of symbols (as :func:`encode_symbols` codes them) after those added so far."""
        self._segments += _block(symbols, rows_of_symbols, cdf, cdf_length, offset)

    def to_bytes(self) -> bytes:
        """The stream of every block added so far (may be called again after more blocks)."""
        raw = _code_segments(self._segments).astype("<u4").tobytes()
        end = len(raw)
        while end > max(len(raw) - 3, 0) and raw[end - 1] == 0:
            end -= 1
        return raw[:end]


class AnsDecoder:
    """Reads the blocks of an :class:`AnsEncoder` stream back, in the order they were added.

    Call :meth:`decode` once per block with the same row indexes and tables the encoder used, then
    :meth:`finish`, which refuses a stream with anything left over. Every failure, constriction's
    included, is an :class:`EntropyCoderError`.
    """

    def __init__(self, data: bytes) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise EntropyCoderError(f"payload must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if data and data[-1] == 0:  # the encoder drops these: a zero last byte is padding or damage
            raise EntropyCoderError("stream ends in a zero byte: it has trailing bytes or is truncated")
        words = np.frombuffer(data + bytes(-len(data) % 4), dtype="<u4").astype(np.uint32)
        try:
            self._coder = constriction.stream.stack.AnsCoder(words)
        except BaseException as error:
            _reraise(error, "payload cannot be decoded")

    def decode(
        self, rows_of_symbols: np.ndarray, cdf: np.ndarray, cdf_length: np.ndarray, offset: np.ndarray
    ) -> np.ndarray:
        """The next block's int64 symbols, in the order of ``rows_of_symbols``."""
        return _decode_block(self._coder, rows_of_symbols, cdf, cdf_length, offset)

    def finish(self) -> None:
        """Refuse a stream with words left after the last block (the encoder wrote none)."""
        _check_empty(self._coder)


def _decode_escapes(coder: constriction.stream.stack.AnsCoder, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Read ``count`` escaped excess values (and their signs) in the order they were written."""
    signs = coder.decode(constriction.stream.model.Uniform(2), count).astype(bool)
    bits = coder.decode(_row_model(_LENGTH_CDF, MAX_ESCAPE_BITS), count).astype(np.int64) + 1
    value = np.uint64(1) << (bits - 1).astype(np.uint64)
    mantissa_bits = bits - 1
    for start in range(0, MAX_ESCAPE_BITS, _CHUNK_BITS):
        has = mantissa_bits > start
        if not has.any():
            break
        width = np.minimum(mantissa_bits[has] - start, _CHUNK_BITS)
        chunk = coder.decode(constriction.stream.model.Uniform(), (1 << width).astype(np.int32))
        value[has] |= chunk.astype(np.uint64) << np.uint64(start)
    return (value - np.uint64(1)).astype(np.int64), signs
