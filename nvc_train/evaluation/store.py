"""Several codecs in one run, and the point store that lets runs share what they measured.

``python evaluate.py codecs=[x264,x265,svtav1,checkpoint:A.ckpt] anchor=x265`` (or ``ckpt=[A,B]``)
codes every (codec, sequence, rate point) once. Each point lives in the point store
(``point_store:``, ``runs/points`` by default), in a folder named by the hash of what was measured:
the codec's description and settings, the sequence (set, name, size, frames, first frame, the
source file's size), the structure, the rate point and the metrics. A run folder then holds only
the tables; a second run whose codec list overlaps (the same list plus one codec, another anchor)
finds the points it shares with earlier runs and codes only the new ones.

Why a hash of the settings and not the description alone: a codec's description names its library
version and preset, but not every option (``params``, ``extra_args``); two settings that print
the same description must still not share points. What does not change the measurement is left out
of the hash (the rate-point list, where the checkpoint file lies, timeouts), so that adding a rate
point or moving a checkpoint reuses the points already there.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from nvc_train.codecs.base import Codec, CodecError
from nvc_train.ctc import CTCSequence
from nvc_train.evaluation.points import Job, is_same_point, point_identity
from nvc_train.structure import CodingStructure

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
CHECKPOINT_PREFIX = "checkpoint:"
# Codec config fields that do not change what a point measures (left out of the store key).
UNMEASURED_FIELDS = frozenset({"rate_points", "path", "timeout_s", "name"})


@dataclass
class ListedCodec:
    """A codec of a several-codec run with the settings that enter its points' store key."""

    codec: Codec
    settings: dict[str, Any]
    entry: str  # as the user wrote it: a configs/codec name or checkpoint:PATH


def many_codecs_requested(cfg: DictConfig) -> bool:
    """True for a several-codec run: ``codecs=`` given, or ``ckpt=`` is a list of checkpoints."""
    return cfg.get("codecs") is not None or isinstance(cfg.get("ckpt"), ListConfig | list)


def codec_entries(codecs: Sequence[str] | None, ckpt: Any) -> list[str]:
    """The run's codec entries: ``codecs`` as written, then each ``ckpt`` as ``checkpoint:PATH``.

    Duplicates are dropped (first one kept), so ``ckpt=A codecs=[checkpoint:A]`` codes A once.
    """
    entries = [str(entry) for entry in (codecs or [])]
    if ckpt is not None:
        paths = list(ckpt) if isinstance(ckpt, ListConfig | list | tuple) else [ckpt]
        entries += [f"{CHECKPOINT_PREFIX}{path}" for path in paths]
    return list(dict.fromkeys(entries))


def entry_label(entry: str) -> str:
    """A short name of an entry for run-folder names: the config name, or the checkpoint's run-stem."""
    if not entry.startswith(CHECKPOINT_PREFIX):
        return entry
    path = Path(entry[len(CHECKPOINT_PREFIX) :])
    return f"{path.parent.parent.name}-{path.stem}" if path.parent.name == "checkpoints" else path.stem


def many_label(entries: Sequence[str], max_length: int = 64) -> str:
    """The run-folder label of a codec list: sorted labels joined by '+', or a count and a hash.

    Sorted, so that the same list in another order resumes the same folder; long lists become
    ``<n>codecs-<hash>`` so that the folder name stays short and still differs per list.
    """
    labels = sorted(dict.fromkeys(entry_label(str(e)) for e in entries))
    joined = "+".join(labels)
    if len(joined) <= max_length:
        return joined
    digest = hashlib.sha1("\n".join(sorted(map(str, entries))).encode()).hexdigest()[:8]
    return f"{len(labels)}codecs-{digest}"


def _entry_config(entry: str, overrides: Mapping[str, Any]) -> DictConfig:
    """The codec config node of one entry: configs/codec/NAME.yaml (or checkpoint.yaml with the path),
    with ``codec_overrides.<NAME>`` (``codec_overrides.checkpoint`` for checkpoints) merged over it."""
    if entry.startswith(CHECKPOINT_PREFIX):
        name, path = "checkpoint", entry[len(CHECKPOINT_PREFIX) :]
    else:
        name, path = entry, None
    file = CONFIG_DIR / "codec" / f"{name}.yaml"
    if name == "checkpoint" and path is None or not file.is_file():
        known = sorted(p.stem for p in (CONFIG_DIR / "codec").glob("*.yaml") if p.stem != "checkpoint")
        raise CodecError(
            f"unknown codec {entry!r} in codecs=: expected one of {', '.join(known)} "
            "(configs/codec/*.yaml) or checkpoint:PATH"
        )
    node = OmegaConf.load(file)
    if path is not None:
        node.path = path
    extra = overrides.get(name)
    if extra:
        node = OmegaConf.merge(node, extra)
    return node


