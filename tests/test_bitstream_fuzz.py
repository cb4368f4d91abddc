"""Fuzzing the bitstream reader: damaged or crafted input ends in ``BitstreamError`` or a true decode.

10,000 seeded mutations of a few representative streams (byte flips, truncations, insertions,
deletions, huge length fields, header fields at their boundary values, moved units) must each either
raise :class:`BitstreamError` or decode to exactly the original header and units - never another
exception, never a hang, never a damaged stream returned as valid. Mutations that re-sign every CRC
(a crafted, not damaged, stream) must be read exactly when the writer would have written them.
Hypothesis adds random bytes and random valid streams. Deterministic: fixed seed, derandomized.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nvc_train.bitstream.container as container
from nvc_train.bitstream import (
    HEADER_FIELDS,
    KIND_B,
    KIND_I,
    KIND_P,
    KIND_PARAMETER_SET,
    MAGIC,
    BitstreamError,
    Field,
    StreamHeader,
    Unit,
    decode_stream,
    encode_stream,
    layout,
    weights_hash,
)
from nvc_train.structure import CodingStructure
from tests.bitstream_craft import craft, header_length
from tests.test_bitstream import make_header

SEED = 0x4E564342  # "NVCB"
CASES = 10_000
TIME_LIMIT_S = 30.0
HASH = weights_hash([("layer.weight", b"\x00\x01" * 8)])


# The shared header builder, with a CIF-like stream of its own (callers may override any field).
_header = functools.partial(
    make_header, codec_id="fuzz-codec", weights_hash=HASH, width=416, height=240, fps_num=60, rate_point=2
)


def _streams() -> list[tuple[StreamHeader, list[Unit]]]:
    rng = random.Random(SEED)
    low_delay = (
        _header(),
        [Unit(KIND_PARAMETER_SET, 2, b"ps")]
        + [
            Unit(KIND_I if i == 0 else KIND_P, 2 + i % 2, rng.randbytes(rng.randrange(0, 60)))
            for i in range(4)
        ],
    )
    frames = CodingStructure("ra", 16, 8).frames(17)
    random_access = (
        _header(num_frames=17, structure="ra", intra_period=16, gop_size=8, bit_depth=10, rate_point=-5),
        [Unit(0x81, 0, rng.randbytes(12))]
        + [
            Unit(
                {"I": KIND_I, "P": KIND_P, "B": KIND_B}[f.frame_type],
                -5 + f.temporal_layer,
                rng.randbytes(40),
            )
            for f in frames
        ],
    )
    all_intra = (
        _header(codec_id="i", num_frames=2, structure="ai", intra_period=1, fps_num=30000, fps_den=1001),
        [Unit(KIND_I, 2, rng.randbytes(300)), Unit(KIND_I, 200, rng.randbytes(20000))],
    )
    return [low_delay, random_access, all_intra]


# ---- crafting (CRCs recomputed, as a forger or a buggy writer would) -----------------------------


def _boundary_values(field: Field) -> list[int]:
    """The field's limits, one past them, and the limits of its struct type (all representable)."""
    bits = 8 * field.size
    signed = field.fmt.islower()
    type_lo, type_hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    candidates = {field.lo, field.hi, field.lo - 1, field.hi + 1, field.lo + 1, 0, 1, -1, type_lo, type_hi}
    return sorted(v for v in candidates if type_lo <= v <= type_hi)


# ---- mutations -----------------------------------------------------------------------------------

Mutation = tuple[str, bytes, bool]  # description, bytes, crafted (every CRC valid)


def _flip(rng: random.Random, data: bytes) -> Mutation:
    out = bytearray(data)
    positions = [rng.randrange(len(out)) for _ in range(rng.randint(1, 8))]
    for position in positions:
        out[position] ^= rng.randint(1, 255)
    return f"flip bytes {positions}", bytes(out), False


def _truncate(rng: random.Random, data: bytes) -> Mutation:
    length = rng.randrange(len(data))
    return f"truncate to {length}", data[:length], False


def _insert(rng: random.Random, data: bytes) -> Mutation:
    position = rng.randint(0, len(data))
    extra = rng.randbytes(rng.randint(1, 16))
    return f"insert {extra.hex()} at {position}", data[:position] + extra + data[position:], False


def _delete(rng: random.Random, data: bytes) -> Mutation:
    start = rng.randrange(len(data))
    stop = min(len(data), start + rng.randint(1, 16))
    return f"delete {start}:{stop}", data[:start] + data[stop:], False


