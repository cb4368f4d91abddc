"""The nvc-train bitstream container: what a neural codec's adapter writes around its payloads.

It knows bytes, not networks: it imports neither torch, Lightning nor any model, so that a decoder
can check a stream (foreign file, other weights, truncation, corruption) before loading anything.
The byte layout is in ``FORMAT.md`` in this folder.

Writing::

    header = StreamHeader(codec_id="dcvc-rt", weights_hash=weights_hash(items), width=1920,
                          height=1080, bit_depth=8, num_frames=96, fps_num=30, fps_den=1,
                          structure="ld", intra_period=-1, gop_size=1, rate_point=3)
    write_stream(path, header, [Unit(KIND_I, 3, payload0), Unit(KIND_P, 3, payload1), ...])

Reading::

    header, units = read_stream(path, expected_codec_id="dcvc-rt", expected_weights_hash=mine)
"""

from nvc_train.bitstream.container import (
    FIRST_NON_FRAME_KIND,
    HEADER_FIELDS,
    KIND_B,
    KIND_I,
    KIND_P,
    KIND_PARAMETER_SET,
    MAGIC,
    MAX_CODEC_ID_BYTES,
    MAX_FRAMES,
    MAX_STREAM_BYTES,
    MAX_UNIT_BYTES,
    MAX_UNITS,
    VERSION_MAJOR,
    VERSION_MINOR,
    WEIGHTS_HASH_BYTES,
    BitstreamError,
    Field,
    Span,
    StreamHeader,
    Unit,
    decode_stream,
    encode_stream,
    header_size,
    layout,
    read_stream,
    write_stream,
)
from nvc_train.bitstream.payload import AdaptivePayload
from nvc_train.bitstream.weights import weights_hash

__all__ = [
    "AdaptivePayload",
    "FIRST_NON_FRAME_KIND",
    "HEADER_FIELDS",
    "KIND_B",
    "KIND_I",
    "KIND_P",
    "KIND_PARAMETER_SET",
    "MAGIC",
    "MAX_CODEC_ID_BYTES",
    "MAX_FRAMES",
    "MAX_STREAM_BYTES",
    "MAX_UNITS",
    "MAX_UNIT_BYTES",
    "VERSION_MAJOR",
    "VERSION_MINOR",
    "WEIGHTS_HASH_BYTES",
    "BitstreamError",
    "Field",
    "Span",
    "StreamHeader",
    "Unit",
    "decode_stream",
    "encode_stream",
    "header_size",
    "layout",
    "read_stream",
    "weights_hash",
    "write_stream",
]
