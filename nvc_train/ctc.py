"""The CTC sequence registry behind ``configs/ctc``: which sequences, where, and their metadata.

Sequence metadata is data: every size, frame rate, bit depth and frame count comes from a config
file that states the published numbers (or, for ``ctc=folder``, from y4m headers and explicit
``_WxH`` names), so that a wrong file is reported instead of being read with guessed numbers.

Schema of a ``ctc`` config (one file per test set in ``configs/ctc``; Hydra merges several, e.g.
``ctc=[hevc_b,uvg]``, because every part is a dict keyed by name)::

    name: hevc_b                      # label of the run folder (merged suites: the last one's)
    root: ${oc.env:NVC_CTC_ROOT,null} # the data root; null: the NVC_CTC_ROOT environment variable
    test_sets:
      HEVC_B:                         # test set (class) name, as results tables show it
        subdir: HEVC_B                # folder under the root (optional)
        root: null                    # optional: this set's own root instead of the common one
        generate: false               # optional: make the files first (the embedded clips)
        sequences:
          Kimono1: {file: Kimono1_1920x1080_24.yuv, width: 1920, height: 1080,
                    fps: 24, bit_depth: 8, frames: 240}
    path: ???                         # only in ctc=folder: scan this folder (see scan_folder)
    fps: null                         # ctc=folder: frame rate of raw files whose name gives none
    bit_depth: 8                      # ctc=folder: depth of raw files whose name gives none
    check_content: true               # optional: check raw files' samples against size and depth

Raw files hold no header, so a wrong size or depth that still gives whole frames is caught by
looking at the samples (:func:`nvc_train.video.readers.check_raw_content`); ``check_content:
false`` trusts the stated sizes and depths instead (for content the check misjudges).

``fps`` is a number or an exact ratio such as ``60000/1001``; ``frames`` is the number of frames
the test conditions code (the whole sequence in the HEVC CTC, 130 in the AOM CTC). A file is looked
for in ``<root>/<subdir>/<file>``, then ``<root>/<file>``; the root is the config's ``root``, else
the ``NVC_CTC_ROOT`` environment variable. Every missing file is reported in one
:class:`MissingSequencesError` that lists each folder searched and how to set the root.

:func:`load_sequences` takes a plain mapping or a ``DictConfig`` (no Hydra global state), so tests
and tools call it directly. This module imports neither torch nor Lightning.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nvc_train.video.frame import VideoInfo
from nvc_train.video.readers import RAW_SUFFIXES, Y4M_SUFFIXES, VideoFormatError, open_video, raw_name_fields


@dataclass(frozen=True)
class CTCSequence:
    """One test sequence: where it is and what it is (metadata is data, never parsed from names).

    ``info.num_frames`` is the number of frames *to code* (the registry's count, capped by
    ``frames=``), counted from ``start_frame``.
    """

    name: str
    test_set: str
    path: Path
    info: VideoInfo
    start_frame: int = 0


# --------------------------------------------------------------------------------------------
# Registry: configs/ctc -> list[CTCSequence]
# --------------------------------------------------------------------------------------------

log = logging.getLogger(__name__)

ENV_ROOT = "NVC_CTC_ROOT"
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "ctc"

_SET_KEYS = frozenset({"subdir", "root", "generate", "sequences"})
_SEQUENCE_KEYS = frozenset({"file", "width", "height", "fps", "bit_depth", "frames"})
_TOP_KEYS = frozenset({"name", "root", "test_sets", "path", "fps", "bit_depth", "check_content"})


class MissingSequencesError(FileNotFoundError):
    """Registry files that are not on disk: one message lists them all and where each was looked for.

    One error for the whole run (not one per file) so that a user fixes the data root or downloads
    the missing sets in one go instead of discovering them one crash at a time.
    """

    def __init__(self, missing: Iterable[MissingFile], root_note: str) -> None:
        self.missing = list(missing)
        self.root_note = root_note
        super().__init__(self._message())

    def _message(self) -> str:
        count = len(self.missing)
        lines = [f"{count} CTC sequence file{'s' if count != 1 else ''} not found ({self.root_note}):"]
        for item in self.missing:
            lines.append(f"  {item.test_set}/{item.name}: {item.file}")
            where = ", ".join(str(folder) for folder in item.searched) or "nowhere (no data root set)"
            lines.append(f"      looked in: {where}")
        lines.append(
            f"Set the data root with ctc.root=/path/to/ctc_data or the {ENV_ROOT} environment "
            "variable; each file is looked for in <root>/<subdir>/<file>, then in <root>/<file>."
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self._message()

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across worker processes (submitit, DDP)
        return type(self), (self.missing, self.root_note)


class SequenceFileError(VideoFormatError):
    """Files that exist but do not hold what the registry says (size, bit depth, too few frames).

    Raised after the missing-file check, again as one message for every bad file, because a file
    of the wrong size is silently misread as a different video otherwise. A ``VideoFormatError``
    (a ``ValueError``), so the command line prints it as one clean message like the readers' own.
    """


class RegistryError(ValueError):
    """A ``ctc`` config that cannot be read: unknown or missing keys, impossible values."""


@dataclass(frozen=True)
class MissingFile:
    """One registry entry whose file was not found, and the folders that were searched."""

    test_set: str
    name: str
    file: str
    searched: tuple[Path, ...]


def parse_fps(value: Any) -> float:
    """A frame rate from a number or an exact ratio string (``"60000/1001"``), as a float.

    Ratios keep 59.94 / 29.97 content exact in the config (kbps depends on fps) and match what
    y4m headers store.
    """
    if isinstance(value, bool) or value is None:
        raise RegistryError(f"fps must be a number or a ratio like 60000/1001, got {value!r}")
    try:
        fps = float(Fraction(str(value).strip()))
    except (ValueError, ZeroDivisionError) as error:
        raise RegistryError(f"fps must be a number or a ratio like 60000/1001, got {value!r}") from error
    if fps <= 0:
        raise RegistryError(f"fps must be positive, got {value!r}")
    return fps


def list_suites(config_dir: Path | None = None) -> dict[str, str]:
    """The ``ctc=`` choices and their one-line descriptions (the first comment line of each file).

    For help and error messages ("known suites: ..."), read from the files themselves so that the
    list never drifts from what Hydra can compose.
    """
    directory = Path(config_dir) if config_dir is not None else CONFIG_DIR
    suites: dict[str, str] = {}
    for path in sorted(directory.glob("*.yaml")):
        description = ""
        for line in path.read_text().splitlines():
            if line.startswith("#"):
                description = line.lstrip("#").strip()
                if description:
                    break
            elif line.strip():
                break
        suites[path.stem] = description
    return suites


def load_sequences(
    ctc_cfg: Mapping[str, Any], max_frames: int | None = None, start_frame: int = 0
) -> list[CTCSequence]:
    """Every sequence of the configured test sets, checked against the files on disk.

    ``ctc_cfg`` is the ``ctc`` node (schema in the module docstring), as a dict or ``DictConfig``.
    Frames to code per sequence: the registry's ``frames`` from ``start_frame`` on (the window never
    runs past the published count), capped by ``max_frames``. Raises :class:`MissingSequencesError`
    listing every missing file, then :class:`SequenceFileError` listing every file whose size, bit
    depth or length disagrees with the registry, and :class:`RegistryError` for a malformed config.
    """
    if start_frame < 0:
        raise RegistryError(f"start_frame must be >= 0, got {start_frame}")
    if max_frames is not None and max_frames < 1:
        raise RegistryError(f"max_frames must be >= 1 or None, got {max_frames}")
    cfg = _to_plain(ctc_cfg)
    unknown = sorted(set(cfg) - _TOP_KEYS)
    if unknown:  # other parts of the project may hang settings here: note them, do not refuse
        log.warning("ctc keys %s are not registry keys (%s) and are ignored", unknown, sorted(_TOP_KEYS))

    root, root_note = _data_root(cfg.get("root"))
    check_content = _flag(cfg.get("check_content", True), "check_content")
    test_sets = cfg.get("test_sets") or {}
    if not isinstance(test_sets, Mapping):
        raise RegistryError(f"ctc.test_sets must be a mapping of test set name -> entry, got {test_sets!r}")
    if not test_sets and cfg.get("path") is None:
        raise RegistryError(
            "the ctc config lists no test sets and no folder (ctc.path); choose e.g. ctc=embedded"
        )

    sequences: list[CTCSequence] = []
    missing: list[MissingFile] = []
    problems: list[str] = []
    for set_name, spec in test_sets.items():
        set_sequences, set_missing, set_problems = _load_test_set(
            str(set_name), spec, root, max_frames, start_frame, check_content
        )
        sequences += set_sequences
        missing += set_missing
        problems += set_problems

    if cfg.get("path") is not None:
        folder_sequences, folder_problems = _scan_folder_checked(
            cfg["path"], cfg.get("fps"), cfg.get("bit_depth", 8), max_frames, start_frame, check_content
        )
        sequences += folder_sequences
        problems += folder_problems

    if missing:
        raise MissingSequencesError(missing, root_note)
    if problems:
        raise SequenceFileError(
            f"{len(problems)} CTC sequence file{'s do' if len(problems) != 1 else ' does'} "
            "not match the registry:\n" + "\n".join(f"  {p}" for p in problems)
        )
    log.info("%d sequences in %d test sets", len(sequences), len({s.test_set for s in sequences}))
    return sequences


def scan_folder(
    path: str | Path,
    fps: Any = None,
    bit_depth: int = 8,
    max_frames: int | None = None,
    start_frame: int = 0,
    check_content: bool = True,
) -> list[CTCSequence]:
    """Every ``.y4m`` and raw ``*_<W>x<H>*.yuv`` in ``path`` (not recursive), as one test set.

    The test set is named after the folder. y4m files describe themselves (header and length); a
    raw file's size must be in its name, its frame rate is the number after the size
    (``_64x48_25``, ``_120fps``, ``_5994`` = 59.94) or else ``fps``, its bit depth 10 when the name
    says ``10bit`` (8 for ``8bit``) or else ``bit_depth``. A ``.yuv`` without a size cannot be read
    and is skipped with one warning naming every such file; other files are ignored. A raw file
    whose samples do not fit its size or depth is refused unless ``check_content`` is False.
    """
    sequences, problems = _scan_folder_checked(path, fps, bit_depth, max_frames, start_frame, check_content)
    if problems:
        raise SequenceFileError(
            "files in the folder cannot be used:\n" + "\n".join(f"  {p}" for p in problems)
        )
    return sequences


# --------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------


def _to_plain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved plain dict; a DictConfig's ``???`` stays a marker so the error can name the key."""
    if isinstance(cfg, DictConfig):
        plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    else:
        plain = dict(cfg)
    if not isinstance(plain, dict):
        raise RegistryError(f"the ctc config must be a mapping, got {type(cfg).__name__}")
    if plain.get("path") == "???":
        raise RegistryError("ctc=folder needs the folder to scan: add ctc.path=/path/to/videos")
    return plain


