"""A stand-in for reference encoders and decoders (VTM/HM/ECM-style and aomenc/aomdec-style).

Tests put small executable wrappers around this script in ``tmp_path`` (``exec python this.py MODE
"$@"``) and point a :class:`ReferenceCodec` config at them. It checks its command line the way the
real tools would fail on it, only louder: every required option present, no unknown option, sizes,
frame counts, bit depths and files consistent; any problem exits non-zero with the reason on stderr.
It then "codes" the frames for real so the round trip can be checked: samples are quantised by a
QP-dependent shift and zlib-compressed, so the bitstream shrinks as QP rises and the decoder
returns exactly the frames it was given (coarsened).

Modes: ``hm-enc``, ``hm-dec`` (``-c cfg -i in.yuv -wdt W -hgt H ...``), ``aom-enc``, ``aom-dec``.
Environment knobs for tests: ``FAKE_EXPECT`` (JSON {option: value} the encoder must have been
given), ``FAKE_FAIL=1`` (write half a bitstream, complain on stderr, exit 1), ``FAKE_DROP=1`` (the
decoder loses the last frame), ``FAKE_LOG`` (append each command line as JSON to this file).
"""

from __future__ import annotations

import json
import os
import sys
import zlib
from pathlib import Path

import numpy as np

MAGIC = b"FAKEREF1"


def fail(message: str, code: int = 2) -> None:
    print(f"fake {sys.argv[1] if len(sys.argv) > 1 else ''}: ERROR: {message}", file=sys.stderr)
    sys.exit(code)


def parse(argv: list[str], with_value: set[str], flags: frozenset[str] = frozenset()) -> tuple[dict, list]:
    """Options as {name: value}; '--Name=value' and '-x value' forms; unknown options are errors."""
    options: dict[str, str] = {}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-") and "=" in arg:
            name, value = arg.split("=", 1)
            if name not in with_value:
                fail(f"unknown option {name}")
            options[name] = value
        elif arg in with_value:
            if i + 1 >= len(argv):
                fail(f"option {arg} needs a value")
            options[arg] = argv[i + 1]
            i += 1
        elif arg in flags:
            options[arg] = ""
        elif arg.startswith("-") and arg != "-":
            fail(f"unknown option {arg}")
        else:
            positional.append(arg)
        i += 1
    return options, positional


def integer(options: dict, name: str, low: int = 0) -> int:
    if name not in options:
        fail(f"missing required option {name}")
    try:
        value = int(options[name])
    except ValueError:
        fail(f"{name} must be an integer, got {options[name]!r}")
    if value < low:
        fail(f"{name} must be >= {low}, got {value}")
    return value


def check_expectations(options: dict) -> None:
    expected = json.loads(os.environ.get("FAKE_EXPECT", "{}"))
    for name, value in expected.items():
        if options.get(name) != str(value):
            fail(f"expected {name} {value}, got {options.get(name)!r}", 3)


def log_call() -> None:
    if os.environ.get("FAKE_LOG"):
        with open(os.environ["FAKE_LOG"], "a") as handle:
            handle.write(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd()}) + "\n")


def frame_samples(width: int, height: int) -> int:
    return width * height * 3 // 2


def write_bitstream(path: str, frames: np.ndarray, width: int, height: int, depth: int, shift: int) -> None:
    if os.environ.get("FAKE_FAIL"):
        Path(path).write_bytes(MAGIC + b"half a stream")
        print("encoding POC 0\nencoding POC 1", flush=True)
        fail("simulated crash: out of memory at POC 2", 1)
    header = json.dumps({"w": width, "h": height, "depth": depth, "n": len(frames), "shift": shift})
    payload = zlib.compress((frames >> shift).astype(frames.dtype).tobytes(), 6)
    Path(path).write_bytes(MAGIC + header.encode() + b"\n" + payload)


