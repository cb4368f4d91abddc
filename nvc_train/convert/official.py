"""The steps every converter shares: read an official file safely, check it, write our checkpoint.

Why one module: each published codec nests its weights a little differently, and a converter that
half-loads a file (a renamed layer silently left at random) gives numbers that look plausible and
are wrong. So every converter reads through :func:`read_official_state`, compares against the exact
names and shapes it expects with :func:`check_state`, which names every difference at once, and
writes through :func:`write_checkpoint`, which rebuilds the network from the written file exactly as
``evaluate.py`` will before it reports success.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from nvc_train.atomic import atomic_write_bytes
from nvc_train.networks import (
    NET_PREFIX,
    CheckpointError,
    build_network,
    load_checkpoint,
    network_state,
    weights_only_load,
)

__all__ = ["ConversionError", "check_state", "convert_intra_inter", "read_official_state", "write_checkpoint"]

NESTING_KEYS = ("state_dict", "net", "model")  # where official trainers put the weights


class ConversionError(CheckpointError):
    """An official file that cannot be converted as it is; the message names the file and tensors."""


def read_official_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of an official checkpoint, loaded weights-only, unnested (``state_dict``, ``net``,
    ``model``, as deep as they go), ``module.`` removed."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"official checkpoint not found: {path}")
    loaded = weights_only_load(
        path, "official checkpoint", "is it the published file?", error=ConversionError
    )
    # Unnest level by level, as microsoft/DCVC's loader does (``['state_dict']``, then ``['net']``).
    nested = True
    while nested:
        nested = False
        for key in NESTING_KEYS:
            if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
                loaded, nested = loaded[key], True
                break
    if not isinstance(loaded, Mapping) or not loaded:
        raise ConversionError(f"{path} holds no state dict of tensors")
    state: dict[str, torch.Tensor] = {}
    for key, value in loaded.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ConversionError(f"{path}: entry {str(key)[:80]!r} is not a named tensor")
        state[key.removeprefix("module.")] = value
    return state


def check_state(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], source: str
) -> None:
    """Refuse ``state`` unless its names and shapes are exactly ``expected``; list every difference."""
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    shapes = [
        f"{name} {tuple(state[name].shape)} (expected {tuple(shape)})"
        for name, shape in expected.items()
        if name in state and tuple(state[name].shape) != tuple(shape)
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{label} ({len(items)}): {', '.join(items)}"
            for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes))
            if items
        ]
        raise ConversionError(f"{source} does not have the official layout: " + "; ".join(parts))


def write_checkpoint(
    out: str | Path,
    model: Mapping[str, Any],
    model_name: str,
    net_state: Mapping[str, torch.Tensor],
    sources: list[str],
) -> Path:
    """Write a ``train.py``-style checkpoint of the network, then rebuild it from the file.

    ``model`` is the network config (``_target_`` and numbers, as ``configs/model/<name>.yaml``),
    ``net_state`` the network's own state dict. The rebuild goes through the same checks as
    ``evaluate.py ckpt=`` (:func:`nvc_train.networks.load_checkpoint`), so a file this writes loads.
    """
    out = Path(out)
    checkpoint = {
        "state_dict": {
            f"{NET_PREFIX}{key}": value.detach().cpu().contiguous() for key, value in net_state.items()
        },
        "nvc_config": {"model": dict(model), "model_name": model_name, "converted_from": list(sources)},
        "global_step": 0,
        "epoch": 0,
    }
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buffer.getvalue())  # a killed conversion never leaves half a file
    written = load_checkpoint(out)
    build_network(written["nvc_config"]["model"], str(out), network_state(written, str(out)))
    return out


def convert_intra_inter(
    net: torch.nn.Module,
    model: Mapping[str, Any],
    model_name: str,
    files: Mapping[str, str | Path],
    expected: Mapping[str, Mapping[str, tuple[int, ...]]],
    to_ours: Callable[[Mapping[str, torch.Tensor], str], dict[str, torch.Tensor]],
    labels: Mapping[str, str],
    out: str | Path,
) -> Path:
    """The DCVC family's conversion: an official intra file and P file into one checkpoint of ``net``.

    ``files``, ``expected`` (official names -> shapes) and ``labels`` (named in refusals) are keyed
    by half, ``intra`` and ``inter``; ``to_ours`` renames one half's tensors. Every tensor is checked
    before anything loads; the buffers (coder and scale tables) are ours, taken from the fresh
    network and rebuilt by ``update(force=True)`` before writing.
    """
    state: dict[str, torch.Tensor] = {}
    for half in ("intra", "inter"):
        official = read_official_state(files[half])
        check_state(official, expected[half], f"{files[half]} ({labels[half]})")
        state.update(to_ours(official, half))
    parameters = dict(net.named_parameters())
    full = {key: state[key] if key in parameters else value for key, value in net.state_dict().items()}
    net.load_state_dict(full, strict=True)
    with torch.no_grad():
        net.update(force=True)
    sources = [str(Path(files[half]).resolve()) for half in ("intra", "inter")]
    return write_checkpoint(out, model, model_name, net.state_dict(), sources)