def _flag(value: Any, key: str) -> bool:
    """A yes/no setting; a string such as "false" from a command line is not taken as true."""
    if isinstance(value, bool):
        return value
    raise RegistryError(f"ctc.{key} must be true or false, got {value!r}")


def _data_root(value: Any) -> tuple[Path | None, str]:
    """The common data root and a note saying where it came from (for the missing-files message)."""
    if value not in (None, ""):
        root = Path(str(value)).expanduser()
        return root, f"data root {root} from ctc.root"
    env = os.environ.get(ENV_ROOT)
    if env:
        root = Path(env).expanduser()
        return root, f"data root {root} from {ENV_ROOT}"
    return None, f"no data root set: neither ctc.root nor {ENV_ROOT}"


def _load_test_set(
    set_name: str,
    spec: Any,
    common_root: Path | None,
    max_frames: int | None,
    start_frame: int,
    check_content: bool = True,
) -> tuple[list[CTCSequence], list[MissingFile], list[str]]:
    if not isinstance(spec, Mapping):
        raise RegistryError(f"test set {set_name}: expected a mapping with 'sequences', got {spec!r}")
    unknown = sorted(set(spec) - _SET_KEYS)
    if unknown:
        raise RegistryError(f"test set {set_name}: unknown keys {unknown}; known: {sorted(_SET_KEYS)}")
    entries = spec.get("sequences") or {}
    if not isinstance(entries, Mapping) or not entries:
        raise RegistryError(f"test set {set_name}: 'sequences' must be a non-empty mapping")

    own_root = Path(str(spec["root"])).expanduser() if spec.get("root") not in (None, "") else None
    # A generated set (the embedded clips) lives in its own cache folder unless given a root.
    root = _generate_embedded(set_name, own_root) if spec.get("generate") else (own_root or common_root)
    subdir = str(spec.get("subdir") or "")

    sequences: list[CTCSequence] = []
    missing: list[MissingFile] = []
    problems: list[str] = []
    for seq_name, entry in entries.items():
        label = f"{set_name}/{seq_name}"
        file_name, info = _registry_entry(label, entry)
        folders = _search_folders(root, subdir, file_name)
        found = _find(file_name, folders)
        if found is None:
            missing.append(MissingFile(set_name, str(seq_name), file_name, tuple(folders)))
            continue
        count, problem = _frames_to_code(label, found, info, max_frames, start_frame, check_content)
        if problem:
            problems.append(problem)
            continue
        sequences.append(CTCSequence(str(seq_name), set_name, found, _with_frames(info, count), start_frame))
    return sequences, missing, problems


