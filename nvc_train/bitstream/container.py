"""The nvc-train bitstream container: a checked header and CRC-protected, length-prefixed units.

A neural codec's model turns each frame into an opaque payload; this module puts those payloads in a
file that says what made them (codec id, weights hash), what they decode to (resolution, bit depth,
frame count, frame rate, coding structure, rate point) and whether they arrived intact (a CRC32 on
the header and on every unit). The byte layout is described in ``FORMAT.md`` beside this file.

The reader treats its input as hostile. Every length is compared with the bytes that remain *before*
anything is sliced or allocated, every count is bounded, every loop is bounded by a count that was
checked against the remaining bytes, and nothing recurses. Any defect - truncation, a foreign file,
an unknown major version, a field out of range, a CRC mismatch, trailing bytes - is one
:class:`BitstreamError` whose message says what and where, so that a damaged file is never decoded
into a wrong picture reported as right, and never crashes or hangs the decoder.
"""

from __future__ import annotations

import os
import stat
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nvc_train.atomic import atomic_write_bytes
from nvc_train.structure import CodingStructure

MAGIC = b"NVCB"
VERSION_MAJOR = 2  # 2: varint header fields, weights hash may be empty; 1 (still read): fixed widths
VERSION_MINOR = 0
READABLE_MAJORS = (1, 2)

WEIGHTS_HASH_BYTES = 16
MAX_CODEC_ID_BYTES = 32
MAX_FRAMES = 100_000
# A parameter-set-like unit may precede any frame, so at most two units per frame (and one spare).
MAX_UNITS = 2 * MAX_FRAMES + 1
MAX_UNIT_BYTES = 1 << 30  # a raw 16384 x 16384 10-bit 4:2:0 frame is 805 MB; nothing coded is larger
MAX_STREAM_BYTES = 4 << 30  # read_stream refuses larger files without reading them
MAX_HEADER_BYTES = 1024  # room for fields a later minor version appends

# Unit kinds: the adapter chooses them, the container only needs to tell frames from the rest.
# Kinds 0..127 are coded frames (exactly ``num_frames`` of them); 128..255 are other units, such as
# a parameter set written only when it changes. The names below are suggestions, not rules.
KIND_I = 0
KIND_P = 1
KIND_B = 2
KIND_PARAMETER_SET = 0x80
FIRST_NON_FRAME_KIND = 0x80

STRUCTURE_CODES: dict[str, int] = {"ld": 0, "ra": 1, "ai": 2}
_STRUCTURE_NAMES = {code: name for name, code in STRUCTURE_CODES.items()}

RATE_POINT_MIN = -(1 << 15)
RATE_POINT_MAX = (1 << 15) - 1
_RATE_DELTA_MAX_BYTES = 3  # zigzag(+-65535) < 2**21
_LENGTH_MAX_BYTES = 5  # MAX_UNIT_BYTES < 2**35

_PREAMBLE = struct.Struct(">4sBBH")  # magic, major, minor, header size
_CRC = struct.Struct(">I")


class BitstreamError(ValueError):
    """A bitstream that cannot be written or read as it is; the message says what and where."""


class _Truncated(BitstreamError):
    """The bytes ran out before a field's end (inside a header, its size and its fields disagree)."""


@dataclass(frozen=True)
class StreamHeader:
    """What a stream was made by and what it decodes to.

    ``structure`` is "ld", "ra" or "ai" with ``intra_period`` (-1: first frame only) and
    ``gop_size`` as in :class:`nvc_train.structure.CodingStructure`; ``rate_point`` is the codec's
    rate index for the stream (e.g. its q_index); units may differ from it.

    The values are checked when the header is written and when it is read, not when it is built, so
    that a caller can construct one from a config and get a single error naming the field at write.
    """

    codec_id: str
    weights_hash: bytes
    width: int
    height: int
    bit_depth: int
    num_frames: int
    fps_num: int
    fps_den: int
    structure: str
    intra_period: int
    gop_size: int
    rate_point: int

    @property
    def fps(self) -> float:
        return self.fps_num / self.fps_den

    def coding_structure(self) -> CodingStructure:
        """The coding structure a decoder follows (the same value object the evaluation runner uses)."""
        return CodingStructure(self.structure, self.intra_period, self.gop_size)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Unit:
    """One coded frame (``kind`` < 128) or another unit such as a parameter set (``kind`` >= 128).

    ``payload`` is opaque to the container: whatever the model's entropy coder produced.
    """

    kind: int
    rate_point: int
    payload: bytes

    @property
    def is_frame(self) -> bool:
        return self.kind < FIRST_NON_FRAME_KIND


