"""Coding structures: orders and references for small cases, invariants, validation, configs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nvc_train.structure import CodedFrame, CodingStructure

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "structure"


def check_invariants(structure: CodingStructure, n: int) -> list[CodedFrame]:
    """Every display index coded once, coding indices 0..n-1, references already coded and distinct."""
    frames = structure.frames(n)
    assert sorted(f.poc for f in frames) == list(range(n))
    assert [f.coding_index for f in frames] == list(range(n))
    coded: set[int] = set()
    for frame in frames:
        assert set(frame.refs) <= coded, f"frame {frame.poc} references a frame not yet coded"
        assert frame.poc not in frame.refs
        assert len(set(frame.refs)) == len(frame.refs)
        if frame.frame_type == "I":
            assert frame.refs == ()
        elif frame.frame_type == "P":
            assert frame.refs and all(r < frame.poc for r in frame.refs)
        else:
            assert any(r > frame.poc for r in frame.refs) and any(r < frame.poc for r in frame.refs)
        coded.add(frame.poc)
    if n:
        assert frames[0].poc == 0 and frames[0].frame_type == "I"
    return frames


# ---- all intra ----------------------------------------------------------------------------------


def test_ai_every_frame_intra_in_display_order() -> None:
    frames = check_invariants(CodingStructure("ai", 1, 1), 7)
    assert [(f.poc, f.frame_type, f.refs, f.temporal_layer) for f in frames] == [
        (i, "I", (), 0) for i in range(7)
    ]


# ---- low delay ----------------------------------------------------------------------------------


def test_ld_p_frames_reference_the_previous_frame() -> None:
    frames = check_invariants(CodingStructure("ld", 96, 1), 6)
    assert [f.frame_type for f in frames] == ["I", "P", "P", "P", "P", "P"]
    assert [f.refs for f in frames] == [(), (0,), (1,), (2,), (3,), (4,)]
    assert [f.poc for f in frames] == list(range(6))


def test_ld_intra_period() -> None:
    frames = CodingStructure("ld", 4, 1).frames(10)
    assert "".join(f.frame_type for f in frames) == "IPPPIPPPIP"
    assert frames[4].refs == () and frames[5].refs == (4,)


def test_ld_intra_period_minus_one_is_first_frame_only() -> None:
    structure = CodingStructure("ld", -1, 1)
    assert "".join(f.frame_type for f in structure.frames(200)) == "I" + "P" * 199
    assert structure.keyint(96) == 97


# ---- random access ------------------------------------------------------------------------------


def test_ra_gop8_order_layers_and_references() -> None:
    frames = check_invariants(CodingStructure("ra", 8, 8), 9)
    assert [f.poc for f in frames] == [0, 8, 4, 2, 1, 3, 6, 5, 7]
    table = {f.poc: (f.frame_type, f.temporal_layer, f.refs) for f in frames}
    assert table == {
        0: ("I", 0, ()),
        8: ("I", 0, ()),  # intra period 8: the key picture is intra (open GOP: B frames use it)
        4: ("B", 1, (0, 8)),
        2: ("B", 2, (0, 4)),
        6: ("B", 2, (4, 8)),
        1: ("B", 3, (0, 2)),
        3: ("B", 3, (2, 4)),
        5: ("B", 3, (4, 6)),
        7: ("B", 3, (6, 8)),
    }


def test_ra_gop16_matches_vtm_coding_order() -> None:
    frames = check_invariants(CodingStructure("ra", 32, 16), 17)
    assert [f.poc for f in frames] == [0, 16, 8, 4, 2, 1, 3, 6, 5, 7, 12, 10, 9, 11, 14, 13, 15]
    key = frames[1]
    assert (key.frame_type, key.refs, key.temporal_layer) == ("P", (0,), 0)
    layers = {f.poc: f.temporal_layer for f in frames}
    assert [layers[p] for p in (8, 4, 12, 2, 6, 10, 14)] == [1, 2, 2, 3, 3, 3, 3]
    assert all(layers[p] == 4 for p in range(1, 16, 2))
    assert max(f.temporal_layer for f in frames) == 4


def test_ra_intra_period_places_open_gop_intra_frames() -> None:
    frames = check_invariants(CodingStructure("ra", 32, 16), 40)
    types = {f.poc: f.frame_type for f in frames}
    assert [p for p, t in sorted(types.items()) if t == "I"] == [0, 32]
    assert types[16] == "P"
    by_poc = {f.poc: f for f in frames}
    assert by_poc[24].refs == (16, 32)  # B frames before the intra picture reference it (like CRA)
    assert by_poc[32].coding_index < by_poc[24].coding_index


def test_ra_truncated_last_gop() -> None:
    # 13 frames, GOP 8: the last GOP holds 4 frames; its last frame (12) becomes the key picture.
    frames = check_invariants(CodingStructure("ra", 16, 8), 13)
    assert [f.poc for f in frames] == [0, 8, 4, 2, 1, 3, 6, 5, 7, 12, 10, 9, 11]
    by_poc = {f.poc: f for f in frames}
    assert (by_poc[12].frame_type, by_poc[12].refs) == ("P", (8,))
    assert by_poc[10].refs == (8, 12) and by_poc[9].refs == (8, 10) and by_poc[11].refs == (10, 12)


def test_ra_gop_longer_than_sequence() -> None:
    frames = check_invariants(CodingStructure("ra", 32, 16), 5)
    assert [(f.poc, f.frame_type) for f in frames] == [(0, "I"), (4, "P"), (2, "B"), (1, "B"), (3, "B")]
    assert check_invariants(CodingStructure("ra", 32, 16), 1) == [CodedFrame(0, 0, "I")]
    assert CodingStructure("ra", 32, 16).frames(0) == []


@given(
    kind_gop=st.sampled_from([("ld", 1), ("ai", 1), ("ra", 2), ("ra", 4), ("ra", 8), ("ra", 16), ("ra", 32)]),
    periods=st.integers(min_value=-1, max_value=4),
    n=st.integers(min_value=0, max_value=100),
)
def test_invariants_hold_for_any_structure(kind_gop: tuple[str, int], periods: int, n: int) -> None:
    kind, gop = kind_gop
    if kind == "ai":
        intra_period = 1
    elif periods <= 0:
        intra_period = -1
    else:
        intra_period = periods * gop * (1 if kind == "ra" else 7)
    structure = CodingStructure(kind, intra_period, gop)
    frames = check_invariants(structure, n)
    for frame in frames:
        assert (frame.frame_type == "I") == structure.is_intra(frame.poc)
        if kind == "ra":
            assert frame.temporal_layer <= gop.bit_length() - 1 + (n % gop != 0)


# ---- intra period "about one second" ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fps", "gop", "expected"),
    [
        (30, 16, 32),
        (60, 16, 64),
        (50, 16, 48),
        (25, 16, 32),
        (24, 16, 32),
        (29.97, 16, 32),
        (60, 32, 64),
        (8, 16, 16),
    ],
)
def test_intra_period_for_fps(fps: float, gop: int, expected: int) -> None:
    assert CodingStructure.nearest_intra_period(fps, gop) == expected
    assert CodingStructure.for_fps(fps, gop_size=gop) == CodingStructure("ra", expected, gop)


def test_auto_intra_period_resolves_against_fps() -> None:
    auto = CodingStructure("ra", "auto", 16)
    assert not auto.is_resolved
    assert auto.resolve(60).intra_period == 64
    assert CodingStructure("ld", 96, 1).resolve(60) == CodingStructure("ld", 96, 1)
    with pytest.raises(ValueError, match="resolve"):
        auto.frames(10)


# ---- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "lowdelay"}, "kind"),
        ({"kind": "ra", "intra_period": 32, "gop_size": 12}, "power-of-two"),
        ({"kind": "ra", "intra_period": 24, "gop_size": 16}, "multiple of gop_size"),
        ({"kind": "ra", "intra_period": 32, "gop_size": 1}, "power-of-two"),
        ({"kind": "ld", "intra_period": 0, "gop_size": 1}, "intra_period"),
        ({"kind": "ld", "intra_period": -5, "gop_size": 1}, "intra_period"),
        ({"kind": "ld", "intra_period": 96, "gop_size": 4}, "gop_size must be 1"),
        ({"kind": "ld", "intra_period": "auto", "gop_size": 1}, "'ra' only"),
        ({"kind": "ai", "intra_period": 8, "gop_size": 1}, "must be 1"),
        ({"kind": "ld", "intra_period": 96, "gop_size": 0}, "positive"),
        ({"kind": "ld", "intra_period": True, "gop_size": 1}, "intra_period"),
    ],
)
def test_invalid_parameters_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CodingStructure(**kwargs)


def test_frames_rejects_negative_count() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        CodingStructure().frames(-1)


def test_structure_is_a_hashable_value() -> None:
    assert CodingStructure("ra", 32, 16) == CodingStructure("ra", 32, 16)
    assert len({CodingStructure("ra", 32, 16), CodingStructure("ra", 32, 16)}) == 1
    with pytest.raises(AttributeError):
        CodingStructure().kind = "ra"  # type: ignore[misc]


def test_describe_draws_the_structure() -> None:
    text = CodingStructure("ra", 32, 16).describe()
    lines = text.splitlines()
    assert lines[0].startswith("ra: random access")
    assert lines[2].split()[1:4] == ["I", "B", "B"]
    assert lines[-1] == "coding order: " + " ".join(
        str(f.poc) for f in CodingStructure("ra", 32, 16).frames(33)
    )
    assert "P P P" in CodingStructure("ld", 96, 1).describe()
    assert "auto" in CodingStructure("ra", "auto", 16).describe()


# ---- configs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ld", CodingStructure("ld", 96, 1)),
        ("ra", CodingStructure("ra", 32, 16)),
        ("ai", CodingStructure("ai", 1, 1)),
    ],
)
def test_configs_instantiate(name: str, expected: CodingStructure) -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    assert instantiate(OmegaConf.load(CONFIGS / f"{name}.yaml")) == expected