def _registry_entry(label: str, entry: Any) -> tuple[str, VideoInfo]:
    """(file name, VideoInfo with the published frame count) of one registry entry, validated."""
    if not isinstance(entry, Mapping):
        raise RegistryError(f"{label}: expected a mapping with {sorted(_SEQUENCE_KEYS)}, got {entry!r}")
    keys = set(entry)
    if keys != _SEQUENCE_KEYS:
        detail = []
        if _SEQUENCE_KEYS - keys:
            detail.append(f"missing {sorted(_SEQUENCE_KEYS - keys)}")
        if keys - _SEQUENCE_KEYS:
            detail.append(f"unknown {sorted(keys - _SEQUENCE_KEYS)}")
        raise RegistryError(f"{label}: {', '.join(detail)} (every entry states {sorted(_SEQUENCE_KEYS)})")
    try:
        frames = int(entry["frames"])
        if frames < 1 or frames != entry["frames"]:
            raise ValueError(f"frames must be a positive integer, got {entry['frames']!r}")
        info = VideoInfo(
            width=int(entry["width"]),
            height=int(entry["height"]),
            bit_depth=int(entry["bit_depth"]),
            fps=parse_fps(entry["fps"]),
            num_frames=frames,
        )
    except (TypeError, ValueError) as error:
        raise RegistryError(f"{label}: {error}") from error
    return str(entry["file"]), info


