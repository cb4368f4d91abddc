"""File bits against the entropy model's estimate, for a trained scene-agnostic codec.

Not a test: a script that prints figures. It codes the embedded set (every clip, all frames, the
model's 4 evaluation rate points, low delay) through the real adapter (``NeuralCodec``: container
files on disk) and prints, per rate point and in total,

- file / estimated: bits of the files over the bits the likelihoods predicted (what tables report),
- payload / estimated: the same without the container (header and per-unit length, kind, CRC),

so the coder's overhead and the container's show separately.

    .venv/bin/python bench/bits_overhead.py --ckpt runs/train/default/checkpoints/last.ckpt

(`python train.py hydra.run.dir=runs/train/default` makes that checkpoint in about 5 minutes.)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", type=Path, default=REPO_ROOT / "runs/train/default/checkpoints/last.ckpt")
    args = parser.parse_args()
    if not args.ckpt.is_file():
        sys.exit(
            f"no checkpoint at {args.ckpt}: train one with `python train.py hydra.run.dir=runs/train/default`"
        )

    from nvc_train.bitstream import read_stream
    from nvc_train.codecs.neural import NeuralCodec
    from nvc_train.ctc import embedded_sequences
    from nvc_train.structure import CodingStructure

    codec = NeuralCodec.from_checkpoint(args.ckpt)
    structure = CodingStructure("ld", intra_period=96, gop_size=1)
    totals: dict[object, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])  # file, payload, estimate
    with tempfile.TemporaryDirectory() as tmp:
        for sequence in embedded_sequences():
            for q in codec.rate_points:
                result = codec.encode(sequence, q, structure, Path(tmp) / f"{sequence.name}_{q}.nvc")
                _, units = read_stream(result.bitstream)
                file_bits = result.bitstream.stat().st_size * 8
                payload_bits = sum(len(unit.payload) for unit in units) * 8
                for key in (q, "all"):
                    totals[key][0] += file_bits
                    totals[key][1] += payload_bits
                    totals[key][2] += result.estimated_bits
    print(f"{codec.description()}, embedded set ({len(embedded_sequences())} clips), low delay")
    print(f"{'q_index':>8} {'file bits':>12} {'estimated':>12} {'file/est':>9} {'payload/est':>12}")
    for key in [*codec.rate_points, "all"]:
        file_bits, payload_bits, estimate = totals[key]
        print(
            f"{key!s:>8} {file_bits:12.0f} {estimate:12.0f} {file_bits / estimate:9.4f} "
            f"{payload_bits / estimate:12.4f}"
        )


if __name__ == "__main__":
    main()