def _huge_length(rng: random.Random, data: bytes) -> Mutation:
    """A unit length or a header count (varints) set to 0xFFFFFFFF or another huge value."""
    spans = [s for s in layout(data) if s.name.endswith(".length") or s.name in ("num_units", "num_frames")]
    span = rng.choice(spans)
    value = rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 1 << 30, (1 << 30) + 1, len(data), len(data) + 1])
    raw = container._varint(value)  # unit lengths and (version 2) header counts are varints
    out = data[: span.offset] + raw + data[span.offset + span.size :]
    return f"{span.name} = {value:#x}", out, False


def _boundary(rng: random.Random, data: bytes) -> Mutation:
    """A numeric header field at a boundary value; header CRC re-signed, units re-stamped or not."""
    field = rng.choice(HEADER_FIELDS)
    value = rng.choice(_boundary_values(field))
    crafted = craft(data, **{field.name: value})
    if rng.random() < 0.5:  # the new header over the old units: their CRCs no longer match
        old_units = data[header_length(data) :]
        return (
            f"{field.name} = {value}, header re-signed",
            crafted[: header_length(crafted)] + old_units,
            False,
        )
    return f"{field.name} = {value}, all CRCs re-signed", crafted, True


def _move_units(rng: random.Random, data: bytes) -> Mutation:
    """Units swapped, duplicated or dropped whole (each keeps its own valid-looking CRC)."""
    spans = layout(data)
    starts = [s.offset for s in spans if s.name.endswith(".kind")] + [len(data)]
    units = [data[a:b] for a, b in zip(starts, starts[1:], strict=False)]
    head = data[: starts[0]]
    i, j = rng.randrange(len(units)), rng.randrange(len(units))
    action = rng.choice(["swap", "duplicate", "drop"])
    if action == "swap":
        if i == j:
            j = (i + 1) % len(units)
        units[i], units[j] = units[j], units[i]
    elif action == "duplicate":
        units.insert(j, units[i])
    else:
        del units[i]
    return f"{action} unit {i} ({j})", head + b"".join(units), False


MUTATORS: list[tuple[Callable[[random.Random, bytes], Mutation], int]] = [
    (_flip, 35),
    (_truncate, 15),
    (_insert, 10),
    (_delete, 10),
    (_huge_length, 10),
    (_boundary, 15),
    (_move_units, 5),
]


def _writer_accepts(header: StreamHeader, units: list[Unit], field: str, value: int) -> bool:
    # What the writer says about the same header: the reader must agree.
    if field == "num_units":
        return value == len(units)
    if field == "rate_point":  # units store deltas: the header's rate point moves every unit's
        shift = value - header.rate_point
        units = [dataclasses.replace(u, rate_point=u.rate_point + shift) for u in units]
    replaced = {"structure": {0: "ld", 1: "ra", 2: "ai"}.get(value, "?")} if field == "structure" else {}
    try:
        encode_stream(dataclasses.replace(header, **(replaced or {field: value})), units)
    except BitstreamError:
        return False
    return True


