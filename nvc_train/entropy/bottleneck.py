"""Factorized entropy model for hyper-latents z: one learned, non-parametric density per channel.

Each channel's cumulative distribution is ``sigmoid(logits_c(x))`` where ``logits_c`` is a small
monotone network (Balle et al. 2018, "Variational image compression with a scale hyperprior",
appendix 6.1): a chain of 1 -> filters -> 1 affine maps whose matrices pass through ``softplus``
(non-negative) and whose hidden layers add ``tanh(a) * tanh(h)`` with ``tanh(a) >= -1``; every
stage is non-decreasing, so the CDF is. The likelihood of a bin is a difference of sigmoids.

Coding needs each channel's median (symbols are ``round(z - median)``, centred on the density)
and a symbol range covering all but ``tail_mass`` of the mass. Both are found by bisection on the
monotone logits at ``update()`` time, so no auxiliary loss or second optimizer is needed and
Lightning keeps automatic optimization; ``loss()`` returns zero for codecs that expect the term.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nvc_train.entropy.base import TableEntropyModel
from nvc_train.entropy.coder import MAX_HALF_RANGE, AnsDecoder, AnsEncoder, EntropyCoderError, _cdf_tables
from nvc_train.entropy.ops import lower_bound, quantize

_BISECTION_STEPS = 64  # 64 halvings take any bracket up to 2**21 wide below float64 resolution
_MAX_BRACKET = 2.0**20  # a density wider than this is pathological: the table cap handles it


class EntropyBottleneck(TableEntropyModel):
    """Per-channel learned density for ``z`` of shape (N, C, ...); likelihoods and real coding.

    Parameters
    ----------
    channels:
        number of channels C (dim 1 of z).
    filters:
        hidden widths of the cumulative-logits network.
    init_scale:
        rough spread of the initial densities (in quantization steps).
    tail_mass:
        mass left outside the coded range of each channel; values there take the escape path.
    likelihood_bound:
        floor of the likelihoods ``forward`` returns.
    """

    _resizable_buffers = (*TableEntropyModel._resizable_buffers, "_medians")

    def __init__(
        self,
        channels: int,
        filters: tuple[int, ...] = (3, 3, 3),
        init_scale: float = 10.0,
        tail_mass: float = 1e-9,
        likelihood_bound: float = 1e-9,
    ) -> None:
        super().__init__()
        if channels < 1 or init_scale <= 0 or not 0 < tail_mass < 1:
            raise ValueError(f"bad EntropyBottleneck arguments: {channels=}, {init_scale=}, {tail_mass=}")
        self.channels = int(channels)
        self.filters = tuple(int(f) for f in filters)
        self.init_scale = float(init_scale)
        self.tail_mass = float(tail_mass)
        self.likelihood_bound = float(likelihood_bound)

        widths = (1, *self.filters, 1)
        # Spread init_scale over the stages so the initial CDF has roughly that width.
        stage_scale = self.init_scale ** (1.0 / (len(widths) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(widths) - 1):
            # softplus(init) = 1 / (stage_scale * width_out): each stage narrows the initial slope so
            # the composed CDF starts about init_scale quantization steps wide.
            init = math.log(math.expm1(1.0 / stage_scale / widths[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, widths[i + 1], widths[i]), init)))
            self.biases.append(nn.Parameter(torch.empty(channels, widths[i + 1], 1).uniform_(-0.5, 0.5)))
            if i < len(widths) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, widths[i + 1], 1)))
        self.register_buffer("_medians", torch.zeros(0))

    # ------------------------------------------------------------------------------- the density
    def _logits(self, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """Cumulative logits of x (C, 1, M) per channel.

        With ``dtype`` it evaluates detached CPU copies of the parameters in that dtype: the tables
        ``update()`` builds then do not depend on the device the model happens to live on.
        """
        params = [list(self.matrices), list(self.biases), list(self.factors)]
        if dtype is not None:
            params = [[p.detach().to("cpu", dtype) for p in group] for group in params]
            x = x.to("cpu", dtype)
        matrices, biases, factors = params
        h = x
        for i, (matrix, bias) in enumerate(zip(matrices, biases, strict=True)):
            h = torch.matmul(F.softplus(matrix), h) + bias
            if i < len(factors):
                h = h + torch.tanh(factors[i]) * torch.tanh(h)
        return h

    def _bin_likelihood(self, values: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        """Mass of [v - 0.5, v + 0.5] per channel for values (C, 1, M).

        Evaluated on the side of the median where both sigmoids are small (sign flip), so tail
        masses keep their relative precision instead of cancelling as a difference near 1.
        """
        both = self._logits(torch.cat([values - 0.5, values + 0.5], dim=-1), dtype)
        lower, upper = both.chunk(2, dim=-1)
        sign = torch.where(lower + upper > 0, -1.0, 1.0).to(both.dtype).detach()
        return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))

    def _to_channels(self, z: Tensor) -> Tensor:
        """(N, C, ...) -> (C, 1, N * prod(...)) for the per-channel network."""
        return z.transpose(0, 1).reshape(self.channels, 1, -1)

    def _from_channels(self, v: Tensor, like: Tensor) -> Tensor:
        """Inverse of :meth:`_to_channels` for a tensor shaped like ``like``."""
        shape = (like.shape[1], like.shape[0], *like.shape[2:])
        return v.reshape(shape).transpose(0, 1)

    def _check_z(self, z: Tensor) -> None:
        if z.dim() < 2 or z.shape[1] != self.channels:
            raise ValueError(f"z must be (N, {self.channels}, ...), got {tuple(z.shape)}")

    # ---------------------------------------------------------------------------------- training
    def medians(self) -> Tensor:
        """Per-channel medians (C,) float32: from the tables when built, else solved now.

        The stored ones are what compress/decompress use, so evaluation stays consistent with the
        coder; before ``update()`` they are solved on the fly exactly as ``update()`` would.
        """
        if self._medians.numel() == self.channels:
            return self._medians
        with torch.no_grad():
            return self._solve(torch.zeros(self.channels, dtype=torch.float64)).to(
                device=self.matrices[0].device, dtype=torch.float32
            )

    def forward(self, z: Tensor, quantizer: str = "noise") -> tuple[Tensor, Tensor]:
        """``(z_hat, likelihoods)``: ``"noise"`` in training, ``"ste"`` or ``"dequantize"`` otherwise."""
        if quantizer not in ("noise", "ste", "dequantize"):
            raise ValueError(f"quantizer must be 'noise', 'ste' or 'dequantize', got {quantizer!r}")
        self._check_z(z)
        means = None
        if quantizer != "noise":
            means = self.medians().to(z.dtype).view(1, -1, *([1] * (z.dim() - 2)))
        z_hat = quantize(z, quantizer, means)
        likelihood = self._from_channels(self._bin_likelihood(self._to_channels(z_hat)), z_hat)
        if self.likelihood_bound > 0:
            likelihood = lower_bound(likelihood, self.likelihood_bound)
        return z_hat, likelihood

    def loss(self) -> Tensor:
        """No auxiliary term: quantiles come from bisection in ``update()``. A zero for uniformity."""
        return self.matrices[0].new_zeros(())

    # ------------------------------------------------------------------------------------ tables
    def _solve(self, targets: Tensor) -> Tensor:
        """Per channel, the x (float64) where ``logits_c(x) = targets[c]``, by bisection.

        The logits are monotone, so the bracket is doubled until it holds the target and then
        halved a fixed number of times: deterministic work, deterministic result.
        """
        targets = targets.to(torch.float64).cpu()

        def logits(x: Tensor) -> Tensor:
            return self._logits(x.view(-1, 1, 1), torch.float64).view(-1)

        radius = torch.full_like(targets, max(1.0, self.init_scale))
        lo, hi = -radius, radius.clone()
        for _ in range(64):
            low_ok, high_ok = logits(lo) <= targets, logits(hi) >= targets
            if bool(low_ok.all() and high_ok.all()) or float(hi.max()) >= _MAX_BRACKET:
                break
            lo = torch.where(low_ok, lo, lo * 2)
            hi = torch.where(high_ok, hi, hi * 2)
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            below = logits(mid) < targets
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        return 0.5 * (lo + hi)

    def update(self, force: bool = False) -> bool:
        """Build medians and integer CDF tables into the buffers; False if built and not ``force``.

        Call with ``force=True`` after further training: the tables are a snapshot of the density.
        """
        if self.tables_built and not force:
            return False
        with torch.no_grad():
            tail_logit = math.log(self.tail_mass / 2) - math.log1p(-self.tail_mass / 2)
            medians = self._solve(torch.zeros(self.channels)).to(torch.float32)
            lower = self._solve(torch.full((self.channels,), tail_logit))
            upper = self._solve(torch.full((self.channels,), -tail_logit))
            m = medians.to(torch.float64)  # the float32 centre forward and the coder use
            below = torch.clamp(torch.ceil(m - lower), 0, MAX_HALF_RANGE).to(torch.int64)
            above = torch.clamp(torch.ceil(upper - m), 0, MAX_HALF_RANGE).to(torch.int64)
            lengths = below + above + 1
            # Entry j of row c is symbol j - below[c], the bin centred at median + symbol.
            entry = torch.arange(int(lengths.max()), dtype=torch.int64)[None, :]
            centres = m[:, None] + (entry - below[:, None]).to(torch.float64)
            pmf = self._bin_likelihood(centres[:, None, :], torch.float64)[:, 0, :].cpu()
            pmf = torch.where(entry < lengths[:, None], pmf, torch.zeros_like(pmf))
            edges = torch.stack([m - below - 0.5, m + above + 0.5], dim=1)
            edge_logits = self._logits(edges[:, None, :], torch.float64)[:, 0, :].cpu()
            tails = torch.sigmoid(edge_logits[:, 0]) + torch.sigmoid(-edge_logits[:, 1])
        cdf, cdf_length = _cdf_tables(pmf.numpy(), lengths.numpy(), tails.numpy())
        self._set_tables(cdf, cdf_length, (-below).numpy())
        self._medians = medians.to(self._cdf.device)
        return True

    # ------------------------------------------------------------------------------------ coding
    def _rows(self, spatial: int) -> np.ndarray:
        """Table row of each symbol of a (1, C, H, W) latent in raster order: its channel."""
        return np.repeat(np.arange(self.channels, dtype=np.int64), spatial)

    def _prepare(self, z: Tensor) -> tuple[Tensor, np.ndarray]:
        """Checked ``(symbols, table rows)`` of z (1, C, H, W): the encoder's half of both coding APIs."""
        self._tables(self.channels)
        if z.dim() != 4 or z.shape[0] != 1 or z.shape[1] != self.channels:
            raise EntropyCoderError(f"z must be (1, {self.channels}, H, W), got {tuple(z.shape)}")
        means = self._medians.to(device=z.device, dtype=z.dtype).view(1, -1, 1, 1)
        return self._symbols(z, means), self._rows(z.shape[2] * z.shape[3])

    def _decode_size(self, shape: tuple[int, int]) -> tuple[int, int]:
        """Checked (H, W) of the z to decode."""
        self._tables(self.channels)
        if len(shape) != 2 or min(int(s) for s in shape) < 1:
            raise EntropyCoderError(f"shape must be (H, W) with positive sizes, got {shape}")
        h, w = (int(s) for s in shape)
        return h, w

    def _dequantize(self, symbols: np.ndarray, h: int, w: int) -> Tensor:
        """``symbols + medians`` as (1, C, H, W) float32: the one way both directions rebuild z_hat."""
        means = self._medians.view(1, -1, 1, 1)
        symbols_t = torch.from_numpy(np.ascontiguousarray(symbols, dtype=np.int64))
        return symbols_t.view(1, self.channels, h, w).to(means) + means

    def compress(self, z: Tensor) -> bytes:
        """Code ``round(z - medians)`` of z (1, C, H, W); returns the payload."""
        symbols, rows = self._prepare(z)
        return self._encode(symbols, rows, self.channels)

    def decompress(self, data: bytes, shape: tuple[int, int]) -> Tensor:
        """z_hat (1, C, H, W) float32, equal to the encoder's ``forward(z, "dequantize")[0]``."""
        h, w = self._decode_size(shape)
        return self._dequantize(self._decode(data, self._rows(h * w), self.channels), h, w)

    def encode_into(self, encoder: AnsEncoder, z: Tensor) -> Tensor:
        """:meth:`compress` as the next block of a shared stream; returns the z_hat it will decode to.

        The hyper decoder needs z_hat before y can be coded; returning it here (rebuilt from the
        symbols by the function :meth:`decode_from` uses) spares the encoder a decode of a stream
        that is not finished yet.
        """
        symbols, rows = self._prepare(z)
        self._encode_into(encoder, symbols, rows, self.channels)
        return self._dequantize(symbols.cpu().numpy(), z.shape[2], z.shape[3])

    def decode_from(self, decoder: AnsDecoder, shape: tuple[int, int]) -> Tensor:
        """:meth:`decompress` of the next block of a shared stream (``decoder.finish()`` comes after)."""
        h, w = self._decode_size(shape)
        return self._dequantize(self._decode_from(decoder, self._rows(h * w), self.channels), h, w)
