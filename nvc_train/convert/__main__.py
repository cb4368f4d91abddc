"""``python -m nvc_train.convert <codec> ...``: one subcommand per codec in ``CONVERTERS``."""

from __future__ import annotations

import argparse
import importlib
import sys

from nvc_train.codecs.base import CodecError
from nvc_train.convert import CONVERTERS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nvc_train.convert", description=__doc__)
    commands = parser.add_subparsers(dest="codec", required=True)
    modules = {}
    for codec, module_name in CONVERTERS.items():
        try:
            modules[codec] = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            continue  # a converter not written yet: not offered
        modules[codec].add_arguments(commands.add_parser(codec, help=modules[codec].__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    try:
        out = modules[args.codec].convert(args)
    except (CodecError, FileNotFoundError) as error:  # ConversionError and CheckpointError among them
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"wrote {out}; evaluate it with: python evaluate.py ckpt={out}")


if __name__ == "__main__":
    main()
