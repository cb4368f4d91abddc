"""DCVC-RT: microsoft/DCVC's ``cvpr2025_image.pth.tar`` + ``cvpr2025_video.pth.tar`` -> one checkpoint.

``python -m nvc_train.convert dcvc_rt --image IMAGE.pth.tar --video VIDEO.pth.tar --out OUT.ckpt``

The official code keeps its intra model (``DMCI``) and its P model (``DMC``) in two files; ours is one
network (:class:`models.dcvc_rt.DCVCRT`, ``configs/model/dcvc_rt.yaml``) with an ``intra`` and an
``inter`` half whose tensors are the official ones, shape for shape. :data:`RENAMES` is the whole
difference: an ordered list of (our prefix, official prefix) per half, first match wins, applied to
whole dotted components. Inside a block the names are the same on both sides (``adaptor``, ``dc``,
``ffn``, ``down``, ``up.conv``, ``conv``), so the table only maps the top levels. The expected
official names and shapes are derived from the table and our model's own parameters (never from a
file), so the check cannot drift from the model it loads into; the official models hold no buffers,
and our coder tables (``update()``) are built after loading and written with the weights.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import OmegaConf

from nvc_train.convert.official import ConversionError, convert_intra_inter
from nvc_train.networks import build_network

__all__ = ["RENAMES", "add_arguments", "convert", "expected_official", "to_ours"]

MODEL_NAME = "dcvc_rt"  # configs/model/dcvc_rt.yaml: the published architecture

# (our prefix, official prefix) per half; first match wins. Our names are relative to the half
# (``intra.`` / ``inter.``), the official ones to DMCI / DMC.
RENAMES: dict[str, list[tuple[str, str]]] = {
    "intra": [
        ("enc_in", "enc.enc_1"),
        ("enc", "enc.enc_2"),  # blocks 0..5, then the stride-2 conv (6)
        ("hyper_enc", "hyper_enc"),
        ("hyper_dec", "hyper_dec"),
        ("prior_fusion", "y_prior_fusion"),
        ("context_reduction", "y_spatial_prior_reduction"),
        ("context_adaptors.0", "y_spatial_prior_adaptor_1"),
        ("context_adaptors.1", "y_spatial_prior_adaptor_2"),
        ("context_adaptors.2", "y_spatial_prior_adaptor_3"),
        ("spatial_prior", "y_spatial_prior"),
        ("dec_out", "dec.dec_2"),
        ("dec", "dec.dec_1"),  # the upsampling block (0), then blocks 1..12
        ("q_enc", "q_scale_enc"),
        ("q_dec", "q_scale_dec"),
        ("z_prior", "bit_estimator_z"),
    ],
    "inter": [
        ("feature_adaptor_i", "feature_adaptor_i"),
        ("feature_adaptor_p", "feature_adaptor_p"),
        ("prior_feature", "feature_extractor.conv1"),
        ("context", "feature_extractor.conv2"),
        ("enc_in", "encoder.conv1"),
        ("enc.0", "encoder.conv2.0"),
        ("enc.1", "encoder.conv2.1"),
        ("enc.2", "encoder.conv3"),
        ("enc_down", "encoder.down"),
        ("hyper_enc", "hyper_encoder.conv"),
        ("hyper_dec", "hyper_decoder.conv"),
        ("temporal_prior", "temporal_prior_encoder"),
        ("prior_fusion", "y_prior_fusion.conv"),
        ("spatial_prior", "y_spatial_prior.conv"),
        ("dec_up", "decoder.up"),
        ("dec.3", "decoder.conv2"),
        ("dec", "decoder.conv1"),  # blocks 0..2
        ("recon_head", "recon_generation_net.head"),
        ("recon", "recon_generation_net.conv"),
        ("q_enc", "q_encoder"),
        ("q_dec", "q_decoder"),
        ("q_feature", "q_feature"),
        ("q_recon", "q_recon"),
        ("z_prior", "bit_estimator_z"),
    ],
}
"""Our parameter names -> the official ones, per half (see the module docstring)."""


def _renamed(name: str, table: list[tuple[str, str]], source: int, target: int) -> str | None:
    """``name`` with the first matching prefix (column ``source``) replaced by column ``target``."""
    for row in table:
        prefix = row[source]
        if name == prefix or name.startswith(prefix + "."):
            return row[target] + name[len(prefix) :]
    return None


def expected_official(net: torch.nn.Module) -> dict[str, dict[str, tuple[int, ...]]]:
    """Per half, the official names and shapes our ``net``'s parameters correspond to (its order).

    Raises :class:`ConversionError` if a parameter of ours has no row in :data:`RENAMES` (a model
    change that the table has not followed) or two map to one official name.
    """
    expected: dict[str, dict[str, tuple[int, ...]]] = {}
    for half, table in RENAMES.items():
        names: dict[str, tuple[int, ...]] = {}
        for ours, parameter in getattr(net, half).named_parameters():
            official = _renamed(ours, table, 0, 1)
            if official is None or official in names:
                raise ConversionError(f"RENAMES has no unique official name for our {half}.{ours}")
            names[official] = tuple(parameter.shape)
        expected[half] = names
    return expected


def to_ours(official: Mapping[str, torch.Tensor], half: str) -> dict[str, torch.Tensor]:
    """An official state dict of one half (already checked) under our names, ``half.`` prefixed."""
    state = {}
    for name, tensor in official.items():
        ours = _renamed(name, RENAMES[half], 1, 0)
        if ours is None:
            raise ConversionError(f"RENAMES has no row for the official {half} tensor {name}")
        state[f"{half}.{ours}"] = tensor
    return state


def _model_config() -> dict:
    """``configs/model/dcvc_rt.yaml`` as a plain dict (the architecture numbers of the checkpoint)."""
    path = Path(__file__).resolve().parents[2] / "configs" / "model" / f"{MODEL_NAME}.yaml"
    config = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    assert isinstance(config, dict)
    return config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The subcommand's options."""
    parser.add_argument(
        "--image", required=True, type=Path, help="official intra model (cvpr2025_image.pth.tar)"
    )
    parser.add_argument("--video", required=True, type=Path, help="official P model (cvpr2025_video.pth.tar)")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint to write (.ckpt)")
    parser.add_argument(
        "--force-zero-thres",
        type=float,
        default=None,
        help="code y elements with a predicted scale above this only (official README: 0.12); default off",
    )


def convert(args: argparse.Namespace) -> Path:
    """Read both official files, check every tensor, load them into our model, build its tables, write."""
    config = _model_config()
    config["force_zero_thres"] = getattr(args, "force_zero_thres", None)
    net = build_network(config, f"configs/model/{MODEL_NAME}.yaml")
    expected = expected_official(net)
    files = {"intra": args.image, "inter": args.video}
    labels = {"intra": "DCVC-RT intra DMCI", "inter": "DCVC-RT P DMC"}
    return convert_intra_inter(net, config, MODEL_NAME, files, expected, to_ours, labels, args.out)
