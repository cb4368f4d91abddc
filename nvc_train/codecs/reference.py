"""Reference software (VTM, HM, ECM, AVM) as codecs: binaries the user builds, command lines from config.

The reference encoders are not pip-installable and every lab has its own build, version and cfg
files, so nothing about them is hard-coded here: ``configs/codec/{vtm,hm,ecm,avm}.yaml`` hold the
binary paths, the CTC cfg file of each structure and the encode / decode command templates, and this
class only fills the templates in, runs them and checks what comes back::

    source --(ffmpeg, only if the tool wants another format)--> input.yuv / input.y4m
        --encode_command--> bitstream (.bin / .obu) --decode_command--> raw .yuv, frames counted

Templates are lists of tokens; each token is a Python format string over the placeholders below.
A token that is exactly ``"{structure_args}"`` is replaced by the structure's extra tokens
(``structure_args.<kind>``), themselves formatted. Placeholders:

    encoder_bin decoder_bin cfg input bitstream output recon   (paths; recon = os.devnull)
    width height frames start_frame bit_depth internal_bit_depth
    fps (e.g. 30 or 29.97) fps_int fps_num fps_den
    qp (the rate point) structure (ld / ra / ai) intra_period (-1, N or 1) keyint gop_size gop_levels
    + every key of ``params``

``start_frame`` is the sequence's when the source is passed to the tool as is, 0 when the frames to
code were first copied out by ffmpeg. Binaries and cfg files are checked when the codec is first used
(``check_structure``, ``encode``, ``decode``), so configs can be composed on machines without them.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from nvc_train.codecs.base import Codec, CodecError, DecodeResult, EncodeResult, RatePoint
from nvc_train.codecs.ffmpeg import (
    check_frame_count,
    check_source,
    convert_source,
    is_y4m,
    output_tail,
    partial_path,
    resolve_binary,
    run_tool,
)
from nvc_train.structure import CodingStructure

if TYPE_CHECKING:
    from nvc_train.ctc import CTCSequence

STRUCTURE_ARGS_TOKEN = "{structure_args}"


class ReferenceCodec(Codec):
    """A reference encoder / decoder pair run from command templates (VTM, HM, ECM, AVM, ...).

    Constructor (= config keys): ``name``; ``encoder_bin`` / ``decoder_bin`` (relative paths are
    taken under ``root``); ``encode_command`` / ``decode_command`` (token templates, see the module
    docstring); ``rate_points``; ``cfg`` (cfg file per structure kind, optionally per bit depth as
    ``ra_10bit``); ``structure_args`` (extra tokens per kind); ``display_name`` and ``version`` (for
    ``description()``; the version is otherwise read from the encoder's banner with
    ``version_pattern``); ``input_format`` ("yuv" or "y4m": what the encoder reads);
    ``bitstream_suffix``; ``internal_bit_depth`` (None: the source's); ``rate_range`` ([low, high]
    allowed rate points); ``params`` (extra placeholders); ``ffmpeg`` (for input conversion);
    ``timeout_s`` (per tool run).

    A structure kind is supported when it has a ``cfg`` or ``structure_args`` entry. For ra, a
    ``GOPSize`` line in the cfg must match the structure's ``gop_size`` (VTM's CTC cfg uses 32).
    """

    family = "conventional"

    def __init__(
        self,
        name: str,
        encoder_bin: str,
        decoder_bin: str,
        encode_command: Iterable[str],
        decode_command: Iterable[str],
        rate_points: Iterable[RatePoint],
        cfg: Mapping[str, str | None] | None = None,
        structure_args: Mapping[str, Iterable[str]] | None = None,
        root: str | None = None,
        display_name: str | None = None,
        version: str | None = None,
        version_pattern: str | None = r"[Vv]ersion:?\s+v?([0-9][\w.\-+]*)",
        input_format: str = "yuv",
        bitstream_suffix: str = ".bin",
        internal_bit_depth: int | None = None,
        rate_range: Iterable[int] | None = None,
        params: Mapping[str, object] | None = None,
        ffmpeg: str = "ffmpeg",
        timeout_s: float | None = None,
    ) -> None:
        self.name = name
        self.display_name = display_name or name.upper()
        self.root = Path(root) if root else None
        self.encoder_bin = self._under_root(encoder_bin)
        self.decoder_bin = self._under_root(decoder_bin)
        self.encode_command = [str(t) for t in encode_command]
        self.decode_command = [str(t) for t in decode_command]
        self.cfg = {str(k): (self._under_root(v) if v else None) for k, v in (cfg or {}).items()}
        self.structure_args = {str(k): [str(t) for t in v] for k, v in (structure_args or {}).items()}
        self.version = version
        self.version_pattern = version_pattern
        if input_format not in ("yuv", "y4m"):
            raise CodecError(f"{name}: input_format must be 'yuv' or 'y4m', got {input_format!r}")
        self.input_format = input_format
        self.suffix = bitstream_suffix
        self.internal_bit_depth = internal_bit_depth
        self.rate_range = tuple(rate_range) if rate_range is not None else None
        self.params = dict(params or {})
        self.ffmpeg = ffmpeg
        self.timeout_s = timeout_s
        self.rate_points = list(rate_points)
        for rate_point in self.rate_points:
            self._check_rate_point(rate_point)
        self._banner_version: str | None = None
        self._banner_probed = False

    def __repr__(self) -> str:
        return f"ReferenceCodec(name={self.name!r}, encoder_bin={self.encoder_bin!r})"

    def _under_root(self, path: str) -> str:
        path = str(path)
        if self.root is not None and not Path(path).is_absolute():
            return str(self.root / path)
        return path

    # ---- checks ---------------------------------------------------------------------------------

    def _binary(self, which: str) -> str:
        path = self.encoder_bin if which == "encoder" else self.decoder_bin
        return resolve_binary(path, f"{self.display_name} {which}", f"codec.{which}_bin")

    def check_available(self) -> None:
        """Raise a CodecError naming the path tried and the config key to set if a binary is absent."""
        self._binary("encoder")
        self._binary("decoder")

    def supported_kinds(self) -> set[str]:
        kinds = {k.split("_")[0] for k, v in self.cfg.items() if v} | set(self.structure_args)
        return kinds & {"ld", "ra", "ai"}

    def cfg_file(self, structure: CodingStructure, bit_depth: int | None = None) -> str:
        """The cfg for this structure (and bit depth, if ``<kind>_<depth>bit`` is configured), or ''."""
        if not self.cfg:
            return ""
        keys = ([f"{structure.kind}_{bit_depth}bit"] if bit_depth else []) + [structure.kind]
        for key in keys:
            if self.cfg.get(key):
                path = self.cfg[key]
                if not Path(path).is_file():
                    raise CodecError(
                        f"{self.display_name} cfg for '{key}' not found at {path!r}: set codec.cfg.{key}="
                        f"/path/to/the/cfg (the reference software ships them in its cfg/ folder)"
                    )
                return path
        return ""

    def check_structure(self, structure: CodingStructure, bit_depth: int | None = None) -> None:
        self.check_available()
        if structure.kind not in self.supported_kinds():
            raise CodecError(
                f"{self.display_name} is not configured for '{structure.kind}': set codec.cfg."
                f"{structure.kind}=<cfg file> (or codec.structure_args.{structure.kind}=[...])"
            )
        cfg = self.cfg_file(structure, bit_depth)
        if structure.kind == "ra" and cfg:
            match = re.search(r"^\s*GOPSize\s*:\s*(\d+)", Path(cfg).read_text(errors="replace"), re.MULTILINE)
            if match and int(match.group(1)) != structure.gop_size:
                raise CodecError(
                    f"{self.display_name}'s cfg {Path(cfg).name} codes GOPs of {match.group(1)} frames but "
                    f"the structure asks for {structure.gop_size}: set structure.gop_size={match.group(1)} "
                    f"(and an intra period that is a multiple of it) or use another cfg"
                )

    def _check_rate_point(self, rate_point: RatePoint) -> int:
        try:
            integral = not isinstance(rate_point, bool) and float(rate_point) == int(rate_point)
        except (TypeError, ValueError):
            integral = False
        low, high = self.rate_range if self.rate_range else (-math.inf, math.inf)
        if not integral or not low <= rate_point <= high:
            bounds = f" in [{low}, {high}]" if self.rate_range else ""
            raise CodecError(f"{self.name}: rate point {rate_point!r} is not an integer QP{bounds}")
        return int(rate_point)

    # ---- description ----------------------------------------------------------------------------

    def description(self) -> str:
        """E.g. 'VTM 23.0 (/opt/vtm/bin/EncoderAppStatic)'; the version comes from config or the banner.

        The banner is read by running the encoder with ``--help`` the first time a description is
        asked for, before any encode: a point's description is its identity in the point store, so
        it must be the same for the first point of a run as for the last, and in the next run.
        """
        self._probe_banner()
        version = self.version or self._banner_version or "(version unknown: set codec.version)"
        return f"{self.display_name} {version} ({self.encoder_bin})"

    def _probe_banner(self) -> None:
        """Read the version from ``encoder_bin --help`` once (reference encoders print a banner first)."""
        if self.version or self._banner_probed or not self.version_pattern:
            return
        self._banner_probed = True
        try:
            proc = subprocess.run(
                [self.encoder_bin, "--help"], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return  # absent or broken binary: the preflight names it; the description says unknown
        match = re.search(self.version_pattern, proc.stdout + proc.stderr)
        if match:
            self._banner_version = match.group(1)

    # ---- templates ------------------------------------------------------------------------------

    def _values(self, sequence: CTCSequence, structure: CodingStructure | None, **paths: str) -> dict:
        info = sequence.info
        rate = Fraction(info.fps).limit_denominator(1001)
        values: dict[str, object] = {
            "encoder_bin": self.encoder_bin,
            "decoder_bin": self.decoder_bin,
            "recon": os.devnull,
            "width": info.width,
            "height": info.height,
            "frames": info.num_frames,
            "start_frame": 0,
            "bit_depth": info.bit_depth,
            "internal_bit_depth": self.internal_bit_depth or info.bit_depth,
            "fps": int(info.fps) if float(info.fps).is_integer() else info.fps,
            "fps_int": round(info.fps),
            "fps_num": rate.numerator,
            "fps_den": rate.denominator,
        }
        if structure is not None:
            values |= {
                "structure": structure.kind,
                "intra_period": structure.intra_period,
                "keyint": structure.keyint(info.num_frames),
                "gop_size": structure.gop_size,
                "gop_levels": int(math.log2(structure.gop_size)),
                "cfg": self.cfg_file(structure, info.bit_depth),
            }
        return values | self.params | paths

    def _format(self, token: str, values: Mapping[str, object]) -> str:
        try:
            return token.format_map(values)
        except KeyError as error:
            raise CodecError(
                f"{self.name}: unknown placeholder {{{error.args[0]}}} in command token {token!r}; "
                f"known: {', '.join(sorted(values))}"
            ) from error
        except (ValueError, IndexError) as error:
            message = f"{self.name}: bad command token {token!r} ({error}); write {{{{ for a literal brace"
            raise CodecError(message) from error

    def render(self, template: list[str], values: Mapping[str, object], kind: str | None = None) -> list[str]:
        """The command line for ``template``: placeholders filled, ``{structure_args}`` spliced in."""
        out: list[str] = []
        for token in template:
            if token == STRUCTURE_ARGS_TOKEN:
                out += [self._format(t, values) for t in self.structure_args.get(kind or "", [])]
            else:
                out.append(self._format(token, values))
        return out

    # ---- the codec protocol ---------------------------------------------------------------------

    def _prepare_input(self, sequence: CTCSequence, source: Path, workdir: Path) -> tuple[Path, int]:
        """The file the encoder reads and the frame to start from in it (converting only if needed)."""
        if (self.input_format == "y4m") == is_y4m(source):
            return source, sequence.start_frame
        ffmpeg = resolve_binary(
            self.ffmpeg, f"ffmpeg (to convert {source.name} to {self.input_format})", "codec.ffmpeg"
        )
        converted = workdir / f"input.{self.input_format}"
        convert_source(ffmpeg, sequence, converted, self.input_format, self.timeout_s)
        return converted, 0

    def encode(
        self, sequence: CTCSequence, rate_point: RatePoint, structure: CodingStructure, bitstream: Path
    ) -> EncodeResult:
        info = sequence.info
        structure = structure.resolve(info.fps)
        self.check_structure(structure, info.bit_depth)
        qp = self._check_rate_point(rate_point)
        source = check_source(sequence)
        what = f"{self.display_name} encoding {sequence.name} at QP {qp} ({structure})"
        bitstream = Path(bitstream)
        bitstream.parent.mkdir(parents=True, exist_ok=True)
        partial = partial_path(bitstream)
        workdir = Path(tempfile.mkdtemp(prefix=f".{bitstream.name}.", dir=bitstream.parent))
        try:
            input_path, start_frame = self._prepare_input(sequence, source, workdir)
            values = self._values(
                sequence, structure, input=str(input_path), bitstream=str(partial), start_frame=start_frame
            )
            values["qp"] = qp
            cmd = self.render(self.encode_command, values, structure.kind)
            proc, seconds = run_tool(cmd, what, self.timeout_s, cwd=workdir)
            if not partial.is_file() or partial.stat().st_size == 0:
                raise CodecError(
                    f"{what}: the encoder exited cleanly but wrote no bitstream at {partial} (does the "
                    f"encode_command pass {{bitstream}} as its output?)\n{output_tail(proc.stdout)}"
                )
            os.replace(partial, bitstream)
        finally:
            partial.unlink(missing_ok=True)
            shutil.rmtree(workdir, ignore_errors=True)
        if self.version_pattern:
            match = re.search(self.version_pattern, proc.stdout + proc.stderr)
            if match:
                self._banner_version = match.group(1)
        command = shlex.join(cmd).replace(str(partial), str(bitstream))
        return EncodeResult(
            bitstream=bitstream, seconds=seconds, extra={"command": command, "structure": str(structure)}
        )

    def decode(self, bitstream: Path, sequence: CTCSequence, output: Path) -> DecodeResult:
        self.check_available()
        bitstream, output = Path(bitstream), Path(output)
        if not bitstream.is_file():
            raise CodecError(f"{self.name}: bitstream not found: {bitstream}")
        what = f"{self.display_name} decoding {bitstream.name} ({sequence.name})"
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = partial_path(output)
        workdir = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
        try:
            values = self._values(sequence, None, bitstream=str(bitstream), output=str(partial))
            cmd = self.render(self.decode_command, values)
            _, seconds = run_tool(cmd, what, self.timeout_s, cwd=workdir)
            if not partial.is_file():
                raise CodecError(f"{what}: the decoder exited cleanly but wrote no frames at {partial}")
            check_frame_count(partial, sequence.info, what)
            os.replace(partial, output)
        finally:
            partial.unlink(missing_ok=True)
            shutil.rmtree(workdir, ignore_errors=True)
        return DecodeResult(reconstruction=output, seconds=seconds)
