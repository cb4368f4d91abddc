"""The bitstream container: round trips, every field checked at write and read, every read error."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

import nvc_train.bitstream.container as container
from nvc_train.bitstream import (
    HEADER_FIELDS,
    KIND_B,
    KIND_I,
    KIND_P,
    KIND_PARAMETER_SET,
    MAX_STREAM_BYTES,
    BitstreamError,
    StreamHeader,
    Unit,
    decode_stream,
    encode_stream,
    header_size,
    layout,
    read_stream,
    weights_hash,
    write_stream,
)
from nvc_train.structure import CodingStructure
from tests.bitstream_craft import craft, header_parts, resign_header, restamp, v1_header, v2_header

WEIGHTS = weights_hash([("enc.weight", b"\x01\x02\x03\x04"), ("dec.bias", b"\x05\x06")])


def make_header(**overrides: object) -> StreamHeader:
    values: dict[str, object] = dict(
        codec_id="dcvc-rt",
        weights_hash=WEIGHTS,
        width=1920,
        height=1080,
        bit_depth=8,
        num_frames=4,
        fps_num=30,
        fps_den=1,
        structure="ld",
        intra_period=-1,
        gop_size=1,
        rate_point=3,
    )
    values.update(overrides)
    return StreamHeader(**values)  # type: ignore[arg-type]


def small_stream() -> tuple[StreamHeader, list[Unit]]:
    header = make_header()
    units = [
        Unit(KIND_PARAMETER_SET, 3, b"params"),
        Unit(KIND_I, 3, bytes(range(40))),
        Unit(KIND_P, 4, b"\xff" * 9),
        Unit(KIND_P, 2, b""),
        Unit(KIND_P, 3, b"z"),
    ]
    return header, units


def field_span(data: bytes, name: str) -> tuple[int, int]:
    for span in layout(data):
        if span.name == name:
            return span.offset, span.size
    raise KeyError(name)


def set_header_field(data: bytes, name: str, value: int) -> bytes:
    """``data`` with one numeric header field set to ``value`` and the header CRC made valid."""
    return craft(data, **{name: value})


# ---- round trips ---------------------------------------------------------------------------------


def _ra_stream() -> tuple[StreamHeader, list[Unit]]:
    structure = CodingStructure("ra", 32, 16)
    header = make_header(
        codec_id="A" * 32,
        width=16384,
        height=16,
        bit_depth=10,
        num_frames=33,
        fps_num=30000,
        fps_den=1001,
        structure="ra",
        intra_period=32,
        gop_size=16,
        rate_point=-32768,
    )
    units = [Unit(KIND_PARAMETER_SET, -32768, b"ps0")]
    for frame in structure.frames(33):
        kind = {"I": KIND_I, "P": KIND_P, "B": KIND_B}[frame.frame_type]
        size = (0, 1, 127, 128, 16383, 16384, 70000)[frame.coding_index % 7]
        payload = bytes((frame.poc * 7 + i) % 256 for i in range(size))
        units.append(Unit(kind, -32768 + frame.temporal_layer * 40, payload))
        if frame.coding_index == 16:
            units.append(Unit(0xFF, 32767, b"new parameter set"))
    return header, units


STREAMS = {
    "ld with parameter set": small_stream,
    "ai single frame": lambda: (
        make_header(codec_id="x", structure="ai", intra_period=1, num_frames=1, width=16, height=16),
        [Unit(KIND_I, 3, b"\x00" * 5)],
    ),
    "ra hierarchical, bounds": _ra_stream,
    "ld 96 frames": lambda: (
        make_header(num_frames=96, intra_period=96, rate_point=32767),
        [Unit(KIND_I if i == 0 else KIND_P, 32767 - i % 3, os.urandom(200 + i)) for i in range(96)],
    ),
}


@pytest.mark.parametrize("name", STREAMS)
def test_round_trip(name: str, tmp_path: Path) -> None:
    header, units = STREAMS[name]()
    data = encode_stream(header, units)
    assert decode_stream(data, header.codec_id, header.weights_hash) == (header, units)
    path = tmp_path / "sub" / "stream.nvcb"
    assert write_stream(path, header, units) == len(data) == path.stat().st_size
    assert read_stream(path, header.codec_id, header.weights_hash) == (header, units)
    assert decode_stream(bytearray(data)) == decode_stream(memoryview(data)) == (header, units)


def test_header_helpers() -> None:
    header, _ = small_stream()
    assert header.fps == 30.0
    assert header.coding_structure() == CodingStructure("ld", -1, 1)
    assert Unit(127, 0, b"").is_frame and not Unit(128, 0, b"").is_frame


def test_overhead_is_a_few_bytes() -> None:
    """13 bytes + codec id + hash + 13 of fields for a 1080p header; 7 bytes a unit for short payloads."""
    header = make_header(num_frames=1)
    assert header_size(header, 1) == 13 + len("dcvc-rt") + 16 + 13 == 49
    bare = encode_stream(header, [Unit(KIND_I, 3, b"")])
    assert len(bare) == 49 + 7
    assert len(encode_stream(header, [Unit(KIND_I, 3, b"x" * 127)])) == 49 + 7 + 127
    assert len(encode_stream(header, [Unit(KIND_I, 3, b"x" * 128)])) == 49 + 8 + 128
    assert len(encode_stream(header, [Unit(KIND_I, 3 + 64, b"x" * 128)])) == 49 + 9 + 128
    header96 = make_header(num_frames=96, intra_period=96)
    units = [Unit(KIND_PARAMETER_SET, 3, b"p" * 200)] + [Unit(KIND_P, 3, b"f" * 1000)] * 96
    assert len(encode_stream(header96, units)) - 200 - 96 * 1000 == 50 + 97 * 8
    # A scene-adaptive QCIF frame (its network in the stream, no hash): 34 bytes of header.
    qcif = make_header(codec_id="coolchic", weights_hash=b"", width=176, height=144, num_frames=1,
                       structure="ai", intra_period=1, rate_point=0)  # fmt: skip
    assert header_size(qcif, 3) == 34


def test_layout_covers_every_byte_once() -> None:
    for make in STREAMS.values():
        data = encode_stream(*make())
        spans = layout(data)
        assert spans[0].offset == 0
        for before, after in zip(spans, spans[1:], strict=False):
            assert after.offset == before.offset + before.size, (before, after)
        assert spans[-1].offset + spans[-1].size == len(data)


def test_weights_hash() -> None:
    items = [("a.weight", b"\x00" * 8), ("b.bias", b"\x01\x02")]
    digest = weights_hash(items)
    assert len(digest) == 16
    assert weights_hash(reversed(items)) == digest  # state-dict order does not matter
    assert weights_hash([("a.weight", b"\x00" * 8), ("b.bias", b"\x01\x03")]) != digest
    assert weights_hash([("a.weight", b"\x00" * 8), ("c.bias", b"\x01\x02")]) != digest
    assert weights_hash([("a", b"bc")]) != weights_hash([("ab", b"c")])
    assert weights_hash([("a", bytearray(b"x"))]) == weights_hash([("a", memoryview(b"x"))])
    with pytest.raises(ValueError, match="twice"):
        weights_hash([("a", b""), ("a", b"")])
    with pytest.raises(ValueError, match="no tensors"):
        weights_hash(iter(()))


def test_package_imports_no_network_code() -> None:
    code = (
        "import sys, nvc_train.bitstream; "
        "bad = [m for m in ('torch', 'lightning', 'models', 'datamodules') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_format_document_lists_every_field() -> None:
    text = (Path(container.__file__).parent / "FORMAT.md").read_text()
    for field in HEADER_FIELDS:
        assert f"`{field.name}`" in text, field.name
    assert "## Header, version 2 (13 bytes + codec id + weights hash + 11 to 55 bytes of fields)" in text


# ---- checked at write ----------------------------------------------------------------------------

BAD_HEADER_VALUES = [
    ("codec_id", ""),
    ("codec_id", "x" * 33),
    ("codec_id", "has space"),
    ("codec_id", "caf\u00e9"),
    ("codec_id", 7),
    ("weights_hash", b"\x00" * 15),
    ("weights_hash", "0" * 16),
    ("width", 14),
    ("width", 17),
    ("width", 16386),
    ("width", 100_000),
    ("width", 1920.0),
    ("width", True),
    ("height", 0),
    ("height", 1081),
    ("bit_depth", 9),
    ("bit_depth", 12),
    ("num_frames", 0),
    ("num_frames", 100_001),
    ("num_frames", 10**9),
    ("fps_num", 0),
    ("fps_num", 1_000_001),
    ("fps_den", 0),
    ("fps_den", -1),
    ("structure", "xx"),
    ("structure", None),
    ("intra_period", 0),
    ("intra_period", -2),
    ("intra_period", 100_001),
    ("gop_size", 0),
    ("gop_size", 1025),
    ("rate_point", 32768),
    ("rate_point", -32769),
]


@pytest.mark.parametrize(("field", "value"), BAD_HEADER_VALUES)
def test_field_out_of_range_refused_at_write(field: str, value: object, tmp_path: Path) -> None:
    header, units = small_stream()
    bad = dataclasses.replace(header, **{field: value})
    with pytest.raises(BitstreamError, match=f"cannot write bitstream: header field {field}"):
        encode_stream(bad, units)
    path = tmp_path / "stream.nvcb"
    with pytest.raises(BitstreamError, match=field):
        write_stream(path, bad, units)
    assert list(tmp_path.iterdir()) == []


def test_inconsistent_coding_structure_refused_at_write() -> None:
    header, units = small_stream()
    with pytest.raises(BitstreamError, match="structure/intra_period/gop_size.*'ld'.*gop_size must be 1"):
        encode_stream(dataclasses.replace(header, gop_size=16), units)
    with pytest.raises(BitstreamError, match="structure/intra_period/gop_size.*'ai'"):
        encode_stream(dataclasses.replace(header, structure="ai"), units)


@pytest.mark.parametrize(
    ("unit", "message"),
    [
        (Unit(256, 3, b""), r"unit 2 field kind = 256"),
        (Unit(-1, 3, b""), r"unit 2 field kind = -1"),
        (Unit(KIND_P, 40000, b""), r"unit 2 field rate_point = 40000"),
        (Unit(KIND_P, 3, "text"), r"unit 2 field payload must be bytes"),  # type: ignore[arg-type]
    ],
)
def test_unit_out_of_range_refused_at_write(unit: Unit, message: str) -> None:
    header, units = small_stream()
    units[2] = unit
    with pytest.raises(BitstreamError, match=message):
        encode_stream(header, units)


def test_frame_count_must_match_header_at_write() -> None:
    header, units = small_stream()
    with pytest.raises(BitstreamError, match="num_frames = 4 but 3 of the 4 units are frames"):
        encode_stream(header, units[:-1])
    with pytest.raises(BitstreamError, match="num_units = 0"):
        encode_stream(header, [])


def test_oversized_payload_refused_at_write(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(container, "MAX_UNIT_BYTES", 100)
    header, units = small_stream()
    units[1] = Unit(KIND_I, 3, b"x" * 101)
    with pytest.raises(BitstreamError, match="unit 1 payload is 101 bytes, more than the 100-byte limit"):
        encode_stream(header, units)


# ---- errors at read ------------------------------------------------------------------------------


def test_every_truncation_is_refused() -> None:
    data = encode_stream(*small_stream())
    for length in range(len(data)):
        with pytest.raises(BitstreamError, match=r"truncated at byte \d+|empty"):
            decode_stream(data[:length])


def test_truncation_message_says_where() -> None:
    data = encode_stream(*small_stream())
    with pytest.raises(BitstreamError, match=f"truncated at byte {len(data) - 1}: unit\\[4\\].payload"):
        decode_stream(data[:-1])


@pytest.mark.parametrize(
    "start", [b"RIFF\x24\x00\x00\x00WAVE", b"\x89PNG\r\n", b"\x00\x00\x00\x18ftyp", b"X"]
)
def test_foreign_file(start: bytes) -> None:
    foreign = start + encode_stream(*small_stream())[len(start) :]
    with pytest.raises(BitstreamError, match="not an nvc-train bitstream \\(foreign file\\)") as info:
        decode_stream(foreign)
    assert f"starts with {foreign[:4]!r}, expected b'NVCB'" in str(info.value)


def test_start_of_magic_alone_is_truncated_not_foreign() -> None:
    with pytest.raises(BitstreamError, match="truncated at byte 2: magic"):
        decode_stream(b"NV")


def test_other_major_versions_refused() -> None:
    data = bytearray(encode_stream(*small_stream()))
    data[4] = 3
    with pytest.raises(
        BitstreamError, match=r"unsupported bitstream format version 3\.0.*reads versions 1\.x, 2\.x"
    ):
        decode_stream(resign_header(data))
    data[4] = 0
    with pytest.raises(BitstreamError, match=r"version 0\.0"):
        decode_stream(resign_header(data))


def test_later_minor_version_with_appended_fields_is_read() -> None:
    """A 2.1 header may append fields before its CRC; a 2.0 reader skips them (still CRC-checked)."""
    header, units = small_stream()
    data = encode_stream(header, units)
    codec_id, weights, values = header_parts(data)
    extended = v2_header(codec_id, weights, values, minor=1, extra=b"\x00\x01\x02")
    assert decode_stream(restamp(data, extended)) == (header, units)
    with pytest.raises(BitstreamError, match="header_size = 52 does not match its fields.*3 bytes after"):
        decode_stream(restamp(data, v2_header(codec_id, weights, values, minor=0, extra=b"\x00\x01\x02")))
    short = bytearray(v2_header(codec_id, weights, values))
    short[6] -= 1  # header_size one byte short: the last field runs into the CRC
    with pytest.raises(BitstreamError, match="header CRC mismatch|does not match its fields"):
        decode_stream(restamp(data, resign_header(short)))


def test_version_1_streams_are_still_read() -> None:
    """Files written before version 2 (fixed-width fields, 59 bytes + the codec id) decode the same."""
    header, units = small_stream()
    data = encode_stream(header, units)
    codec_id, weights, values = header_parts(data)
    old = v1_header(codec_id, weights, values)
    assert len(old) == 59 + len(header.codec_id)
    assert decode_stream(restamp(data, old)) == (header, units)
    assert decode_stream(restamp(data, v1_header(codec_id, weights, values, minor=1, extra=b"\x07"))) == (
        header,
        units,
    )
    with pytest.raises(BitstreamError, match="header_size = 67 does not match its fields"):
        decode_stream(restamp(data, v1_header(codec_id, weights, values, extra=b"\x07")))
    with pytest.raises(BitstreamError, match="header field width = 17 out of range"):
        decode_stream(craft(data, version=1, width=17))


def test_stream_that_carries_its_weights_has_no_hash() -> None:
    """An empty weights hash (scene-adaptive streams) round-trips; a decoder expecting one refuses."""
    header, units = small_stream()
    header = dataclasses.replace(header, weights_hash=b"")
    data = encode_stream(header, units)
    assert decode_stream(data) == (header, units)
    assert len(data) == len(encode_stream(*small_stream())) - 16
    with pytest.raises(BitstreamError, match="made with weights it carries"):
        decode_stream(data, expected_weights_hash=WEIGHTS)
    codec_id, _, values = header_parts(data)
    crafted = bytearray(v2_header(codec_id, b"\x00" * 16, values))
    crafted[8 + len(codec_id)] = 5  # a 5-byte hash
    with pytest.raises(BitstreamError, match="weights_hash_length = 5"):
        decode_stream(restamp(data, resign_header(crafted)))


def test_header_crc_mismatch() -> None:
    data = bytearray(encode_stream(*small_stream()))
    offset, _ = field_span(bytes(data), "width")
    data[offset + 1] ^= 0x02
    with pytest.raises(BitstreamError, match="header CRC mismatch.*corrupted"):
        decode_stream(bytes(data))


@pytest.mark.parametrize(
    ("unit_index", "part"),
    [
        (i, part)
        for i in range(5)
        for part in ("kind", "rate_delta", "length", "crc32", "payload")
        if (i, part) != (3, "payload")
    ],
)
def test_unit_crc_mismatch_names_the_unit(unit_index: int, part: str) -> None:
    data = encode_stream(*small_stream())
    offset, size = field_span(data, f"unit[{unit_index}].{part}")
    damaged = bytearray(data)
    damaged[offset + size - 1] ^= 0x02  # bit 1: keeps a varint's last byte last (and the length short)
    # A longer length may run past the end of the stream instead: then the error names the unit too.
    with pytest.raises(BitstreamError, match=rf"CRC mismatch in unit {unit_index} |unit\[{unit_index}\]"):
        decode_stream(bytes(damaged))


def test_reordered_or_spliced_units_are_refused() -> None:
    header, units = small_stream()
    data = encode_stream(header, units)
    spans = layout(data)
    start = {i: next(s.offset for s in spans if s.name == f"unit[{i}].kind") for i in range(5)}
    u2, u3 = data[start[2] : start[3]], data[start[3] : start[4]]
    swapped = data[: start[2]] + u3 + u2 + data[start[4] :]
    with pytest.raises(BitstreamError, match="CRC mismatch in unit 2"):
        decode_stream(swapped)
    other = encode_stream(dataclasses.replace(header, fps_num=25), units)  # same units, other header
    spliced = data[: start[1]] + other[start[1] :]
    with pytest.raises(BitstreamError, match="CRC mismatch in unit 1"):
        decode_stream(spliced)


def test_weights_mismatch() -> None:
    header, units = small_stream()
    data = encode_stream(header, units)
    mine = weights_hash([("enc.weight", b"\x09")])
    with pytest.raises(BitstreamError) as info:
        decode_stream(data, expected_weights_hash=mine)
    assert str(info.value) == (
        f"this bitstream was made with weights {WEIGHTS.hex()[:8]}, the decoder has {mine.hex()[:8]}"
    )
    assert decode_stream(data, expected_weights_hash=WEIGHTS) == (header, units)


def test_codec_id_mismatch() -> None:
    data = encode_stream(*small_stream())
    with pytest.raises(BitstreamError, match="made by codec 'dcvc-rt', the decoder is 'dcvc-fm'"):
        decode_stream(data, expected_codec_id="dcvc-fm")


def test_trailing_bytes() -> None:
    data = encode_stream(*small_stream())
    with pytest.raises(BitstreamError, match=f"trailing garbage: 3 bytes .* ends at byte {len(data)}"):
        decode_stream(data + b"abc")
    with pytest.raises(BitstreamError, match="trailing garbage"):
        decode_stream(data + data)


@pytest.mark.parametrize(
    ("field", "value"),
    [("width", 0xFFFE), ("height", 0), ("width", 17), ("bit_depth", 16), ("num_frames", 10**9),
     ("num_units", 0xFFFFFFFF), ("fps_den", 0), ("structure", 3), ("intra_period", 0),
     ("intra_period", -(2**31)), ("gop_size", 0xFFFF)],
)  # fmt: skip
def test_crafted_field_out_of_range_refused_at_read(field: str, value: int) -> None:
    data = set_header_field(encode_stream(*small_stream()), field, value)
    with pytest.raises(BitstreamError, match=f"bad bitstream: header field {field} = {value} out of range"):
        decode_stream(data)


def test_crafted_codec_id_and_sizes_refused_at_read() -> None:
    data = bytearray(encode_stream(*small_stream()))
    data[9] = 0xE9  # a non-ASCII byte in the codec id
    with pytest.raises(BitstreamError, match="header field codec_id .* printable ASCII"):
        decode_stream(resign_header(data))
    data = bytearray(encode_stream(*small_stream()))
    data[6:8] = b"\xff\x7f"  # a two-byte varint
    with pytest.raises(BitstreamError, match="header_size = 16383 out of range"):
        decode_stream(bytes(data))
    data = set_header_field(encode_stream(*small_stream()), "num_units", 3)
    with pytest.raises(BitstreamError, match="declares 3 units for 4 frames"):
        decode_stream(data)
    data = set_header_field(encode_stream(*small_stream()), "gop_size", 16)
    with pytest.raises(BitstreamError, match="bad bitstream: header fields structure/intra_period/gop_size"):
        decode_stream(data)


def test_changed_header_breaks_every_unit_crc() -> None:
    data = bytearray(encode_stream(*small_stream()))
    offset, _ = field_span(bytes(data), "fps_num")
    data[offset] = 25  # a consistent (re-signed) header over units made under another header
    with pytest.raises(BitstreamError, match="CRC mismatch in unit 0"):
        decode_stream(resign_header(data))


def test_unit_count_and_frame_count_checked_at_read() -> None:
    header, units = small_stream()  # a parameter set and four frames
    data = encode_stream(header, units)
    with pytest.raises(BitstreamError, match=r"truncated at byte \d+: unit\[5\].kind needs 1 bytes"):
        decode_stream(craft(data, num_units=6))
    with pytest.raises(BitstreamError, match="header declares 4 frames but its units hold 3"):
        decode_stream(craft(data, num_units=4))
    with pytest.raises(BitstreamError, match="header declares 5 frames but its units hold 4"):
        decode_stream(craft(data, num_frames=5))
    assert decode_stream(craft(data)) == (header, units)


def _peak_allocation(data: bytes) -> int:
    tracemalloc.start()
    try:
        with pytest.raises(BitstreamError):
            decode_stream(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize(
    ("field", "value"),
    [("width", 0xFFFE), ("height", 0xFFFE), ("num_frames", 10**9), ("num_units", 0xFFFFFFFF),
     ("num_units", 200_001)],
)  # fmt: skip
def test_huge_header_claims_are_refused_before_any_allocation(field: str, value: int) -> None:
    """100000 x 100000 pixels cannot even be written (u16 fields); the largest that can, 65534, or
    10**9 frames or 2**32 units are refused having allocated well under 1 MB."""
    assert _peak_allocation(craft(encode_stream(*small_stream()), **{field: value})) < 1_000_000


def test_huge_unit_length_is_refused_before_any_allocation() -> None:
    data = encode_stream(*small_stream())
    offset, size = field_span(data, "unit[1].length")
    for length in (0xFFFFFFFF, 2**30, 2**30 + 1, 2**29):
        varint = container._varint(length)
        crafted = data[:offset] + varint + data[offset + size :]
        assert _peak_allocation(crafted) < 1_000_000
        message = "more than the" if length > 2**30 else "truncated at byte"
        with pytest.raises(BitstreamError, match=message):
            decode_stream(crafted)


def test_bad_varints() -> None:
    data = encode_stream(*small_stream())
    offset, size = field_span(data, "unit[1].length")
    overlong = data[:offset] + bytes((data[offset] | 0x80, 0x00)) + data[offset + size :]
    with pytest.raises(BitstreamError, match=r"unit\[1\].length at byte \d+ is not minimally encoded"):
        decode_stream(overlong)
    endless = data[:offset] + b"\xff" * 6 + data[offset + size :]
    with pytest.raises(BitstreamError, match=r"unit\[1\].length at byte \d+ is longer than 5 bytes"):
        decode_stream(endless)


def test_decode_needs_bytes() -> None:
    with pytest.raises(TypeError, match="needs bytes"):
        decode_stream("NVCB")  # type: ignore[arg-type]


# ---- files ---------------------------------------------------------------------------------------


def test_read_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.nvcb"
    with pytest.raises(FileNotFoundError, match=r"bitstream file not found: .*missing\.nvcb"):
        read_stream(path)


def test_read_refuses_a_huge_file_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.nvcb"
    with open(path, "wb") as handle:
        handle.truncate(MAX_STREAM_BYTES + 1)  # sparse: no disk used
    tracemalloc.start()
    try:
        with pytest.raises(BitstreamError, match=f"huge.nvcb is {MAX_STREAM_BYTES + 1} bytes, more than"):
            read_stream(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def test_read_refuses_what_is_not_a_regular_file(tmp_path: Path) -> None:
    with pytest.raises(BitstreamError, match="not a regular file"):
        read_stream(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it to read would block until a writer came
    with pytest.raises(BitstreamError, match="fifo is not a regular file"):
        read_stream(fifo)


def test_read_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.nvcb"
    path.write_bytes(encode_stream(*small_stream())[:-2])
    with pytest.raises(BitstreamError, match=r"cut\.nvcb: bitstream truncated at byte"):
        read_stream(path)


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_write_stream_is_atomic(failing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    header, units = small_stream()
    path = tmp_path / "stream.nvcb"
    path.write_bytes(b"previous")

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(f"{failing} failed (simulated)")

    if failing == "write":
        real_fdopen = os.fdopen

        class Failing:
            def __init__(self, fd: int, mode: str) -> None:
                self.handle = real_fdopen(fd, mode)

            def __enter__(self) -> Failing:
                return self

            def __exit__(self, *exc: object) -> None:
                self.handle.close()

            def write(self, data: bytes) -> None:
                self.handle.write(data[: len(data) // 2])  # half written, then the disk is full
                boom()

        monkeypatch.setattr(container.os, "fdopen", Failing)
    else:
        monkeypatch.setattr(container.os, failing, boom)
    with pytest.raises(OSError, match="simulated"):
        write_stream(path, header, units)
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stream.nvcb"]  # no temporary left behind
    monkeypatch.undo()
    write_stream(path, header, units)
    assert read_stream(path) == (header, units)


def test_write_stream_keeps_umask_permissions(tmp_path: Path) -> None:
    path = tmp_path / "stream.nvcb"
    write_stream(path, *small_stream())
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
