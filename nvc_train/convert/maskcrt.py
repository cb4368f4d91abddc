"""MaskCRT: NYCU-MAPL/MaskCRT's ``models/{PSNR,SSIM}/{PSNR,SSIM}_Q{2..5}.pth.tar`` -> one checkpoint.

``python -m nvc_train.convert maskcrt --video PSNR_Q2.pth.tar [PSNR_Q3.pth.tar ...] --out OUT.ckpt``

MaskCRT publishes one file per rate (Q2 .. Q5, lambda 0.0035 .. 0.025), each the whole ``Pframe``
(``CondMo_CondResTransformerCodec.py``) as trained with ``DataParallel``: ``['state_dict']`` whose
keys carry ``module`` as their SECOND component (``Residual.module.net.x``; the official loader pops
that component) and ``criterion.*`` entries that it skips. The intra codec is inside the file
(``if_model.module.net.*``, DCVC-DC's ``IntraNoAR``): the official ``Iframe_Coder`` has its own
loading of DCVC-DC's ``cvpr2023_image_psnr.pth.tar`` commented out, so the weights it evaluates are
the file's. ``--image`` (a DCVC-DC intra file, as :mod:`nvc_train.convert.dcvc_dc` reads it) stands in
only for a video file without them; a file with both is refused rather than guessed.

Names: ``if_model.net.X`` -> ``intra.X`` (:class:`models.maskcrt.IntraModel`, DCVC-DC's names);
every other parameter -> ``inter.`` + its official name, except a factorized density's tensors,
which CompressAI writes ``_matrix<i>`` / ``_bias<i>`` / ``_factor<i>`` and we write
``matrices.<i>`` / ``biases.<i>`` / ``factors.<i>`` (as :mod:`nvc_train.convert.ssf`). The expected
names and shapes are our model's own parameters, so the check cannot drift from what it loads into;
every missing, unexpected or mis-shaped tensor is named at once. The official buffers are not our
parameters: the constants among them (likelihood and scale bounds, SpyNet's normalisation) are
checked against ours and the rest (coder tables, Swin position indices and shift masks, GDN
pedestals) dropped, since ours are computed.

Quality: file ``i`` (lowest quality first) becomes rate point ``q_index = i`` of one
:class:`models.maskcrt.MaskCRTSet`; its intra anchor is ``Q - 2`` (the official ``q_index``), with
``Q`` read from the file name (``_Q<digit>``) or given by ``--quality``. One file alone becomes the
plain :class:`models.maskcrt.MaskCRT` of ``configs/model/maskcrt.yaml`` (with its anchor), which
``train.py model=maskcrt callbacks.init_weights.path=OUT`` can start from.
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

__all__ = ["add_arguments", "convert", "official_to_ours", "quality_of", "unwrap_official"]

MODEL_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "model" / "maskcrt.yaml"
SINGLE_TARGET = "models.maskcrt.MaskCRT"
SET_TARGET = "models.maskcrt.MaskCRTSet"
MEMBER_PREFIX = "members.{q}."
QUALITIES = (2, 3, 4, 5)  # the published files; intra anchor = Q - 2 (DCVC-DC's four anchors)
INTRA_OFFICIAL = "if_model.net."  # the intra codec inside a MaskCRT file (after the unwrap)
SKIPPED = "criterion"  # the training loss module: the official loader skips it

RENAMES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^(.+\.entropy_bottleneck)\._matrix(\d+)$"), r"\1.matrices.\2"),
    (re.compile(r"^(.+\.entropy_bottleneck)\._bias(\d+)$"), r"\1.biases.\2"),
    (re.compile(r"^(.+\.entropy_bottleneck)\._factor(\d+)$"), r"\1.factors.\2"),
)
"""Official inter name -> ours (after ``inter.``); every other name is unchanged."""

# Official buffers by their last name component. Constants are checked against the value ours
# uses; coder state and indices are computed by our model, so dropped.
CONSTANT_BUFFERS: dict[str, float] = {
    "likelihood_lower_bound.bound": 1e-9,
    "lower_bound_scale.bound": 0.11,
    "scale_bound": 0.11,
}
COMPUTED_BUFFERS = (
    "_offset",
    "_quantized_cdf",
    "_cdf_length",
    "scale_table",
    "target",
    "pedestal",
    "lower_bound.bound",  # GDN reparametrisation bound (a function of the pedestal)
    "relative_position_index",
    "attn_mask",
)
SPYNET_NORM = {  # MENet.net.mean / std: SpyNet's input normalisation, as the official class sets it
    "MENet.net.mean": (0.406, 0.456, 0.485),
    "MENet.net.std": (0.225, 0.224, 0.229),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``maskcrt`` subcommand's arguments."""
    parser.add_argument(
        "--video",
        nargs="+",
        required=True,
        type=Path,
        metavar="PSNR_Q.pth.tar",
        help="official MaskCRT files (models/PSNR/PSNR_Q2..Q5.pth.tar), lowest quality first: "
        "file i becomes q_index i",
    )
    parser.add_argument(
        "--image",
        type=Path,
        help="DCVC-DC intra file (cvpr2023_image_psnr.pth.tar), only for video files without if_model.*",
    )
    parser.add_argument(
        "--quality",
        nargs="+",
        type=int,
        choices=QUALITIES,
        help="the Q of each --video file (default: read from its name, ..._Q<digit>...)",
    )
    parser.add_argument("--out", required=True, type=Path, help="the checkpoint to write (.ckpt)")
    parser.add_argument(
        "--name", default="maskcrt", help="the codec's name in result tables (default maskcrt)"
    )


