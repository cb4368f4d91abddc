"""How close the scene-adaptive decoder's memory estimate is to what a decode really takes.

Not a test: a script that prints figures. The decoder refuses a stream whose estimated peak memory
(``SceneAdaptiveNet.decode_memory_bytes`` on a ``meta`` build) exceeds ``NVC_DECODE_MEMORY_GB``;
the estimate is only useful if a real decode stays under it. For each network (full-size C3 and
HiNeRV-M, random weights, no fitting needed) at ``--size`` and ``--frames``, this writes a real
stream, decodes it in a fresh process and prints the estimate beside the growth of that process's
peak resident memory over the decode (Linux: ``VmHWM`` reset through ``/proc/self/clear_refs``).

    .venv/bin/python bench/decode_memory.py --size 352x288 --frames 8
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

_DECODE = """
import sys, torch
import models
from nvc_train.codecs.adaptive import decode_file
def status(key):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key))
torch.set_num_threads(1)
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) starts again from now
decode_file(sys.argv[1], sys.argv[2])
print(status("VmHWM") - before)
"""


def write_stream(name: str, width: int, height: int, frames: int, path: Path) -> int:
    """A real stream of network ``name`` (random weights); returns its decoder's memory estimate."""
    import torch
    import yaml

    from nvc_train.bitstream import StreamHeader
    from nvc_train.codecs.adaptive import network_class, write_adaptive_stream

    config = yaml.safe_load((REPO_ROOT / f"configs/model/{name}.yaml").read_text())
    target = config.pop("_target_")
    cls = network_class(target)
    pad = cls.pad_multiple
    geometry = {"height": -(-height // pad) * pad, "width": -(-width // pad) * pad, "num_frames": frames}
    torch.manual_seed(0)
    net = cls(**geometry, structure="ld", intra_period=-1, gop_size=1, **config)
    with torch.no_grad():
        for latent in getattr(net, "latents", []):
            latent.copy_(torch.randn_like(latent) * 2)
    net.quantize_parameters("ste", init_bits=8)
    header = StreamHeader(
        codec_id=name, weights_hash=b"\0" * 16, width=width, height=height, bit_depth=8,
        num_frames=frames, fps_num=30, fps_den=1, structure="ld", intra_period=-1, gop_size=1,
        rate_point=0,
    )  # fmt: skip
    write_adaptive_stream(path, header, target, net.architecture, net.compress())
    with torch.device("meta"):
        return cls(**net.architecture).decode_memory_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="352x288", help="WIDTHxHEIGHT")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--models", nargs="+", default=["c3", "hinerv"])
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    print(f"{'model':<10} {'stream KB':>10} {'estimate MiB':>13} {'measured MiB':>13} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            stream = Path(folder) / f"{name}.nvc"
            estimate = write_stream(name, width, height, args.frames, stream)
            out = subprocess.run(
                [sys.executable, "-c", _DECODE, str(stream), str(Path(folder) / "out.yuv")],
                cwd=REPO_ROOT, capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            measured = int(out.split()[-1])
            print(
                f"{name:<10} {stream.stat().st_size / 1e3:>10.1f} {estimate / 2**20:>13.1f} "
                f"{measured / 2**20:>13.1f} {estimate / measured:>6.2f}"
            )


if __name__ == "__main__":
    main()