@dataclass(frozen=True)
class Field:
    """One fixed-width numeric header field: the single place its width and allowed values live.

    ``fmt`` is a big-endian :mod:`struct` code; ``lo``..``hi`` is the allowed range (inclusive),
    narrowed further by ``allowed`` (described in words by ``rule``) where a range is not enough.
    """

    name: str
    fmt: str
    lo: int
    hi: int
    rule: str = ""
    allowed: Callable[[int], bool] | None = None

    @property
    def size(self) -> int:
        """Bytes of the field in a version-1 header (fixed width)."""
        return struct.calcsize(">" + self.fmt)

    @property
    def signed(self) -> bool:
        """Signed fields are zigzag varints in a version-2 header."""
        return self.fmt.islower()

    def describe(self) -> str:
        return self.rule or f"{self.lo}..{self.hi}"

    def accepts(self, value: int) -> bool:
        return self.lo <= value <= self.hi and (self.allowed is None or self.allowed(value))


def _even(value: int) -> bool:
    return value % 2 == 0


# The numeric header fields in the order they are written, after the codec id and the weights hash.
HEADER_FIELDS: tuple[Field, ...] = (
    Field("width", "H", 16, 16384, "even, 16..16384", _even),
    Field("height", "H", 16, 16384, "even, 16..16384", _even),
    Field("bit_depth", "B", 8, 10, "8 or 10", lambda v: v in (8, 10)),
    Field("num_frames", "I", 1, MAX_FRAMES),
    Field("num_units", "I", 1, MAX_UNITS),
    Field("fps_num", "I", 1, 1_000_000),
    Field("fps_den", "I", 1, 1_000_000),
    Field("structure", "B", 0, 2, "0 (ld), 1 (ra) or 2 (ai)"),
    Field("intra_period", "i", -1, MAX_FRAMES, f"-1 or 1..{MAX_FRAMES}", lambda v: v != 0),
    Field("gop_size", "H", 1, 1024),
    Field("rate_point", "h", RATE_POINT_MIN, RATE_POINT_MAX),
)
_FIELDS_STRUCT = struct.Struct(">" + "".join(f.fmt for f in HEADER_FIELDS))
_FIELD_MAX_BYTES = 5  # a version-2 field is a varint of at most 5 bytes (every range fits in 32 bits)
_HEADER_SIZE_MAX_BYTES = 2  # varint of header_size <= MAX_HEADER_BYTES
# magic, versions, 1-byte header_size, codec id length + 1 byte, hash length, 1 byte a field, CRC
_SMALLEST_V2_HEADER = len(MAGIC) + 2 + 1 + 2 + 1 + len(HEADER_FIELDS) + 4

# Unit head bytes are at least: kind, 1-byte rate delta, 1-byte length, CRC32.
MIN_UNIT_BYTES = 1 + 1 + 1 + _CRC.size


def _v1_header_size(codec_id_length: int) -> int:
    """Bytes of a version-1.0 header (fixed-width fields): 59 + the codec id's length."""
    return _PREAMBLE.size + 1 + codec_id_length + WEIGHTS_HASH_BYTES + _FIELDS_STRUCT.size + 4


def _v2_fields(values: Sequence[int]) -> bytes:
    """The numeric fields of a version-2 header: unsigned varints, zigzag for the signed ones."""
    return b"".join(
        _varint(_zigzag(value) if field.signed else value)
        for field, value in zip(HEADER_FIELDS, values, strict=True)
    )


