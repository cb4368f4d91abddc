"""Codec networks rebuilt from files: checkpoints and bitstreams name registered classes, nothing else.

A checkpoint carries the config it was trained with, a scene-adaptive bitstream the architecture of
its network. Both are data written by whoever made the file. Handed to ``hydra.utils.instantiate``,
a ``_target_`` in them could name any importable callable (``torch.load`` of a pickle that runs a
shell command, ``pathlib.Path.write_text``), so every loader goes through this module instead:

    config from a file --check: registered class, plain values--> class(**numbers) on "meta"
        --parameter shapes == the file's tensors?--> class(**numbers) for real --> load the weights

- The class is looked up by its dotted name among the classes ``models`` registers
  (``models.register_network``); a name is never imported, so an unknown one builds nothing.
- Arguments are plain values (None, bool, int, float, str and lists / dicts of them); a key that
  starts with ``_`` (a nested ``_target_``, ``_partial_``, ``_args_``) is refused with its path.
- The network is first built on the ``meta`` device (no memory), and its parameter shapes are
  compared with the checkpoint's tensors, so a file claiming a huge network allocates nothing.

This is the one place where ``nvc_train`` imports ``models`` by name: a decoder that rebuilds a
network from a file needs the registry of networks a file may name, and a tool that builds a model
by its config name (``python -m nvc_train.complexity dcvc_rt``) needs the config group's reader.
"""

from __future__ import annotations

import importlib
import math
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nvc_train.codecs.base import CodecError

__all__ = [
    "CheckpointError",
    "build_named_model",
    "build_network",
    "checked_model_name",
    "checked_network_config",
    "is_resizable_table",
    "load_checkpoint",
    "load_network_state",
    "network_class",
    "network_state",
    "weights_only_load",
]

NET_PREFIX = "net."  # the codec network's entries in a train.py checkpoint's state_dict
MAX_INT = 1 << 20  # any integer argument: a width, a block count, a frame count
MAX_LIST = 64  # entries of any list argument (per-stage depths, hidden widths)
MAX_DEPTH = 4  # nesting of lists and dicts in an argument
MAX_STRING = 256  # characters of a string argument (a structure name, a colour space)


class CheckpointError(CodecError):
    """A checkpoint is unreadable, hostile, or does not fit; the message names the file and entry."""


def _models_module() -> Any:
    return importlib.import_module("models")  # the registry; see the module docstring


def network_class(target: Any, source: str) -> type[nn.Module]:
    """The registered network class named ``target`` in the file ``source``, or CheckpointError."""
    models = _models_module()
    try:
        return models.network_class(target)
    except models.UnknownModelError as error:
        raise CheckpointError(f"{source}: model._target_ {error}; refused, nothing was built") from None


def _check_value(value: Any, path: str, source: str, depth: int = 0) -> None:
    """Refuse anything but bounded plain values; ``path`` names the entry in the message."""
    if depth > MAX_DEPTH:
        raise CheckpointError(f"{source}: {path} is nested more than {MAX_DEPTH} levels deep")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise CheckpointError(f"{source}: {path} = {value} is outside [-{MAX_INT}, {MAX_INT}]")
        return
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) > 1e12:
            raise CheckpointError(f"{source}: {path} = {value!r} is not a finite number of sane size")
        return
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise CheckpointError(f"{source}: {path} is a string of {len(value)} characters")
        return
    if isinstance(value, list | tuple):
        if len(value) > MAX_LIST:
            raise CheckpointError(f"{source}: {path} has {len(value)} entries (at most {MAX_LIST})")
        for index, item in enumerate(value):
            _check_value(item, f"{path}[{index}]", source, depth + 1)
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check_key(key, f"{path}.{key}", source)
            _check_value(item, f"{path}.{key}", source, depth + 1)
        return
    raise CheckpointError(f"{source}: {path} is a {type(value).__name__}, not a plain value")


def _check_key(key: Any, path: str, source: str) -> None:
    if not isinstance(key, str) or not key.isidentifier() or key.startswith("_"):
        raise CheckpointError(
            f"{source}: {path} is not a plain argument name (keys starting with '_', such as a "
            "nested _target_, are refused: a file may not say what to build)"
        )


def checked_network_config(config: Any, source: str) -> tuple[type[nn.Module], dict[str, Any]]:
    """The class and the keyword arguments that a file's ``model`` config asks for, both checked.

    ``config`` is a plain mapping with a ``_target_`` (a registered network class) and numbers.
    """
    if not isinstance(config, Mapping) or "_target_" not in config:
        raise CheckpointError(f"{source}: the model config is not a mapping with a _target_")
    cls = network_class(config["_target_"], source)
    kwargs: dict[str, Any] = {}
    for key, value in config.items():
        if key == "_target_":
            continue
        _check_key(key, f"model.{key}", source)
        _check_value(value, f"model.{key}", source)
        kwargs[key] = list(value) if isinstance(value, tuple) else value
    return cls, kwargs


def _construct(cls: type[nn.Module], kwargs: Mapping[str, Any], source: str, device: str) -> nn.Module:
    try:
        with torch.device(device):
            return cls(**kwargs)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, RuntimeError) as error:
        raise CheckpointError(
            f"{source}: the model config does not build {cls.__name__}: {type(error).__name__}: {error}"
        ) from error


