"""CompressAI ssf2020 (ScaleSpaceFlow), one file per quality, into one codec whose rate points are the files.

``python -m nvc_train.convert ssf --compressai Q1.pth.tar [Q2.pth.tar ...] --out OUT.ckpt``

CompressAI publishes Scale-Space Flow as one model per quality (``ssf2020-mse-1-c1ac1a47.pth.tar``
... ``ssf2020-mse-9-e89345c4.pth.tar``, all of the same architecture). A benchmark wants one codec
with several rate points, so the files given become the members of one
``models.ssf.ScaleSpaceFlowSet``: file ``i`` (in the order given; give the lowest quality first,
since q_index 0 is the lowest rate everywhere in this framework) is rate point ``q_index = i``.
The architecture numbers are ``configs/model/ssf.yaml``, which must describe CompressAI's model
(single-rate, RGB): its parameter set is the published one exactly. One file alone becomes that
plain ``models.ssf.ScaleSpaceFlow``, so ``train.py model=ssf callbacks.init_weights.path=OUT.ckpt``
can start from it (a set has no training config).

Each file is read as CompressAI reads it (weights only; an optional ``state_dict`` / ``net``
nesting and ``module.`` prefix: :func:`nvc_train.convert.official.read_official_state`), renamed by
:data:`RENAMES` into our names, and checked against the exact parameter names and shapes of one
member; every missing, unexpected or mis-shaped tensor is named at once. CompressAI's buffers
(its coder's CDF tables and constant bounds) are not parameters: they are accepted, their constant
bounds checked against ours, and otherwise dropped, since ``update()`` builds our coder's tables
from the converted parameters (centred on the published medians, ``quantiles[:, 0, 1]``).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from nvc_train.convert.official import ConversionError, check_state, read_official_state, write_checkpoint
from nvc_train.networks import checked_model_name, checked_network_config

__all__ = ["RENAMES", "add_arguments", "convert", "model_config", "official_to_ours"]

MODEL_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "model" / "ssf.yaml"
SET_TARGET = "models.ssf.ScaleSpaceFlowSet"  # the class that holds one member per rate point
SINGLE_TARGET = "models.ssf.ScaleSpaceFlow"  # one file: the plain model (configs/model/ssf.yaml)
MEMBER_PREFIX = "members.{q}."  # our name of a tensor of rate point q = this + its official name

RENAMES: tuple[tuple[re.Pattern[str], str], ...] = (
    # CompressAI's older spelling of the bottleneck density, which its own load_state_dict also maps
    # (compressai.models.utils.remap_old_keys); files written by 1.2.x already use the new one.
    (re.compile(r"^(.+\.entropy_bottleneck)\._matrix(\d+)$"), r"\1.matrices.\2"),
    (re.compile(r"^(.+\.entropy_bottleneck)\._bias(\d+)$"), r"\1.biases.\2"),
    (re.compile(r"^(.+\.entropy_bottleneck)\._factor(\d+)$"), r"\1.factors.\2"),
)
"""Official name -> our name within one member; every other name is the same (``members.<q>.`` before it)."""

HYPERPRIORS = ("img_hyperprior", "res_hyperprior", "motion_hyperprior")
TABLE_BUFFERS = (  # CompressAI's coder state: ours is rebuilt by update()
    "entropy_bottleneck._offset",
    "entropy_bottleneck._quantized_cdf",
    "entropy_bottleneck._cdf_length",
    "entropy_bottleneck.target",
    "gaussian_conditional._offset",
    "gaussian_conditional._quantized_cdf",
    "gaussian_conditional._cdf_length",
    "gaussian_conditional.scale_table",
)
BOUND_BUFFERS = {  # constants of CompressAI's entropy models -> the config field (or value) ours use
    "entropy_bottleneck.likelihood_lower_bound.bound": 1e-9,
    "gaussian_conditional.likelihood_lower_bound.bound": 1e-9,
    "gaussian_conditional.lower_bound_scale.bound": "scale_min",
    "gaussian_conditional.scale_bound": "scale_min",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``ssf`` subcommand's arguments."""
    parser.add_argument(
        "--compressai",
        nargs="+",
        required=True,
        type=Path,
        metavar="Q.pth.tar",
        help="CompressAI ssf2020 checkpoints, lowest quality first: file i becomes q_index i",
    )
    parser.add_argument("--out", required=True, type=Path, help="the checkpoint to write (.ckpt)")
    parser.add_argument(
        "--name", default="ssf2020", help="the codec's name in result tables (default ssf2020)"
    )


