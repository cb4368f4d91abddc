"""Crafted scene-adaptive streams: each decodes or fails with a BitstreamError, in bounded time and memory.

The container's CRCs stop damaged files (tests/test_bitstream_fuzz.py); these files are *crafted*:
the architecture record, the header or the weights unit is changed and the weights hash and every
CRC are signed again, so the architecture decoder is reached. 2,000 cases are made from three
real streams (C3 low delay with sequence-level grids, C3 random access, HiNeRV); each run decodes
a sample of them in one worker process under ``ulimit -v`` and checks, per case: the outcome is a
decode or a ``BitstreamError`` (nothing else), the time is under 10 s, and the case's peak resident
memory stayed within 1 GB of what the process held before it. ``NVC_FUZZ_SEED`` replays a sample; the seed of
each run is in the failure message. Run this file as a script to decode one folder of cases.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from nvc_train.bitstream import (
    KIND_PARAMETER_SET,
    BitstreamError,
    StreamHeader,
    Unit,
    read_stream,
    weights_hash,
    write_stream,
)
from tests.conftest import REPO_ROOT

CASES = 2_000
SAMPLE = int(os.environ.get("NVC_FUZZ_SAMPLE", 300))  # NVC_FUZZ_SAMPLE=2000: every case, ~2 minutes
TIME_LIMIT_S = 10.0
MEMORY_GROWTH_LIMIT = 1 << 30
DECODER_MEMORY_LIMIT = 1 << 30  # what the worker's decoder may plan for (decode_file's memory_limit)
ADDRESS_SPACE_LIMIT = 6_000_000 * 1024  # ulimit -v 6000000, as a user would set it
HOSTILE_VALUES: list[Any] = [
    0, -1, 1, 2, 3, 7, 255, 256, 1 << 20, 10**9, 10**18, 1e9, 1e308, -1e308, 0.5, -0.5,
    math.inf, -math.inf, math.nan, True, False, None, "", "ld", "1", [], [1], [0] * 9, [10**9] * 3,
    {"_target_": "os.system"}, [[1]], 1e-300,
]  # fmt: skip


def _header(width: int, height: int, frames: int, structure: str, gop: int, period: int) -> StreamHeader:
    return StreamHeader(
        codec_id="fuzz", weights_hash=b"\0" * 16, width=width, height=height, bit_depth=8,
        num_frames=frames, fps_num=30, fps_den=1, structure=structure, intra_period=period,
        gop_size=gop, rate_point=0,
    )  # fmt: skip


def _seed_streams(folder: Path) -> list[Path]:
    """Three real streams of random-weight networks (no fitting needed to exercise the decoder)."""
    from models import build_model
    from nvc_train.codecs.adaptive import write_adaptive_stream
    from tests.test_overfit import tiny_net

    torch.manual_seed(0)
    paths = []
    c3_ld = tiny_net(frames=3, structure="ld", shared_latents=True, frame_min_level=2)
    c3_ra = tiny_net(frames=3, structure="ra")
    hinerv = build_model("hinerv_tiny", height=48, width=64, num_frames=3, channels=16)
    for name, net, header in (
        ("c3_ld", c3_ld, _header(62, 46, 3, "ld", 1, -1)),
        ("c3_ra", c3_ra, _header(64, 48, 3, "ra", 2, -1)),
        ("hinerv", hinerv, _header(64, 48, 3, "ld", 1, -1)),
    ):
        with torch.no_grad():
            for latent in getattr(net, "latents", []):
                latent.copy_(torch.randn_like(latent) * 2)
        net.quantize_parameters("ste", init_bits=8)
        payload = net.compress()
        target = f"{type(net).__module__}.{type(net).__qualname__}"
        path = folder / f"{name}.nvc"
        write_adaptive_stream(path, header, target, net.architecture, payload)
        paths.append(path)
    return paths


def _parameter_set_record(payload: bytes, header: StreamHeader) -> dict:
    """A packed parameter set as the JSON-style record ``{"target", "architecture"}``."""
    from nvc_train.bitstream.architecture import packed_target, unpack_parameter_set
    from nvc_train.codecs.adaptive import header_geometry, network_class

    target = packed_target(payload, "fuzz")
    net_class = network_class(target)
    given = header_geometry(net_class, header)
    return {
        "target": target,
        "architecture": unpack_parameter_set(payload, net_class.ARCHITECTURE_FIELDS, "fuzz", given),
    }


def _split(units: list[Unit]) -> list[Unit]:
    """The units of a file with its network unit as the parameter-set and weights units of older
    files (still read), so that each part can be crafted alone."""
    from nvc_train.codecs.adaptive import KIND_WEIGHTS, network_parts

    parameter_set, weights, rest = network_parts(units, "fuzz")
    rate = units[0].rate_point
    return [Unit(KIND_PARAMETER_SET, rate, parameter_set), Unit(KIND_WEIGHTS, rate, weights), *rest]


def _resigned(path: Path, header: StreamHeader, units: list[Unit], joined: bool = False) -> None:
    """Write a crafted stream (``units`` in the two-unit layout of :func:`_split`): the weights hash
    of what it carries, every CRC right; ``joined`` writes the parts as one network unit, as files
    are written now."""
    from nvc_train.bitstream.architecture import join_network
    from nvc_train.codecs.adaptive import KIND_NETWORK

    hashed = weights_hash([("parameter_set", units[0].payload), ("weights", units[1].payload)])
    if joined:
        network = join_network(units[0].payload, units[1].payload)
        units = [Unit(KIND_NETWORK, units[0].rate_point, network), *units[2:]]
        hashed = b""
    write_stream(path, dataclasses.replace(header, weights_hash=hashed), units)


def _mutate(
    rng: random.Random, header: StreamHeader, units: list[Unit]
) -> tuple[StreamHeader, list[Unit], str]:
    """One crafted change, described; most change one architecture field (written back as the JSON
    parameter set older files carry, which the reader still takes, so any value can be written), some
    damage the bytes of the packed parameter set itself."""
    if rng.random() < 0.15:
        packed = bytearray(units[0].payload)
        kind = rng.choice(["flip", "cut", "append"])
        if kind == "flip":
            for _ in range(rng.randint(1, 3)):
                packed[rng.randrange(len(packed))] ^= 1 << rng.randrange(8)
        elif kind == "cut":
            del packed[rng.randrange(1, len(packed)) :]
        else:
            packed += bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        units = [Unit(units[0].kind, units[0].rate_point, bytes(packed)), *units[1:]]
        return header, units, f"packed parameter set: {kind}"
    parameter_set = _parameter_set_record(units[0].payload, header)
    architecture = parameter_set["architecture"]
    choice = rng.random()
    if choice < 0.70:
        key = rng.choice(sorted(architecture))
        value = rng.choice(HOSTILE_VALUES)
        if (
            rng.random() < 0.3
            and isinstance(architecture[key], int | float)
            and not isinstance(architecture[key], bool)
        ):
            value = type(architecture[key])(
                architecture[key] * rng.choice([2, 3, 10, -1]) + rng.choice([0, 1])
            )
        architecture[key] = value
        what = f"{key}={value!r}"
    elif choice < 0.76:
        key = rng.choice(sorted(architecture))
        del architecture[key]
        what = f"no {key}"
    elif choice < 0.80:
        architecture[rng.choice(["extra", "_target_", "levels2"])] = rng.choice(HOSTILE_VALUES)
        what = "an extra field"
    elif choice < 0.86:
        parameter_set["target"] = rng.choice(
            ["models.hinerv.HiNeRV", "models.c3.C3Net", "models.dcvc_rt.DCVCRT", "os.system",
             "models.c3.torch.load", "builtins.eval", 7, None]
        )  # fmt: skip
        what = f"target={parameter_set['target']!r}"
    elif choice < 0.92:
        field = rng.choice(["width", "height", "num_frames"])
        delta = rng.choice([2, 4, -2, 64, 1000])
        value = (
            max(16, getattr(header, field) + delta)
            if field != "num_frames"
            else max(1, header.num_frames + rng.choice([1, -1, 5]))
        )
        header = dataclasses.replace(header, **{field: value})
        what = f"header {field}={value}"
    else:
        weights = bytearray(units[1].payload)
        for _ in range(rng.randint(1, 4)):
            weights[rng.randrange(len(weights))] ^= 1 << rng.randrange(8)
        units = [units[0], Unit(units[1].kind, units[1].rate_point, bytes(weights)), *units[2:]]
        what = "weights bits flipped"
    text = json.dumps(parameter_set, sort_keys=True, allow_nan=True).encode()
    units = [Unit(units[0].kind, units[0].rate_point, text), *units[1:]]
    return header, units, what


def _make_cases(folder: Path) -> list[tuple[Path, str]]:
    seeds = _seed_streams(folder)
    rng = random.Random(0xC3)
    cases = []
    for index in range(CASES):
        seed_path = seeds[index % len(seeds)]
        header, units = read_stream(seed_path)
        header, units, what = _mutate(rng, header, _split(units))
        if header.num_frames != sum(u.is_frame for u in units):  # the container itself refuses it
            frames = [u for u in units if u.is_frame][: header.num_frames]
            while len(frames) < header.num_frames:
                frames.append(frames[-1])
            units = [*units[:2], *frames]
        path = folder / f"case{index:04d}.nvc"
        joined = rng.random() < 0.5
        try:
            _resigned(path, header, units, joined)
        except BitstreamError:  # a header the writer refuses cannot be crafted this way
            continue
        layout = "one network unit" if joined else "two units"
        cases.append((path, f"{seed_path.stem}, {layout}: {what}"))
    return cases


def _status_bytes(key: str) -> int:
    """A memory figure of this process from /proc/self/status (Linux), in bytes."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(key + ":"))


