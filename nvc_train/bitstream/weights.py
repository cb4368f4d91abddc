"""The weights hash written in every stream, so that a decoder given other weights refuses it.

A neural decoder that runs with weights other than the encoder's does not fail: it produces
plausible-looking but wrong pictures, and the evaluation would report their PSNR as the codec's.
Hashing the weights into the stream turns that silent error into a one-line refusal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from nvc_train.bitstream.container import WEIGHTS_HASH_BYTES

_DOMAIN = b"nvc-train weights hash v1\0"


def weights_hash(state_items: Iterable[tuple[str, bytes | bytearray | memoryview]]) -> bytes:
    """The first 16 bytes of a SHA-256 over named tensors' raw bytes, independent of their order.

    The adapter passes ``(name, tensor.detach().cpu().contiguous().numpy().tobytes())`` for each
    entry of the model's ``state_dict()`` (a tensor in a dtype numpy lacks, such as bfloat16, can be
    viewed as ``int16`` first). What is hashed, after the domain tag ``b"nvc-train weights hash
    v1\\0"``, for each item in order of its name (Unicode code points, so a state dict's insertion
    order does not matter):

    * the name's UTF-8 length as a 4-byte big-endian integer, then the name;
    * the data's length as an 8-byte big-endian integer, then the data.

    The lengths make the encoding unambiguous (``("a", b"bc")`` and ``("ab", b"c")`` differ). Only
    bytes are hashed, not dtypes or shapes: two models whose tensors hold the same bytes under the
    same names decode alike; an adapter that wants the shapes hashed too can put them in the names.
    16 bytes (128 bits) identify weights reliably; the hash is a check against mistakes, not an
    authentication against forgery.

    Raises ``ValueError`` on duplicate names or on no items at all (an exhausted generator is a bug,
    not a model).
    """
    items = []
    for name, data in state_items:
        if not isinstance(name, str):
            raise ValueError(f"weights_hash() needs (str, bytes) pairs, got a name {name!r}")
        items.append((name, memoryview(data).cast("B")))
    if not items:
        raise ValueError("weights_hash() got no tensors: pass (name, bytes) for every state_dict entry")
    items.sort(key=lambda item: item[0])
    digest = hashlib.sha256(_DOMAIN)
    previous = None
    for name, data in items:
        if name == previous:
            raise ValueError(f"weights_hash() got the tensor name {name!r} twice")
        previous = name
        raw_name = name.encode("utf-8")
        digest.update(len(raw_name).to_bytes(4, "big"))
        digest.update(raw_name)
        digest.update(data.nbytes.to_bytes(8, "big"))
        digest.update(data)
    return digest.digest()[:WEIGHTS_HASH_BYTES]