def quality_of(path: Path) -> int:
    """The published quality level in a file name (``PSNR_Q5.pth.tar`` -> 5), or ConversionError."""
    found = re.findall(r"Q(\d)", path.name)
    if len(found) != 1 or int(found[0]) not in QUALITIES:
        raise ConversionError(
            f"{path}: no quality level Q{QUALITIES[0]}..Q{QUALITIES[-1]} in the file name; give --quality"
        )
    return int(found[0])


def unwrap_official(state: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """A MaskCRT file's tensors as the official loader sees them: second component popped, criterion skipped.

    ``read_official_state`` has already removed a leading ``module.``; MaskCRT wraps each child
    module instead (``MENet.module.net...``), so the ``module`` is the second component. A key
    without it is refused: it would mean a file of another layout.
    """
    out: dict[str, torch.Tensor] = {}
    unwrapped = []
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == SKIPPED:
            continue
        if len(parts) < 3 or parts[1] != "module":
            unwrapped.append(key)
            continue
        out[".".join(parts[:1] + parts[2:])] = value
    if unwrapped:
        shown = ", ".join(unwrapped[:8]) + (f" (+{len(unwrapped) - 8} more)" if len(unwrapped) > 8 else "")
        raise ConversionError(
            f"{source} does not have the official layout: keys without the DataParallel 'module' as "
            f"their second component ({len(unwrapped)}): {shown}"
        )
    return out


def _is_buffer(name: str) -> bool:
    return name in SPYNET_NORM or name.endswith(tuple(CONSTANT_BUFFERS) + COMPUTED_BUFFERS)


def _check_constants(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Constants that change the bits or the flow if they differ from ours: refuse a file that has others."""
    wrong = []
    for name, tensor in state.items():
        expected: tuple[float, ...] | None = SPYNET_NORM.get(name)
        for suffix, value in CONSTANT_BUFFERS.items():
            if name.endswith(suffix):
                expected = (value,)
        if expected is None:
            continue
        got = tensor.detach().double().flatten()
        want = torch.tensor(expected, dtype=torch.float64)
        if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-6, atol=0.0):
            wrong.append(f"{name} = {got[:3].tolist()} (ours {list(expected)})")
    if wrong:
        raise ConversionError(f"{source}: constants differ from this model's: {', '.join(wrong)}")


def official_to_ours(
    state: Mapping[str, torch.Tensor], intra: Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """One unwrapped MaskCRT file's parameters under our names (``intra.`` / ``inter.``).

    ``intra`` (a DCVC-DC intra file's tensors) supplies ``intra.*`` when the file has no
    ``if_model.net.*``. Buffers are left out (see the module docstring).
    """
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if _is_buffer(name):
            continue
        if name.startswith(INTRA_OFFICIAL):
            out["intra." + name[len(INTRA_OFFICIAL) :]] = tensor
            continue
        for pattern, replacement in RENAMES:
            name = pattern.sub(replacement, name)
        out["inter." + name] = tensor
    if intra is not None:
        out.update({"intra." + name: tensor for name, tensor in intra.items()})
    return out


def model_config(anchors: list[int]) -> dict[str, Any]:
    """The network config the checkpoint carries: ``configs/model/maskcrt.yaml``, one member per file."""
    numbers = OmegaConf.to_container(OmegaConf.load(MODEL_CONFIG), resolve=True)
    if not isinstance(numbers, dict):
        raise ConversionError(f"{MODEL_CONFIG} is not a mapping")
    numbers.pop("_target_", None)
    numbers.pop("intra_anchor", None)
    if len(anchors) == 1:
        return {"_target_": SINGLE_TARGET, "intra_anchor": anchors[0], **numbers}
    return {"_target_": SET_TARGET, "intra_anchors": list(anchors), **numbers}


def _intra_source(state: Mapping[str, torch.Tensor], image: Path | None, source: str) -> bool:
    """Whether ``--image`` supplies the intra codec of this file (refuses an ambiguous pair)."""
    has_intra = any(name.startswith(INTRA_OFFICIAL) for name in state)
    if has_intra and image is not None:
        raise ConversionError(
            f"{source} carries its own intra codec (if_model.*), which the official code evaluates; "
            f"--image {image} would replace it: drop --image"
        )
    if not has_intra and image is None:
        raise ConversionError(
            f"{source} has no intra codec (if_model.*): give --image (DCVC-DC's cvpr2023_image_psnr.pth.tar)"
        )
    return not has_intra


def convert(args: argparse.Namespace) -> Path:
    """Read, unwrap, rename and check every file, load them as the members of one set, build tables, write."""
    files: list[Path] = list(args.video)
    name = checked_model_name(args.name, "--name")
    if args.quality is not None and len(args.quality) != len(files):
        raise ConversionError(f"--quality gives {len(args.quality)} levels for {len(files)} --video files")
    qualities = list(args.quality) if args.quality is not None else [quality_of(path) for path in files]
    if qualities != sorted(qualities) or len(set(qualities)) != len(qualities):
        raise ConversionError(f"give the --video files lowest quality first, each once (got Q{qualities})")
    config = model_config([q - 2 for q in qualities])
    cls, kwargs = checked_network_config(config, str(MODEL_CONFIG))
    single = len(files) == 1
    with torch.device("meta"):
        member = cls(**kwargs) if single else cls(**{**kwargs, "intra_anchors": [0]}).members[0]
    expected = {key: tuple(p.shape) for key, p in member.named_parameters()}
    image_state = None

    net_state: dict[str, torch.Tensor] = {}
    for q, path in enumerate(files):
        state = unwrap_official(read_official_state(path), str(path))
        intra = None
        if _intra_source(state, args.image, str(path)):
            if image_state is None:
                image_state = read_official_state(args.image)
                check_state(image_state, _intra_expected(expected), f"{args.image} (DCVC-DC intra IntraNoAR)")
            intra = image_state
        _check_constants(state, str(path))
        check_state(official_to_ours(state, intra), expected, f"{path} (MaskCRT Pframe)")
        prefix = "" if single else MEMBER_PREFIX.format(q=q)
        net_state.update({prefix + key: value for key, value in official_to_ours(state, intra).items()})

    net = cls(**kwargs)
    missing, unexpected = net.load_state_dict(net_state, strict=False)
    parameter_names = {key for key, _ in net.named_parameters()}
    if unexpected or parameter_names & set(missing):
        raise ConversionError(
            f"internal: converted names do not fit {config['_target_']}: {unexpected or missing}"
        )
    with torch.no_grad():
        net.update()  # our coder's tables, centred on the published medians (no refit)
    return write_checkpoint(args.out, config, name, net.state_dict(), [str(path) for path in files])


def _intra_expected(expected: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The DCVC-DC intra file's names and shapes: our ``intra.*`` parameters without the prefix."""
    return {key[len("intra.") :]: shape for key, shape in expected.items() if key.startswith("intra.")}
