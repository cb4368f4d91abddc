"""RD points from outside (a lab's VTM runs, a paper's figures) imported from a points.csv-like file.

Imported points are not encoded here, so they have no bitstream and no timing; they take part in
BD-rate tables and RD plots like measured points. The file needs the columns ``sequence``,
``rate_point``, ``bpp`` (or ``bits`` with ``width``, ``height``, ``frames``) and at least one quality
column of points.csv; ``codec``/``family`` columns are optional.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nvc_train.codecs.base import CodecError, Family
from nvc_train.ctc import CTCSequence

_QUALITY = ("psnr_y", "psnr_u", "psnr_v", "psnr_yuv", "msssim_y", "msssim_yuv", "vmaf", "lpips")
_NUMERIC = ("rate_point", "width", "height", "frames", "fps", "bits", "bpp", "kbps", *_QUALITY)


class ImportedPoints:
    """An anchor (or extra codec) whose RD points come from a CSV file rather than from encoding."""

    imported = True

    def __init__(self, path: str | Path, name: str = "imported", family: Family = "conventional") -> None:
        self.path = Path(path)
        self.name = name
        self.family = family
        if not self.path.is_file():
            raise CodecError(f"anchor points file not found: {self.path} (set anchor.path=FILE.csv)")

    def description(self) -> str:
        return f"points imported from {self.path}"

    def rows_for(self, sequences: Sequence[CTCSequence]) -> list[dict[str, Any]]:
        """The file's rows for ``sequences`` (matched by sequence name), in points.csv form."""
        with self.path.open(newline="") as handle:
            table = list(csv.DictReader(handle))
        if not table:
            raise CodecError(f"{self.path} holds no rows")
        columns = set(table[0])
        if "sequence" not in columns or "rate_point" not in columns:
            raise CodecError(
                f"{self.path} needs 'sequence' and 'rate_point' columns; it has {sorted(columns)}"
            )
        if "bpp" not in columns and not {"bits", "width", "height", "frames"} <= columns:
            raise CodecError(f"{self.path} needs a 'bpp' column (or 'bits', 'width', 'height', 'frames')")
        if not columns & set(_QUALITY):
            raise CodecError(f"{self.path} has no quality column (one of {', '.join(_QUALITY)})")

        codecs_in_file = {r.get("codec") for r in table} - {None, ""}
        if len(codecs_in_file) > 1:  # a multi-codec file: take only the rows named like this anchor
            table = [r for r in table if r.get("codec") == self.name]
            if not table:
                raise CodecError(
                    f"{self.path} has points of {sorted(codecs_in_file)}; set anchor.name to one of them"
                )

        wanted = {seq.name: seq for seq in sequences}
        rows = []
        for raw in table:
            seq = wanted.get(raw["sequence"])
            if seq is None:
                continue
            row: dict[str, Any] = {
                key: _number(value) if key in _NUMERIC else value for key, value in raw.items()
            }
            row.update(codec=self.name, family=raw.get("family") or self.family, **{"class": seq.test_set})
            if row.get("bpp") in (None, ""):
                row["bpp"] = row["bits"] / (row["width"] * row["height"] * row["frames"])
            rows.append(row)
        missing = sorted(set(wanted) - {row["sequence"] for row in rows})
        if missing:
            raise CodecError(f"{self.path} has no points for: {', '.join(missing)}")
        return rows


def _number(value: str | None) -> float | int | None:
    if value is None or value.strip() == "":
        return None
    number = float(value)
    return int(number) if number.is_integer() and "." not in value else number