def header_size(header: StreamHeader, num_units: int) -> int:
    """Bytes of the header :func:`encode_stream` writes for ``header`` and ``num_units`` units.

    A version-2 header is 34 bytes for a QCIF scene-adaptive stream (codec id ``coolchic``, no
    weights hash) and 49 for a one-frame 1080p ``dcvc-rt`` stream with its 16-byte hash; its size
    depends on the values, since every number is a varint.
    """
    codec_id, weights, values = _header_values(header, num_units, "header_size")
    body = 1 + len(codec_id) + 1 + len(weights) + len(_v2_fields(values)) + _CRC.size
    for size_bytes in (1, 2):
        size = len(MAGIC) + 2 + size_bytes + body
        if len(_varint(size)) == size_bytes:
            return size
    raise BitstreamError(f"header_size: a header of {size} bytes")  # pragma: no cover - bounded fields


@dataclass(frozen=True)
class Span:
    """Where one field of a stream lies: ``data[offset:offset + size]`` (see :func:`layout`)."""

    name: str
    offset: int
    size: int


# ---- validation (shared by writer and reader) ----------------------------------------------------


def _is_int(value: object) -> bool:
    # bool is an int subclass; ``width=True`` is a mistake, not 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _check_field(field: Field, value: object, where: str) -> None:
    if not _is_int(value) or not field.accepts(value):  # type: ignore[arg-type]
        raise BitstreamError(
            f"{where}: header field {field.name} = {value!r} out of range ({field.describe()})"
        )


def _check_codec_id(codec_id: object, where: str) -> bytes:
    if not isinstance(codec_id, str):
        raise BitstreamError(f"{where}: header field codec_id must be a str, got {codec_id!r}")
    raw = codec_id.encode("utf-8", errors="replace")
    _check_codec_id_bytes(raw, where)
    return raw


def _check_codec_id_bytes(raw: bytes, where: str) -> str:
    if not 1 <= len(raw) <= MAX_CODEC_ID_BYTES or not all(0x21 <= b <= 0x7E for b in raw):
        raise BitstreamError(
            f"{where}: header field codec_id = {raw.decode('utf-8', errors='replace')!r} out of range "
            f"(1..{MAX_CODEC_ID_BYTES} printable ASCII characters, no spaces)"
        )
    return raw.decode("ascii")


def _check_weights_hash(value: object, where: str) -> bytes:
    if not isinstance(value, (bytes, bytearray)) or len(value) not in (0, WEIGHTS_HASH_BYTES):
        shown = f"{len(value)} bytes" if isinstance(value, (bytes, bytearray)) else repr(value)
        raise BitstreamError(
            f"{where}: header field weights_hash must be {WEIGHTS_HASH_BYTES} bytes "
            f"(from weights_hash()), or empty for a stream that carries its own weights; got {shown}"
        )
    return bytes(value)


def _check_structure(header: StreamHeader, where: str) -> None:
    try:
        header.coding_structure()
    except ValueError as exc:
        raise BitstreamError(f"{where}: header fields structure/intra_period/gop_size: {exc}") from None


def _header_values(header: StreamHeader, num_units: int, where: str) -> tuple[bytes, bytes, list[int]]:
    """Check every header field; return the codec id, weights hash and numeric fields to pack."""
    if not isinstance(header, StreamHeader):
        raise BitstreamError(f"{where}: expected a StreamHeader, got {type(header).__name__}")
    codec_id = _check_codec_id(header.codec_id, where)
    weights = _check_weights_hash(header.weights_hash, where)
    if not isinstance(header.structure, str) or header.structure not in STRUCTURE_CODES:
        raise BitstreamError(
            f"{where}: header field structure = {header.structure!r} out of range "
            f"(one of {', '.join(STRUCTURE_CODES)})"
        )
    named = {f.name: getattr(header, f.name, None) for f in HEADER_FIELDS}
    named["num_units"] = num_units
    named["structure"] = STRUCTURE_CODES[header.structure]
    values = []
    for field in HEADER_FIELDS:
        _check_field(field, named[field.name], where)
        values.append(named[field.name])
    _check_structure(header, where)
    return codec_id, weights, values


# ---- writing -------------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    """LEB128: 7 bits a byte, low bits first, the top bit set on every byte but the last."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _zigzag(value: int) -> int:
    return 2 * value if value >= 0 else -2 * value - 1