def _reset_peak() -> None:
    """Start the peak resident size (VmHWM) again from the current one, so each case has its own."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def worker(folder: Path) -> None:
    """Decode ``folder/cases.json`` one by one; write outcome, seconds and peak-RSS growth of each."""
    from nvc_train.codecs.adaptive import decode_file

    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))
    torch.set_num_threads(1)
    cases = json.loads((folder / "cases.json").read_text())
    decode_file(cases["plain"], folder / "plain.yuv")  # warm: imports, allocator, a whole decode
    results = []
    for path in cases["sample"]:
        before = _status_bytes("VmRSS")
        _reset_peak()
        started = time.perf_counter()
        try:
            decode_file(path, folder / "out.yuv", memory_limit=DECODER_MEMORY_LIMIT)
            outcome = "decoded"
        except BitstreamError:
            outcome = "BitstreamError"
        except BaseException as error:  # noqa: BLE001 - exactly what the test looks for
            outcome = f"{type(error).__name__}: {str(error)[:200]}"
        seconds = time.perf_counter() - started
        grown = _status_bytes("VmHWM") - before
        results.append({"path": path, "outcome": outcome, "seconds": seconds, "grown": grown})
        (folder / "results.json").write_text(json.dumps(results))


@pytest.mark.slow
def test_crafted_adaptive_streams_decode_or_fail_cleanly_in_bounded_time_and_memory(tmp_path: Path) -> None:
    cases = _make_cases(tmp_path)
    assert len(cases) > 0.9 * CASES
    seed = int(os.environ.get("NVC_FUZZ_SEED", time.time_ns() % 1_000_000))
    sample = random.Random(seed).sample(cases, min(SAMPLE, len(cases)))
    described = {str(path): what for path, what in sample}
    plain = str(tmp_path / "c3_ld.nvc")
    (tmp_path / "cases.json").write_text(json.dumps({"plain": plain, "sample": [str(p) for p, _ in sample]}))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.test_adaptive_fuzz", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    results = (
        json.loads((tmp_path / "results.json").read_text()) if (tmp_path / "results.json").exists() else []
    )
    replay = f"(replay: NVC_FUZZ_SEED={seed})"
    stopped_at = sample[len(results)][1] if len(results) < len(sample) else ""
    assert proc.returncode == 0 and len(results) == len(sample), (
        f"worker stopped after {len(results)} cases, at {stopped_at!r} {replay}\n{proc.stderr[-3000:]}"
    )
    bad = [r for r in results if r["outcome"] not in ("decoded", "BitstreamError")]
    assert not bad, [(described[r["path"]], r["outcome"]) for r in bad[:5]] + [replay]
    slow = [r for r in results if r["seconds"] > TIME_LIMIT_S]
    assert not slow, [(described[r["path"]], round(r["seconds"], 1)) for r in slow[:5]] + [replay]
    grown = max(r["grown"] for r in results)
    assert grown < MEMORY_GROWTH_LIMIT, f"a case's peak memory grew by {grown / 2**20:.0f} MiB {replay}"
    outcomes = {o: sum(r["outcome"] == o for r in results) for o in ("decoded", "BitstreamError")}
    assert outcomes["BitstreamError"] > len(sample) // 2, outcomes  # most crafted changes are refused
    print(f"{len(sample)} crafted streams: {outcomes}, slowest {max(r['seconds'] for r in results):.2f} s, "
          f"largest peak growth {grown / 2**20:.0f} MiB")  # fmt: skip


def test_a_small_stream_decodes_under_ulimit_v_6000000(tmp_path: Path) -> None:
    """The CLI decoder in a shell limited as a cautious user limits it (torch alone takes about half)."""
    stream = _seed_streams(tmp_path)[0]
    proc = subprocess.run(
        ["bash", "-c", f"ulimit -v 6000000 && {sys.executable} -m nvc_train.codecs.adaptive {stream} "
                       f"{tmp_path / 'out.yuv'}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out.yuv").stat().st_size == 62 * 46 * 3 // 2 * 3


def test_cli_refuses_a_crafted_stream_with_one_line(tmp_path: Path) -> None:
    stream = _seed_streams(tmp_path)[2]
    header, units = read_stream(stream)
    units = _split(units)
    parameter_set = _parameter_set_record(units[0].payload, header)
    parameter_set["architecture"]["channels"] = 10**9
    crafted = tmp_path / "crafted.nvc"
    crafted_units = [Unit(units[0].kind, 0, json.dumps(parameter_set).encode()), *units[1:]]
    _resigned(crafted, header, crafted_units, joined=True)
    proc = subprocess.run(
        [sys.executable, "-m", "nvc_train.codecs.adaptive", str(crafted), str(tmp_path / "out.yuv")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "architecture field channels = 1000000000 is not an int in 1..2048" in proc.stderr
    assert not (tmp_path / "out.yuv").exists()


def test_format_md_lists_every_architecture_field_as_the_classes_declare_it() -> None:
    from models.c3 import C3Net
    from models.hinerv import HiNeRV

    text = (REPO_ROOT / "nvc_train/bitstream/FORMAT.md").read_text()
    for cls in (C3Net, HiNeRV):
        for name, field in cls.ARCHITECTURE_FIELDS.items():
            assert f"| `{name}` | {field.describe()} |" in text, f"FORMAT.md: {cls.__name__}.{name}"


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
