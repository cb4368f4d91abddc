"""models/hinerv.py is HiNeRV as published: the official sizes' counts, layers, grids, head, loss, patches.

The reference counts are the official code's (github hmkx/HiNeRV, unmodified; see
models.hinerv.REFERENCE and tools/hinerv_official_counts.py); counting runs on the ``meta`` device.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from datamodules.patches import PatchDataModule, patch_origins
from models import build_model
from models.hinerv import LAYER_NORM_EPS, REFERENCE, ConvNeXtBlock, HiNeRV, Stage, _lerp_time
from nvc_train.complexity import count_macs
from nvc_train.training.losses import l1_msssim_rgb
from nvc_train.video.colour import rgb_to_yuv420, ycbcr_to_rgb, yuv420_to_444

OFFICIAL_SIZES = ["hinerv_s", "hinerv_m", "hinerv_l", "hinerv_xl", "hinerv_xxl"]


def _meta(name: str, **geometry: int) -> HiNeRV:
    with torch.device("meta"):
        return build_model(name, **geometry)


def _tiny(height: int = 64, width: int = 96, frames: int = 4, seed: int = 0, **overrides: object) -> HiNeRV:
    torch.manual_seed(seed)
    return build_model("hinerv_tiny", height=height, width=width, num_frames=frames, **overrides)


@pytest.mark.parametrize("name", OFFICIAL_SIZES)
def test_sizes_count_what_the_official_code_counts(name: str) -> None:
    """Parameters exactly, kMAC/px within 0.1% (ours adds the 9 MACs/px of the RGB -> YUV matrix)."""
    ref = REFERENCE[name]
    net = _meta(name, height=ref["height"], width=ref["width"], num_frames=ref["num_frames"])
    assert sum(p.numel() for p in net.parameters()) == ref["params"]
    macs = count_macs(net.frames_forward, torch.zeros(1, dtype=torch.long, device="meta"))
    assert macs / (ref["height"] * ref["width"]) / 1e3 == pytest.approx(ref["kmac_per_px"], rel=1e-3)
    assert (net.base_height, net.base_width) == (18, 32)  # 1080 x 1920 / (5 * 3 * 2 * 2)


def test_hinerv_is_the_m_size(repo_root: Path) -> None:
    configs = repo_root / "configs" / "model"
    m = yaml.safe_load((configs / "hinerv_m.yaml").read_text())
    assert yaml.safe_load((configs / "hinerv.yaml").read_text()) == m
    for name in OFFICIAL_SIZES:
        config = yaml.safe_load((configs / f"{name}.yaml").read_text())
        built = _meta(name, height=1080, width=1920, num_frames=600).architecture
        assert {key: built[key] for key in config if key != "_target_"} == {
            key: value for key, value in config.items() if key != "_target_"
        }


def test_widths_and_hidden_sizes_follow_the_official_rule() -> None:
    """Stage s takes the previous width and gives floor(width / 2); hidden = int(out * expansion)."""
    net = _meta("hinerv_m", height=1080, width=1920, num_frames=600)
    assert net.widths == [400, 200, 100, 50]
    firsts = [stage.blocks[0] for stage in net.stages]
    assert [(b.expand.in_features, b.expand.out_features, b.project.out_features) for b in firsts] == [
        (400, 1600, 400), (400, 800, 200), (200, 400, 100), (100, 50, 50),
    ]  # fmt: skip
    assert [len(stage.blocks) for stage in net.stages] == [3, 3, 3, 1]
    encodings = [[tuple(g.shape) for g in stage.encoding.grids] for stage in net.stages]
    assert encodings[0] == [(600, 5, 5, 8), (300, 5, 5, 16), (150, 5, 5, 32)]
    assert encodings[3] == [(600, 2, 2, 1), (300, 2, 2, 2), (150, 2, 2, 4)]
    assert [tuple(g.shape) for g in net.base_grids.grids] == [(150, 18, 32, 4), (75, 18, 32, 8)]


def test_blocks_have_no_bias_and_every_layernorm_is_official() -> None:
    net = _tiny()
    norms = [m for m in net.modules() if isinstance(m, nn.LayerNorm)]
    # one before every upsampling, one in every block
    assert len(norms) == len(net.stages) + sum(len(stage.blocks) for stage in net.stages)
    assert all(not n.elementwise_affine and n.eps == LAYER_NORM_EPS == 1e-6 for n in norms)
    assert all(isinstance(stage.norm, nn.LayerNorm) for stage in net.stages)
    for block in (m for m in net.modules() if isinstance(m, ConvNeXtBlock)):
        assert block.depthwise.bias is None and block.expand.bias is None and block.project.bias is None
        assert block.depthwise.groups == block.depthwise.in_channels
    # biases where the official code has them (stem, encodings' projections, head), zero at the start
    biased = [net.stem, net.head, *(stage.encoding_projection for stage in net.stages)]
    assert all(layer.bias is not None and not layer.bias.any() for layer in biased)
    assert sum(1 for name, _ in net.named_parameters() if name.endswith("bias")) == len(biased)


def test_grids_start_uniform_in_a_thousandth() -> None:
    net = _tiny(frames=8)
    grids = [p for name, p in net.named_parameters() if ".grids." in name]
    assert len(grids) == 2 + 2 * len(net.stages)
    values = torch.cat([g.detach().flatten() for g in grids])
    assert values.abs().max() <= 1e-3 and values.abs().max() > 0.9e-3
    assert abs(float(values.mean())) < 1e-4


def test_time_is_sampled_with_half_pixel_alignment() -> None:
    """As F.interpolate(align_corners=False) stretches S slices over T frames (clamped at the ends)."""
    grid = torch.randn(5, 3, 2)
    for frames in (5, 8, 17, 3):
        indices = torch.arange(frames)
        ours = _lerp_time(grid, indices, frames)
        reference = (
            F.interpolate(
                grid.permute(1, 2, 0).reshape(1, 6, 5), size=frames, mode="linear", align_corners=False
            )
            .reshape(3, 2, frames)
            .permute(2, 0, 1)
        )
        torch.testing.assert_close(ours, reference)


def test_output_is_a_sigmoid_rgb_converted_to_420() -> None:
    net = _tiny(height=50, width=70)
    with torch.no_grad():
        for stage in net.stages:  # push the pre-sigmoid values far out: the output must stay in [0, 1]
            stage.blocks[-1].project.weight.mul_(1e3)
        rgb = net.rgb_forward(torch.tensor([0, 3]))
        y, uv, bits = net.frames_forward(torch.tensor([0, 3]))
    assert rgb.shape == (2, 3, 50, 70) and y.shape == (2, 1, 50, 70) and uv.shape == (2, 2, 25, 35)
    assert rgb.min() >= 0 and rgb.max() <= 1 and (rgb < 0.01).any() and (rgb > 0.99).any()
    expected_y, expected_u, expected_v = rgb_to_yuv420(rgb, "bt709", full_range=False)
    torch.testing.assert_close(y, expected_y)
    torch.testing.assert_close(uv, torch.cat([expected_u, expected_v], dim=1))
    assert float(bits) == 0.0


@pytest.mark.parametrize(
    "crop",
    [
        [[0, 0, 32, 32], [18, 38, 32, 32], [10, 20, 32, 32], [2, 30, 32, 32]],  # corners, odd cells
        [[0, 0, 50, 70]],  # the whole frame as one patch
        [[4, 6, 24, 40], [26, 26, 24, 40]],  # non-square
    ],
)
def test_a_patch_equals_the_same_pixels_of_the_whole_frame(crop: list[list[int]]) -> None:
    net = _tiny(height=50, width=70, frames=5)
    indices = torch.tensor([0, 4, 2, 1][: len(crop)])
    with torch.no_grad():
        whole = net.rgb_forward(indices)
        patches = net.rgb_forward(indices, torch.tensor(crop))
    for item, (top, left, height, width) in enumerate(crop):
        torch.testing.assert_close(
            patches[item], whole[item, :, top : top + height, left : left + width], atol=1e-5, rtol=0
        )


def test_patches_train_every_weight_and_bad_crops_raise() -> None:
    net = _tiny(height=64, width=96, frames=3)
    out = net(torch.tensor([0, 2]), crop=torch.tensor([[0, 0, 32, 32], [32, 64, 32, 32]]))
    assert out.y.shape == (2, 1, 32, 32) and out.uv.shape == (2, 2, 16, 16)
    (out.y.square().mean() + out.uv.square().mean()).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    # the last frame's encoding slices get no gradient from frames 0 and 2 only if they are unused
    assert not [n for n in missing if "encoding.grids" not in n], missing
    with pytest.raises(ValueError, match="even offsets"):
        net.frames_forward(torch.tensor([0]), crop=torch.tensor([[1, 0, 32, 32]]))
    with pytest.raises(ValueError, match="leave the 96x64 frame"):
        net.frames_forward(torch.tensor([0]), crop=torch.tensor([[40, 0, 32, 32]]))
    with pytest.raises(ValueError, match="same height and width"):
        net.frames_forward(torch.tensor([0, 1]), crop=torch.tensor([[0, 0, 32, 32], [0, 0, 16, 16]]))


def test_quantized_weights_run_on_patches() -> None:
    """The crop goes through the parameter quantization's functional_call as well."""
    net = _tiny(frames=3)
    net.quantize_parameters("dequantize", init_bits=6)  # the decoder's weights, and their bits
    out = net(torch.tensor([1]), crop=torch.tensor([[0, 0, 32, 32]]))
    assert out.y.shape == (1, 1, 32, 32) and out.parameter_bits > 0