def read_bitstream(path: str) -> tuple[np.ndarray, dict]:
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC):
        fail(f"{path} is not a fake bitstream")
    header_end = data.index(b"\n")
    header = json.loads(data[len(MAGIC) : header_end])
    dtype = np.uint8 if header["depth"] == 8 else np.dtype("<u2")
    frames = np.frombuffer(zlib.decompress(data[header_end + 1 :]), dtype=dtype)
    frames = frames.reshape(header["n"], frame_samples(header["w"], header["h"])) << header["shift"]
    return frames.astype(dtype), header


def write_output(path: str, frames: np.ndarray, stream_depth: int, out_depth: int) -> None:
    if os.environ.get("FAKE_DROP"):
        frames = frames[:-1]
    if out_depth == 0:
        out_depth = stream_depth
    if out_depth not in (8, 10):
        fail(f"output bit depth must be 8 or 10, got {out_depth}")
    values = frames.astype(np.int64)
    values = (
        values << (out_depth - stream_depth)
        if out_depth >= stream_depth
        else values >> (stream_depth - out_depth)
    )
    values.astype(np.uint8 if out_depth == 8 else "<u2").tofile(path)


def read_raw(path: str, width: int, height: int, depth: int, skip: int, count: int) -> np.ndarray:
    if not Path(path).is_file():
        fail(f"input file {path} not found")
    with open(path, "rb") as handle:
        if handle.read(9) == b"YUV4MPEG2":
            fail(f"{path} is a y4m file: this encoder reads raw planar .yuv only")
    dtype = np.uint8 if depth == 8 else np.dtype("<u2")
    samples = frame_samples(width, height)
    data = np.fromfile(path, dtype=dtype)
    if data.size % samples:
        fail(f"{path}: size is not a whole number of {width}x{height} {depth}-bit frames")
    available = data.size // samples
    if skip + count > available:
        fail(f"{path} holds {available} frames; asked for {count} after skipping {skip}")
    return data.reshape(available, samples)[skip : skip + count]


def read_y4m(path: str) -> tuple[np.ndarray, int, int, int]:
    data = Path(path).read_bytes()
    if not data.startswith(b"YUV4MPEG2 "):
        fail(f"{path} is not a y4m file")
    header_end = data.index(b"\n")
    fields = {t[:1]: t[1:] for t in data[10:header_end].decode().split()}
    width, height = int(fields["W"]), int(fields["H"])
    depth = 10 if fields.get("C", "420").endswith("p10") else 8
    dtype = np.uint8 if depth == 8 else np.dtype("<u2")
    frame_bytes = frame_samples(width, height) * (1 if depth == 8 else 2)
    frames, position = [], header_end + 1
    while position < len(data):
        if not data.startswith(b"FRAME", position):
            fail(f"{path}: bad FRAME marker at byte {position}")
        position = data.index(b"\n", position) + 1
        frames.append(np.frombuffer(data[position : position + frame_bytes], dtype=dtype))
        position += frame_bytes
    return np.stack(frames), width, height, depth


