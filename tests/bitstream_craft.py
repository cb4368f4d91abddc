"""Crafting container bytes for the reader's tests: what a forger or a buggy writer would produce.

Written from ``nvc_train/bitstream/FORMAT.md`` rather than from the writer, so a test that builds a
header here checks the reader against the document: the version-2 header (varint fields) that the
writer makes today, and the version-1 header (fixed-width fields) of older files, which must still
be read.
"""

from __future__ import annotations

import struct
import zlib

import nvc_train.bitstream.container as container
from nvc_train.bitstream import HEADER_FIELDS, MAGIC, layout


def varint(value: int) -> bytes:
    """Unsigned LEB128, as FORMAT.md defines it."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def zigzag(value: int) -> int:
    return 2 * value if value >= 0 else -2 * value - 1


def header_length(data: bytes) -> int:
    """``header_size`` of a stream of either version (u16 in version 1, a varint in version 2)."""
    if data[4] == 1:
        return struct.unpack_from(">H", data, 6)[0]
    size, shift, pos = 0, 0, 6
    while True:
        size |= (data[pos] & 0x7F) << shift
        if not data[pos] & 0x80:
            return size
        pos, shift = pos + 1, shift + 7


def resign_header(data: bytes | bytearray) -> bytes:
    """Recompute the header CRC, as a crafted (not merely damaged) stream would have it."""
    data = bytearray(data)
    size = header_length(bytes(data))
    struct.pack_into(">I", data, size - 4, zlib.crc32(data[: size - 4]))
    return bytes(data)


def restamp(original: bytes, header: bytes) -> bytes:
    """``header`` (CRC valid) then the units of the valid stream ``original``, each unit's CRC chained
    on the new header CRC: a crafted stream in which only the header says something else."""
    header_crc = struct.unpack(">I", header[-4:])[0]
    out = bytearray(header)
    spans = [s for s in layout(original) if s.name.startswith("unit[")]
    for index in range(len(spans) // 5):  # kind, rate_delta, length, crc32, payload
        kind, _, _, crc, payload = spans[5 * index : 5 * index + 5]
        head = original[kind.offset : crc.offset]
        body = original[payload.offset : payload.offset + payload.size]
        out += head + struct.pack(">I", container._unit_crc(header_crc, index, head, body)) + body
    return bytes(out)


def v2_header(
    codec_id: bytes, weights: bytes, values: dict[str, int], minor: int = 0, extra: bytes = b""
) -> bytes:
    """A version-2 header with these raw field values (unchecked), ``extra`` appended, CRC valid."""
    body = bytes([len(codec_id)]) + codec_id + bytes([len(weights)]) + weights
    for field in HEADER_FIELDS:
        value = values[field.name]
        body += varint(zigzag(value) if field.fmt.islower() else value)
    body += extra
    for size_bytes in (1, 2, 3):
        size = len(MAGIC) + 2 + size_bytes + len(body) + 4
        if len(varint(size)) == size_bytes:
            break
    head = MAGIC + bytes([2, minor]) + varint(size) + body
    return head + struct.pack(">I", zlib.crc32(head))


def v1_header(
    codec_id: bytes, weights: bytes, values: dict[str, int], minor: int = 0, extra: bytes = b""
) -> bytes:
    """A version-1 header (fixed-width big-endian fields, 59 bytes + the codec id), CRC valid."""
    fields = b"".join(struct.pack(">" + f.fmt, values[f.name]) for f in HEADER_FIELDS)
    size = len(MAGIC) + 4 + 1 + len(codec_id) + len(weights) + len(fields) + len(extra) + 4
    head = MAGIC + bytes([1, minor]) + struct.pack(">H", size) + bytes([len(codec_id)]) + codec_id
    head += weights + fields + extra
    return head + struct.pack(">I", zlib.crc32(head))


def header_parts(data: bytes) -> tuple[bytes, bytes, dict[str, int]]:
    """The codec id, weights hash and numeric field values of a valid version-2 stream."""
    spans = {s.name: s for s in layout(data)}

    def raw(name: str) -> bytes:
        span = spans.get(name)
        return data[span.offset : span.offset + span.size] if span else b""

    values = {}
    for field in HEADER_FIELDS:
        value, shift = 0, 0
        for byte in raw(field.name):
            value |= (byte & 0x7F) << shift
            shift += 7
        values[field.name] = (
            (value >> 1 if not value & 1 else -((value + 1) >> 1)) if field.fmt.islower() else value
        )
    return raw("codec_id"), raw("weights_hash"), values


def craft(data: bytes, version: int = 2, **fields: int) -> bytes:
    """The valid stream ``data`` with numeric header fields set (any value), every CRC valid."""
    codec_id, weights, values = header_parts(data)
    values.update(fields)
    header = (v2_header if version == 2 else v1_header)(codec_id, weights, values)
    return restamp(data, header)