def test_stage_encoding_is_the_cell_position_lookup() -> None:
    """Every pixel gets the projected features of its position inside its scale x scale cell."""
    net = _tiny(frames=2)
    stage: Stage = net.stages[0]
    scale = stage.scale
    cells = torch.randn(1, scale * scale, 5)
    x = torch.zeros(1, 2 * scale, 3 * scale, 5)
    rows, cols = torch.arange(2 * scale)[None], torch.arange(3 * scale)[None]
    out = stage.add_encoding(x, cells, rows, cols)
    for r in range(2 * scale):
        for c in range(3 * scale):
            torch.testing.assert_close(out[0, r, c], cells[0, (r % scale) * scale + c % scale])


# ---- the official loss and patch sampling -------------------------------------------------------


def _planes(batch: int, height: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    rgb = torch.rand(batch, 3, height, width, generator=generator)
    y, u, v = rgb_to_yuv420(rgb)
    return y, torch.cat([u, v], dim=1)


def test_l1_msssim_is_the_official_formula() -> None:
    from pytorch_msssim import ms_ssim

    y_hat, uv_hat = _planes(2, 72, 80, seed=1)
    y, uv = _planes(2, 72, 80, seed=2)
    ours = l1_msssim_rgb(y_hat, uv_hat, y, uv)

    def rgb(luma: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
        ycbcr = yuv420_to_444(luma, chroma[:, :1], chroma[:, 1:], mode="nearest")
        return ycbcr_to_rgb(ycbcr, "bt709", full_range=False, clamp=False)

    a, b = rgb(y_hat, uv_hat), rgb(y, uv)
    expected = 0.7 * (a - b).abs().flatten(1).mean(1) + 0.3 * (
        1 - ms_ssim(a, b, data_range=1.0, win_size=5, size_average=False)
    )
    torch.testing.assert_close(ours, expected)
    assert torch.allclose(l1_msssim_rgb(y, uv, y, uv), torch.zeros(2), atol=1e-5)
    with pytest.raises(ValueError, match="larger than 64 pixels"):
        l1_msssim_rgb(y[..., :64, :], uv[..., :32, :], y[..., :64, :], uv[..., :32, :])


def test_patch_grid_covers_the_frame() -> None:
    assert patch_origins(1080, 120) == list(range(0, 1080, 120))
    assert patch_origins(288, 120) == [0, 120, 168]  # the last one flush with the edge
    with pytest.raises(ValueError, match="even"):
        patch_origins(288, 121)
    with pytest.raises(ValueError, match="exceeds"):
        patch_origins(96, 120)


def test_patch_data_module_serves_random_patches_with_their_crops() -> None:
    frames = 3
    y = torch.rand(frames, 1, 64, 96)
    uv = torch.rand(frames, 2, 32, 48)
    module = PatchDataModule(y, uv, frames_per_step=1, seed=0, patch_size=32)
    assert module.patches_per_step == 2 * 3  # one frame's worth of 32 x 32 patches
    batches = list(module.train_dataloader())
    assert len(batches) == frames  # every patch once an epoch
    seen = set()
    for batch in batches:
        assert batch["y"].shape == (6, 1, 32, 32) and batch["uv"].shape == (6, 2, 16, 16)
        for index, crop, patch, chroma in zip(
            batch["index"], batch["crop"], batch["y"], batch["uv"], strict=True
        ):
            top, left, height, width = crop.tolist()
            assert (height, width) == (32, 32)
            assert torch.equal(patch, y[index, :, top : top + 32, left : left + 32])
            assert torch.equal(chroma, uv[index, :, top // 2 : top // 2 + 16, left // 2 : left // 2 + 16])
            seen.add((int(index), top, left))
    assert len(seen) == frames * 6
    assert PatchDataModule(y, uv, patch_size=32, patches_per_step=4).patches_per_step == 4


def test_patch_fit_with_the_official_loss_learns(clips_dir: Path) -> None:
    """Ten steps on 72 x 72 patches of real frames with 0.7 L1 + 0.3 (1 - MS-SSIM) lower the loss of
    the whole frames by a fifth."""
    from tests.test_hinerv import _frames

    y, uv = _frames(clips_dir, 2, height=96, width=144)
    net = _tiny(height=96, width=144, frames=2, seed=1)
    module = PatchDataModule(y, uv, patch_size=72, patches_per_step=4, seed=0)

    def frame_loss() -> float:
        with torch.no_grad():
            out = net(torch.arange(2))
            return float(l1_msssim_rgb(out.y, out.uv, y, uv).mean())

    before = frame_loss()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(5):
        for batch in module.train_dataloader():
            out = net(batch["index"], crop=batch["crop"])
            loss = l1_msssim_rgb(out.y, out.uv, batch["y"], batch["uv"]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert frame_loss() < 0.8 * before


def test_same_weights_give_the_official_output(repo_root: Path) -> None:
    """The official code's output for random weights (tools/make_hinerv_fixture.py ran it) is ours,
    once its parameters are loaded by our names: the network computes what HiNeRV computes."""
    fixture = torch.load(repo_root / "tests/fixtures/official/hinerv/fixture.pt", weights_only=True)
    net = HiNeRV(**fixture["architecture"])
    net.load_state_dict(fixture["state"])  # strict: the same tensors, no more, no fewer
    with torch.no_grad():
        rgb = net.rgb_forward(fixture["frames"])
        patch = net.rgb_forward(fixture["frames"][:1], torch.tensor([[40, 60, 80, 120]]))
    assert fixture["rgb"].std() > 0.01  # a picture, not a constant
    torch.testing.assert_close(rgb, fixture["rgb"], atol=1e-5, rtol=0)
    torch.testing.assert_close(patch[0], fixture["rgb"][0, :, 40:120, 60:180], atol=1e-5, rtol=0)


def test_the_sequence_fit_trains_on_patches_through_codec_data() -> None:
    """``codec.data._target_=datamodules.patches.PatchDataModule``: the fit passes each batch's crop to
    the network, so a step computes only the patches (issue 17's patch sampling in the real fit)."""
    from nvc_train.training.overfit import fit_sequence
    from nvc_train.training.presets import FitSettings

    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "configs/model/hinerv_tiny.yaml").read_text())
    config.pop("_target_")
    torch.manual_seed(0)
    net = HiNeRV(height=64, width=96, num_frames=2, structure="ra", gop_size=2, intra_period=-1, **config)
    y, uv = torch.rand(2, 1, 64, 96), torch.rand(2, 2, 32, 48)
    preset = yaml.safe_load((root / "configs/overfit/hinerv_tiny.yaml").read_text())
    preset["steps_scale"], preset["total_steps"] = 1.0, 6
    preset["distortion"] = "mse"  # 32-pixel patches: too small for MS-SSIM's five scales
    settings = FitSettings.from_config(
        data={"_target_": "datamodules.patches.PatchDataModule", "patch_size": 32}
    )
    fit = fit_sequence(net, y, uv, 100.0, preset, settings)
    assert fit.trainer.global_step == 6
    assert math.isfinite(float(fit.module.sequence_terms(y, uv).loss))