def _unzigzag(value: int) -> int:
    return value >> 1 if not value & 1 else -((value + 1) >> 1)


def _unit_crc(header_crc: int, index: int, head: bytes | memoryview, payload: bytes | memoryview) -> int:
    # Seeded with the header CRC and the unit's index, so that a unit moved to another position or
    # spliced in from another stream fails its check instead of decoding into a wrong picture.
    crc = zlib.crc32(index.to_bytes(4, "big"), header_crc)
    return zlib.crc32(payload, zlib.crc32(head, crc))


def encode_stream(header: StreamHeader, units: Sequence[Unit]) -> bytes:
    """The bytes of a stream: checked header, then each unit with its rate point, length and CRC32.

    Raises :class:`BitstreamError` naming the field and value if anything is out of range, or if the
    number of frame units (kind < 128) is not ``header.num_frames``.
    """
    where = "cannot write bitstream"
    units = list(units)
    codec_id, weights, values = _header_values(header, len(units), where)
    frames = 0
    for index, unit in enumerate(units):
        if not isinstance(unit, Unit):
            raise BitstreamError(f"{where}: unit {index} is a {type(unit).__name__}, not a Unit")
        if not _is_int(unit.kind) or not 0 <= unit.kind <= 255:
            raise BitstreamError(f"{where}: unit {index} field kind = {unit.kind!r} out of range (0..255)")
        if not _is_int(unit.rate_point) or not RATE_POINT_MIN <= unit.rate_point <= RATE_POINT_MAX:
            raise BitstreamError(
                f"{where}: unit {index} field rate_point = {unit.rate_point!r} out of range "
                f"({RATE_POINT_MIN}..{RATE_POINT_MAX})"
            )
        if not isinstance(unit.payload, (bytes, bytearray, memoryview)):
            raise BitstreamError(
                f"{where}: unit {index} field payload must be bytes, got {type(unit.payload).__name__}"
            )
        if memoryview(unit.payload).nbytes > MAX_UNIT_BYTES:
            raise BitstreamError(
                f"{where}: unit {index} payload is {memoryview(unit.payload).nbytes} bytes, "
                f"more than the {MAX_UNIT_BYTES}-byte limit"
            )
        frames += unit.is_frame
    if frames != header.num_frames:
        raise BitstreamError(
            f"{where}: header says num_frames = {header.num_frames} but {frames} of the "
            f"{len(units)} units are frames (kind < {FIRST_NON_FRAME_KIND})"
        )

    out = bytearray(MAGIC + bytes((VERSION_MAJOR, VERSION_MINOR)))
    out += _varint(header_size(header, len(units)))
    out += bytes((len(codec_id),)) + codec_id
    out += bytes((len(weights),)) + weights
    out += _v2_fields(values)
    header_crc = zlib.crc32(out)
    out += _CRC.pack(header_crc)
    for index, unit in enumerate(units):
        payload = memoryview(unit.payload).cast("B")
        head = (
            bytes((unit.kind,))
            + _varint(_zigzag(unit.rate_point - header.rate_point))
            + _varint(payload.nbytes)
        )
        out += head
        out += _CRC.pack(_unit_crc(header_crc, index, head, payload))
        out += payload
    if len(out) > MAX_STREAM_BYTES:
        raise BitstreamError(f"{where}: {len(out)} bytes is more than the {MAX_STREAM_BYTES}-byte limit")
    return bytes(out)


def write_stream(path: str | os.PathLike[str], header: StreamHeader, units: Sequence[Unit]) -> int:
    """Write a stream to ``path`` atomically and return its size in bytes.

    The stream is encoded (and checked) before the file system is touched, written to a temporary
    file beside ``path`` and renamed into place, so a failure or a killed process leaves either the
    previous file or none - never a truncated stream that would later be measured as a rate.
    """
    data = encode_stream(header, units)
    atomic_write_bytes(Path(path), data)
    return len(data)


# ---- reading -------------------------------------------------------------------------------------


