"""Conditional Gaussian entropy model for latents y whose mean and scale come from a hyperprior.

Training (``forward``) uses the exact, differentiable mass of ``N(mean, scale)`` over the
quantization bin ``[y_hat - 0.5, y_hat + 0.5]``. Coding snaps every scale to one of ``num_scales``
log-spaced levels (``scale_indexes``) and codes with that level's integer CDF table, built once by
``update()`` and stored in buffers; the symbols are ``round(y - mean)``, so one zero-centred table
per level serves every mean.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from nvc_train.entropy.base import TableEntropyModel
from nvc_train.entropy.coder import MAX_HALF_RANGE, AnsDecoder, AnsEncoder, EntropyCoderError, _cdf_tables
from nvc_train.entropy.ops import lower_bound, quantize

_SQRT_HALF = math.sqrt(0.5)


def gaussian_bin_mass(distance: Tensor, scales: Tensor) -> Tensor:
    """Mass of ``N(0, scale)`` on ``[d - 0.5, d + 0.5]``, evaluated in the lower tail via erfc.

    Folding to ``|d|`` and writing the mass as a difference of two ``erfc`` values keeps it exact to
    relative precision even far in the tail, where ``Phi(b) - Phi(a)`` would cancel to zero.
    """
    d = distance.abs()
    upper = torch.special.erfc((d - 0.5) * _SQRT_HALF / scales)
    lower = torch.special.erfc((d + 0.5) * _SQRT_HALF / scales)
    return 0.5 * (upper - lower)


def _scale_levels(scale_min: float, scale_max: float, num_scales: int) -> tuple[Tensor, Tensor]:
    """The fixed log-spaced scale table (float32) and the float32 decision bounds between levels.

    A bound sits where coding ``N(0, s)`` with either neighbour costs the same expected KL
    (``s**2 = 2 ln(t2/t1) / (1/t1**2 - 1/t2**2)``), a little below the geometric mean: coding with
    too small a scale costs more than with too large a one, so the larger level wins more often.
    Computed once in float64 and stored as float32 buffers (the checkpoint carries them), so
    indexes are comparisons only (no ``log`` at coding time).
    """
    levels = np.exp(np.linspace(math.log(scale_min), math.log(scale_max), num_scales)).astype(np.float32)
    t = levels.astype(np.float64)
    bounds = np.sqrt(2.0 * np.log(t[1:] / t[:-1]) / (1.0 / t[:-1] ** 2 - 1.0 / t[1:] ** 2))
    return torch.from_numpy(levels), torch.from_numpy(bounds.astype(np.float32))


class GaussianConditional(TableEntropyModel):
    """``y ~ N(means, scales)`` quantized to integers around ``means``; likelihoods and real coding.

    Parameters
    ----------
    scale_min, scale_max, num_scales:
        the log-spaced scale levels coding snaps to; ``forward`` clamps scales to ``>= scale_min``.
    likelihood_bound:
        floor of the likelihoods ``forward`` returns (keeps ``-log2`` finite for the rate loss).
    tail_mass:
        probability mass left outside each level's table; values there take the escape path.
    """

    _resizable_buffers = (*TableEntropyModel._resizable_buffers, "scale_table", "scale_bounds")

    def __init__(
        self,
        scale_min: float = 0.11,
        scale_max: float = 16.0,
        num_scales: int = 64,
        likelihood_bound: float = 1e-9,
        tail_mass: float = 1e-9,
    ) -> None:
        super().__init__()
        if not 0 < scale_min < scale_max or num_scales < 2:
            raise ValueError(
                f"need 0 < scale_min < scale_max and num_scales >= 2, got {scale_min=}, {scale_max=}, "
                f"{num_scales=}"
            )
        if not 0 < tail_mass < 1:
            raise ValueError(f"tail_mass must be in (0, 1), got {tail_mass}")
        self.scale_min = float(scale_min)
        self.likelihood_bound = float(likelihood_bound)
        self.tail_mass = float(tail_mass)
        levels, bounds = _scale_levels(scale_min, scale_max, num_scales)
        self.register_buffer("scale_table", levels)
        self.register_buffer("scale_bounds", bounds)

    # ----------------------------------------------------------------------------------- training
    def forward(
        self, y: Tensor, scales: Tensor, means: Tensor | None = None, quantizer: str = "noise"
    ) -> tuple[Tensor, Tensor]:
        """``(y_hat, likelihoods)``: ``"noise"`` in training, ``"ste"`` or ``"dequantize"`` otherwise."""
        if quantizer not in ("noise", "ste", "dequantize"):
            raise ValueError(f"quantizer must be 'noise', 'ste' or 'dequantize', got {quantizer!r}")
        y_hat = quantize(y, quantizer, means)
        return y_hat, self.likelihood(y_hat, scales, means)

    def likelihood(self, y_hat: Tensor, scales: Tensor, means: Tensor | None = None) -> Tensor:
        """Probability of the bin around ``y_hat`` under ``N(means, max(scales, scale_min))``."""
        scales = lower_bound(scales, self.scale_min)
        mass = gaussian_bin_mass(y_hat if means is None else y_hat - means, scales)
        return lower_bound(mass, self.likelihood_bound) if self.likelihood_bound > 0 else mass

    # ------------------------------------------------------------------------------------- tables
    def scale_indexes(self, scales: Tensor) -> Tensor:
        """int64 level index of each scale: THE one function encoder and decoder both call.

        Index = number of stored float32 bounds strictly below the scale (``torch.bucketize``
        semantics), decided by comparisons only (no ``log``, no division), so equal scale tensors
        give equal indexes on any machine; scales below the first or above the last level use that
        level. ``compress``/``decompress`` call this same method.
        """
        indexes = torch.from_numpy(self._level_of(scales).astype(np.int64))
        return indexes.view(scales.shape).to(scales.device)

    def _level_of(self, scales: Tensor) -> np.ndarray:
        """Flat numpy body of :meth:`scale_indexes` (int16; coding avoids a round trip via torch).

        Fast and exact: non-negative float32 values order like their bit patterns, so the top 16
        bits pick a precomputed first guess (the count of bounds below that bucket's smallest value;
        0 for negative values) and comparisons with the actual bounds correct it: one pass when
        neighbouring bounds are further apart than a bucket (ratio 1 + 2**-7), more otherwise.
        """
        values = np.ascontiguousarray(scales.detach().cpu().to(torch.float32).numpy().ravel())
        if not np.isfinite(values).all():
            raise EntropyCoderError("scales must be finite to be coded")
        bounds = self.scale_bounds.detach().cpu().to(torch.float32).numpy()
        if len(bounds) >= 2**15 - 1:
            raise EntropyCoderError(f"{len(bounds) + 1} scale levels: at most 32767 are supported")
        bucket_start = (np.arange(1 << 15, dtype=np.uint32) << 16).view(np.float32)
        guess = np.zeros(1 << 16, dtype=np.int16)  # upper half: sign bit set, negative values -> 0
        guess[: 1 << 15] = np.searchsorted(bounds, bucket_start, side="left")
        index = guess[values.view(np.uint32) >> 16]
        padded = np.append(bounds, np.float32(np.inf))
        one_pass = len(bounds) < 2 or bool((bounds[1:] > bounds[:-1] * np.float32(1 + 2**-6)).all())
        for _ in range(len(bounds) + 1):
            step = values > padded[index]
            index += step
            if one_pass or not step.any():
                break
        return index

    def update(self) -> None:
        """Build the integer CDF table of every scale level into the buffers (deterministic)."""
        levels = self.scale_table.detach().cpu().to(torch.float64)
        z = -float(torch.special.ndtri(torch.tensor(self.tail_mass / 2, dtype=torch.float64)))
        half = torch.clamp(torch.ceil(levels * z), 1, MAX_HALF_RANGE).to(torch.int64)
        lengths = 2 * half + 1
        # Entry j of row r is symbol j - half[r]; entries past a row's length are padding.
        entry = torch.arange(int(lengths.max()), dtype=torch.int64)[None, :]
        symbols = (entry - half[:, None]).to(torch.float64)
        pmf = gaussian_bin_mass(symbols, levels[:, None])
        pmf = torch.where(entry < lengths[:, None], pmf, torch.zeros_like(pmf))
        tails = torch.special.erfc((half.to(torch.float64) + 0.5) * _SQRT_HALF / levels)
        cdf, cdf_length = _cdf_tables(pmf.numpy(), lengths.numpy(), tails.numpy())
        self._set_tables(cdf, cdf_length, (-half).numpy())

    # ------------------------------------------------------------------------------------- coding
    @staticmethod
    def _check(name: str, tensor: Tensor | None, shape: torch.Size) -> None:
        """Shape check with a message naming the argument."""
        if tensor is not None and tensor.shape != shape:
            raise EntropyCoderError(f"{name} has shape {tuple(tensor.shape)}, expected {tuple(shape)}")

    def _prepare(self, y: Tensor, scales: Tensor, means: Tensor | None) -> tuple[Tensor, np.ndarray]:
        """Checked ``(symbols, table rows)`` of ``y``: the encoder's half shared by both coding APIs."""
        self._tables(len(self.scale_table))  # clear error before any work when update() is missing
        # Finiteness: _symbols refuses non-finite y - means, _level_of non-finite scales.
        self._check("scales", scales, y.shape)
        self._check("means", means, y.shape)
        return self._symbols(y, means), self._level_of(scales)

    def _decode_rows(self, scales: Tensor, means: Tensor | None) -> np.ndarray:
        """Table rows of the symbols to decode: the decoder's half of :meth:`_prepare`."""
        self._tables(len(self.scale_table))
        self._check("means", means, scales.shape)
        return self._level_of(scales)

    @staticmethod
    def _dequantize(symbols: np.ndarray, scales: Tensor, means: Tensor | None) -> Tensor:
        """``symbols + means`` shaped like ``scales``: the one way both directions rebuild ``y_hat``."""
        symbols_t = torch.from_numpy(np.ascontiguousarray(symbols, dtype=np.int64)).view(scales.shape)
        reference = scales if means is None else means
        y_hat = symbols_t.to(device=reference.device, dtype=reference.dtype)
        return y_hat if means is None else y_hat + means.detach()

    def compress(self, y: Tensor, scales: Tensor, means: Tensor | None = None) -> bytes:
        """Code ``round(y - means)`` with the tables of ``scale_indexes(scales)``; returns the payload."""
        symbols, indexes = self._prepare(y, scales, means)
        return self._encode(symbols, indexes, len(self.scale_table))

    def decompress(self, data: bytes, scales: Tensor, means: Tensor | None = None) -> Tensor:
        """``y_hat = symbols + means``, bit-exact to the encoder's ``forward(..., "dequantize")[0]``."""
        indexes = self._decode_rows(scales, means)
        return self._dequantize(self._decode(data, indexes, len(self.scale_table)), scales, means)

    def encode_into(
        self, encoder: AnsEncoder, y: Tensor, scales: Tensor, means: Tensor | None = None
    ) -> Tensor:
        """:meth:`compress` as the next block of a shared stream; returns the ``y_hat`` it will decode to.

        The returned tensor is what :meth:`decode_from` rebuilds from the same symbols with the same
        function, so an encoder can reconstruct without decoding its own stream.
        """
        symbols, indexes = self._prepare(y, scales, means)
        self._encode_into(encoder, symbols, indexes, len(self.scale_table))
        return self._dequantize(symbols.cpu().numpy(), scales, means)

    def decode_from(self, decoder: AnsDecoder, scales: Tensor, means: Tensor | None = None) -> Tensor:
        """:meth:`decompress` of the next block of a shared stream (``decoder.finish()`` comes after)."""
        indexes = self._decode_rows(scales, means)
        return self._dequantize(self._decode_from(decoder, indexes, len(self.scale_table)), scales, means)
