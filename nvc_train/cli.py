"""Glue shared by train.py and evaluate.py: argument sugar and one clean failure path."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("nvc_train")


def expand_group_lists(argv: Sequence[str], groups: Sequence[str]) -> list[str]:
    """Let ``ctc=hevc_b,uvg`` mean ``ctc=[hevc_b,uvg]`` (several test sets in one run).

    Hydra reads a bare comma list as a multirun sweep and refuses it in a normal run; for test-set
    groups the user means "all of these", so the list is rewritten before Hydra sees it.
    """
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in groups and "," in value and not value.startswith("["):
            arg = f"{key}=[{value}]"
        out.append(arg)
    return out


# glibc returns large freed blocks to the OS and faults them in again on every allocation; the
# metrics (MS-SSIM allocates ~40 MB per 1080p frame) run 3x faster when it keeps them
# (bench/metrics_throughput.py: 0.7 -> 2.4 frames/s). glibc reads these only at process start.
MALLOC_SETTINGS = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296"}


def reexec_with_malloc_settings() -> None:
    """Restart this process once with :data:`MALLOC_SETTINGS` unless they (or NVC_NO_REEXEC) are set."""
    if sys.platform != "linux" or os.environ.get("NVC_NO_REEXEC") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    env = {**os.environ, **MALLOC_SETTINGS}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def register_resolvers() -> None:
    """Resolvers for run-folder names: ``${codec_label:NAME,CKPT,CODECS}`` and ``${or:VALUE,DEFAULT}``.

    ``codec_label`` is the codec's name, else the checkpoint's run.
    A model evaluated from ``runs/train/default/checkpoints/last.ckpt`` gets the folder label
    ``default-last``, so that two checkpoints never share (and overwrite) one run folder.
    A several-codec run (``codecs=[...]`` or ``ckpt=[A,B]``) gets its sorted codec list
    (``aom+svtav1+x264+x265``), or a count and a hash when that is long: the same list resumes the
    same folder, another list never overwrites it.
    """
    from omegaconf import ListConfig, OmegaConf

    def codec_label(name: str | None, ckpt: Any, codecs: Any = None) -> str:
        if codecs is not None or isinstance(ckpt, ListConfig | list):
            from nvc_train.evaluation.store import codec_entries, many_label

            return many_label(codec_entries(codecs, ckpt))
        if name:
            return str(name)
        if ckpt:
            path = Path(str(ckpt))
            return (
                f"{path.parent.parent.name}-{path.stem}" if path.parent.name == "checkpoints" else path.stem
            )
        return "codec"

    OmegaConf.register_new_resolver("codec_label", codec_label, replace=True)
    # ${or:VALUE,DEFAULT}: DEFAULT when VALUE is null (oc.select only covers missing keys).
    OmegaConf.register_new_resolver(
        "or", lambda value, default: default if value is None else value, replace=True
    )


def apply_checkpoint_defaults(argv: Sequence[str], config_dir: Path | None = None) -> list[str]:
    """What a model argument means for evaluate.py, unless the user said otherwise.

    ``ckpt=PATH``: evaluate that trained model (``codec=checkpoint``) against x265.
    ``model=NAME`` (a scene-adaptive network): encode by overfitting (``codec=adaptive``) with the
    schedule of the same name (``overfit=NAME``, when ``configs/overfit/NAME.yaml`` exists) against x265.
    """
    args = {arg.partition("=")[0].lstrip("+~"): arg.partition("=")[2] for arg in argv[1:]}
    keys = set(args)
    if "ckpt" in keys:
        extra = [] if "codec" in keys else ["codec=checkpoint"]
    elif "model" in keys:
        extra = [] if "codec" in keys else ["codec=adaptive"]
        config_dir = config_dir or Path(__file__).resolve().parents[1] / "configs"
        if "overfit" not in keys and (config_dir / "overfit" / f"{args['model']}.yaml").is_file():
            extra.append(f"overfit={args['model']}")
    else:
        return list(argv)
    extra += [] if "anchor" in keys else ["anchor=x265"]
    return [*argv, *extra]


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message is the whole story: printed as one message, no traceback.

    :class:`~nvc_train.training.errors.TrainingError` is training's "the user must fix something"
    (its data modules' missing data included, as ``MissingDataError``); anything not listed here
    is a bug and keeps its traceback.
    """
    from nvc_train.bdrate import BDRateError
    from nvc_train.bitstream import BitstreamError
    from nvc_train.codecs.base import CodecError
    from nvc_train.ctc import MissingSequencesError, RegistryError
    from nvc_train.training.errors import TrainingError
    from nvc_train.video.readers import VideoFormatError

    return (
        CodecError, MissingSequencesError, RegistryError, VideoFormatError, BDRateError, BitstreamError,
        TrainingError, FileNotFoundError,
    )  # fmt: skip


def run_task(task: Callable[[Any], Any], cfg: Any) -> Any:
    """Run ``task(cfg)``; a user error becomes one clear line on stderr and exit status 1."""
    from hydra.errors import InstantiationException

    try:
        return task(cfg)
    except (InstantiationException, *user_errors()) as error:
        cause = error.__cause__ if isinstance(error, InstantiationException) else error
        if not isinstance(cause, user_errors()):
            raise  # a bug, not a user error: keep the traceback
        log.error("%s: %s", type(cause).__name__, cause)
        print(f"error: {cause}", file=sys.stderr)
        sys.exit(1)
