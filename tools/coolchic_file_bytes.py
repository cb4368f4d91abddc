"""Bytes of a Cool-Chic ``.cool`` file, frame by frame and decoder by decoder, read with its own headers.

    ../scratch/coolchic-venv/bin/python tools/coolchic_file_bytes.py \
        --coolchic-src ../scratch/coolchic FILE.cool

Runs in Cool-Chic's own venv and imports the user's checkout (nothing of it is copied here). Why:
the rates Cool-Chic's encoder logs for a P frame (``*-results_encoder.tsv``) are estimates taken
before its networks are quantized; the file is the truth, and this splits it into the video header,
each frame's header, and each decoder's (residue, motion) header, network bytes and latent bytes,
so that ours can be compared with it part by part (``bench/adaptive_vs_coolchic.py`` compares files).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--coolchic-src", type=Path, required=True, help="a Cool-Chic v5 checkout")
    parser.add_argument("bitstream", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(args.coolchic_src.resolve()))
    from coolchic.bitstream.decode import CoolChicHeader, FrameHeader, VideoHeader

    data = args.bitstream.read_bytes()
    video = VideoHeader()
    rest = video.read_header(data)
    print(f"{args.bitstream}: {len(data)} bytes; video header {len(data) - len(rest)}")
    structure = video.get_coding_structure()
    for coding_index in range(structure.get_max_coding_order() + 1):
        frame = FrameHeader()
        before = len(rest)
        rest = frame.read_header(rest)
        kind = frame.get_value("frame_type")
        parts = [f"frame {coding_index} ({kind}): header {before - len(rest)}"]
        total = before - len(rest)
        for decoder in ["residue"] + (["motion"] if kind in ("P", "B") else []):
            header = CoolChicHeader()
            before_decoder = len(rest)
            rest = header.read_header(rest)
            network, latents = header.get_value("nn_n_bytes"), header.get_value("n_bytes_latent")
            header_bytes = before_decoder - len(rest)
            parts.append(f"{decoder}: header {header_bytes}, network {network}, latents {latents}")
            total += header_bytes + network + latents
            rest = rest[network + latents :]
        print(" | ".join(parts) + f" | {total} in all")
    if rest:
        print(f"{len(rest)} bytes left after the last frame")


if __name__ == "__main__":
    main()
