"""Everything a run needs, checked before anything is coded: sequences, binaries, cfg files.

A benchmark such as ``suite=review_ld`` needs eleven test sets and seven encoders; finding the
second missing binary an hour into the run (or one missing file per attempt) wastes the user's
day. :func:`check_inputs` gathers every missing sequence and every codec that cannot run the
structure into one :class:`MissingInputsError`, so that one message says all that is to fix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from nvc_train.codecs.base import Codec, CodecError
from nvc_train.ctc import MissingSequencesError
from nvc_train.structure import CodingStructure

T = TypeVar("T")


class MissingInputsError(FileNotFoundError):
    """Sequences that are not on disk and codecs whose binaries (or cfg files) are absent, all in one."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(self._message())

    def _message(self) -> str:
        listed = "\n".join(f"- {problem}" for problem in self.problems)
        return (
            f"nothing was coded; this run lacks what it needs:\n{listed}\n"
            "(a setting named codec.KEY above is +codec_overrides.NAME.KEY=... for a codec of codecs=, "
            "anchor.KEY=... for the anchor, e.g. anchor.root=/opt/VTM-20.0)"
        )

    def __str__(self) -> str:
        return self._message()

    def __reduce__(self) -> tuple[object, ...]:  # picklable across worker processes
        return type(self), (self.problems,)


def check_inputs(
    load_sequences: Callable[[], T],
    build_codecs: Callable[[], list[Codec]],
    structure: CodingStructure,
) -> tuple[T, list[Codec]]:
    """``(sequences, codecs)``, or one :class:`MissingInputsError` listing every missing piece.

    ``load_sequences`` may raise :class:`MissingSequencesError` (kept as its own list of files and
    folders searched); each codec's ``check_structure`` may raise :class:`CodecError` (a binary not
    found, a cfg absent, a structure it cannot code). Other errors are not about missing inputs and
    pass through unchanged.
    """
    problems: list[str] = []
    sequences: T | None = None
    try:
        sequences = load_sequences()
    except MissingSequencesError as error:
        problems.append(str(error).replace("\n", "\n  "))
    codecs = build_codecs()
    for codec in codecs:
        try:
            codec.check_structure(structure)
        except CodecError as error:
            problems.append(f"{codec.name}: {error}")
    if problems:
        raise MissingInputsError(problems)
    assert sequences is not None
    return sequences, codecs
