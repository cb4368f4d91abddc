"""Coding structures of the common test conditions (CTC): low delay, random access, all intra.

A :class:`CodingStructure` is a small frozen value object. It is what the evaluation runner hands to
every codec, so that "ra" means one thing whether the codec is x265, VTM or a neural codec:

* ``ld`` - low delay: frames are coded in display order, the first frame (and every ``intra_period``-th
  one, unless ``intra_period`` is -1) intra, every other frame predicted from the previous one.
  NVC practice codes 96 frames with intra period 96 (or -1).
* ``ra`` - random access: hierarchical B. Every ``gop_size``-th frame is a key picture, coded first
  and predicted from the previous key picture (``P``) or intra (``I`` at multiples of
  ``intra_period``); the frames between two key pictures are coded by recursive bisection, each
  predicted from the two nearest already-coded frames around it (``B``). An intra picture inside the
  sequence is *open-GOP* (like VTM's CRA): the B frames just before it reference it.
* ``ai`` - all intra: every frame ``I``.

``frames(n)`` yields the coding order with each frame's display index (``poc``), type, temporal
layer and references; a codec that reorders frames can follow it, and tests can check a codec's
stream against it. Frame types are descriptive: ``P`` has only past references, ``B`` has at least
one reference that comes later in display order.

The last, incomplete GOP of a random-access sequence is coded the way HM / VTM and x265 do: its last
frame becomes the key picture of a shortened GOP and the frames before it are bisected as usual.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

Kind = Literal["ld", "ra", "ai"]
FrameType = Literal["I", "P", "B"]

KINDS: dict[str, str] = {"ld": "low delay", "ra": "random access", "ai": "all intra"}


@dataclass(frozen=True)
class CodedFrame:
    """One frame of a coding structure, as the encoder meets it.

    ``poc`` is the display index (0-based, relative to the first coded frame), ``coding_index`` its
    position in coding order, ``refs`` the display indices of the frames it is predicted from (all
    coded before it), ``temporal_layer`` its depth in the hierarchy (0 for I / key pictures).
    """

    poc: int
    coding_index: int
    frame_type: FrameType
    temporal_layer: int = 0
    refs: tuple[int, ...] = ()

    @property
    def depth(self) -> int:
        """Alias of ``temporal_layer`` (the name used by hierarchical-B literature)."""
        return self.temporal_layer


def _is_int(value: object) -> bool:
    # bool is an int subclass; "intra_period: true" in a config is a mistake, not 1.
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class CodingStructure:
    """``kind`` ("ld" | "ra" | "ai"), ``intra_period`` (frames, -1 = first frame only, "auto" for ra),
    ``gop_size`` (1 for ld / ai; a power of two for ra).

    Invalid combinations raise ``ValueError`` at construction, so a bad config fails before any
    encoder runs. ``intra_period="auto"`` (random access only) means "about one second": it is
    resolved against a sequence's frame rate by :meth:`resolve` (or built directly with
    :meth:`for_fps`), and :meth:`frames` refuses an unresolved structure rather than guessing 30 fps.
    """

    kind: Kind = "ld"
    intra_period: int | str = 96
    gop_size: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"coding structure kind must be one of {sorted(KINDS)}, got {self.kind!r}")
        if not _is_int(self.gop_size) or self.gop_size < 1:
            raise ValueError(f"gop_size must be a positive integer, got {self.gop_size!r}")
        ip = self.intra_period
        if ip == "auto":
            if self.kind != "ra":
                raise ValueError(
                    f"intra_period='auto' (about one second) is for 'ra' only, not {self.kind!r}"
                )
        elif not _is_int(ip) or (ip < 1 and ip != -1):
            raise ValueError(f"intra_period must be a positive integer, -1 or 'auto', got {ip!r}")
        if self.kind == "ai":
            if self.gop_size != 1 or ip != 1:
                raise ValueError(
                    f"'ai' codes every frame intra: intra_period and gop_size must be 1, "
                    f"got intra_period={ip!r}, gop_size={self.gop_size}"
                )
        elif self.kind == "ld":
            if self.gop_size != 1:
                raise ValueError(
                    f"'ld' codes frames in display order: gop_size must be 1, got {self.gop_size}"
                )
        else:  # ra
            gop = self.gop_size
            if gop < 2 or gop & (gop - 1):
                raise ValueError(f"'ra' needs a power-of-two gop_size >= 2 (e.g. 16 or 32), got {gop}")
            if _is_int(ip) and ip != -1 and ip % gop:
                raise ValueError(
                    f"'ra' needs intra_period a multiple of gop_size {gop} (intra pictures are key "
                    f"pictures), got {ip}; nearest: {max(gop, ip // gop * gop)} or {(ip // gop + 1) * gop}"
                )

    # ---- construction helpers -------------------------------------------------------------------

    @staticmethod
    def nearest_intra_period(fps: float, gop_size: int) -> int:
        """The multiple of ``gop_size`` nearest to one second of video (at least one GOP).

        This is the CTC rule for random access (e.g. 32 at 30 fps and 64 at 60 fps with GOP 16, 48 at
        50 fps); halves round up, so 24 fps with GOP 16 gives 32.
        """
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        return max(1, math.floor(fps / gop_size + 0.5)) * gop_size

    @classmethod
    def for_fps(cls, fps: float, kind: Kind = "ra", gop_size: int = 16) -> CodingStructure:
        """A random-access structure whose intra period is about one second at ``fps``."""
        if kind != "ra":
            raise ValueError(f"for_fps() builds a random-access structure, not {kind!r}")
        return cls("ra", cls.nearest_intra_period(fps, gop_size), gop_size)

    def resolve(self, fps: float) -> CodingStructure:
        """This structure with ``intra_period="auto"`` replaced by its value at ``fps`` (else itself)."""
        if self.intra_period == "auto":
            return replace(self, intra_period=self.nearest_intra_period(fps, self.gop_size))
        return self

    @property
    def is_resolved(self) -> bool:
        return self.intra_period != "auto"

    def _resolved_intra_period(self) -> int:
        if not self.is_resolved:
            raise ValueError(
                f"{self} has intra_period='auto': call .resolve(fps) with the sequence's frame rate first"
            )
        return int(self.intra_period)

    # ---- what encoders need ---------------------------------------------------------------------

    def keyint(self, num_frames: int) -> int:
        """Distance between intra frames in the sense of encoders' ``keyint`` / ``-g``.

        ``intra_period=-1`` becomes ``num_frames + 1`` so that only the first frame is intra whatever
        the encoder's own notion of "infinite".
        """
        ip = self._resolved_intra_period()
        return ip if ip > 0 else max(num_frames, 0) + 1

    def is_intra(self, poc: int) -> bool:
        """Whether the frame at display index ``poc`` is intra in this structure."""
        ip = self._resolved_intra_period()
        return poc == 0 or (ip > 0 and poc % ip == 0)

    def frames(self, num_frames: int) -> list[CodedFrame]:
        """The ``num_frames`` frames in coding order, each with its type, layer and references."""
        if not _is_int(num_frames) or num_frames < 0:
            raise ValueError(f"num_frames must be a non-negative integer, got {num_frames!r}")
        self._resolved_intra_period()
        if self.kind == "ra":
            return self._random_access(num_frames)
        out = []
        for poc in range(num_frames):
            if self.is_intra(poc):
                out.append(CodedFrame(poc, poc, "I"))
            else:
                out.append(CodedFrame(poc, poc, "P", 0, (poc - 1,)))
        return out

    def _random_access(self, num_frames: int) -> list[CodedFrame]:
        out: list[CodedFrame] = []

        def emit(poc: int, frame_type: FrameType, layer: int, refs: tuple[int, ...]) -> None:
            out.append(CodedFrame(poc, len(out), frame_type, layer, refs))

        def bisect(left: int, right: int, layer: int) -> None:
            # Depth-first, left half first: VTM's GOP-16 order 16 8 4 2 1 3 6 5 7 12 10 9 11 14 13 15.
            if right - left < 2:
                return
            mid = (left + right) // 2
            emit(mid, "B", layer, (left, right))
            bisect(left, mid, layer + 1)
            bisect(mid, right, layer + 1)

        if num_frames == 0:
            return out
        emit(0, "I", 0, ())
        previous_key = 0
        while previous_key < num_frames - 1:
            key = min(previous_key + self.gop_size, num_frames - 1)
            if self.is_intra(key):
                emit(key, "I", 0, ())
            else:
                emit(key, "P", 0, (previous_key,))
            bisect(previous_key, key, 1)
            previous_key = key
        return out

    # ---- display --------------------------------------------------------------------------------

    def __str__(self) -> str:
        return f"{self.kind}(intra_period={self.intra_period}, gop_size={self.gop_size})"

    def describe(self, num_frames: int | None = None) -> str:
        """A small text diagram: display order, type, layer, coding index, and the coding order.

        By default it shows one intra period plus one frame for ra (capped at 33), 9 frames for ld,
        8 for ai; an unresolved "auto" structure is shown at 30 fps.
        """
        structure = self.resolve(30.0)
        if num_frames is None:
            ip = int(structure.intra_period)
            if self.kind == "ra":
                num_frames = min((ip if ip > 0 else 2 * self.gop_size) + 1, 33)
            else:
                num_frames = 9 if self.kind == "ld" else 8
        frames = structure.frames(num_frames)
        by_poc = sorted(frames, key=lambda f: f.poc)
        ip_text = "first frame only" if structure.intra_period == -1 else str(structure.intra_period)
        if self.intra_period == "auto":
            ip_text += " (auto, shown at 30 fps)"
        header = f"{self.kind}: {KINDS[self.kind]}, gop_size {self.gop_size}, intra period {ip_text}"
        width = len(str(max(num_frames - 1, 0))) + 1

        def row(label: str, values: list[object]) -> str:
            return f"{label:<9}" + "".join(f"{v!s:>{width}}" for v in values)

        lines = [
            header,
            row("display", [f.poc for f in by_poc]),
            row("type", [f.frame_type for f in by_poc]),
            row("layer", [f.temporal_layer for f in by_poc]),
            row("coded", [f.coding_index for f in by_poc]),
            "coding order: " + " ".join(str(f.poc) for f in frames),
        ]
        return "\n".join(lines)
