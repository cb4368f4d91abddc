"""Codec networks and their one registry: short name -> builder function.

Every codec module is imported explicitly at the bottom of this file, so the registry is complete as
soon as ``models`` is imported, and a codec is one new file in ``models/`` plus one import line and
its configs. Full and tiny variants of one class are registered side by side under their own names
(``dcvc_lite``, ``dcvc_lite_tiny``). The framework itself never imports this package by name: configs
reach it through ``_target_`` (``configs/model/<name>.yaml``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["UnknownModelError", "build_model", "list_models", "register_model"]

_Builder = TypeVar("_Builder", bound=Callable[..., nn.Module])
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


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


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


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
from models import dcvc_lite  # noqa: E402, F401
from models import ssf  # noqa: E402, F401
from models import dcvc_rt  # noqa: E402, F401
