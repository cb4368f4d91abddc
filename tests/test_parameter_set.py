"""The packed parameter set of scene-adaptive files: round trip, size and refusals."""

from __future__ import annotations

import json

import pytest
import yaml

from models.c3 import C3Net
from models.hinerv import HiNeRV
from nvc_train.bitstream import BitstreamError
from nvc_train.bitstream.architecture import pack_parameter_set, packed_target, unpack_parameter_set
from tests.conftest import REPO_ROOT


def _architecture(name: str, cls: type) -> dict:
    config = yaml.safe_load((REPO_ROOT / f"configs/model/{name}.yaml").read_text())
    config.pop("_target_")
    net = cls(height=144, width=176, num_frames=3, structure="ra", intra_period=-1, gop_size=2, **config)
    return net.architecture


@pytest.mark.parametrize(("name", "cls"), [("coolchic", C3Net), ("c3", C3Net), ("hinerv_tiny", HiNeRV)])
def test_packed_parameter_set_round_trips_and_is_small(name: str, cls: type) -> None:
    architecture = _architecture(name, cls)
    target = f"{cls.__module__}.{cls.__qualname__}"
    packed = pack_parameter_set(target, architecture, cls.ARCHITECTURE_FIELDS)
    assert packed_target(packed, "here") == target
    assert unpack_parameter_set(packed, cls.ARCHITECTURE_FIELDS, "here") == architecture
    as_json = json.dumps({"target": target, "architecture": architecture}, separators=(",", ":"))
    assert len(packed) * 3 < len(as_json)  # 497 JSON bytes were a third of a small frame's file


def test_damaged_or_foreign_packed_sets_are_refused() -> None:
    architecture = _architecture("coolchic", C3Net)
    packed = pack_parameter_set("models.c3.C3Net", architecture, C3Net.ARCHITECTURE_FIELDS)
    with pytest.raises(BitstreamError, match="ends early"):
        unpack_parameter_set(packed[:-3], C3Net.ARCHITECTURE_FIELDS, "f")
    with pytest.raises(BitstreamError, match="after the parameter set"):
        unpack_parameter_set(packed + b"\x00", C3Net.ARCHITECTURE_FIELDS, "f")
    with pytest.raises(BitstreamError, match="other fields"):
        unpack_parameter_set(packed, HiNeRV.ARCHITECTURE_FIELDS, "f")
    with pytest.raises(BitstreamError, match="packed parameter set"):
        packed_target(b"\xa7\x09" + packed[2:], "f")
    fields = C3Net.ARCHITECTURE_FIELDS
    with pytest.raises(BitstreamError, match="is not"):
        pack_parameter_set("models.c3.C3Net", {**architecture, "levels": 99}, fields)
