"""Codec networks and their one registry: short name -> builder function.

Every codec module is imported explicitly at the bottom of this file, so the registry is complete as
soon as ``models`` is imported, and a codec is one new file in ``models/`` plus one import line and
its configs. Full and tiny variants of one class are registered side by side under their own names
(``dcvc_lite``, ``dcvc_lite_tiny``). The framework itself never imports this package by name: configs
reach it through ``_target_`` (``configs/model/<name>.yaml``).

The registry holds the scene-agnostic networks, which are built without knowing a sequence.
Scene-adaptive networks (``models/c3.py``, ``models/hinerv.py``, base class in ``models/adaptive.py``)
have shapes that follow the sequence they are fitted to, so the adapter
(``nvc_train/codecs/adaptive.py``) builds them per sequence from the same ``configs/model/<name>.yaml``
and the bitstream carries their architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = [
    "UnknownModelError",
    "build_model",
    "build_variant",
    "list_models",
    "list_networks",
    "network_class",
    "register_model",
    "register_network",
]

_Builder = TypeVar("_Builder", bound=Callable[..., nn.Module])
_Model = TypeVar("_Model", bound=nn.Module)
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_NETWORKS: dict[str, type[nn.Module]] = {}  # "models.c3.C3Net" -> the class: what a file may name


class UnknownModelError(ValueError):
    """A model name that is not registered; the message lists the registered names."""


def register_model(builder: _Builder) -> _Builder:
    """Register ``builder`` under its function name; a second builder of the same name is a bug."""
    name = builder.__name__
    if name in _REGISTRY and _REGISTRY[name] is not builder:
        raise ValueError(
            f"model {name!r} is registered twice ({_REGISTRY[name].__module__}, {builder.__module__})"
        )
    _REGISTRY[name] = builder
    return builder


def register_network(cls: type[_Model]) -> type[_Model]:
    """Allow files to name ``cls``: a checkpoint's or a bitstream's config may build it, nothing else.

    Why an allow-list: a config read from a file is data written by whoever made the file. Given to
    ``hydra.utils.instantiate`` it could name any importable callable (``torch.load`` of a pickle,
    ``Path.write_text``), so the framework looks the class up here by its dotted name instead, and
    calls it with plain numbers only (:mod:`nvc_train.networks`).
    """
    _NETWORKS[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return cls


def list_networks() -> list[str]:
    """Dotted names of the network classes a file may name (a config's ``_target_``), sorted."""
    return sorted(_NETWORKS)


def network_class(target: str) -> type[nn.Module]:
    """The registered network class whose dotted name is ``target``; nothing is imported for it."""
    try:
        return _NETWORKS[target]
    except (KeyError, TypeError):
        raise UnknownModelError(
            f"{target!r} is not a registered network class; registered: {', '.join(list_networks())}"
        ) from None


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def build_variant(
    cls: Callable[..., _Model], variant: str, numbers: dict[str, Any], overrides: dict[str, Any]
) -> _Model:
    """One registered variant = a class and its numbers; ``overrides`` replace single numbers.

    A misspelt override would otherwise surface as a TypeError deep in a constructor (or, for a
    name the constructor happens to accept under another meaning, not at all), so unknown names
    are refused here with the variant's known ones.
    """
    unknown = sorted(set(overrides) - set(numbers))
    if unknown:
        raise TypeError(f"unknown {variant} arguments {unknown}; known: {sorted(numbers)}")
    return cls(**{**numbers, **overrides})


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name``; ``kwargs`` override single numbers of the variant."""
    try:
        builder = _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; registered models: {', '.join(list_models())}"
        ) from None
    return builder(**kwargs)


# Explicit imports of every codec module fill the registry; they come after the registry functions
# because each module registers itself with them at import time.
from models import c3, dcvc_lite, dcvc_rt, hinerv, ssf  # noqa: E402, F401