def model_config(rate_points: int) -> dict[str, Any]:
    """The network config the checkpoint carries: ``configs/model/ssf.yaml`` as a set of members."""
    numbers = OmegaConf.to_container(OmegaConf.load(MODEL_CONFIG), resolve=True)
    if not isinstance(numbers, dict):
        raise ConversionError(f"{MODEL_CONFIG} is not a mapping")
    numbers.pop("_target_", None)
    if numbers.get("variable_rate") or numbers.get("colour_space") != "rgb":
        raise ConversionError(
            f"{MODEL_CONFIG} no longer describes CompressAI's model (variable_rate: false, colour_space: "
            f"rgb); it has variable_rate={numbers.get('variable_rate')}, "
            f"colour_space={numbers.get('colour_space')}"
        )
    if rate_points == 1:  # one quality is ssf.yaml's own model: train.py model=ssf can start from it
        return {"_target_": SINGLE_TARGET, **numbers}
    return {"_target_": SET_TARGET, "rate_points": rate_points, **numbers}


def official_to_ours(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One official state dict with :data:`RENAMES` applied (names within one member)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        for pattern, replacement in RENAMES:
            name = pattern.sub(replacement, name)
        out[name] = tensor
    return out


def _buffer_names() -> set[str]:
    return {f"{prior}.{suffix}" for prior in HYPERPRIORS for suffix in (*TABLE_BUFFERS, *BOUND_BUFFERS)}


def _check_bounds(state: Mapping[str, torch.Tensor], numbers: Mapping[str, Any], source: str) -> None:
    """A file whose entropy models use other constant bounds than ours would give other bits: refuse it."""
    wrong = []
    for prior in HYPERPRIORS:
        for suffix, expected in BOUND_BUFFERS.items():
            tensor = state.get(f"{prior}.{suffix}")
            value = float(numbers[expected]) if isinstance(expected, str) else expected
            if tensor is not None and (tensor.numel() != 1 or abs(float(tensor) - value) > 1e-6 * value):
                wrong.append(f"{prior}.{suffix} = {tensor.flatten()[:3].tolist()} (ours {value:g})")
    if wrong:
        raise ConversionError(
            f"{source}: entropy-model constants differ from this model's: {', '.join(wrong)}"
        )


def convert(args: argparse.Namespace) -> Path:
    """Read, rename and check every file, load them as the members of one set, build tables, write."""
    files: list[Path] = list(args.compressai)
    name = checked_model_name(args.name, "--name")
    config = model_config(len(files))
    cls, kwargs = checked_network_config(config, str(MODEL_CONFIG))
    single = len(files) == 1
    with torch.device("meta"):
        member = cls(**kwargs) if single else cls(**{**kwargs, "rate_points": 1}).members[0]
    expected = {key: tuple(p.shape) for key, p in member.named_parameters()}
    buffers = _buffer_names()

    net_state: dict[str, torch.Tensor] = {}
    for q, path in enumerate(files):
        state = official_to_ours(read_official_state(path))
        parameters = {key: value for key, value in state.items() if key not in buffers}
        check_state(parameters, expected, str(path))
        _check_bounds(state, config, str(path))
        prefix = "" if single else MEMBER_PREFIX.format(q=q)
        net_state.update({prefix + key: value for key, value in parameters.items()})

    net = cls(**kwargs)
    missing, unexpected = net.load_state_dict(net_state, strict=False)
    parameter_names = {key for key, _ in net.named_parameters()}
    if unexpected or parameter_names & set(missing):
        raise ConversionError(
            f"internal: converted names do not fit {config['_target_']}: {unexpected or missing}"
        )
    with torch.no_grad():
        net.update()  # our coder's tables, centred on the published medians
    return write_checkpoint(args.out, config, name, net.state_dict(), [str(path) for path in files])
