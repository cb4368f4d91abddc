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


@pytest.mark.parametrize(
    ("model", "message"),
    [("dcvc_fm", "no DCVC-FM source under"), ("dcvc_dc", "no DCVC-DC source under")],
)
def test_each_model_looks_for_its_own_official_folder(model, message, tmp_path):
    bench = _bench()
    with pytest.raises(SystemExit, match=message):
        bench.main(["--official-src", str(tmp_path), "--model", model, "--tensor-only"])


def test_an_unknown_model_is_refused(tmp_path, capsys):
    bench = _bench()
    with pytest.raises(SystemExit):
        bench.main(["--official-src", str(tmp_path), "--model", "dcvc_hem"])
    assert "invalid choice: 'dcvc_hem'" in capsys.readouterr().err


def test_fm_and_dc_adapters_call_their_official_signatures():
    """FM: intra compress(x, q), P compress(x, dpb, q, adaptor); DC: intra compress(x, False, q), P
    compress(x, dpb, False, q, frame index mod 4); DC rebuilds its rate tables after the fill."""
    bench = _bench()

    class Recorder:
        def compress(self, *arguments):
            return arguments

    net = Recorder()
    fm, dc = bench.FAMILY["dcvc_fm"], bench.FAMILY["dcvc_dc"]
    assert fm["intra_compress"](net, "x", 7) == ("x", 7)
    assert fm["inter_compress"](net, "x", "dpb", 7, 5, 2) == ("x", "dpb", 7, 2)
    assert dc["intra_compress"](net, "x", 7) == ("x", False, 7)
    assert dc["inter_compress"](net, "x", "dpb", 7, 5, 2) == ("x", "dpb", False, 7, 1)
    assert (fm["intra_class"], dc["intra_class"]) == ("DMCI", "IntraNoAR")
    assert (fm["rebuild_rate_tables"], dc["rebuild_rate_tables"]) == (False, True)
    assert set(bench.LABELS) == {"dcvc_rt", *bench.FAMILY}