def test_mutated_streams_raise_bitstream_error_or_decode_to_the_original() -> None:
    rng = random.Random(SEED)
    originals = [(encode_stream(h, u), (h, u)) for h, u in _streams()]
    mutators = [m for m, _ in MUTATORS]
    weights = [w for _, w in MUTATORS]
    failures: list[str] = []
    outcomes: dict[str, int] = {}
    started = time.perf_counter()
    for case in range(CASES):
        data, expected = originals[case % len(originals)]
        mutate = rng.choices(mutators, weights)[0]
        description, mutated, crafted = mutate(rng, data)
        label = f"case {case} (stream {case % len(originals)}): {description}"
        try:
            decoded = decode_stream(mutated, expected[0].codec_id, expected[0].weights_hash)
        except BitstreamError as exc:
            key = str(exc).split(":")[0][:40]
            outcomes[key] = outcomes.get(key, 0) + 1
            if crafted:  # from _boundary: "<field> = <value>, all CRCs re-signed"
                name, value = description.split(",")[0].split(" = ")
                if _writer_accepts(*expected, name, int(value)):
                    failures.append(f"{label}: the writer accepts this value but the reader says {exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - the point of the test: nothing but BitstreamError
            failures.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        outcomes["decoded"] = outcomes.get("decoded", 0) + 1
        if mutated == data or decoded == expected:
            if decoded != expected:
                failures.append(f"{label}: the unchanged stream decoded differently")
        elif crafted:
            # Every CRC re-signed: a valid stream the writer would have written, byte for byte.
            if encode_stream(*decoded) != mutated:
                failures.append(f"{label}: decoded, but the writer would not write these bytes")
        else:
            failures.append(f"{label}: a damaged stream decoded as valid: {decoded[0]}")
        if time.perf_counter() - started > TIME_LIMIT_S:
            pytest.fail(f"fuzzing took more than {TIME_LIMIT_S} s by case {case}: a reader is too slow")
    elapsed = time.perf_counter() - started
    assert not failures, f"{len(failures)} of {CASES} mutations misread:\n" + "\n".join(failures[:20])
    assert elapsed < TIME_LIMIT_S, f"{CASES} mutations took {elapsed:.1f} s"
    assert sum(outcomes.values()) == CASES
    assert len(outcomes) > 10, outcomes  # the mutations reach many different checks


def test_boundary_values_read_exactly_when_written() -> None:
    """Exhaustively: each numeric header field at each boundary value, every CRC re-signed."""
    for header, units in _streams():
        data = encode_stream(header, units)
        for field in HEADER_FIELDS:
            for value in _boundary_values(field):
                crafted = craft(data, **{field.name: value})
                try:
                    decoded = decode_stream(crafted)
                except BitstreamError:
                    assert not _writer_accepts(header, units, field.name, value), (field.name, value)
                else:
                    assert encode_stream(*decoded) == crafted, (field.name, value)


# ---- hypothesis ----------------------------------------------------------------------------------

FUZZ_SETTINGS = settings(
    max_examples=400, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _only_bitstream_errors(data: bytes) -> None:
    try:
        header, units = decode_stream(data)
    except BitstreamError:
        return
    assert encode_stream(header, units) == data  # anything accepted is a stream the writer writes


@FUZZ_SETTINGS
@given(st.binary(max_size=512))
def test_random_bytes(data: bytes) -> None:
    _only_bitstream_errors(data)


@FUZZ_SETTINGS
@given(st.binary(max_size=512))
def test_random_bytes_after_a_valid_preamble(data: bytes) -> None:
    _only_bitstream_errors(MAGIC + b"\x01" + data)


@FUZZ_SETTINGS
@given(st.integers(0, 2), st.binary(max_size=512))
def test_random_units_after_a_valid_header(which: int, tail: bytes) -> None:
    data = encode_stream(*_streams()[which])
    header_end = next(s for s in layout(data) if s.name == "header_crc32")
    _only_bitstream_errors(data[: header_end.offset + 4] + tail)


_STRUCTURES = st.sampled_from(
    [("ld", -1, 1), ("ld", 1, 1), ("ld", 96, 1), ("ai", 1, 1), ("ra", -1, 2), ("ra", 32, 16), ("ra", 64, 32)]
)


@st.composite
def _valid_streams(draw: st.DrawFn) -> tuple[StreamHeader, list[Unit]]:
    structure, intra_period, gop_size = draw(_STRUCTURES)
    rate_point = draw(st.integers(-(2**15), 2**15 - 1))
    unit_rates = st.integers(max(-(2**15), rate_point - 100), min(2**15 - 1, rate_point + 100))
    frames = draw(
        st.lists(
            st.builds(Unit, st.integers(0, 127), unit_rates, st.binary(max_size=200)), min_size=1, max_size=8
        )
    )
    others = draw(
        st.lists(st.builds(Unit, st.integers(128, 255), unit_rates, st.binary(max_size=20)), max_size=3)
    )
    units = draw(st.permutations(frames + others))
    header = StreamHeader(
        codec_id=draw(
            st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=32)
        ),
        weights_hash=draw(st.one_of(st.just(b""), st.binary(min_size=16, max_size=16))),
        width=2 * draw(st.integers(8, 8192)),
        height=2 * draw(st.integers(8, 8192)),
        bit_depth=draw(st.sampled_from([8, 10])),
        num_frames=len(frames),
        fps_num=draw(st.integers(1, 1_000_000)),
        fps_den=draw(st.integers(1, 1_000_000)),
        structure=structure,
        intra_period=intra_period,
        gop_size=gop_size,
        rate_point=rate_point,
    )
    return header, list(units)


@FUZZ_SETTINGS
@given(_valid_streams())
def test_valid_streams_round_trip(stream: tuple[StreamHeader, list[Unit]]) -> None:
    header, units = stream
    data = encode_stream(header, units)
    assert decode_stream(data, header.codec_id, header.weights_hash) == (header, units)
    assert len(data) <= container.header_size(header, len(units)) + sum(9 + len(u.payload) for u in units)
