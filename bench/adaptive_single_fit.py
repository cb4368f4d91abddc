"""One fit of a scene-adaptive model on one raw 4:2:0 frame: what its network and latents cost, and PSNR.

Why: changing a scene-adaptive codec one piece at a time (a gain, a schedule, a quantizer) needs the
parts of its bits apart, which ``evaluate.py`` does not print: this fits once (``fit_sequence``, the
same loop as the codec), codes the network and the latents (``compress``, real bytes), decodes what
the decoder would (``reconstruct``), and prints the weights' payload bits, the latents' payload bits
(the container's header and parameter set not included), PSNR-Y / PSNR-YUV 6:1:1 and it/s::

    python bench/adaptive_single_fit.py --yuv dog_176x144.yuv --size 176x144 --model coolchic \\
        --lmbda 125 --steps 2000 [--set latent_gain=1] [--oset 'phases=[...]']
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from omegaconf import OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from nvc_train.training.losses import plane_mses  # noqa: E402
from nvc_train.training.overfit import fit_sequence  # noqa: E402


def load_frame(path: Path, width: int, height: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame ``index`` of an 8-bit raw YUV 4:2:0 file as ([1,1,H,W], [1,2,H/2,W/2]) in [0, 1]."""
    frame_bytes = width * height * 3 // 2
    raw = np.fromfile(path, np.uint8, count=frame_bytes, offset=index * frame_bytes)
    if raw.size != frame_bytes:
        sys.exit(f"{path} has no frame {index} of {width}x{height} 4:2:0 8-bit")
    y = raw[: width * height].reshape(1, 1, height, width)
    uv = raw[width * height :].reshape(1, 2, height // 2, width // 2)
    return torch.from_numpy(y / 255.0).float(), torch.from_numpy(uv / 255.0).float()


def overrides(pairs: list[str]) -> dict:
    """``key=yaml`` pairs to a dict."""
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        out[key] = yaml.safe_load(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yuv", type=Path, required=True, help="8-bit raw YUV 4:2:0")
    parser.add_argument("--size", required=True, help="WxH")
    parser.add_argument("--frame", type=int, default=0)
    parser.add_argument("--model", default="coolchic", help="configs/model/<name>.yaml")
    parser.add_argument("--overfit", default=None, help="configs/overfit/<name>.yaml (default: --model)")
    parser.add_argument(
        "--lmbda", type=float, default=125.0, help="fits R + D / lambda_coolchic, i.e. bpp + lambda * MSE"
    )
    parser.add_argument("--steps", type=int, default=2000, help="overfit.total_steps")
    parser.add_argument("--set", nargs="*", default=[], help="model config overrides key=yaml")
    parser.add_argument("--oset", nargs="*", default=[], help="overfit preset overrides key=yaml")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    y, uv = load_frame(args.yuv, width, height, args.frame)
    model = OmegaConf.to_container(OmegaConf.load(REPO_ROOT / f"configs/model/{args.model}.yaml"))
    model.update(overrides(args.set))
    preset = OmegaConf.to_container(
        OmegaConf.load(REPO_ROOT / f"configs/overfit/{args.overfit or args.model}.yaml")
    )
    preset.update({"total_steps": args.steps, "steps_scale": 1.0, **overrides(args.oset)})
    from hydra.utils import get_class

    net_class = get_class(model.pop("_target_"))
    torch.manual_seed(0)
    net = net_class(
        height=height, width=width, num_frames=1, structure="ai", intra_period=1, gop_size=1, **model
    )
    net.init_from_frames(y, uv)
    fit = fit_sequence(net, y, uv, args.lmbda, preset)
    with torch.no_grad():  # the weights' estimated bits, which the step search and RDOQ optimise
        estimated_weights = float(net.parameter_coder()(net.network_parameters(), "dequantize")[1])
    payload = net.compress()
    y_hat, uv_hat = net.reconstruct()
    y_hat = torch.round(y_hat.clamp(0, 1) * 255) / 255
    uv_hat = torch.round(uv_hat.clamp(0, 1) * 255) / 255
    mses = plane_mses(y_hat[..., :height, :width], uv_hat[..., : height // 2, : width // 2], y, uv)[0]
    psnr = [10 * math.log10(1 / max(float(m), 1e-12)) for m in mses]
    network = sum(p.numel() for n, p in net.named_parameters() if net.is_network_parameter(n))
    result = {
        "model": args.model, "lambda": args.lmbda, "steps": args.steps, "network_parameters": network,
        "weights_bits": 8 * len(payload.parameters), "estimated_weights_bits": round(estimated_weights),
        "latent_bits": 8 * sum(len(f) for f in payload.frames),
        "psnr_y": round(psnr[0], 3), "psnr_yuv": round((6 * psnr[0] + psnr[1] + psnr[2]) / 8, 3),
        "fit_s": round(fit.fit_s, 1), "it_per_s": round(args.steps / fit.fit_s, 2),
        "rdoq": fit.stages.rdoq, "set": args.set, "oset": args.oset,
    }  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
