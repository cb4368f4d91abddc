"""Typed, bounded records: the architecture a scene-adaptive stream carries, checked before use.

A scene-adaptive file carries the numbers its network is built from (levels, widths, depths...),
written by whoever made the file. Read as they are, ``levels=1e9`` grows a 2.5 KB file into a
5.6 GB decoder and ``synthesis_stride=0`` ends in a ZeroDivisionError. So every field a network
class accepts from a file is declared here-style, once, with its type and range (each network class
holds its table: ``ARCHITECTURE_FIELDS`` in ``models/``), and a record is checked field by field
before anything is built. The tables are listed in ``FORMAT.md``.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nvc_train.bitstream.container import BitstreamError

__all__ = [
    "HEADER_GIVEN_FIELDS", "PACKED_MAGIC", "ArchitectureField", "check_architecture", "pack_parameter_set",
    "packed_target", "unpack_parameter_set",
]  # fmt: skip

_KINDS = ("int", "float", "bool", "str", "ints", "floats")


@dataclass(frozen=True)
class ArchitectureField:
    """One architecture entry: ``kind`` and its allowed values.

    ``int`` / ``float``: ``low <= value <= high`` (a float must be finite; an int is not a bool);
    ``bool``; ``str``: one of ``choices``; ``ints`` / ``floats``: a list of ``min_items`` to
    ``max_items`` numbers, each within ``low .. high``.
    """

    kind: str
    low: float = 0
    high: float = 0
    choices: tuple[str, ...] = ()
    min_items: int = 0
    max_items: int = 0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"field kind must be one of {_KINDS}, got {self.kind!r}")

    def describe(self) -> str:
        if self.kind == "bool":
            return "true or false"
        if self.kind == "str":
            return "one of " + ", ".join(self.choices)
        span = f"{self.low:g}..{self.high:g}"
        if self.kind in ("int", "float"):
            return f"an {self.kind} in {span}" if self.kind == "int" else f"a float in {span}"
        item = "integers" if self.kind == "ints" else "numbers"
        return f"{self.min_items}..{self.max_items} {item} in {span}"

    def accepts(self, value: Any) -> bool:
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "str":
            return isinstance(value, str) and value in self.choices
        if self.kind in ("int", "float"):
            return self._number(value, integer=self.kind == "int")
        if not isinstance(value, list) or not self.min_items <= len(value) <= self.max_items:
            return False
        return all(self._number(item, integer=self.kind == "ints") for item in value)

    def _number(self, value: Any, integer: bool) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if integer and not isinstance(value, int):
            return False
        return math.isfinite(value) and self.low <= value <= self.high


def check_architecture(record: Any, fields: Mapping[str, ArchitectureField], where: str) -> dict[str, Any]:
    """``record`` as a plain dict when it has exactly ``fields``, each value allowed; else BitstreamError.

    Floats written as whole numbers come back from JSON as ints; a float field accepts them and
    returns floats, so the network sees the type it was built with.
    """
    if not isinstance(record, Mapping):
        raise BitstreamError(f"{where}: the architecture is not a mapping of fields")
    unknown = sorted(str(key)[:40] for key in record if key not in fields)
    missing = sorted(key for key in fields if key not in record)
    if unknown or missing:
        raise BitstreamError(
            f"{where}: architecture fields differ from the network's: "
            f"unknown {unknown[:5]}, missing {missing[:5]}"
        )
    checked: dict[str, Any] = {}
    for name, field in fields.items():
        value = record[name]
        if not field.accepts(value):
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise BitstreamError(f"{where}: architecture field {name} = {shown} is not {field.describe()}")
        if field.kind == "float":
            value = float(value)
        elif field.kind == "floats":
            value = [float(v) for v in value]
        elif field.kind == "ints":
            value = list(value)
        checked[name] = value
    return checked


# ---- the packed parameter set ---------------------------------------------------------------------

PACKED_MAGIC = b"\xa7"
"""First byte of a packed parameter set (a JSON one, written before it existed, starts with ``{``)."""
_PACKED_VERSION = 3  # 3: the class as a one-byte id; 2: floats as dyadic (shift, mantissa); 1: float64
_READABLE_VERSIONS = (1, 2, _PACKED_VERSION)
_RAW_FLOAT = 0xFF  # the shift byte of a float sent as 8 bytes (not a small dyadic rational)

CLASS_IDS: dict[str, int] = {
    "models.c3.C3Net": 1,
    "models.hinerv.HiNeRV": 2,
    "models.nvrc.NVRC": 3,
    "models.coolchic_video.CoolChicVideo": 4,
}
"""One-byte ids of the scene-adaptive network classes (version 3); id 0 is followed by the class
name, for a class not in this table. Fixed: an id, once given, names the same class forever."""
_CLASS_NAMES = {code: name for name, code in CLASS_IDS.items()}

HEADER_GIVEN_FIELDS = ("gop_size", "height", "intra_period", "num_frames", "structure", "width")
"""Fields a version-3 set leaves out: the container header gives them (``height`` / ``width`` as
the header's size rounded up to the class's padding), and a copy could only disagree with it."""


def _fields_crc(fields: Mapping[str, ArchitectureField]) -> int:
    """CRC32 of the field names and kinds in packing order: a file packed for other fields is refused."""
    text = ";".join(f"{name}:{fields[name].kind}:{','.join(fields[name].choices)}" for name in sorted(fields))
    return zlib.crc32(text.encode())


def _varint(value: int) -> bytes:
    """Unsigned LEB128."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _zigzag(value: int) -> int:
    return 2 * value if value >= 0 else -2 * value - 1


def _pack_float(value: float) -> bytes:
    """A float in 2-4 bytes when it is ``m / 2**k`` (k <= 63, |m| < 2**53: configs' -3.0, 0.125, 0)
    as the byte k then zigzag varint m; else the byte 0xFF then big-endian float64. Exact either way."""
    for shift in range(64):
        scaled = math.ldexp(value, shift)
        if scaled.is_integer() and abs(scaled) < 2.0**53:
            return bytes([shift]) + _varint(_zigzag(int(scaled)))
    return bytes([_RAW_FLOAT]) + struct.pack(">d", value)


def pack_parameter_set(
    target: str, architecture: Mapping[str, Any], fields: Mapping[str, ArchitectureField]
) -> bytes:
    """The parameter set in a few dozen bytes (its JSON was ~500, a third of a small frame's file).

    Layout: magic ``0xA7``, version, the class (its byte in :data:`CLASS_IDS`, or 0 then the
    name's length (varint) and ASCII name), CRC32 of the fields (names, kinds, choices), then
    every field in name order: int = zigzag varint, float = :func:`_pack_float` (version 1:
    big-endian float64), bool = one byte, str = index into its choices, ints / floats = count
    (varint) then items. ``architecture`` is checked against
    ``fields`` first.
    """
    record = check_architecture(architecture, fields, "pack_parameter_set")
    name = target.encode()
    out = bytearray(PACKED_MAGIC + bytes([_PACKED_VERSION]))
    out += bytes([CLASS_IDS[target]]) if target in CLASS_IDS else b"\x00" + _varint(len(name)) + name
    out += struct.pack(">I", _fields_crc(fields))
    for key in sorted(set(fields) - set(HEADER_GIVEN_FIELDS)):
        field, value = fields[key], record[key]
        if field.kind == "int":
            out += _varint(_zigzag(value))
        elif field.kind == "float":
            out += _pack_float(value)
        elif field.kind == "bool":
            out.append(int(value))
        elif field.kind == "str":
            out.append(field.choices.index(value))
        elif field.kind == "ints":
            out += _varint(len(value)) + b"".join(_varint(_zigzag(v)) for v in value)
        else:
            out += _varint(len(value)) + b"".join(_pack_float(v) for v in value)
    return bytes(out)


class _Reader:
    """Bounded reads from a packed parameter set; running out of bytes is a BitstreamError."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.pos, self.where = data, 0, where

    def take(self, count: int) -> bytes:
        if count < 0 or self.pos + count > len(self.data):
            raise BitstreamError(
                f"{self.where}: the parameter set ends early (byte {self.pos} of {len(self.data)})"
            )
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def varint(self) -> int:
        value = 0
        for shift in range(0, 70, 7):
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise BitstreamError(f"{self.where}: a number of the parameter set runs over 10 bytes")

    def signed(self) -> int:
        value = self.varint()
        return value // 2 if value % 2 == 0 else -(value + 1) // 2

    def float(self, version: int) -> float:
        shift = _RAW_FLOAT if version == 1 else self.take(1)[0]
        if shift == _RAW_FLOAT:
            return struct.unpack(">d", self.take(8))[0]
        if shift > 63:
            raise BitstreamError(f"{self.where}: a float of the parameter set has shift {shift}")
        return math.ldexp(float(self.signed()), -shift)


def pack_varint(value: int, signed: bool = False) -> bytes:
    """An integer as unsigned LEB128 (``signed``: zigzag first), for payloads that carry a few numbers."""
    return _varint(_zigzag(value) if signed else value)


def unpack_varint(data: bytes, position: int, where: str, signed: bool = False) -> tuple[int, int]:
    """The :func:`pack_varint` number at ``position`` and the position after it; BitstreamError when
    the bytes end first or the number runs over 10 bytes."""
    reader = _Reader(data, where)
    reader.pos = position
    value = reader.signed() if signed else reader.varint()
    return value, reader.pos


def join_network(parameter_set: bytes, weights: bytes) -> bytes:
    """A scene-adaptive file's network unit: the parameter set's length (varint), the set, then the
    weights payload, which runs to the end of the unit."""
    return _varint(len(parameter_set)) + parameter_set + weights


def split_network(payload: bytes, max_parameter_set: int, where: str) -> tuple[bytes, bytes]:
    """``(parameter set, weights)`` of a network unit (:func:`join_network`); a length that runs
    past the unit or over ``max_parameter_set`` bytes is a BitstreamError."""
    reader = _Reader(payload, f"{where}: the parameter set's length")
    size = reader.varint()
    if size > max_parameter_set or reader.pos + size > len(payload):
        raise BitstreamError(
            f"{where}: a parameter set of {size} bytes does not fit the {len(payload) - reader.pos} "
            f"bytes after its length (at most {max_parameter_set})"
        )
    return payload[reader.pos : reader.pos + size], payload[reader.pos + size :]


def packed_target(data: bytes, where: str) -> str:
    """The network class name of a packed parameter set (read before any field)."""
    return _read_target(_Reader(data, where), where)


def _read_target(reader: _Reader, where: str) -> str:
    """Magic, version and class of a packed parameter set; the reader stops after the class."""
    if reader.take(1) != PACKED_MAGIC or reader.take(1)[0] not in _READABLE_VERSIONS:
        raise BitstreamError(f"{where}: not a version {_READABLE_VERSIONS} packed parameter set")
    if reader.data[1] == _PACKED_VERSION:
        code = reader.take(1)[0]
        if code:
            if code not in _CLASS_NAMES:
                raise BitstreamError(f"{where}: network class id {code} is not one this reader knows")
            return _CLASS_NAMES[code]
    length = reader.varint()
    if length > 200:
        raise BitstreamError(f"{where}: a class name of {length} bytes")
    try:
        return reader.take(length).decode("ascii")
    except UnicodeDecodeError:
        raise BitstreamError(f"{where}: the class name is not ASCII") from None


def unpack_parameter_set(
    data: bytes, fields: Mapping[str, ArchitectureField], where: str, header_given: Mapping[str, Any]
) -> dict[str, Any]:
    """The architecture of a packed parameter set whose class has ``fields``, checked; else BitstreamError.

    ``header_given`` holds the :data:`HEADER_GIVEN_FIELDS` as the container header gives them: a
    version-3 set takes them from there; an older set carries its own, which the caller compares.
    """
    reader = _Reader(data, where)
    _read_target(reader, where)
    version = data[1]
    (crc,) = struct.unpack(">I", reader.take(4))
    if crc != _fields_crc(fields):
        raise BitstreamError(f"{where}: the parameter set was packed for other fields than this network's")
    record: dict[str, Any] = {}
    for key in sorted(fields):
        field = fields[key]
        if version == _PACKED_VERSION and key in HEADER_GIVEN_FIELDS:
            record[key] = header_given[key]
            continue
        if field.kind == "int":
            record[key] = reader.signed()
        elif field.kind == "float":
            record[key] = reader.float(version)
        elif field.kind == "bool":
            flag = reader.take(1)[0]
            record[key] = bool(flag) if flag in (0, 1) else flag  # anything else fails the check below
        elif field.kind == "str":
            index = reader.take(1)[0]
            record[key] = field.choices[index] if index < len(field.choices) else f"choice {index}"
        else:
            count = reader.varint()
            if count > field.max_items:
                raise BitstreamError(f"{where}: architecture field {key} has {count} items, at most "
                                     f"{field.max_items} allowed")  # fmt: skip
            if field.kind == "ints":
                record[key] = [reader.signed() for _ in range(count)]
            else:
                record[key] = [reader.float(version) for _ in range(count)]
    if reader.pos != len(data):
        raise BitstreamError(f"{where}: {len(data) - reader.pos} bytes after the parameter set's last field")
    return check_architecture(record, fields, where)