def _search_folders(root: Path | None, subdir: str, file_name: str) -> list[Path]:
    """Where a file is looked for, in order: <root>/<subdir>, then <root> (an absolute file: itself)."""
    if Path(file_name).expanduser().is_absolute():
        return [Path(file_name).expanduser().parent]
    if root is None:
        return []
    folders = [root / subdir] if subdir else []
    folders.append(root)
    return folders


def _find(file_name: str, folders: list[Path]) -> Path | None:
    path = Path(file_name).expanduser()
    name = path.name if path.is_absolute() else file_name
    for folder in folders:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def _with_frames(info: VideoInfo, num_frames: int) -> VideoInfo:
    return VideoInfo(info.width, info.height, info.bit_depth, info.fps, num_frames)


def _frames_to_code(
    label: str,
    path: Path,
    expected: VideoInfo,
    max_frames: int | None,
    start_frame: int,
    check_content: bool = True,
) -> tuple[int, str | None]:
    """(frames to code, problem) after checking the file against the registry entry.

    The coded window is [start_frame, start_frame + n) with n = min(published - start_frame,
    max_frames); the file must hold at least that much, so a copy cut to the first 96 frames still
    serves max_frames=96 while a short file never passes unnoticed.
    """
    published = expected.num_frames
    if start_frame >= published:
        return 0, f"{label}: start_frame {start_frame} is past the {published} frames the registry lists"
    count = published - start_frame if max_frames is None else min(published - start_frame, max_frames)
    needed = start_frame + count
    try:  # raw: whole frames of this size and depth, samples that fit them; y4m: the header agrees
        reader = open_video(path, expected, check_content)
    except VideoFormatError as error:
        return 0, f"{label}: {error}"
    held = len(reader)
    if path.suffix.lower() in Y4M_SUFFIXES and abs(reader.info.fps - expected.fps) > 1e-3 * expected.fps:
        log.warning(
            "%s: %s header says %.4g fps, the registry %.4g fps; the registry's rate is used",
            label,
            path,
            reader.info.fps,
            expected.fps,
        )
    if held < needed:
        return 0, (
            f"{label}: {path} holds {held} frames, {needed} needed "
            f"({count} to code from frame {start_frame}; the registry lists {published})"
        )
    return count, None


