"""The model API every scene-adaptive codec network implements (latent grids, INRs, ...).

A scene-adaptive network is fitted to ONE sequence: its parameters (and, for latent-grid codecs,
its per-frame latents) ARE the code. The framework fits it with :class:`nvc_train.training.overfit.
OverfitModule` (a Lightning ``fit`` over the frames of the sequence), then asks it for bytes and
rebuilds it from those bytes alone. Neither the fitting loop nor the codec adapter
(:mod:`nvc_train.codecs.adaptive`) knows which network it drives; the contract lives here::

    net = Net(**architecture)                              # architecture: JSON-able kwargs (in the file)
    out = net(frame_indices)                               # training: planes + estimated bits
    payload = net.compress()                               # parameters once + one payload per frame
    dec = Net.decompress(net.architecture, payload)        # rebuilt from the file alone (another process)
    y, uv = dec.reconstruct()                              # every frame, display order, exact

Parameter coding is shared: every float parameter of the *network* (not the latents, not the
coder's own steps) is quantized with learnable steps and coded by
:class:`nvc_train.entropy.param_coding.ParameterCoder`. While :meth:`SceneAdaptiveNet.quantize_parameters`
is on, ``forward`` runs the network with quantized weights (``torch.func.functional_call``) and
reports their estimated bits, so that the last fine-tuning stage sees exactly what the decoder will
run and pays for the weights it sends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from nvc_train.bitstream import MAX_FRAMES, AdaptivePayload
from nvc_train.bitstream.architecture import ArchitectureField, check_architecture

__all__ = [
    "AdaptiveOutput",
    "AdaptivePayload",
    "QuantizerState",
    "SceneAdaptiveNet",
    "decode_threads",
]

# The sequence geometry and coding structure every scene-adaptive architecture record holds; the
# decoder also checks them against the container header (nvc_train/codecs/adaptive.py).
GEOMETRY_FIELDS: dict[str, ArchitectureField] = {
    "height": ArchitectureField("int", 1, 16384),
    "width": ArchitectureField("int", 1, 16384),
    "num_frames": ArchitectureField("int", 1, MAX_FRAMES),
    "structure": ArchitectureField("str", choices=("ld", "ra", "ai")),
    "intra_period": ArchitectureField("int", -1, MAX_FRAMES),
    "gop_size": ArchitectureField("int", 1, 1024),
}

# What a first decode in a fresh process allocates whatever the network (kernels' workspaces,
# the entropy coder's library): about 100 MiB measured by bench/decode_memory.py at QCIF, rounded up.
DECODER_BASE_BYTES = 192 << 20

# Latent quantization proxies, in the order a schedule normally visits them.
LATENT_QUANTIZERS = ("soft", "soft_twice", "ste", "hard")


@dataclass
class AdaptiveOutput:
    """What ``forward`` gives for a batch of frames (training and the keep-best evaluation).

    ``y`` (B,1,H,W) and ``uv`` (B,2,H/2,W/2) are at the network's padded size, not clamped.
    ``latent_bits`` is the estimated bits of the latents of THESE frames (scalar); ``parameter_bits``
    the estimated bits of the network's parameters (scalar; zero while parameters are not quantized),
    which the whole sequence shares: a loss charges a batch of B frames B / num_frames of it.
    """

    y: Tensor
    uv: Tensor
    latent_bits: Tensor
    parameter_bits: Tensor


@dataclass
class QuantizerState:
    """How latents are quantized in ``forward`` right now; set by the stage callbacks.

    ``mode``: ``soft`` (soft-rounding with ``temperature`` plus uniform noise of width ``noise``,
    annealed towards rounding), ``soft_twice`` (C3 / Cool-Chic: soft-rounding, Gaussian noise of
    standard deviation ``noise``, soft-rounding again, so the synthesis trains on values near
    integers), ``ste`` (rounding forward, identity gradient) or ``hard`` (rounding, no gradient:
    what the decoder sees; a phase in this mode trains the network alone).
    """

    mode: str = "soft"
    temperature: float = 0.3
    noise: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in LATENT_QUANTIZERS:
            raise ValueError(f"latent quantizer must be one of {LATENT_QUANTIZERS}, got {self.mode!r}")


@contextlib.contextmanager
def decode_threads(threads: int = 1) -> Iterator[None]:
    """Run the float part of decoding (upsampling, synthesis) with a fixed thread count.

    Why: a convolution may pick another kernel (another summation order) for another thread count,
    and an encoder on 8 threads would then not reproduce a decoder on 1 byte for byte. Encoder and
    decoder both reconstruct inside this context, so their pictures agree on one machine.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class SceneAdaptiveNet(nn.Module):
    """Base class of networks overfitted to one sequence; YUV 4:2:0 in [0, 1] out.

    Subclasses call ``super().__init__(architecture)`` with the JSON-able dict of EVERY keyword
    needed to rebuild them (architecture numbers and the sequence geometry: ``height``, ``width``
    (the padded size the network codes), ``num_frames`` and the coding structure), and implement
    :meth:`frames_forward`, :meth:`compress_latents`, :meth:`decompress_latents`,
    :meth:`is_network_parameter` and optionally :meth:`init_from_frames`.

    The base class owns the parameter quantization (:class:`ParameterCoder` built lazily, outside
    ``state_dict`` of the network parameters it codes), ``forward``, ``compress``, ``decompress`` and
    ``reconstruct``, so that every subclass codes its weights the same way.
    """

    colour_space: ClassVar[str] = "yuv420"
    pad_multiple: ClassVar[int] = 1
    # Every constructor keyword a file may set, with its type and range (checked before building;
    # listed in nvc_train/bitstream/FORMAT.md). Subclasses add their architecture numbers.
    ARCHITECTURE_FIELDS: ClassVar[dict[str, ArchitectureField]] = GEOMETRY_FIELDS
    #: Top-level modules whose weights move only the latents' estimated bits (``rate``) or only the
    #: decoded pictures (``picture``). A network that lists them implements :meth:`frames_bits` and
    #: :meth:`frames_planes`, and the RDOQ of its weights recomputes one part per candidate
    #: (:func:`nvc_train.training.step_search.refine_parameters`); empty: the whole forward each time.
    RD_SPLIT: ClassVar[dict[str, str]] = {}
    #: How many parts of a parameter's name name its module, the unit the weights' step search and
    #: the RDOQ's split work on (1: ``arm`` of ``arm.layers.0.weight``).
    MODULE_DEPTH: ClassVar[int] = 1

    def __init__(self, architecture: Mapping[str, Any]) -> None:
        super().__init__()
        self.architecture: dict[str, Any] = dict(architecture)
        for key in ("height", "width", "num_frames"):
            if int(self.architecture.get(key, 0)) < 1:
                raise ValueError(f"architecture needs a positive {key}, got {self.architecture.get(key)!r}")
        self.height = int(self.architecture["height"])
        self.width = int(self.architecture["width"])
        self.num_frames = int(self.architecture["num_frames"])
        if self.height % self.pad_multiple or self.width % self.pad_multiple:
            raise ValueError(
                f"{type(self).__name__} codes sizes that are multiples of {self.pad_multiple}, "
                f"got {self.width}x{self.height} (the adapter pads)"
            )
        self.quantizer = QuantizerState()
        self._param_coder: nn.Module | None = None  # set by quantize_parameters(); see there
        self._param_mode: str | None = None

    # ---- what subclasses implement ----------------------------------------------------------

    def frames_forward(self, frame_indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(y, uv, latent_bits)`` of the frames at ``frame_indices`` (display order, (B,) long).

        Uses ``self.quantizer`` for the latents; the network's weights are whatever the module holds
        (the base class swaps in quantized ones while parameter quantization is on).
        """
        raise NotImplementedError

    def frames_bits(self, frame_indices: Tensor) -> Tensor:
        """The latents' estimated bits of ``frames_forward`` alone (networks with an :attr:`RD_SPLIT`)."""
        raise NotImplementedError(f"{type(self).__name__} declares no RD_SPLIT")

    def frames_planes(self, frame_indices: Tensor) -> tuple[Tensor, Tensor]:
        """The ``(y, uv)`` of ``frames_forward`` alone (networks with an :attr:`RD_SPLIT`)."""
        raise NotImplementedError(f"{type(self).__name__} declares no RD_SPLIT")

    def is_network_parameter(self, name: str) -> bool:
        """Whether the parameter ``name`` is a network weight coded by the ParameterCoder.

        Latents (coded by the net's own latent entropy model) answer False.
        """
        raise NotImplementedError

    def compress_latents(self) -> list[bytes]:
        """One payload per frame (display order) of the rounded latents; ``[b""] * T`` if none."""
        return [b""] * self.num_frames

    def decompress_latents(self, frames: list[bytes]) -> None:
        """Set the latents from :meth:`compress_latents`' payloads (network weights already loaded)."""
        if any(frames):
            raise ValueError(f"{type(self).__name__} sends no per-frame data, got non-empty frame payloads")

    def init_from_frames(self, y: Tensor, uv: Tensor) -> None:
        """Optional data-dependent initialisation before fitting (all frames, padded, display order)."""
        return None

    def fresh(self) -> SceneAdaptiveNet:
        """A new, freshly initialised network like this one (a warm-up candidate)."""
        return type(self)(**self.architecture)

    @classmethod
    def checked_architecture(cls, record: Any, where: str) -> dict[str, Any]:
        """``record`` (from a file) checked against :attr:`ARCHITECTURE_FIELDS`; BitstreamError if not."""
        return check_architecture(record, cls.ARCHITECTURE_FIELDS, where)

    def frame_activation_bytes(self) -> int:
        """Peak bytes of the intermediate tensors of decoding one frame (subclasses estimate theirs).

        Called on a network built on the ``meta`` device, so it may read shapes, never values.
        """
        return 0

    def decode_memory_bytes(self) -> int:
        """Estimated peak memory of decoding this network from a file, in bytes.

        The decoder calls it on a ``meta`` build (no memory) and refuses a stream whose estimate
        exceeds its limit before the real network exists. Counted: the weights about five times
        (float weights, their decoded symbols and steps, the copy loaded), the buffers, every
        decoded frame twice (``reconstruct`` returns them all; the writer converts each) and the
        subclass's per-frame intermediates; plus a quarter for what these counts miss (allocator
        slack, the coder's tables) and :data:`DECODER_BASE_BYTES`, as measured by
        ``bench/decode_memory.py``.
        """
        weights = sum(p.numel() for p in self.parameters()) * 4
        buffers = sum(b.numel() * b.element_size() for b in self.buffers())
        frames = self.num_frames * self.height * self.width * 3 // 2 * 4 * 2
        return DECODER_BASE_BYTES + int(
            1.25 * (5 * weights + buffers + frames + self.frame_activation_bytes())
        )

    def complexity(self) -> dict[str, float]:
        """Parameter count (M) of the coded network (latents excluded)."""
        count = sum(p.numel() for n, p in self.named_parameters() if self.is_network_parameter(n))
        return {"params_m": count / 1e6}

    # ---- parameter quantization ----------------------------------------------------------------

    def network_parameters(self) -> dict[str, Tensor]:
        return {n: p for n, p in self.named_parameters() if self.is_network_parameter(n)}

    def parameter_coder(self) -> nn.Module:
        """The :class:`ParameterCoder` of this network's weights (built once; its steps are learnable).

        Kept outside ``_modules`` on purpose: its steps must not be coded as network weights, and
        ``state_dict`` of the network stays the same whether or not it was ever built.
        """
        if self._param_coder is None:
            from nvc_train.entropy.param_coding import ParameterCoder

            coder = ParameterCoder.from_module(self, include=lambda name, _t: self.is_network_parameter(name))
            coder.to(next(self.parameters()).device)
            object.__setattr__(self, "_param_coder", coder)
        return self._param_coder  # type: ignore[return-value]

    def quantize_parameters(self, mode: str | None, init_bits: int | None = None) -> None:
        """Run ``forward`` with quantized weights (``noise``, ``ste`` or ``dequantize``), or not (None).

        ``init_bits`` (first call): start the steps so that the largest weight spans that many bits.
        """
        if mode is not None and init_bits is not None:
            self.parameter_coder().init_steps(self.network_parameters(), bits=init_bits)
        self._param_mode = mode

    @property
    def parameter_mode(self) -> str | None:
        return self._param_mode

    # ---- training forward ----------------------------------------------------------------------

    def forward(
        self, frame_indices: Tensor, _weights_swapped: bool = False, **options: Any
    ) -> AdaptiveOutput:
        """Planes and estimated bits of ``frame_indices``; with quantized weights when that is on.

        ``options`` go to :meth:`frames_forward` (e.g. HiNeRV's ``crop``: train on patches), for the
        networks whose ``frames_forward`` takes them. ``_weights_swapped`` is internal: the quantized
        weights are swapped in by ``torch.func.functional_call``, which calls this same ``forward`` again.
        """
        if self._param_mode is None or _weights_swapped:
            y, uv, bits = self.frames_forward(frame_indices, **options)
            return AdaptiveOutput(y, uv, bits, bits.new_zeros(()))
        coder = self.parameter_coder()
        quantized, parameter_bits = coder(self.network_parameters(), mode=self._param_mode)
        out = torch.func.functional_call(
            self, quantized, (frame_indices,), {"_weights_swapped": True, **options}
        )
        out.parameter_bits = parameter_bits
        return out

    # ---- real coding ---------------------------------------------------------------------------

    def compress(self) -> AdaptivePayload:
        """Quantize and code the weights, then the latents; the net's weights become the decoded ones.

        The encoder loads its OWN decoded weights before coding latents (the probabilities of the
        latents depend on the weights), so both sides compute every probability from the same values.
        """
        coder = self.parameter_coder()
        with torch.no_grad(), decode_threads(1):
            parameters = coder.compress(self.network_parameters())
            self._load_weights(coder.decompress(parameters))
            self._param_mode = None
            return AdaptivePayload(parameters, self.compress_latents())

    @classmethod
    def decompress(cls, architecture: Mapping[str, Any], payload: AdaptivePayload) -> SceneAdaptiveNet:
        """Rebuild the network from the file alone: architecture, coded weights, coded latents."""
        net = cls(**architecture)
        if len(payload.frames) != net.num_frames:
            raise ValueError(f"{len(payload.frames)} frame payloads for a {net.num_frames}-frame network")
        net.decompress_weights(payload.parameters)
        with torch.no_grad(), decode_threads(1):
            net.decompress_latents(payload.frames)
        return net.eval()

    def decompress_weights(self, data: bytes) -> None:
        """Load the network's weights from the coded weights payload (the decoder's first step)."""
        with torch.no_grad(), decode_threads(1):
            self._load_weights(self.parameter_coder().decompress(data))

    def _load_weights(self, weights: Mapping[str, Tensor]) -> None:
        own = self.network_parameters()
        if set(weights) != set(own):
            raise ValueError(f"decoded weights {sorted(weights)} do not match the network's {sorted(own)}")
        for name, value in weights.items():
            own[name].data.copy_(value.to(own[name].dtype).view_as(own[name]))

    @torch.no_grad()
    def reconstruct(self, frame_indices: list[int] | None = None) -> tuple[Tensor, Tensor]:
        """Decoded planes (display order) with hard-rounded latents and the weights the net holds.

        Encoder (after :meth:`compress`) and decoder (after :meth:`decompress`) both call this, with
        one thread, one frame at a time, so their pictures agree byte for byte.
        """
        saved, mode = self.quantizer, self._param_mode
        self.quantizer, self._param_mode = QuantizerState("hard"), None
        was_training = self.training
        self.eval()
        ys, uvs = [], []
        try:
            with decode_threads(1):
                for index in frame_indices if frame_indices is not None else range(self.num_frames):
                    y, uv, _ = self.frames_forward(torch.tensor([index], device=self._device()))
                    ys.append(y)
                    uvs.append(uv)
        finally:
            self.quantizer, self._param_mode = saved, mode
            self.train(was_training)
        return torch.cat(ys), torch.cat(uvs)

    def _device(self) -> torch.device:
        return next(self.parameters()).device
