"""The one codec contract that every codec, neural or conventional, is evaluated through.

    encode(sequence, rate_point, structure, bitstream_path) -> EncodeResult   (file + seconds)
    decode(bitstream_path, sequence, output_yuv)            -> DecodeResult   (raw .yuv + seconds)

The evaluation runner only ever sees this interface: it counts bits from the file that
``encode`` wrote (never from a codec's own estimate), decodes that same file in ``decode``, and
measures the raw ``.yuv`` written there (source bit depth, 4:2:0, one frame per source frame).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from nvc_train.bitstream import StreamHeader

if TYPE_CHECKING:
    from nvc_train.ctc import CTCSequence
    from nvc_train.structure import CodingStructure

Family = Literal["conventional", "scene-agnostic", "scene-adaptive"]
RatePoint = int | float


class CodecError(RuntimeError):
    """A codec cannot run (binary absent, unsupported structure) or failed; the message says which."""


@dataclass
class EncodeResult:
    bitstream: Path
    seconds: float
    # Bits a neural codec's entropy model predicted; logged beside the file bits, never reported as them.
    estimated_bits: float | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class DecodeResult:
    reconstruction: Path
    seconds: float


class Codec(abc.ABC):
    """Base class of every codec behind the evaluation runner.

    Subclasses set ``name`` (short, used in folders and tables), ``family`` and ``rate_points``
    (QP / CRF values for conventional codecs, q_index values for variable-rate neural codecs).
    """

    name: str = "codec"
    family: Family = "conventional"
    rate_points: list[RatePoint]
    suffix: str = ".bin"  # bitstream file extension (".hevc", ".obu", ...): the runner names files with it

    def description(self) -> str:
        """A versioned one-line description for result files (e.g. 'x265 3.5 via ffmpeg 5.1.9')."""
        return self.name

    def check_structure(self, structure: CodingStructure) -> None:
        """Raise :class:`CodecError` if this codec cannot honour ``structure`` (default: any is fine)."""
        return None

    def complexity(self, height: int = 1080, width: int = 1920) -> dict:
        """Parameters (M) and kMAC/pixel of a ``height x width`` frame where the codec knows them.

        The size is an argument because kMAC/px of a padded, possibly non-convolutional network
        depends on it; papers report 1920x1080, and the runner passes the test sequences' size.
        Conventional codecs know neither figure and return an empty dict.
        """
        return {}

    @abc.abstractmethod
    def encode(
        self, sequence: CTCSequence, rate_point: RatePoint, structure: CodingStructure, bitstream: Path
    ) -> EncodeResult:
        """Code the first ``sequence.info.num_frames`` frames of the sequence into ``bitstream``."""

    @abc.abstractmethod
    def decode(self, bitstream: Path, sequence: CTCSequence, output: Path) -> DecodeResult:
        """Decode ``bitstream`` into a raw 4:2:0 ``.yuv`` at ``output`` (source bit depth)."""


def stream_header(
    codec_id: str, weights_hash: bytes, sequence: CTCSequence, structure: CodingStructure, rate_point: int
) -> StreamHeader:
    """The container header of one coded sequence, the same for every codec that writes the container.

    The frame rate is stored as a fraction (30000/1001 stays exact); the codec id is cut to the
    container's 32 bytes.
    """
    info = sequence.info
    fps = Fraction(info.fps).limit_denominator(1001)
    return StreamHeader(
        codec_id=codec_id[:32],
        weights_hash=weights_hash,
        width=info.width,
        height=info.height,
        bit_depth=info.bit_depth,
        num_frames=info.num_frames,
        fps_num=fps.numerator,
        fps_den=fps.denominator,
        structure=structure.kind,
        intra_period=structure.intra_period,
        gop_size=structure.gop_size,
        rate_point=rate_point,
    )
