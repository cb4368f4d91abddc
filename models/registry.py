"""The registry of network classes: the allow-list of what a checkpoint or a bitstream may build.

Its own module (``models/__init__.py`` re-exports it) so that a codec module registers itself by
importing this file alone, and the package's explicit imports of every codec module make no cycle.
"""

from __future__ import annotations

from typing import TypeVar

from torch import nn

__all__ = ["UnknownModelError", "list_networks", "network_class", "register_network"]

_Model = TypeVar("_Model", bound=nn.Module)
_NETWORKS: dict[str, type[nn.Module]] = {}  # "models.c3.C3Net" -> the class: what a file may name


class UnknownModelError(ValueError):
    """A model or network name that is not known; the message lists the known names."""


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
