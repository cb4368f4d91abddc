"""Codec networks: one registry of classes, and the config group ``configs/model/`` as the one variant table.

Two facts, each written once:

- **Which classes exist.** Every codec module registers its network classes with
  :func:`register_network` (:mod:`models.registry`) when it is imported (the explicit imports at the
  top of this file), keyed by the dotted class name, e.g. ``models.dcvc_rt.DCVCRT``.
  :func:`network_class` looks a class up by that name and never imports one: it is the allow-list
  through which checkpoints and bitstreams (:mod:`nvc_train.networks`,
  :mod:`nvc_train.codecs.adaptive`) rebuild networks.
- **Which numbers a variant has.** ``configs/model/<name>.yaml`` holds a ``_target_`` (a registered
  class) and the architecture numbers, nothing else; full and tiny variants of one class stand side
  by side (``dcvc_rt.yaml``, ``dcvc_rt_tiny.yaml``). No Python file repeats them: a codec class takes
  them as keyword arguments into its typed config (e.g. :class:`models.dcvc_rt.DCVCRTConfig`), whose
  fields have no defaults. :func:`build_model` reads the YAML, looks its ``_target_`` up with
  :func:`network_class` and builds with keywords, so ``build_model(name)`` and Hydra's
  ``instantiate`` of the same file give the same network.

Which networks ``train.py`` can build:

- **Scene-agnostic** (subclasses of :class:`models.base.NeuralVideoCodec`: DCVC-RT, SSF, dcvc_lite):
  built without knowing a sequence, trained once, evaluated on any. ``train.py model=<name>`` builds
  them; :func:`list_models` lists them.
- **Scene-adaptive** (subclasses of :class:`models.adaptive.SceneAdaptiveNet`: C3, HiNeRV): their
  shapes follow the sequence they are fitted to, so ``train.py`` cannot build them; ``evaluate.py
  model=<name>`` (``codec=adaptive``) builds and fits one per sequence from the same YAML, and the
  bitstream carries its architecture. :func:`list_scene_adaptive_models` lists them;
  ``build_model(name, height=..., width=..., num_frames=...)`` builds one for tests and tools.

Each YAML's comment header says which of the two it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from torch import nn

# Every codec module is imported explicitly: importing it registers its classes (models.registry).
from models import c3, coolchic_video, dcvc_dc, dcvc_fm, dcvc_lite, dcvc_rt, hinerv, maskcrt, nvrc, ssf  # noqa: F401
from models.adaptive import GEOMETRY_FIELDS, SceneAdaptiveNet
from models.registry import UnknownModelError, list_networks, network_class, register_network

__all__ = [
    "CONFIG_DIR",
    "UnknownModelError",
    "build_model",
    "list_models",
    "list_networks",
    "list_scene_adaptive_models",
    "model_config",
    "network_class",
    "register_network",
]

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "model"  # the variant table

# ---------------------------------------------------------------------------------------------------
# Variants: configs/model/<name>.yaml


def _config_names() -> list[str]:
    return sorted(path.stem for path in CONFIG_DIR.glob("*.yaml"))


def _is_scene_adaptive(cls: type[nn.Module]) -> bool:
    return issubclass(cls, SceneAdaptiveNet)


def _names(scene_adaptive: bool) -> list[str]:
    """Config names whose ``_target_`` is a registered class of the asked kind, sorted."""
    names = []
    for name in _config_names():
        try:
            cls = network_class(str(model_config(name).get("_target_")))
        except UnknownModelError:  # a config of a class no codec module registers
            continue
        if _is_scene_adaptive(cls) == scene_adaptive:
            names.append(name)
    return names


def list_models() -> list[str]:
    """The scene-agnostic models, sorted: what ``train.py model=<name>`` and :func:`build_model` build."""
    return _names(scene_adaptive=False)


def list_scene_adaptive_models() -> list[str]:
    """The scene-adaptive models, sorted: built per sequence (``evaluate.py model=<name>``)."""
    return _names(scene_adaptive=True)


def model_config(name: str) -> dict[str, Any]:
    """``configs/model/<name>.yaml`` as plain values: ``_target_`` and the architecture numbers.

    Only names of files in the config group are read (a name is never a path), so an unknown name
    raises :class:`UnknownModelError` listing the known ones.
    """
    if name not in _config_names():
        raise UnknownModelError(
            f"unknown model {name!r}; scene-agnostic models: {', '.join(list_models())}; "
            f"scene-adaptive models (built per sequence): {', '.join(list_scene_adaptive_models())}"
        )
    config = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / f"{name}.yaml"), resolve=True)
    if not isinstance(config, dict) or "_target_" not in config:
        raise ValueError(f"{CONFIG_DIR / f'{name}.yaml'} is not a mapping with a _target_")
    return {str(key): value for key, value in config.items()}


def build_model(name: str, **overrides: Any) -> nn.Module:
    """Build the model ``configs/model/<name>.yaml`` describes; ``overrides`` replace single numbers.

    The class comes from :func:`network_class` (the ``_target_`` is looked up, never imported). A
    misspelt override would otherwise surface as a TypeError deep in a constructor (or, for a name
    the constructor happens to accept under another meaning, not at all), so names the YAML does not
    hold are refused with the known ones. A scene-adaptive model also takes the sequence geometry
    and coding structure (``height``, ``width``, ``num_frames``, ``structure``, ...), and needs the
    first three.
    """
    numbers = model_config(name)
    cls = network_class(str(numbers.pop("_target_")))
    known = set(numbers)
    if _is_scene_adaptive(cls):
        known |= set(GEOMETRY_FIELDS)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown {name} arguments {unknown}; known: {sorted(known)}")
    if _is_scene_adaptive(cls):
        missing = [key for key in ("height", "width", "num_frames") if key not in overrides]
        if missing:
            raise TypeError(
                f"{name} is scene-adaptive ({cls.__name__}): its shapes follow the sequence, so it needs "
                f"{', '.join(missing)} (evaluate.py model={name} builds one per sequence)"
            )
    return cls(**{**numbers, **overrides})
