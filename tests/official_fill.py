"""The fill rule of tests/fixtures/official/README.md, once for every official-equivalence test.

Uniform values from integer arithmetic only (splitmix64 of ``crc32(name) * 2**32 + i``), so any
implementation, ours or the official code's venv, fills a tensor with exactly the same numbers; the
fixture's SHA digests prove it.
"""

from __future__ import annotations

import math
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 on uint64 arrays (arithmetic mod 2**64)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def fill(name: str, shape: tuple[int, ...], lo: float, hi: float) -> np.ndarray:
    """``float32(lo + (hi - lo) * u_i)``, ``u_i`` from splitmix64 of crc32(name) * 2**32 + i."""
    seed = np.uint64(zlib.crc32(name.encode("utf-8"))) << np.uint64(32)
    with np.errstate(over="ignore"):
        words = _splitmix64(seed + np.arange(math.prod(shape), dtype=np.uint64))
    u = (words >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return (lo + (hi - lo) * u).astype(np.float32).reshape(shape)


def run_convert(converter: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m nvc_train.convert CONVERTER ARGS`` from the repository root, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "nvc_train.convert", converter, *args],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=600,
    )
