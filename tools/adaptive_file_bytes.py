"""Bytes of a scene-adaptive file of ours, part by part: container, parameter set, each core's (or
module's) weights, each frame's latents.

    .venv/bin/python tools/adaptive_file_bytes.py FILE.nvc [--depth 2]

The weights of a file are one payload; a part's share is measured by coding that part's decoded
weights again on their own with the steps the file chose (``ParameterCoder.decompress_with_steps``),
so the shares add up to about the payload (each re-coding repeats the payload header and its side
information starts afresh). ``--depth 2`` groups by core (``cores.m1``), 3 by module
(``cores.m1.synthesis``). tools/coolchic_file_bytes.py gives the same split of a Cool-Chic file.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from nvc_train.bitstream import read_stream
from nvc_train.codecs.adaptive import network_parts, read_parameter_set
from nvc_train.entropy.param_coding import HEADER_BYTES, ParameterCoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bitstream", type=Path)
    parser.add_argument("--depth", type=int, default=2, help="name components that make a part")
    args = parser.parse_args()
    where = str(args.bitstream)
    header, units = read_stream(args.bitstream)
    parameter_set, weights, rest = network_parts(units, where)
    net_class, architecture = read_parameter_set(parameter_set, header, where)
    net = net_class(**architecture)
    coder = ParameterCoder.from_module(net, include=lambda name, _t: net.is_network_parameter(name))
    values, steps = coder.decompress_with_steps(weights)
    size = args.bitstream.stat().st_size
    container = size - sum(len(unit.payload) for unit in units)
    print(f"{where}: {size} bytes; container {container}, parameter set {len(parameter_set)}, "
          f"weights {len(weights)}")  # fmt: skip
    parts: dict[str, list[str]] = defaultdict(list)
    for name in coder.names:
        parts[".".join(name.split(".")[: args.depth])].append(name)
    for part, names in parts.items():
        alone = ParameterCoder({name: values[name].shape for name in names})
        alone.set_step_indexes(steps)
        coded = len(alone.compress({name: values[name] for name in names})) - HEADER_BYTES
        count = sum(values[name].numel() for name in names)
        nonzero = sum(int((values[name] != 0).sum()) for name in names)
        print(f"  weights {part:28s} {coded:6d} bytes  ({nonzero} of {count} nonzero)")
    frames = [unit for unit in rest if unit.is_frame]
    print("  frames' latents (coding order):", ", ".join(str(len(unit.payload)) for unit in frames), "bytes")


if __name__ == "__main__":
    main()
