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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nvc_train.bitstream.container import BitstreamError

__all__ = ["ArchitectureField", "check_architecture"]

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
