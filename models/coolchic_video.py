"""Cool-Chic's video (its v4 / v5 P and B frames) as one scene-adaptive network.

Every intra frame is coded by an intra core (a :class:`~models.c3.C3Net` of one frame: the
``coolchic`` image core); every P or B frame by two cores of its own, each a latent-grid decoder
whose synthesis emits raw maps instead of a picture: a **motion** core (a flow per reference, 2 maps
each at luma resolution, in pixels) and a **residue** core (a residue in Y, U, V at luma resolution,
a mask and, in a B frame, a blend). A P frame is::

    x = alpha * warp(r_0, flow_0 + shift_0) + residue,         alpha = clamp(mask + 1/2, 0, 1)

and a B frame, from its past and its future reference::

    x = alpha * (beta * warp(r_0, flow_0 + shift_0) + (1 - beta) * warp(r_1, flow_1 + shift_1))
        + residue,                                              beta = clamp(blend + 1/2, 0, 1)

in 4:4:4, then taken to 4:2:0 (chroma as 2x2 averages). A reference ``r`` is a frame as the decoder
has it, its chroma repeated 2x2; ``shift`` an integer global translation per reference sent with the
frame (Cool-Chic's, found by the encoder before the flow); ``warp`` the 8-tap windowed sinc of
:mod:`nvc_train.video.motion` with the flow rounded to 1/64 pel when decoding. The mask lets a frame
fall back to intra coding where the prediction is useless; the blend weighs the two references.

Frame types and references come from :class:`~nvc_train.structure.CodingStructure`: low delay
(``ld``, each P frame from the frame before) or random access (``ra``: hierarchical B frames between
key frames, each key frame a P frame from the key before unless the intra period makes it I; with
``intra_period: -1`` and ``gop_size`` = frames - 1 it is Cool-Chic's ``--intra_pos=0 --p_pos=-1``).
Frames are decoded, and fitted, in its coding order.

The cores' numbers come from the architecture: the intra (image) core's every C3Net field as
``image_<field>``, the motion and residue cores' own sizes as ``motion_<field>`` / ``residue_<field>``
(:data:`CORE_FIELDS`; their coding tables are the intra core's; a B frame's cores differ from a P
frame's only in their output channels). A frame's payload: for an I frame its latents; for a P or B
frame the shift of each reference (two zigzag varints each), the motion core's latents behind their
length (a varint), then the residue core's latents.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.adaptive import GEOMETRY_FIELDS, SceneAdaptiveNet
from models.c3 import C3Net, Synthesis, start_small_
from models.registry import register_network
from nvc_train.bitstream.architecture import ArchitectureField, pack_varint, unpack_varint
from nvc_train.structure import CodingStructure
from nvc_train.video.motion import warp

__all__ = ["CORE_FIELDS", "CoolChicVideo"]

#: The sizes a P frame's motion and residue cores set for themselves; the rest of a C3Net's fields
#: are fixed for them (:data:`_CORE_FIXED`) or shared with the intra core (the coding tables).
CORE_FIELDS = (
    "levels", "frame_min_level", "synthesis_hidden", "synthesis_residual", "synthesis_stabiliser",
    "arm_hidden", "arm_layers", "arm_neighbours", "hyper_grids", "ifce_grids", "ifce_features",
    "latent_gain", "upsampling_kernel", "preconcat_kernel",
)  # fmt: skip
_TABLE_FIELDS = ("fraction_bits", "weight_bits", "log_scale_min", "log_scale_step", "num_scales", "phases",
                 "latent_distribution")  # fmt: skip
_CORE_FIXED = {
    "synthesis_stride": 1, "arm_coarser_stack": False, "arm_residual": False, "temporal_context": False,
    "latent_init_std": 0.0, "shared_latents": False,
}  # fmt: skip
FLOW_ACCURACY = 64  # a decoded flow is rounded to 1/64 pel (Cool-Chic's)


def raw_channels(role: str, references: int) -> int:
    """Raw synthesis channels of a predicted frame's ``role`` core ("motion" | "residue") with
    ``references`` references (1: P, 2: B): a flow per reference; a residue (Y, U, V), the mask and,
    with two references, the blend (Cool-Chic's 2 / 4 for P, 4 / 5 for B)."""
    return 2 * references if role == "motion" else 3 + references


def _fields() -> dict[str, ArchitectureField]:
    own = {name: field for name, field in C3Net.ARCHITECTURE_FIELDS.items() if name not in GEOMETRY_FIELDS}
    fields = {**GEOMETRY_FIELDS, "warp_taps": ArchitectureField("int", 2, 16)}
    fields.update({f"image_{name}": field for name, field in own.items()})
    for role in ("motion", "residue"):
        fields.update({f"{role}_{name}": own[name] for name in CORE_FIELDS})
    return fields


class _RawCore(C3Net):
    """A one-frame latent-grid decoder whose synthesis emits ``channels`` raw maps at luma resolution."""

    def __init__(self, channels: int, **architecture: Any) -> None:
        super().__init__(**architecture)
        self.synthesis = Synthesis(
            self.levels,
            self.architecture["synthesis_hidden"],
            int(self.architecture["synthesis_residual"]),
            1,
            bool(self.architecture["synthesis_stabiliser"]),
            channels=channels,
        )
        self._start_small()

    @torch.no_grad()
    def _start_small(self) -> None:
        """Cool-Chic's start for its layers (``SynthesisConv2d``, ``ArmLinear``): weights drawn at
        ``1 / out**2`` of the usual scale, biases zero. A P frame's cores then begin with almost no
        output (no flow, no residue) and grow only the weights the frame pays for: weights left
        small are zeroed by the step search, which is what makes a P frame cheap."""
        for layer in [*self.synthesis.mlp, self.synthesis.head]:
            start_small_(layer)
        for layer in [*self.arm.hidden, self.arm.out]:
            layer.weight.normal_(0.0, 1.0 / layer.weight.shape[0] ** 2)
            layer.bias.zero_()


@register_network
class CoolChicVideo(SceneAdaptiveNet):
    """Video as Cool-Chic codes it: intra cores for I frames, motion + residue cores for P and B
    frames (see the module docstring). ``warp_taps``: the motion compensation's filter (8)."""

    pad_multiple = C3Net.pad_multiple
    ARCHITECTURE_FIELDS = _fields()

    def __init__(self, **architecture: Any) -> None:
        record = dict(architecture)
        super().__init__(record)
        if record.get("structure") not in ("ld", "ra"):
            raise ValueError(
                f"CoolChicVideo codes low delay or random access, got {record.get('structure')!r}"
            )
        self.warp_taps = int(record["warp_taps"])
        if self.warp_taps % 2:
            raise ValueError(f"warp_taps must be even, got {self.warp_taps}")
        structure = CodingStructure(record["structure"], record["intra_period"], int(record["gop_size"]))
        order = structure.frames(self.num_frames)
        #: display indices in coding order: the order frames are fitted and decoded in
        self.coding_order = [frame.poc for frame in order]
        self.frame_types = [""] * self.num_frames
        #: each frame's references (display indices, the past one first), none for an I frame
        self.references: list[tuple[int, ...]] = [()] * self.num_frames
        for frame in order:
            self.frame_types[frame.poc] = frame.frame_type
            self.references[frame.poc] = tuple(sorted(frame.refs))
        geometry = {"height": self.height, "width": self.width, "num_frames": 1, "structure": "ai",
                    "intra_period": 1, "gop_size": 1}  # fmt: skip
        intra = {name.removeprefix("image_"): v for name, v in record.items() if name.startswith("image_")}
        tables = {name: intra[name] for name in _TABLE_FIELDS}
        # what build_core gives each kind of core (by its name's first letter): its role and keywords
        self._core_arguments: dict[str, tuple[str, dict[str, Any]]] = {"i": ("intra", {**geometry, **intra})}
        for role in ("motion", "residue"):
            sizes = {name: record[f"{role}_{name}"] for name in CORE_FIELDS}
            self._core_arguments[role[0]] = (role, {**geometry, **sizes, **tables, **_CORE_FIXED})
        self.cores = nn.ModuleDict()
        for poc in self.coding_order:
            for name in self.core_names(poc):
                self.cores[name] = self.build_core(name)
        #: integer global translation (x, y) of each reference of each frame, chosen by the encoder,
        #: sent in the frame's payload
        self.shifts: list[tuple[tuple[int, int], ...]] = [((0, 0),) * len(r) for r in self.references]
        #: frames as the decoder has them, by display index: the references of the frames after them
        #: in coding order; set by whoever drives the frames in that order (the fit, :meth:`reconstruct`)
        self.decoded: dict[int, tuple[Tensor, Tensor]] = {}

    def build_core(self, name: str) -> C3Net:
        """A freshly initialised core for ``name`` (``i<poc>``, ``m<poc>`` or ``r<poc>``)."""
        role, arguments = self._core_arguments[name[0]]
        if role == "intra":
            return C3Net(**arguments)
        return _RawCore(raw_channels(role, len(self.references[int(name[1:])])), **arguments)

    def frame_view(self, poc: int) -> FrameView:
        """Frame ``poc`` as a one-frame scene-adaptive network over its own cores: what the
        framework's fit (warm-up, phases, step search, RDOQ) trains, one frame at a time."""
        return FrameView(self, poc)

    @torch.no_grad()
    def decode_frame(self, poc: int) -> tuple[Tensor, Tensor]:
        """Frame ``poc`` as the decoder makes it (hard-rounded latents, the weights held, one thread),
        kept in :attr:`decoded` as a reference of the frames coded after it."""
        y, uv = SceneAdaptiveNet.reconstruct(self, [poc])
        self.decoded[poc] = (y.clamp(0, 1), uv.clamp(0, 1))
        return self.decoded[poc]

    # ---- SceneAdaptiveNet ------------------------------------------------------------------------

    def is_network_parameter(self, name: str) -> bool:
        return ".latents." not in name

    def frames_forward(self, frame_indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        ys, uvs, bits = [], [], frame_indices.new_zeros((), dtype=torch.float32)
        for poc in frame_indices.tolist():
            y, uv, frame_bits = self._frame(int(poc))
            ys.append(y)
            uvs.append(uv)
            bits = bits + frame_bits
        return torch.cat(ys), torch.cat(uvs), bits

    def _frame(self, poc: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.frame_from([self.cores[name] for name in self.core_names(poc)], poc, self.quantizer)

    def frame_from(self, cores: list[C3Net], poc: int, quantizer: Any) -> tuple[Tensor, Tensor, Tensor]:
        """``(y, uv, latent_bits)`` of frame ``poc`` made by ``cores`` (its own, or a warm-up
        candidate's), their latents quantized as ``quantizer`` says. Out of training (a decoder, a
        measurement) the frame is kept as a reference of later frames, and a missing reference is
        decoded first; a fit must be given its references (``decoded``), as they are not what the
        fit changes."""
        training = cores[0].training
        for core in cores:
            core.quantizer = quantizer
        y, uv, bits = self.frame_planes(cores, poc, training)
        if not training:
            self.decoded[poc] = (y.detach().clamp(0, 1), uv.detach().clamp(0, 1))
        return y, uv, bits

    def frame_planes(
        self, cores: list[C3Net], poc: int, training: bool, with_bits: bool = True
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The frame's planes and (``with_bits``: else zero) its latents' bits, nothing kept."""
        zero = torch.zeros(1, dtype=torch.long, device=next(cores[0].parameters()).device)
        if self.frame_types[poc] == "I":
            if with_bits:
                return cores[0].frames_forward(zero)
            return *cores[0].frames_planes(zero), torch.zeros(())
        flows, motion_bits = cores[0].frames_raw(zero, with_bits)
        maps, residue_bits = cores[1].frames_raw(zero, with_bits)
        accuracy = None if training else FLOW_ACCURACY
        predictions = []
        for k, ref in enumerate(self.references[poc]):
            if ref not in self.decoded:
                if training:
                    where = f"{self.frame_types[poc]} frame {poc}"
                    raise RuntimeError(f"{where} needs the decoded frame {ref} first (set net.decoded)")
                self.decode_frame(ref)
            ref_y, ref_uv = self.decoded[ref]
            reference = torch.cat([ref_y, F.interpolate(ref_uv, scale_factor=2, mode="nearest")], 1)
            shift = flows.new_tensor(self.shifts[poc][k]).view(1, 2, 1, 1)
            predictions.append(warp(reference, flows[:, 2 * k : 2 * k + 2] + shift, self.warp_taps, accuracy))
        prediction = predictions[0]
        if len(predictions) == 2:  # a B frame: the blend weighs its past and its future reference
            beta = torch.clamp(maps[:, 4:5] + 0.5, 0.0, 1.0)
            prediction = beta * predictions[0] + (1.0 - beta) * predictions[1]
        alpha = torch.clamp(maps[:, 3:4] + 0.5, 0.0, 1.0)
        picture = alpha * prediction + maps[:, :3]
        return picture[:, :1], F.avg_pool2d(picture[:, 1:3], 2), motion_bits + residue_bits

    def compress_latents(self) -> list[bytes]:
        payloads = []
        for poc, kind in enumerate(self.frame_types):
            if kind == "I":
                payloads.append(self.cores[f"i{poc}"].compress_latents()[0])
                continue
            motion = self.cores[f"m{poc}"].compress_latents()[0]
            residue = self.cores[f"r{poc}"].compress_latents()[0]
            side = b"".join(pack_varint(v, signed=True) for shift in self.shifts[poc] for v in shift)
            payloads.append(side + pack_varint(len(motion)) + motion + residue)
        return payloads

    def decompress_latents(self, frames: list[bytes]) -> None:
        for poc, (kind, payload) in enumerate(zip(self.frame_types, frames, strict=True)):
            if kind == "I":
                self.cores[f"i{poc}"].decompress_latents([payload])
                continue
            where = f"{kind} frame {poc}"
            position, shifts = 0, []
            for _ in self.references[poc]:
                dx, position = unpack_varint(payload, position, where, signed=True)
                dy, position = unpack_varint(payload, position, where, signed=True)
                if max(abs(dx), abs(dy)) > max(self.height, self.width):
                    raise ValueError(f"{where}: a global shift {(dx, dy)} beyond the picture")
                shifts.append((dx, dy))
            length, position = unpack_varint(payload, position, where)
            if position + length > len(payload):
                raise ValueError(f"{where}: {length} bytes of motion latents, {len(payload) - position} left")
            self.shifts[poc] = tuple(shifts)
            self.cores[f"m{poc}"].decompress_latents([payload[position : position + length]])
            self.cores[f"r{poc}"].decompress_latents([payload[position + length :]])

    @torch.no_grad()
    def reconstruct(self, frame_indices: list[int] | None = None) -> tuple[Tensor, Tensor]:
        """The frames ``frame_indices`` (display order; default all), decoded in coding order up to
        the last of them (each predicted frame from its references, decoded before it)."""
        wanted = list(range(self.num_frames)) if frame_indices is None else list(frame_indices)
        last = max((self.coding_order.index(p) for p in wanted), default=-1)
        decoded = {poc: self.decode_frame(poc) for poc in self.coding_order[: last + 1]}
        return torch.cat([decoded[p][0] for p in wanted]), torch.cat([decoded[p][1] for p in wanted])

    def frame_activation_bytes(self) -> int:
        cores = max(core.frame_activation_bytes() for core in self.cores.values())
        references = max((len(r) for r in self.references), default=0)
        # the warp's gathered neighbours, for each reference
        taps = self.warp_taps**2 * 3 * self.height * self.width * 4 * 2 * max(references, 1)
        return 2 * cores + taps

    def core_names(self, poc: int) -> list[str]:
        """The cores that code frame ``poc`` (what the fit of that frame trains)."""
        return [f"i{poc}"] if self.frame_types[poc] == "I" else [f"m{poc}", f"r{poc}"]


class FrameView(SceneAdaptiveNet):
    """One frame of a :class:`CoolChicVideo` seen as a one-frame network: its parameters are that
    frame's cores only (the video's own modules, shared, so a fit of the view fits the video), its
    reference the video's decoded previous frame. :meth:`fresh` gives a warm-up candidate with new
    cores for the same frame."""

    pad_multiple = CoolChicVideo.pad_multiple
    RD_SPLIT = C3Net.RD_SPLIT  # by a module's own name: cores.m1.arm moves the rate only, ...
    MODULE_DEPTH = 3  # cores.<core>.<module>: each core's modules get their own steps

    def __init__(self, video: CoolChicVideo, poc: int, cores: nn.ModuleDict | None = None) -> None:
        geometry = {"height": video.height, "width": video.width}
        super().__init__({**geometry, "num_frames": 1, "structure": "ai", "intra_period": 1, "gop_size": 1})
        object.__setattr__(self, "video", video)  # not a submodule: the other frames' weights are not ours
        self.poc = poc
        names = video.core_names(poc)
        self.cores = cores if cores is not None else nn.ModuleDict({n: video.cores[n] for n in names})

    def fresh(self) -> FrameView:
        """A warm-up candidate: the same frame with freshly initialised cores."""
        return FrameView(
            self.video, self.poc, nn.ModuleDict({n: self.video.build_core(n) for n in self.cores})
        )

    def is_network_parameter(self, name: str) -> bool:
        return ".latents." not in name

    def frames_forward(self, frame_indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if frame_indices.numel() != 1 or int(frame_indices.reshape(-1)[0]) != 0:
            raise ValueError(f"a frame view has one frame (index 0), got {frame_indices.tolist()}")
        return self.video.frame_from(list(self.cores.values()), self.poc, self.quantizer)

    def frames_bits(self, frame_indices: Tensor) -> Tensor:
        zero = torch.zeros(1, dtype=torch.long, device=frame_indices.device)
        return sum(
            (core.frames_bits(zero) for core in self._cores()), torch.zeros((), device=frame_indices.device)
        )

    def frames_planes(self, frame_indices: Tensor) -> tuple[Tensor, Tensor]:
        cores = self._cores()
        y, uv, _ = self.video.frame_planes(cores, self.poc, cores[0].training, with_bits=False)
        return y, uv

    def _cores(self) -> list[C3Net]:
        """The frame's cores, quantizing their latents as this view's schedule says now."""
        cores = list(self.cores.values())
        for core in cores:
            core.quantizer = self.quantizer
        return cores
