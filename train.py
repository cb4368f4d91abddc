"""Train a neural video codec.

    python train.py                                   # tiny codec, embedded clips, CPU, ~5 minutes
    python train.py model=dcvc_lite data=folder data.folder=/data/clips trainer=gpu
    python train.py trainer=ddp logger=csv experiment=tiny_cascade
    python train.py hydra.run.dir=runs/my_run         # the same command again resumes from its last.ckpt

Writes the run folder (``hydra.run.dir``): checkpoints/ (last.ckpt, best), csv/ and wandb/ logs,
.hydra/ (the config) and run_info/ (git commit, diff, packages).
"""

import hydra
from omegaconf import DictConfig

from nvc_train.cli import run_task


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> None:
    from nvc_train.training.train import train

    run_task(train, cfg)


if __name__ == "__main__":
    main()