class _Cursor:
    """Reads forward through untrusted bytes; never slices past the end, optionally records spans."""

    def __init__(self, data: memoryview, spans: list[Span] | None) -> None:
        self.data = data
        self.pos = 0
        self.spans = spans

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int, what: str) -> memoryview:
        if size > self.remaining():
            raise _Truncated(
                f"bitstream truncated at byte {len(self.data)}: {what} needs {size} bytes at byte "
                f"{self.pos}, only {self.remaining()} remain"
            )
        start = self.pos
        self.pos += size
        if self.spans is not None:
            self.spans.append(Span(what, start, size))
        return self.data[start : self.pos]

    def varint(self, max_bytes: int, what: str) -> int:
        start = self.pos
        value = 0
        for shift in range(0, 7 * max_bytes, 7):
            if self.remaining() < 1:
                raise _Truncated(
                    f"bitstream truncated at byte {len(self.data)}: {what} at byte {start} is incomplete"
                )
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if byte == 0 and shift:
                    raise BitstreamError(f"bitstream {what} at byte {start} is not minimally encoded")
                if self.spans is not None:
                    self.spans.append(Span(what, start, self.pos - start))
                return value
        raise BitstreamError(f"bitstream {what} at byte {start} is longer than {max_bytes} bytes")


def _check_magic(data: memoryview) -> None:
    if not len(data):
        raise BitstreamError("bitstream is empty (0 bytes)")
    head = bytes(data[: len(MAGIC)])
    if head != MAGIC[: len(head)]:
        raise BitstreamError(
            f"not an nvc-train bitstream (foreign file): it starts with {head!r}, expected {MAGIC!r}"
        )


def _read_header(cur: _Cursor) -> tuple[StreamHeader, int, int]:
    """Parse and check the header; return it, the declared unit count and the header CRC."""
    data = cur.data
    _check_magic(data)
    cur.take(len(MAGIC), "magic")
    major = cur.take(1, "version_major")[0]
    minor = cur.take(1, "version_minor")[0]
    if major not in READABLE_MAJORS:
        raise BitstreamError(
            f"unsupported bitstream format version {major}.{minor}: this reader reads versions "
            f"{', '.join(f'{m}.x' for m in READABLE_MAJORS)} (was the stream written by a newer nvc-train?)"
        )
    if major == 1:
        (size,) = struct.unpack(">H", cur.take(2, "header_size"))
        smallest = _v1_header_size(1)
    else:
        size = cur.varint(_HEADER_SIZE_MAX_BYTES, "header_size")
        smallest = _SMALLEST_V2_HEADER
    if not smallest <= size <= MAX_HEADER_BYTES:
        raise BitstreamError(
            f"bitstream header_size = {size} out of range ({smallest}..{MAX_HEADER_BYTES}); "
            "the header is corrupted"
        )
    if size > len(data):
        raise BitstreamError(f"bitstream truncated at byte {len(data)}: the header needs {size} bytes")
    # The CRC is checked before any field, so a damaged header reads as damaged, not as odd values.
    (stored,) = _CRC.unpack(data[size - 4 : size])
    computed = zlib.crc32(data[: size - 4])
    if stored != computed:
        raise BitstreamError(
            f"bitstream header CRC mismatch (stored {stored:08x}, computed {computed:08x}): "
            "the header is corrupted"
        )

    where = "bad bitstream"
    body = _Cursor(data[: size - 4], cur.spans)
    body.pos = cur.pos
    try:
        codec_id_raw, weights, named = _v1_body(body, size, minor) if major == 1 else _v2_body(body)
    except _Truncated:
        raise BitstreamError(
            f"{where}: header_size = {size} does not match its fields (they run past its end)"
        ) from None
    if body.remaining():
        if minor == 0:
            raise BitstreamError(
                f"{where}: header_size = {size} does not match its fields ({body.remaining()} bytes "
                f"after the last field of version {major}.0)"
            )
        # Fields of a later minor version: skipped by this reader, still covered by the CRC.
        body.take(body.remaining(), "header_extension")
    cur.pos = size
    if cur.spans is not None:
        cur.spans.append(Span("header_crc32", size - 4, 4))

    codec_id = _check_codec_id_bytes(codec_id_raw, where)
    for field in HEADER_FIELDS:
        _check_field(field, named[field.name], where)
    header = StreamHeader(
        codec_id=codec_id,
        weights_hash=weights,
        width=named["width"],
        height=named["height"],
        bit_depth=named["bit_depth"],
        num_frames=named["num_frames"],
        fps_num=named["fps_num"],
        fps_den=named["fps_den"],
        structure=_STRUCTURE_NAMES[named["structure"]],
        intra_period=named["intra_period"],
        gop_size=named["gop_size"],
        rate_point=named["rate_point"],
    )
    _check_structure(header, where)
    if named["num_units"] < header.num_frames:
        raise BitstreamError(
            f"{where}: header declares {named['num_units']} units for {header.num_frames} frames"
        )
    return header, named["num_units"], stored


