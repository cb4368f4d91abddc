"""Cool-Chic's low-delay P frames (models/coolchic_video.py): the prediction, the file, the decoder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.coolchic_video import CoolChicVideo
from nvc_train.bitstream import StreamHeader
from tests.conftest import REPO_ROOT

HEIGHT, WIDTH, FRAMES = 48, 64, 3

INTRA = {
    "levels": 5, "synthesis_stride": 1, "synthesis_hidden": [8], "synthesis_residual": 1,
    "synthesis_stabiliser": True, "arm_hidden": 8, "arm_layers": 2, "arm_neighbours": 6,
    "arm_coarser_stack": False, "arm_residual": False, "hyper_grids": 0, "ifce_grids": 0,
    "ifce_features": 0, "temporal_context": False, "fraction_bits": 8, "weight_bits": 12,
    "log_scale_min": -3.0, "log_scale_step": 0.125, "num_scales": 56, "phases": 8,
    "latent_distribution": "laplace", "latent_init_std": 0.0, "shared_latents": False,
    "frame_min_level": 0, "latent_gain": 16, "upsampling_kernel": 8, "preconcat_kernel": 7,
}  # fmt: skip
MOTION = {
    "levels": 5, "frame_min_level": 2, "synthesis_hidden": [8], "synthesis_residual": 0,
    "synthesis_stabiliser": True, "arm_hidden": 6, "arm_layers": 1, "arm_neighbours": 6, "hyper_grids": 0,
    "ifce_grids": 0, "ifce_features": 0, "latent_gain": 16, "upsampling_kernel": 8, "preconcat_kernel": 7,
}  # fmt: skip
RESIDUE = {**MOTION, "frame_min_level": 0, "synthesis_hidden": [16], "synthesis_residual": 1}


def tiny_video(frames: int = FRAMES, seed: int = 0, gop_size: int = 1) -> CoolChicVideo:
    """Low delay, or (``gop_size`` > 1) random access with only the first frame intra."""
    torch.manual_seed(seed)
    architecture = {
        "height": HEIGHT, "width": WIDTH, "num_frames": frames, "structure": "ra" if gop_size > 1 else "ld",
        "intra_period": -1, "gop_size": gop_size, "warp_taps": 8,
        **{f"image_{k}": v for k, v in INTRA.items()},
        **{f"motion_{k}": v for k, v in MOTION.items()},
        **{f"residue_{k}": v for k, v in RESIDUE.items()},
    }  # fmt: skip
    return CoolChicVideo(**architecture)


def _randomised(net: CoolChicVideo) -> CoolChicVideo:
    """Latents of a few units and a nonzero synthesis everywhere, as a fit leaves them."""
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if ".latents." in name:
                parameter.copy_(torch.randn_like(parameter) * 0.1)
            elif parameter.abs().sum() == 0:
                parameter.copy_(torch.randn_like(parameter) * 0.01)
    moves = iter([(2, -1), (-1, 0), (0, 1), (1, 1), (-2, 0), (0, -1), (3, 0), (1, -2)])
    net.shifts = [tuple(next(moves) for _ in refs) for refs in net.references]
    return net


def test_frames_are_intra_then_p_with_their_own_cores() -> None:
    net = tiny_video()
    assert net.frame_types == ["I", "P", "P"]
    assert sorted(net.cores) == ["i0", "m1", "m2", "r1", "r2"]
    assert net.core_names(0) == ["i0"] and net.core_names(2) == ["m2", "r2"]
    assert (
        net.cores["m1"].synthesis.head.out_features == 2 and net.cores["r1"].synthesis.head.out_features == 4
    )
    with pytest.raises(ValueError, match="low delay or random access"):
        CoolChicVideo(**{**net.architecture, "structure": "ai", "intra_period": 1})


def test_a_p_frames_cores_start_almost_silent_as_cool_chics_layers() -> None:
    """Weights at 1 / out**2 of the usual scale and zero biases (Cool-Chic's init): a P frame starts
    with little flow and residue (its linear stabiliser's alone), PyTorch's start with several times more."""
    net = tiny_video()
    zero = torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        for name in ("m1", "r1"):
            core = net.cores[name]
            for grid in core.latents:
                grid.copy_(torch.randn_like(grid) / core.latent_gain)  # latents of about one bin
            layers = [*core.synthesis.mlp, core.synthesis.head, *core.arm.hidden, core.arm.out]
            assert all(float(layer.bias.abs().max()) == 0 for layer in layers)
            head = core.synthesis.head.weight
            assert float(head.abs().max()) <= 1 / (head.shape[1] ** 0.5 * head.shape[0] ** 2)
            small, _ = core.frames_raw(zero, False)
            for layer in [*core.synthesis.mlp, core.synthesis.head]:
                layer.reset_parameters()  # PyTorch's start
            usual, _ = core.frames_raw(zero, False)
            assert float(small.abs().mean()) < 0.1 < float(usual.abs().mean())
    intra = net.cores["i0"].synthesis.head.weight  # the intra core keeps its own start
    assert float(intra.abs().max()) > 1 / (intra.shape[1] ** 0.5 * intra.shape[0] ** 2)


def test_a_p_frame_is_the_masked_warped_reference_plus_the_residue() -> None:
    """With the P cores' synthesis at zero, flow = 0, residue = 0 and alpha = 1/2: the frame is half
    the reference moved by the global shift (whole pixels: an exact copy inside the picture)."""
    net = tiny_video().eval()
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if name.startswith(("cores.m1.synthesis", "cores.r1.synthesis")):
                parameter.zero_()
    ref_y, ref_uv = torch.rand(1, 1, HEIGHT, WIDTH), torch.rand(1, 2, HEIGHT // 2, WIDTH // 2)
    net.decoded[0] = (ref_y, ref_uv)
    net.shifts[1] = ((2, -2),)
    y, uv, bits = net.frames_forward(torch.tensor([1]))
    assert torch.allclose(y[..., 2:, :-2], 0.5 * ref_y[..., :-2, 2:], atol=1e-6)
    assert torch.allclose(uv[..., 1:, :-1], 0.5 * ref_uv[..., :-1, 1:], atol=1e-6)
    assert bits.item() > 0  # the (zero) latents still cost their rate
    assert torch.equal(net.decoded[1][0], y.clamp(0, 1))  # out of training, kept as the next reference
    net.decoded.clear()
    net.frames_forward(torch.tensor([2]))  # a decoder decodes what is missing first
    assert sorted(net.decoded) == [0, 1, 2]
    net.decoded.clear()
    with pytest.raises(RuntimeError, match="needs the decoded frame 0"):
        net.train().frames_forward(torch.tensor([1]))  # a fit must be given its reference


def test_random_access_codes_b_frames_between_key_frames_in_cool_chics_order() -> None:
    """``--intra_pos=0 --p_pos=-1`` over 5 frames in Cool-Chic: I0, P4, B2 (0, 4), B1 (0, 2), B3 (2, 4);
    a B frame's cores give two flows, and a residue, a mask and a blend."""
    net = tiny_video(5, gop_size=4)
    assert net.coding_order == [0, 4, 2, 1, 3]
    assert net.frame_types == ["I", "B", "B", "B", "P"]
    assert net.references == [(), (0, 2), (0, 4), (2, 4), (0,)]
    heads = {name: core.synthesis.head.out_features for name, core in net.cores.items() if name != "i0"}
    b_frames = {f"{role}{poc}": n for poc in (1, 2, 3) for role, n in (("m", 4), ("r", 5))}
    assert heads == {"m4": 2, "r4": 4, **b_frames}


def test_a_b_frame_blends_its_two_warped_references() -> None:
    """Synthesis at zero: no flow, no residue, alpha = beta = 1/2, so the B frame is a quarter of each
    reference, each moved by its own global shift."""
    net = tiny_video(3, gop_size=2).eval()  # I0, P2, B1 (0, 2)
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if name.startswith(("cores.m1.synthesis", "cores.r1.synthesis")):
                parameter.zero_()
    refs = {p: (torch.rand(1, 1, HEIGHT, WIDTH), torch.rand(1, 2, HEIGHT // 2, WIDTH // 2)) for p in (0, 2)}
    net.decoded.update(refs)
    net.shifts[1] = ((2, 0), (0, -2))
    y, uv, _ = net.frames_forward(torch.tensor([1]))
    # the frame at (row, column) takes reference 0 at (row, column + 2), reference 2 at (row - 2, column)
    expected_y = 0.25 * refs[0][0][..., 2:, 2:] + 0.25 * refs[2][0][..., :-2, :-2]
    assert torch.allclose(y[..., 2:, :-2], expected_y, atol=1e-6)
    expected_uv = 0.25 * refs[0][1][..., 1:, 1:] + 0.25 * refs[2][1][..., :-1, :-1]
    assert torch.allclose(uv[..., 1:, :-1], expected_uv, atol=1e-6)
    net.decoded.clear()
    with pytest.raises(RuntimeError, match="B frame 1 needs the decoded frame 0"):
        net.train().frames_forward(torch.tensor([1]))


def test_a_p_frame_trains_its_own_cores_only() -> None:
    net = _randomised(tiny_video()).train()
    net.decoded[0] = (torch.rand(1, 1, HEIGHT, WIDTH), torch.rand(1, 2, HEIGHT // 2, WIDTH // 2))
    y, uv, bits = net.frames_forward(torch.tensor([1]))
    (y.square().mean() + uv.square().mean() + 1e-3 * bits).backward()
    grads = {name for name, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("cores.m1.") for n in grads) and any(n.startswith("cores.r1.") for n in grads)
    assert any(n.startswith("cores.m1.latents") for n in grads)  # the flow is learned through the warp
    assert not any(n.startswith(("cores.i0.", "cores.m2.", "cores.r2.")) for n in grads)


def _encode(tmp_path: Path, net: CoolChicVideo) -> tuple[Path, torch.Tensor, torch.Tensor]:
    from nvc_train.codecs.adaptive import write_adaptive_stream

    net.quantize_parameters("ste", init_bits=8)
    payload = net.compress()
    y, uv = net.reconstruct()
    record = net.architecture
    header = StreamHeader(
        codec_id="ccv", weights_hash=b"", width=WIDTH, height=HEIGHT, bit_depth=8, num_frames=net.num_frames,
        fps_num=30, fps_den=1, structure=record["structure"], intra_period=-1, gop_size=record["gop_size"],
        rate_point=0,
    )  # fmt: skip
    path = tmp_path / "video.nvc"
    write_adaptive_stream(path, header, "models.coolchic_video.CoolChicVideo", net.architecture, payload)
    return path, y, uv


@pytest.mark.parametrize(("frames", "gop_size"), [(FRAMES, 1), (5, 4)], ids=["ld", "ra"])
def test_the_file_alone_decodes_to_the_encoders_frames_in_a_fresh_process(
    tmp_path: Path, frames: int, gop_size: int
) -> None:
    net = _randomised(tiny_video(frames, gop_size=gop_size))
    path, y, uv = _encode(tmp_path, net)
    out = tmp_path / "out.yuv"
    proc = subprocess.run([sys.executable, "-m", "nvc_train.codecs.adaptive", str(path), str(out)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    decoded = np.fromfile(out, np.uint8).reshape(frames, -1)
    luma = (y.clamp(0, 1) * 255).round().to(torch.uint8).view(frames, -1).numpy()
    assert np.array_equal(decoded[:, : HEIGHT * WIDTH], luma)
    chroma = (uv.clamp(0, 1) * 255).round().to(torch.uint8).reshape(frames, -1).numpy()
    assert np.array_equal(decoded[:, HEIGHT * WIDTH :], chroma)
    assert (y[1] - y[0]).abs().max() > 0  # the predicted frames are not copies of the I frame


def test_a_damaged_p_frame_payload_is_refused(tmp_path: Path) -> None:
    from nvc_train.bitstream import BitstreamError, Unit, read_stream, write_stream
    from nvc_train.codecs.adaptive import decode_file

    path, _, _ = _encode(tmp_path, _randomised(tiny_video()))
    header, units = read_stream(path)
    p_frame = units[2]
    for name, payload in (("long", b"\x04\x01\x7f" + p_frame.payload[3:]), ("cut", b"\x04")):
        crafted = tmp_path / f"{name}.nvc"
        write_stream(
            crafted, header, [*units[:2], Unit(p_frame.kind, p_frame.rate_point, payload), *units[3:]]
        )
        with pytest.raises(BitstreamError, match="P frame 1|latents"):
            decode_file(crafted, tmp_path / "x.yuv")
        assert not (tmp_path / "x.yuv").exists()


def test_a_damaged_b_frame_payload_is_refused(tmp_path: Path) -> None:
    """A B frame's payload cut inside its second reference's shift, or with a shift beyond the picture."""
    from nvc_train.bitstream import BitstreamError, Unit, read_stream, write_stream
    from nvc_train.codecs.adaptive import decode_file

    path, _, _ = _encode(tmp_path, _randomised(tiny_video(3, gop_size=2)))  # I0, P2, B1
    header, units = read_stream(path)
    b_frame = units[3]  # network, I0, P2, B1: coding order
    far = b"\x02\x00\xff\x01" + b_frame.payload[4:]  # the second reference's x shift: -128
    cases = (("cut", b_frame.payload[:3], "B frame 1"), ("far", far, "beyond the picture"))
    for name, payload, message in cases:
        crafted = tmp_path / f"{name}.nvc"
        write_stream(crafted, header, [*units[:3], Unit(b_frame.kind, b_frame.rate_point, payload)])
        with pytest.raises(BitstreamError, match=message):
            decode_file(crafted, tmp_path / "x.yuv")
        assert not (tmp_path / "x.yuv").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "structure", [["structure=ld"], ["structure=ra", "structure.gop_size=2"]], ids=["ld", "ra"]
)
def test_evaluate_fits_frame_by_frame_and_decodes_from_the_file(tmp_path: Path, structure: list[str]) -> None:
    """``evaluate.py model=coolchic_video_tiny structure=ld`` (I P P) or ``ra`` (I0, P2, then B1 from
    both): each frame fitted in coding order on its decoded references, bits from the files, the
    decode in a fresh process equal to the encoder's frames (evaluate.py checks it with
    ``codec.encoder_reconstruction``)."""
    import csv

    from tests.test_overfit import make_tiny_clip

    clips = tmp_path / "clips"
    make_tiny_clip(clips, frames=3)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, str(REPO_ROOT / "evaluate.py"), "model=coolchic_video_tiny", "ctc=folder",
           f"ctc.path={clips}", *structure, "structure.intra_period=-1", "frames=3",
           "codec.rate_points=[0,3]", "codec.encoder_reconstruction=true", "~anchor", "metrics=[psnr]",
           "progress=false", f"hydra.run.dir={run_dir}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    with (run_dir / "points.csv").open() as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: int(r["rate_point"]))
    assert [r["codec"] for r in rows] == ["coolchic_video_tiny"] * 2
    for row in rows:
        bitstream = run_dir / row["bitstream"]
        assert int(row["bits"]) == bitstream.stat().st_size * 8
        encoder = Path(f"{bitstream}.enc.yuv").read_bytes()
        out = tmp_path / f"fresh_{row['rate_point']}.yuv"
        command = [sys.executable, "-m", "nvc_train.codecs.adaptive", str(bitstream), str(out)]
        decoded = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert decoded.returncode == 0, decoded.stderr[-2000:]
        assert out.read_bytes() == encoder
    low, high = rows
    assert int(high["bits"]) > int(low["bits"])


def test_global_translation_finds_whole_pixel_moves() -> None:
    from nvc_train.video.motion import global_translation, warp
    from tests.test_motion import _flow, _texture

    reference = _texture(144, 176)
    for shift in [(-7, 3), (0, 0), (20, -11), (-30, 17)]:
        moved = warp(reference, _flow(144, 176, *shift))
        assert global_translation(moved, reference) == shift
    with pytest.raises(ValueError, match=r"\[1, C, H, W\]"):
        global_translation(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8))


def test_a_p_frames_steps_and_rdoq_work_per_core_module_with_the_split_measure() -> None:
    """The view of a P frame groups its weights by core and module (cores.m1.arm, ...), and moving
    one weight of a rate-only or a picture-only module recomputes that part alone to the loss of
    the whole forward (what makes the P frames' RDOQ affordable)."""
    from models.c3 import C3Net
    from nvc_train.training.overfit import OverfitModule
    from nvc_train.training.step_search import SplitMeasure, parameter_groups

    net = _randomised(tiny_video())
    net.decoded[0] = (torch.rand(1, 1, HEIGHT, WIDTH), torch.rand(1, 2, HEIGHT // 2, WIDTH // 2))
    view = net.frame_view(1)
    y, uv = torch.rand(1, 1, HEIGHT, WIDTH), torch.rand(1, 2, HEIGHT // 2, WIDTH // 2)
    view.quantize_parameters("dequantize", init_bits=6)
    coder, params = view.parameter_coder(), view.network_parameters()
    groups = parameter_groups(coder.names, view.MODULE_DEPTH)
    assert "cores.m1.arm.weight" in groups and "cores.r1.synthesis.bias" in groups
    with torch.no_grad():
        for name, value in coder.quantize(params, "dequantize").items():
            params[name].copy_(value)
        module = OverfitModule(view, 300.0, lr=0.01, parameter_lr_ratio=1)
        for core in ("m1", "r1"):
            for module_name, part in C3Net.RD_SPLIT.items():
                names = [n for n in coder.names if n.startswith(f"cores.{core}.{module_name}.")]
                if not names:
                    continue
                measure = SplitMeasure(module, y, uv)
                params[names[0]].data.view(-1)[0] += 4 * float(
                    coder.element_steps(coder.names.index(names[0])).reshape(-1)[0]
                )
                split = measure.loss(part)
                measure.close()
                whole = float(module.sequence_terms(y, uv).loss)
                assert split == pytest.approx(whole, rel=1e-6), (core, module_name)


def test_a_p_frame_is_shifted_globally_and_its_motion_core_learns_only_the_rest(monkeypatch) -> None:
    """A frame that is its reference moved by whole pixels: the fit finds the shift, and the flow the
    motion core is pre-trained on is what is left after it (about zero), not the shift again."""
    import yaml

    from nvc_train.training import overfit
    from nvc_train.video.motion import warp
    from tests.test_motion import _flow, _texture

    targets = []
    monkeypatch.setattr(overfit, "_pretrain_motion", lambda core, target, *_: targets.append(target))
    first = _texture(HEIGHT + 16, WIDTH + 16)
    moved = warp(first, _flow(HEIGHT + 16, WIDTH + 16, 3, -2))
    y = torch.cat([first, moved])[..., 8 : 8 + HEIGHT, 8 : 8 + WIDTH]
    uv = torch.nn.functional.avg_pool2d(torch.cat([y, 1 - y], 1), 2)
    net = tiny_video(frames=2)
    preset = yaml.safe_load((REPO_ROOT / "configs/overfit/coolchic_video_tiny.yaml").read_text())
    overfit.fit_sequence(net, y, uv, 400.0, preset)
    assert net.shifts[1] == ((3, -2),) and len(targets) == 1
    assert targets[0][..., 8:-8, 8:-8].abs().mean() < 0.5