def build_network(config: Any, source: str, state: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """Build the network a file's ``model`` config names; with ``state``, load it after a meta check.

    The meta build costs no memory; when ``state`` is given, its keys and shapes must be the
    network's before the real network is built, so the file's own tensors bound the allocation.
    """
    cls, kwargs = checked_network_config(config, source)
    if state is not None:
        meta = _construct(cls, kwargs, source, "meta")
        _check_state_fits(meta, state, source)
    net = _construct(cls, kwargs, source, "cpu")
    if state is not None:
        load_network_state(net, state, source)
    return net


def _check_state_fits(net: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{key} {tuple(state[key].shape)} vs {tuple(own[key].shape)}"
        for key in set(own) & set(state)
        if tuple(own[key].shape) != tuple(state[key].shape) and not is_resizable_table(key)
    )
    if missing or unexpected or shapes:
        parts = [
            f"{label} {len(items)} ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes))
            if items
        ]
        raise CheckpointError(
            f"{source}: its weights do not fit {type(net).__name__} as its config describes it: "
            + "; ".join(parts)
            + ". Is it another model's checkpoint, or was the file edited? Re-train or re-convert it."
        )


def is_resizable_table(key: str) -> bool:
    """Entropy tables (CDF buffers) change shape with training; ``update`` resizes them on load."""
    return key.endswith(("_cdf", "_cdf_length", "_offset", "_medians", "scale_table", "scale_bounds"))


def load_network_state(net: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` whose failure names the file and says what to check."""
    _check_state_fits(net, state, source)
    try:
        net.load_state_dict(dict(state))
    except RuntimeError as error:
        name = type(net).__name__
        raise CheckpointError(f"{source}: the weights do not load into {name}: {error}") from None


# What torch.load raises for a damaged or foreign file, and for a pickle that names code.
_UNREADABLE = (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError, IndexError,
               KeyError, TypeError, AttributeError, UnicodeDecodeError)  # fmt: skip


def weights_only_load(
    path: Path, what: str, hint: str, mmap: bool = False, error: type[CheckpointError] = CheckpointError
) -> Any:
    """``torch.load(weights_only=True)``; a file it refuses is one ``error`` naming ``what`` and why."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except _UNREADABLE as failure:
        raise error(
            f"cannot read {what} {path}: {type(failure).__name__}: {str(failure)[:300]} ({hint})"
        ) from None


def load_checkpoint(path: str | Path, mmap: bool = False, require_weights: bool = True) -> dict[str, Any]:
    """A ``train.py`` checkpoint, read with ``weights_only=True`` and its ``model`` config checked.

    Every reader of checkpoints (evaluate, resume, initial weights, converters) calls this, so a
    file that names a foreign class is refused the same way before anything is built, even by a
    reader that does not build from the config: such a file is hostile, not merely another model.
    ``mmap`` maps the tensors instead of reading them (a check before Lightning reads the file);
    ``require_weights=False`` accepts a file without a ``state_dict`` (Lightning's own reader decides).
    """
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (train one with `python train.py`)")
    hint = "is it a PyTorch checkpoint? a train.py run keeps its own in checkpoints/last.ckpt"
    checkpoint = weights_only_load(path, "checkpoint", hint, mmap=mmap)
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} is not a train.py checkpoint (a {type(checkpoint).__name__})")
    if require_weights and not isinstance(checkpoint.get("state_dict"), Mapping):
        raise CheckpointError(f"{path} is not a train.py checkpoint (no state_dict)")
    config = checkpoint.get("nvc_config")
    if config is not None:
        if not isinstance(config, Mapping):
            raise CheckpointError(f"{path}: nvc_config is a {type(config).__name__}, not a mapping")
        if "model" in config:
            checked_network_config(config["model"], source)
    return checkpoint


def named_model(name: str) -> tuple[type[nn.Module], dict[str, Any], bool]:
    """``configs/model/<name>.yaml`` read: its class, its numbers (without ``_target_``) and whether
    the class is scene-adaptive (built per sequence); an unknown name is a ValueError listing the
    known ones (``models.model_config``)."""
    models = _models_module()
    try:
        numbers = models.model_config(name)
    except models.UnknownModelError as error:
        raise ValueError(str(error)) from None
    cls = models.network_class(str(numbers.pop("_target_")))
    adaptive = importlib.import_module("models.adaptive").SceneAdaptiveNet
    return cls, numbers, issubclass(cls, adaptive)


def build_named_model(name: str) -> nn.Module:
    """The scene-agnostic model ``configs/model/<name>.yaml`` describes (``models.build_model``)."""
    return _models_module().build_model(name)


def checked_model_name(name: Any, source: str) -> str:
    """A checkpoint's ``model_name``, which names folders and table rows: a short plain word."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}", name):
        raise CheckpointError(
            f"{source}: model_name {str(name)[:80]!r} is not a plain name (letters, digits, _ . + -; "
            "it names folders); pass codec.name=NAME to choose one"
        )
    return name


def network_state(checkpoint: Mapping[str, Any], source: str) -> dict[str, torch.Tensor]:
    """The codec network's tensors of a checkpoint (``net.*`` entries, prefix removed)."""
    state = {
        key[len(NET_PREFIX) :]: value
        for key, value in checkpoint["state_dict"].items()
        if isinstance(key, str) and key.startswith(NET_PREFIX)
    }
    if not state:
        raise CheckpointError(f"{source} holds no codec network weights (no '{NET_PREFIX}*' entries)")
    bad = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{source}: state_dict entries {bad[:3]} are not tensors")
    # A diverged run's weights code nothing sensible (the entropy coder fails deep inside): say so here.
    not_finite = [
        key
        for key, value in state.items()
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]
    if not_finite:
        raise CheckpointError(
            f"{source}: {len(not_finite)} tensors hold NaN or infinite values ({', '.join(not_finite[:3])}); "
            "the run diverged: use an earlier checkpoint or train again with a lower learning rate"
        )
    return state