def _v1_body(body: _Cursor, size: int, minor: int) -> tuple[bytes, bytes, dict[str, int]]:
    """Codec id, weights hash and numeric fields of a version-1 header (fixed widths)."""
    id_len = body.take(1, "codec_id_length")[0]
    fixed = _v1_header_size(id_len)
    if size < fixed or (minor == 0 and size != fixed):
        raise BitstreamError(
            f"bad bitstream: header_size = {size} does not match its fields ({fixed} bytes for version "
            f"1.0 with a {id_len}-byte codec id)"
        )
    codec_id_raw = bytes(body.take(id_len, "codec_id"))
    weights = bytes(body.take(WEIGHTS_HASH_BYTES, "weights_hash"))
    named = {}
    for field in HEADER_FIELDS:
        (named[field.name],) = struct.unpack(">" + field.fmt, body.take(field.size, field.name))
    return codec_id_raw, weights, named


def _v2_body(body: _Cursor) -> tuple[bytes, bytes, dict[str, int]]:
    """Codec id, weights hash (0 or 16 bytes) and varint fields of a version-2 header."""
    id_len = body.take(1, "codec_id_length")[0]
    codec_id_raw = bytes(body.take(id_len, "codec_id"))
    hash_len = body.take(1, "weights_hash_length")[0]
    if hash_len not in (0, WEIGHTS_HASH_BYTES):
        raise BitstreamError(f"bad bitstream: weights_hash_length = {hash_len} (0 or {WEIGHTS_HASH_BYTES})")
    weights = bytes(body.take(hash_len, "weights_hash")) if hash_len else b""
    named = {}
    for field in HEADER_FIELDS:
        value = body.varint(_FIELD_MAX_BYTES, field.name)
        named[field.name] = _unzigzag(value) if field.signed else value
    return codec_id_raw, weights, named


def _check_expected(
    header: StreamHeader, expected_codec_id: str | None, expected_weights_hash: bytes | None
) -> None:
    if expected_codec_id is not None and header.codec_id != expected_codec_id:
        raise BitstreamError(
            f"this bitstream was made by codec {header.codec_id!r}, the decoder is {expected_codec_id!r}"
        )
    if expected_weights_hash is not None and header.weights_hash != bytes(expected_weights_hash):
        made = header.weights_hash.hex()[:8] or "it carries (no hash: a scene-adaptive stream)"
        raise BitstreamError(
            f"this bitstream was made with weights {made}, "
            f"the decoder has {bytes(expected_weights_hash).hex()[:8]}"
        )