def embedded_sequences(directory: Path | None = None) -> list[CTCSequence]:
    """The embedded clips as :class:`CTCSequence` entries (test set ``"embedded"``), rendered first
    if needed, so the evaluation runner can take them like any other test set.

    It lives here, not in :mod:`nvc_train.embedded`, because the registry depends on the clip
    generator and never the other way round (the generator knows clips, not test sets).
    """
    from nvc_train.embedded import EMBEDDED_CLIPS, ensure_embedded_clips

    paths = ensure_embedded_clips(directory)
    return [CTCSequence(spec.name, "embedded", paths[spec.name], spec.info) for spec in EMBEDDED_CLIPS]


def _generate_embedded(set_name: str, root: Path | None) -> Path:
    """Make the embedded clips (idempotent) and return the folder they are in."""
    try:
        from nvc_train.embedded import ensure_embedded_clips
    except ImportError as error:
        raise RegistryError(
            f"test set {set_name} is generated by nvc_train.embedded, which cannot be imported: {error}"
        ) from error
    paths = ensure_embedded_clips(root)
    if root is not None:
        return root
    folders = {Path(p).parent for p in paths.values()}
    if len(folders) != 1:
        raise RegistryError(
            f"test set {set_name}: the embedded clips are not in one folder: {sorted(folders)}"
        )
    return folders.pop()


# ---- folder scan -------------------------------------------------------------------------------


def _scan_folder_checked(
    path: Any,
    default_fps: Any,
    default_depth: Any,
    max_frames: int | None,
    start_frame: int,
    check_content: bool = True,
) -> tuple[list[CTCSequence], list[str]]:
    folder = Path(str(path)).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"ctc.path={path} is not a folder (ctc=folder scans one folder of videos)")
    fallback_fps = parse_fps(default_fps) if default_fps is not None else None
    fallback_depth = int(default_depth) if default_depth is not None else 8
    test_set = folder.resolve().name
    sequences: list[CTCSequence] = []
    problems: list[str] = []
    unsized: list[str] = []
    for file in sorted(p for p in folder.iterdir() if p.is_file()):
        suffix = file.suffix.lower()
        label = f"{test_set}/{file.stem}"
        if suffix in Y4M_SUFFIXES:
            try:  # a y4m file describes itself: header and length
                reader = open_video(file)
            except VideoFormatError as error:
                problems.append(f"{label}: {error}")
                continue
            info, held = reader.info, len(reader)
        elif suffix in RAW_SUFFIXES:
            parsed = raw_name_fields(file.name)
            if parsed is None:
                unsized.append(file.name)
                continue
            width, height, fps, depth = parsed
            fps = fps if fps is not None else fallback_fps
            if fps is None:
                problems.append(
                    f"{label}: no frame rate in the name (_{width}x{height}_<fps>) and ctc.fps is not set"
                )
                continue
            try:
                info = VideoInfo(width, height, depth if depth is not None else fallback_depth, fps)
            except ValueError as error:
                problems.append(f"{label}: {error}")
                continue
            try:
                held = len(open_video(file, info, check_content))
            except VideoFormatError as error:
                problems.append(f"{label}: {error}")
                continue
        else:
            continue
        if held <= start_frame:
            problems.append(f"{label}: {held} frames, none left from start_frame {start_frame}")
            continue
        count = held - start_frame if max_frames is None else min(held - start_frame, max_frames)
        sequences.append(CTCSequence(file.stem, test_set, file, _with_frames(info, count), start_frame))
    if unsized:
        warnings.warn(
            f"ctc=folder: skipped {len(unsized)} raw file(s) in {folder} without _<W>x<H> in the name "
            f"(a raw file's size cannot be guessed): {', '.join(unsized)}",
            stacklevel=3,
        )
    if not sequences and not problems:
        raise FileNotFoundError(f"ctc.path={folder} holds no .y4m and no *_<W>x<H>*.yuv file")
    return sequences, problems
