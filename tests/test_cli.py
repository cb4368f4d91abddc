"""Command-line sugar of evaluate.py: group lists, checkpoint defaults, run-folder names."""

from __future__ import annotations

from omegaconf import OmegaConf

from nvc_train.cli import apply_checkpoint_defaults, expand_group_lists, register_resolvers


def test_comma_list_of_test_sets_becomes_a_group_list() -> None:
    argv = ["evaluate.py", "ctc=hevc_b,uvg", "codec=x265", "metrics=[psnr,vmaf]"]
    assert expand_group_lists(argv, groups=("ctc",)) == [
        "evaluate.py", "ctc=[hevc_b,uvg]", "codec=x265", "metrics=[psnr,vmaf]",
    ]  # fmt: skip


def test_checkpoint_implies_its_codec_and_x265_unless_told() -> None:
    assert apply_checkpoint_defaults(["e.py", "ckpt=a.ckpt"]) == [
        "e.py",
        "ckpt=a.ckpt",
        "codec=checkpoint",
        "anchor=x265",
    ]
    assert apply_checkpoint_defaults(["e.py", "ckpt=a.ckpt", "anchor=x264"])[-1] == "codec=checkpoint"
    assert apply_checkpoint_defaults(["e.py", "codec=x265"]) == ["e.py", "codec=x265"]


def test_run_folder_names_never_collide_across_checkpoints_and_frame_caps() -> None:
    register_resolvers()
    cfg = OmegaConf.create(
        {"codec": {"name": None}, "ckpt": "runs/train/a/checkpoints/last.ckpt", "frames": None,
         "dir": "${or:${frames},all}/${codec_label:${codec.name},${ckpt}}"}
    )  # fmt: skip
    assert cfg.dir == "all/a-last"
    cfg.frames, cfg.ckpt = 8, "runs/train/b/checkpoints/last.ckpt"
    assert cfg.dir == "8/b-last"
    cfg.codec.name = "x265"
    assert cfg.dir == "8/x265"