def _read_units(cur: _Cursor, header: StreamHeader, num_units: int, header_crc: int) -> list[Unit]:
    if num_units * MIN_UNIT_BYTES > cur.remaining():
        raise BitstreamError(
            f"bitstream truncated at byte {len(cur.data)}: the header declares {num_units} units, "
            f"which need at least {num_units * MIN_UNIT_BYTES} bytes after byte {cur.pos}, "
            f"only {cur.remaining()} remain"
        )
    units: list[Unit] = []
    frames = 0
    for index in range(num_units):
        start = cur.pos
        name = f"unit[{index}]"
        kind = cur.take(1, f"{name}.kind")[0]
        delta = _unzigzag(cur.varint(_RATE_DELTA_MAX_BYTES, f"{name}.rate_delta"))
        length = cur.varint(_LENGTH_MAX_BYTES, f"{name}.length")
        head = cur.data[start : cur.pos]
        if length > MAX_UNIT_BYTES:
            raise BitstreamError(
                f"bad bitstream: unit {index} length = {length} at byte {start} is more than the "
                f"{MAX_UNIT_BYTES}-byte limit"
            )
        (stored,) = _CRC.unpack(cur.take(4, f"{name}.crc32"))
        # take() compares the length with the remaining bytes before slicing; nothing is allocated.
        payload = cur.take(length, f"{name}.payload")
        computed = _unit_crc(header_crc, index, head, payload)
        if stored != computed:
            raise BitstreamError(
                f"bitstream CRC mismatch in unit {index} (kind {kind}, {length} bytes at byte {start}): "
                f"stored {stored:08x}, computed {computed:08x}"
            )
        rate_point = header.rate_point + delta
        if not RATE_POINT_MIN <= rate_point <= RATE_POINT_MAX:
            raise BitstreamError(f"bad bitstream: unit {index} rate_point = {rate_point} out of range")
        units.append(Unit(kind, rate_point, bytes(payload)))
        frames += kind < FIRST_NON_FRAME_KIND
    if frames != header.num_frames:
        raise BitstreamError(
            f"bad bitstream: header declares {header.num_frames} frames but its units hold {frames}"
        )
    if cur.remaining():
        raise BitstreamError(
            f"bitstream has trailing garbage: {cur.remaining()} bytes after the last unit "
            f"(unit {num_units - 1} ends at byte {cur.pos})"
        )
    return units


def decode_stream(
    data: bytes | bytearray | memoryview,
    expected_codec_id: str | None = None,
    expected_weights_hash: bytes | None = None,
) -> tuple[StreamHeader, list[Unit]]:
    """Parse and check a stream; return its header and units.

    Given ``expected_codec_id`` / ``expected_weights_hash`` (what the decoder is), a stream made by
    another codec or other weights is refused before any unit is read, since decoding it would give
    garbage pictures without any error. Any defect raises :class:`BitstreamError`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_stream() needs bytes, got {type(data).__name__}")
    cur = _Cursor(memoryview(data).cast("B"), None)
    header, num_units, header_crc = _read_header(cur)
    _check_expected(header, expected_codec_id, expected_weights_hash)
    return header, _read_units(cur, header, num_units, header_crc)


def layout(data: bytes | bytearray | memoryview) -> list[Span]:
    """Every field of a valid stream with its offset and size, in file order (for tools and tests).

    The spans cover the stream exactly once; the stream is checked as by :func:`decode_stream`.
    """
    spans: list[Span] = []
    cur = _Cursor(memoryview(data).cast("B"), spans)
    header, num_units, header_crc = _read_header(cur)
    _read_units(cur, header, num_units, header_crc)
    return spans


def read_stream(
    path: str | os.PathLike[str],
    expected_codec_id: str | None = None,
    expected_weights_hash: bytes | None = None,
) -> tuple[StreamHeader, list[Unit]]:
    """Read and decode the stream at ``path`` (see :func:`decode_stream`).

    The file's type and size are checked before it is opened, so a path to something huge (a raw
    video) or endless (a device, a FIFO) is refused with a message instead of filling memory or
    blocking.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(2, "bitstream file not found", str(path)) from None
    if not stat.S_ISREG(info.st_mode):
        # A FIFO or a device would block or never end; a directory cannot be read.
        raise BitstreamError(f"{path} is not a regular file, so not a bitstream")
    if info.st_size > MAX_STREAM_BYTES:
        raise BitstreamError(
            f"{path} is {info.st_size} bytes, more than the {MAX_STREAM_BYTES}-byte bitstream limit; "
            "is it really a bitstream?"
        )
    # Read what the file holds (one byte more shows a file that grew since stat()): a read sized by
    # the limit would reserve 4 GiB of address space for every stream, and fail under `ulimit -v`.
    with open(path, "rb") as handle:
        data = handle.read(info.st_size + 1)
    if len(data) > info.st_size:
        raise BitstreamError(f"{path} changed size while it was read; is another process writing it?")
    try:
        return decode_stream(data, expected_codec_id, expected_weights_hash)
    except BitstreamError as exc:
        raise BitstreamError(f"{path}: {exc}") from None
