"""The packed parameter set of scene-adaptive files: round trip, size and refusals."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import yaml

from models.c3 import C3Net
from models.hinerv import HiNeRV
from nvc_train.bitstream import BitstreamError
from nvc_train.bitstream.architecture import (
    HEADER_GIVEN_FIELDS,
    pack_parameter_set,
    packed_target,
    unpack_parameter_set,
)
from tests.conftest import REPO_ROOT


def _architecture(name: str, cls: type) -> dict:
    config = yaml.safe_load((REPO_ROOT / f"configs/model/{name}.yaml").read_text())
    config.pop("_target_")
    net = cls(height=144, width=176, num_frames=3, structure="ra", intra_period=-1, gop_size=2, **config)
    return net.architecture


def _given(architecture: dict) -> dict:
    """What the container header would give a version-3 set."""
    return {key: architecture[key] for key in HEADER_GIVEN_FIELDS}


@pytest.mark.parametrize(("name", "cls"), [("coolchic", C3Net), ("c3", C3Net), ("hinerv_tiny", HiNeRV)])
def test_packed_parameter_set_round_trips_and_is_small(name: str, cls: type) -> None:
    architecture = _architecture(name, cls)
    target = f"{cls.__module__}.{cls.__qualname__}"
    packed = pack_parameter_set(target, architecture, cls.ARCHITECTURE_FIELDS)
    assert packed_target(packed, "here") == target
    assert unpack_parameter_set(packed, cls.ARCHITECTURE_FIELDS, "here", _given(architecture)) == architecture
    as_json = json.dumps({"target": target, "architecture": architecture}, separators=(",", ":"))
    assert len(packed) * 3 < len(as_json)  # 497 JSON bytes were a third of a small frame's file


def test_damaged_or_foreign_packed_sets_are_refused() -> None:
    architecture = _architecture("coolchic", C3Net)
    packed = pack_parameter_set("models.c3.C3Net", architecture, C3Net.ARCHITECTURE_FIELDS)
    with pytest.raises(BitstreamError, match="ends early"):
        unpack_parameter_set(packed[:-3], C3Net.ARCHITECTURE_FIELDS, "f", _given(architecture))
    with pytest.raises(BitstreamError, match="after the parameter set"):
        unpack_parameter_set(packed + b"\x00", C3Net.ARCHITECTURE_FIELDS, "f", _given(architecture))
    with pytest.raises(BitstreamError, match="other fields"):
        unpack_parameter_set(packed, HiNeRV.ARCHITECTURE_FIELDS, "f", _given(architecture))
    with pytest.raises(BitstreamError, match="packed parameter set"):
        packed_target(b"\xa7\x09" + packed[2:], "f")
    fields = C3Net.ARCHITECTURE_FIELDS
    with pytest.raises(BitstreamError, match="is not"):
        pack_parameter_set("models.c3.C3Net", {**architecture, "levels": 99}, fields)


def test_registered_classes_take_one_byte_and_older_versions_are_read() -> None:
    """Version 3 names C3Net by its id (1 byte instead of 16); version 2 sets (the name) still read."""
    from nvc_train.bitstream.architecture import CLASS_IDS

    architecture = _architecture("coolchic", C3Net)
    fields = C3Net.ARCHITECTURE_FIELDS
    packed = pack_parameter_set("models.c3.C3Net", architecture, fields)
    assert packed[:3] == b"\xa7\x03" + bytes([CLASS_IDS["models.c3.C3Net"]])
    version2 = _version2("models.c3.C3Net", architecture, fields)
    assert len(version2) == len(packed) + 15 + 8  # the name, and the header's fields (8 bytes at QCIF)
    assert packed_target(version2, "f") == "models.c3.C3Net"
    given = _given(architecture)
    assert unpack_parameter_set(version2, fields, "f", given) == unpack_parameter_set(
        packed, fields, "f", given
    )
    assert unpack_parameter_set(packed, fields, "f", given) == architecture
    with pytest.raises(BitstreamError, match="class id 99 is not one this reader knows"):
        packed_target(packed[:2] + b"\x63" + packed[3:], "f")
    with pytest.raises(BitstreamError, match="height = 99999 is not"):  # the header's values, checked too
        unpack_parameter_set(packed, fields, "f", {**given, "height": 99999})


def _version2(target: str, architecture: dict, fields: dict) -> bytes:
    """A version-2 set as FORMAT.md describes it: the class name, every field (scalars only here)."""
    from nvc_train.bitstream import architecture as packing

    name = target.encode()
    out = b"\xa7\x02" + packing._varint(len(name)) + name + struct.pack(">I", packing._fields_crc(fields))
    for key in sorted(fields):
        kind, value = fields[key].kind, architecture[key]
        if kind == "int":
            out += packing._varint(packing._zigzag(value))
        elif kind == "float":
            out += packing._pack_float(value)
        elif kind == "bool":
            out += bytes([int(value)])
        elif kind == "str":
            out += bytes([fields[key].choices.index(value)])
        elif kind == "ints":
            out += packing._varint(len(value)) + b"".join(packing._varint(packing._zigzag(v)) for v in value)
        else:
            out += packing._varint(len(value)) + b"".join(packing._pack_float(v) for v in value)
    return out


def test_floats_pack_in_a_few_bytes_when_dyadic_and_exactly_either_way() -> None:
    """Configs' floats (-3.0, 0.125, 0) take 2 bytes each, any other float 9, and all come back equal;
    a version 1 set (every float as float64) is still read."""
    from nvc_train.bitstream.architecture import ArchitectureField

    fields = {
        "a": ArchitectureField("float", -1e9, 1e9),
        "b": ArchitectureField("floats", -1e9, 1e9, max_items=4),
    }
    values = {"a": -3.0, "b": [0.125, 0.0, 0.1, 1e-7]}
    packed = pack_parameter_set("x.Y", values, fields)  # a class without an id: 0, then its name
    header = 2 + 1 + 1 + 3 + 4
    assert len(packed) == header + 2 + (1 + 2 + 2 + 9 + 9)
    assert packed_target(packed, "f") == "x.Y"
    assert unpack_parameter_set(packed, fields, "f", {}) == values
    old = bytearray(packed[:2] + packed[3:header])  # versions 1 and 2 had no id byte
    old[1] = 1
    old += struct.pack(">d", -3.0) + bytes([4]) + b"".join(struct.pack(">d", v) for v in values["b"])
    assert unpack_parameter_set(bytes(old), fields, "f", {}) == values
    with pytest.raises(BitstreamError, match="shift"):
        unpack_parameter_set(packed[:header] + bytes([70, 5]) + packed[header + 2 :], fields, "f", {})


def test_a_file_is_not_written_with_an_architecture_its_header_contradicts(tmp_path: Path) -> None:
    """Version 3 leaves the geometry to the header, so the writer refuses a network built for another."""
    from nvc_train.bitstream import AdaptivePayload, StreamHeader
    from nvc_train.codecs.adaptive import write_adaptive_stream

    architecture = _architecture("coolchic", C3Net)  # 176 x 144, 3 frames, ra, gop 2
    header = StreamHeader("coolchic", b"", 176, 144, 8, 3, 30, 1, "ra", -1, 2, 0)
    write_adaptive_stream(tmp_path / "ok.nvc", header, "models.c3.C3Net", architecture,
                          AdaptivePayload(b"w", [b"", b"", b""]))  # fmt: skip
    wide = StreamHeader("coolchic", b"", 352, 144, 8, 3, 30, 1, "ra", -1, 2, 0)
    with pytest.raises(BitstreamError, match="width 176 \\(header: 352\\)"):
        write_adaptive_stream(tmp_path / "bad.nvc", wide, "models.c3.C3Net", architecture,
                              AdaptivePayload(b"w", [b"", b"", b""]))  # fmt: skip
    assert not (tmp_path / "bad.nvc").exists()