def build_listed_codecs(cfg: DictConfig) -> list[ListedCodec]:
    """Instantiate every entry of ``codecs`` / ``ckpt``; names are made unique within the run.

    Each node is placed at ``codec`` in a copy of the run's config before it is built, so that its
    interpolations (``${model}``, ``${oc.env:...}``) resolve as they would for ``codec=NAME``. Two
    checkpoints of the same model would share a name (the model's); they are told apart by their
    file's label (``dcvc_lite_tiny-A``). Any other clash is the user's to resolve.
    """
    given = cfg.get("codec_overrides")
    overrides = OmegaConf.to_container(given, resolve=True) if given is not None else {}
    assert isinstance(overrides, dict)
    scratch = copy.deepcopy(cfg)
    listed = []
    for entry in codec_entries(cfg.get("codecs"), cfg.get("ckpt")):
        with open_dict(scratch):
            scratch.codec = _entry_config(entry, overrides)
        codec = instantiate(scratch.codec)
        settings = OmegaConf.to_container(scratch.codec, resolve=True)
        assert isinstance(settings, dict)
        listed.append(ListedCodec(codec, _measured(settings), entry))
    names = [item.codec.name for item in listed]
    for item in listed:
        if names.count(item.codec.name) > 1 and item.entry.startswith(CHECKPOINT_PREFIX):
            item.codec.name = f"{item.codec.name}-{entry_label(item.entry)}"
    names = [item.codec.name for item in listed]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise CodecError(
            f"codecs {', '.join(clashes)} appear more than once in codecs=; give one another name "
            "(e.g. +codec_overrides.NAME.name=OTHER) or list it once"
        )
    return listed


def anchor_settings(cfg: DictConfig) -> dict[str, Any]:
    """The anchor's settings as they enter its points' store key."""
    settings = OmegaConf.to_container(cfg.anchor, resolve=True)
    assert isinstance(settings, dict)
    return _measured(settings)


def merge_anchor(listed: list[ListedCodec], anchor: Codec, settings: dict[str, Any]) -> list[ListedCodec]:
    """Drop a listed codec that is the anchor (same name and settings); refuse one that only shares its name.

    ``codecs=[x264,x265] anchor=x265`` is the common way to write the review's tables (the anchor is
    one of the rows); coding x265 twice would be waste and two rows of one name would be ambiguous.
    """
    kept = []
    for item in listed:
        if item.codec.name != anchor.name:
            kept.append(item)
        elif item.settings != settings or item.codec.description() != anchor.description():
            key = "checkpoint" if item.entry.startswith(CHECKPOINT_PREFIX) else item.entry
            raise CodecError(
                f"{anchor.name} is both the anchor and a listed codec with other settings "
                f"({item.codec.description()} vs {anchor.description()}); rename one "
                f"(+codec_overrides.{key}.name=OTHER or anchor.name=OTHER)"
            )
    return kept


def _measured(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in settings.items() if key not in UNMEASURED_FIELDS}


def store_key(
    codec: Codec,
    settings: Mapping[str, Any],
    sequence: CTCSequence,
    rate_point: Any,
    structure: Mapping[str, Any],
    metrics: Sequence[str],
) -> str:
    """A 16-hex-digit hash of everything that decides what a point measures (module docstring)."""
    try:
        source_bytes = Path(sequence.path).stat().st_size
    except OSError:
        source_bytes = None
    identity = {
        "description": codec.description(),
        "family": codec.family,
        "settings": settings,
        "class": sequence.test_set,
        "sequence": sequence.name,
        "source_bytes": source_bytes,
        "width": sequence.info.width,
        "height": sequence.info.height,
        "fps": sequence.info.fps,
        "bit_depth": sequence.info.bit_depth,
        "frames": sequence.info.num_frames,
        "start_frame": sequence.start_frame,
        "structure": structure,
        "rate_point": rate_point,
        "metrics": sorted(metrics),
    }
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_store_jobs(
    codecs: Sequence[tuple[Codec, Mapping[str, Any]]],
    sequences: Sequence[CTCSequence],
    store: Path,
    structure: Mapping[str, Any],
    metrics: Sequence[str],
) -> list[Job]:
    """Every (codec, sequence, rate point), each pointing at its folder in ``store``; fixed order."""
    return [
        Job(codec, seq, rp, store, store_key(codec, settings, seq, rp, structure, metrics))
        for codec, settings in codecs
        for seq in sequences
        for rp in codec.rate_points
    ]


def is_stored(job: Job, structure: CodingStructure) -> bool:
    """True when the store already holds this point's result (the runner will not code it again)."""
    path = job.folder(Path(".")) / "result.json"
    if not path.is_file():
        return False
    try:
        return is_same_point(json.loads(path.read_text()), point_identity(job, structure))
    except (OSError, ValueError):
        return False


def absolute_bitstreams(rows: list[dict[str, Any]], store: Path) -> list[dict[str, Any]]:
    """Rows with ``bitstream`` as an absolute path: result.json keeps it relative to the store (which
    may move), points.csv of a run folder must point at the file from wherever it is read."""
    return [{**row, "bitstream": str(store / str(row["bitstream"]))} for row in rows]
