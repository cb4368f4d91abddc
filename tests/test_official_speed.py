"""bench/official_speed.py without the official code: its timing helper and its refusals.

The comparison itself needs the user's checkout of microsoft/DCVC (``--official-src``), which the
project does not hold; these check what runs without it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("official_speed", ROOT / "bench" / "official_speed.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_interleaved_alternates_the_sides_and_keeps_the_median_of_timed_rounds(monkeypatch):
    bench = _bench()
    calls: list[str] = []
    clock = iter(range(1000))
    monkeypatch.setattr(bench.time, "perf_counter", lambda: float(next(clock)))

    def job(name: str, cost: int):
        def run() -> None:
            calls.append(name)
            for _ in range(cost - 1):  # each extra tick is one more second on the fake clock
                next(clock)

        return run

    jobs = {"m": {"ours": job("ours", 1), "official": job("official", 3)}}
    medians = bench.interleaved(jobs, repeats=3, warmup=1)
    assert calls == ["ours", "official", "official", "ours", "ours", "official", "official", "ours"]
    assert medians == {"m": {"ours": 1.0, "official": 3.0}}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--height", "250"], "multiples of 16"),
        (["--frames", "1"], "--frames must be in"),
        (["--q", "64"], "--q must be in"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(arguments, message, tmp_path, capsys):
    bench = _bench()
    with pytest.raises(SystemExit):
        bench.main(["--official-src", str(tmp_path), *arguments])
    assert message in capsys.readouterr().err


def test_a_folder_without_the_official_code_is_named(tmp_path):
    bench = _bench()
    with pytest.raises(SystemExit, match="no DCVC-RT source under"):
        bench.main(["--official-src", str(tmp_path), "--tensor-only"])