def hm_encoder(argv: list[str]) -> None:
    """VTM / HM / ECM EncoderApp-style: -c cfg -i in -wdt -hgt -fr -fs -f -q -ip --*BitDepth -b -o.

    Like the real EncoderApp, the banner comes first, also for ``--help`` (which then stops).
    """
    print("Fake VTM Encoder Version 9.9.1 [Linux][64 bit]")
    if argv == ["--help"]:
        return
    values = {"-c", "-i", "-wdt", "-hgt", "-fr", "-fs", "-f", "-q", "-ip", "-b", "-o"}
    values |= {"--InputBitDepth", "--OutputBitDepth", "--InternalBitDepth"}
    options, positional = parse(argv, values)
    if positional:
        fail(f"unexpected arguments {positional}")
    check_expectations(options)
    if "-c" not in options or not Path(options["-c"]).is_file():
        fail(f"cfg file {options.get('-c')!r} not found")
    width, height = integer(options, "-wdt", 8), integer(options, "-hgt", 8)
    if width % 2 or height % 2:
        fail(f"4:2:0 needs even sizes, got {width}x{height}")
    integer(options, "-fr", 1)
    frames, skip = integer(options, "-f", 1), integer(options, "-fs")
    qp = integer(options, "-q")
    if qp > 63:
        fail(f"QP {qp} out of range")
    intra_period = integer(options, "-ip", -1)
    if intra_period == 0:
        fail("-ip must be -1 or a positive integer, got 0")
    depth = integer(options, "--InputBitDepth", 8)
    if depth not in (8, 10) or integer(options, "--InternalBitDepth", 8) < depth:
        fail("bad bit depths")
    if "-b" not in options:
        fail("missing required option -b")
    source = read_raw(options["-i"], width, height, depth, skip, frames)
    write_bitstream(options["-b"], source, width, height, depth, qp // 8)
    if options.get("-o") and options["-o"] != os.devnull:
        write_output(options["-o"], read_bitstream(options["-b"])[0], depth, depth)
    print(f"Total Frames | {frames} a")


def hm_decoder(argv: list[str]) -> None:
    """DecoderApp-style: -b bitstream -o out.yuv -d depth."""
    options, positional = parse(argv, {"-b", "-o", "-d"})
    if positional or "-b" not in options or "-o" not in options:
        fail("usage: -b bitstream -o output.yuv [-d depth]")
    frames, header = read_bitstream(options["-b"])
    write_output(options["-o"], frames, header["depth"], int(options.get("-d", "0")))


def aom_encoder(argv: list[str]) -> None:
    """aomenc-style: input.y4m --limit=N --skip=S --end-usage=q --qp=Q ... --obu -o out.obu."""
    values = {"--limit", "--skip", "--passes", "--end-usage", "--qp", "--cpu-used", "--bit-depth"}
    values |= {
        "--input-bit-depth",
        "--deltaq-mode",
        "--enable-tpl-model",
        "--lag-in-frames",
        "--auto-alt-ref",
    }
    values |= {"--kf-min-dist", "--kf-max-dist", "--min-gf-interval", "--max-gf-interval"}
    values |= {"--gf-min-pyr-height", "--gf-max-pyr-height", "-o"}
    options, positional = parse(argv, values, frozenset({"--obu"}))
    check_expectations(options)
    if len(positional) != 1:
        fail(f"expected one input file, got {positional}")
    if "--obu" not in options or options.get("--end-usage") != "q":
        fail("the CTC needs --obu and --end-usage=q")
    limit, skip, qp = integer(options, "--limit", 1), integer(options, "--skip"), integer(options, "--qp")
    if qp > 255:
        fail(f"--qp {qp} out of range [0, 255]")
    frames, width, height, depth = read_y4m(positional[0])
    if integer(options, "--input-bit-depth", 8) != depth:
        fail(f"--input-bit-depth={options['--input-bit-depth']} but the y4m is {depth}-bit")
    if skip + limit > len(frames):
        fail(f"{positional[0]} holds {len(frames)} frames; asked for {limit} after skipping {skip}")
    if "-o" not in options:
        fail("missing -o")
    write_bitstream(options["-o"], frames[skip : skip + limit], width, height, depth, qp // 40)


def aom_decoder(argv: list[str]) -> None:
    """aomdec-style: --rawvideo --output-bit-depth=B -o out.yuv in.obu."""
    options, positional = parse(argv, {"--output-bit-depth", "-o"}, frozenset({"--rawvideo"}))
    if len(positional) != 1 or "-o" not in options or "--rawvideo" not in options:
        fail("usage: --rawvideo [--output-bit-depth=B] -o output.yuv input.obu")
    frames, header = read_bitstream(positional[0])
    write_output(options["-o"], frames, header["depth"], int(options.get("--output-bit-depth", "0")))


MODES = {"hm-enc": hm_encoder, "hm-dec": hm_decoder, "aom-enc": aom_encoder, "aom-dec": aom_decoder}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in MODES:
        fail(f"first argument must be one of {sorted(MODES)}")
    log_call()
    MODES[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
