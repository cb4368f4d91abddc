"""Benchmark a codec against an anchor under common test conditions.

    python evaluate.py                          # x265 vs x264 on the embedded clips, low delay
    python evaluate.py codec=svtav1 anchor=x265 ctc=hevc_b,uvg structure=ra frames=96
    python evaluate.py ctc=folder ctc.path=/data/clips
    python evaluate.py ckpt=runs/train/RUN/checkpoints/last.ckpt   # a trained model against x265
    python evaluate.py codecs=[x264,x265,svtav1,aom] anchor=x265    # one table of several codecs
    python evaluate.py codecs=[x265] ckpt=[A.ckpt,B.ckpt] anchor=x265  # checkpoints among them

Writes points.csv/json, bdrate.csv/md, complexity.csv/md, rd_*.png and radar_*.png into the run folder
(``hydra.run.dir=DIR`` to choose it; re-running resumes). Several-codec runs keep their points in the
shared point store (``point_store=``), so that other runs reuse them.
"""

import sys

import hydra
from omegaconf import DictConfig

from nvc_train.cli import (
    apply_checkpoint_defaults,
    expand_group_lists,
    reexec_with_malloc_settings,
    register_resolvers,
    run_task,
)


@hydra.main(version_base="1.3", config_path="configs", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from nvc_train.evaluation.evaluate import evaluate

    run_task(evaluate, cfg)


if __name__ == "__main__":
    reexec_with_malloc_settings()
    register_resolvers()
    sys.argv = apply_checkpoint_defaults(expand_group_lists(sys.argv, groups=("ctc",)))
    main()
