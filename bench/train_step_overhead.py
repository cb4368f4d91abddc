"""What Lightning costs per training step: ``RDModule`` under a Trainer vs a plain PyTorch loop.

Both sides train the same network (identical initial weights) on the same in-memory batches with
the same optimizer and scheduler (``RDModule.configure_optimizers``), the same loss
(``RDModule.code_chain`` + ``RDModule.rd_loss``) and the same gradient clipping; data loading is
out of the picture (the batches are made once, up front). The Trainer side additionally does what
the framework adds on purpose: logging of the loss terms, the non-finite loss / gradient check and
its skip counter. Rounds alternate between the two sides, and the median ratio is reported, so a
busy machine slows both alike.

    .venv/bin/python bench/train_step_overhead.py     # the default run's sizes: tiny codec, 96x96, B=4, T=3
    .venv/bin/python bench/train_step_overhead.py --steps 20 --rounds 5 --crop 128 --threads 1

Prints per-round step times and the ratio Lightning / plain (target <= 1.05).
"""

from __future__ import annotations

import argparse
import copy
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def build(model: str, overrides: list[str]):
    """The configured network and RD module, exactly as ``train`` builds them."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", "paths.run_dir=/tmp/unused", *overrides])
    net = instantiate(cfg.model, _convert_="all")
    module = instantiate(cfg.module, net=net, _convert_="all")
    return cfg, module


def make_batches(
    count: int, batch: int, frames: int, crop: int, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """Smooth random pictures (noise would make every codec's job artificially hard)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        base = torch.rand(batch, 1, 3, crop // 8, crop // 8, generator=gen)
        y = torch.nn.functional.interpolate(base.flatten(0, 1), size=(crop, crop), mode="bilinear")
        y = y.view(batch, 1, 3, crop, crop)[:, :, :1].expand(batch, frames, 1, crop, crop).contiguous()
        uv = torch.nn.functional.avg_pool2d(y.flatten(0, 1), 2).view(batch, frames, 1, crop // 2, crop // 2)
        out.append({"y": y, "uv": uv.expand(-1, -1, 2, -1, -1).contiguous()})
    return out


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def time_lightning(module, batches, warmup: int, clip: float) -> tuple[float, float]:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback

    marks: dict[str, tuple[float, float]] = {}

    class Timing(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == warmup:
                marks["start"] = _now()

        def on_train_end(self, trainer, pl_module):
            marks["end"] = _now()

    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=len(batches),
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        gradient_clip_val=clip,
        callbacks=[Timing()],
    )
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
    trainer.fit(module, train_dataloaders=loader)
    (start_wall, start_cpu), (end_wall, end_cpu) = marks["start"], marks["end"]
    steps = len(batches) - warmup
    return (end_wall - start_wall) / steps, (end_cpu - start_cpu) / steps


def time_plain(module, batches, warmup: int, clip: float) -> tuple[float, float]:
    configured = module.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    scheduler = configured["lr_scheduler"]["scheduler"] if isinstance(configured, dict) else None
    params = [p for p in module.parameters() if p.requires_grad]
    module.train()
    start = None
    for index, batch in enumerate(batches):
        if index == warmup:
            start = _now()
        y, uv = batch["y"], batch["uv"]
        q_index = module.sample_q_index(y.shape[0])
        loss = module.rd_loss(module.code_chain(y, uv, q_index), q_index)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    assert start is not None
    steps = len(batches) - warmup
    return (time.perf_counter() - start[0]) / steps, (time.process_time() - start[1]) / steps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="dcvc_lite_tiny")
    parser.add_argument("--batch", type=int, default=None, help="default: the config's data.batch_size")
    parser.add_argument("--frames", type=int, default=None, help="default: the config's data.frames")
    parser.add_argument("--crop", type=int, default=None, help="default: the config's data.crop")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: the config's torch_threads)"
    )
    args = parser.parse_args()

    import lightning.pytorch  # noqa: F401  (it sets its loggers' levels on import; quiet them after)

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    cfg, template = build(args.model, [])
    threads = args.threads if args.threads is not None else cfg.get("torch_threads")
    if threads:
        torch.set_num_threads(int(threads))
    clip = float(cfg.trainer.gradient_clip_val or 0.0)
    args.batch = args.batch or int(cfg.data.batch_size)
    args.frames = args.frames or int(cfg.data.frames)
    args.crop = args.crop or int(cfg.data.crop)
    batches = make_batches(args.warmup + args.steps, args.batch, args.frames, args.crop)
    initial = copy.deepcopy(template.state_dict())

    ratios, cpu_ratios = [], []
    print(
        f"{args.model}: batch {args.batch}, T={args.frames}, {args.crop}x{args.crop}, "
        f"{args.steps} timed steps after {args.warmup} warm-up, {torch.get_num_threads()} threads"
    )
    for round_index in range(args.rounds):
        results = {}
        order = ("lightning", "plain") if round_index % 2 == 0 else ("plain", "lightning")
        for side in order:
            _, module = build(args.model, [])
            module.load_state_dict(initial)
            torch.manual_seed(round_index)  # same q_index draws on both sides
            timing = time_lightning if side == "lightning" else time_plain
            results[side] = timing(module, batches, args.warmup, clip)
        (l_wall, l_cpu), (p_wall, p_cpu) = results["lightning"], results["plain"]
        ratios.append(l_wall / p_wall)
        cpu_ratios.append(l_cpu / p_cpu)
        print(
            f"round {round_index}: lightning {l_wall * 1e3:7.1f} ms/step (cpu {l_cpu * 1e3:7.1f}), "
            f"plain {p_wall * 1e3:7.1f} ms/step (cpu {p_cpu * 1e3:7.1f}), ratio {ratios[-1]:.3f}"
        )
    print(
        f"median ratio lightning/plain: wall {statistics.median(ratios):.3f}, "
        f"cpu {statistics.median(cpu_ratios):.3f} (target <= 1.05)"
    )


if __name__ == "__main__":
    main()
