"""The table plumbing both entropy models share: buffers, checkpoint loading, coding calls.

Why a base class: the integer tables must be registered buffers (so checkpoints carry them and a
decoder never rebuilds them from floats), their shapes depend on the learned model (so loading a
checkpoint must resize them first), and every coding call must check them in the same way.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from nvc_train.entropy.coder import (
    MAX_ESCAPE_BITS,
    AnsDecoder,
    AnsEncoder,
    EntropyCoderError,
    check_tables,
    decode_symbols,
    encode_symbols,
)
from nvc_train.entropy.ops import _rounded


class TableEntropyModel(nn.Module):
    """An ``nn.Module`` owning integer CDF tables ``_cdf``, ``_cdf_length`` and ``_offset``.

    Row ``r`` of the tables codes symbols ``offset[r] .. offset[r] + cdf_length[r] - 2`` and has an
    escape symbol last. Empty buffers mean "not built": ``update()`` fills them.
    """

    # Buffers whose shape follows the state_dict being loaded (subclasses may extend the tuple).
    _resizable_buffers: tuple[str, ...] = ("_cdf", "_cdf_length", "_offset")

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("_cdf", torch.zeros(0, dtype=torch.int32))
        self.register_buffer("_cdf_length", torch.zeros(0, dtype=torch.int32))
        self.register_buffer("_offset", torch.zeros(0, dtype=torch.int32))

    @property
    def tables_built(self) -> bool:
        """Whether ``update()`` has run (or a checkpoint made after it was loaded)."""
        return self._cdf.numel() > 0

    def _set_tables(self, cdf: np.ndarray, cdf_length: np.ndarray, offset: np.ndarray) -> None:
        """Replace the table buffers (new shapes allowed), on the module's current device."""
        device = self._cdf.device
        self._cdf = torch.from_numpy(np.ascontiguousarray(cdf, dtype=np.int32)).to(device)
        self._cdf_length = torch.from_numpy(np.ascontiguousarray(cdf_length, dtype=np.int32)).to(device)
        self._offset = torch.from_numpy(np.ascontiguousarray(offset, dtype=np.int32)).to(device)

    def _tables(self, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The checked integer tables as numpy arrays; raises if missing or malformed."""
        if not self.tables_built:
            raise EntropyCoderError(
                f"{type(self).__name__} has no CDF tables: call update() before compress/decompress "
                "(or load a state_dict saved after update())"
            )
        cdf = self._cdf.detach().cpu().numpy()
        cdf_length = self._cdf_length.detach().cpu().numpy()
        offset = self._offset.detach().cpu().numpy()
        # Checked once per table state, not per coding call: the buffers themselves (identity) and
        # their in-place version counters (load_state_dict copies into them) make the key.
        buffers = (self._cdf, self._cdf_length, self._offset)
        state = (rows, buffers, tuple(t._version for t in buffers))
        checked = self.__dict__.get("_checked_tables")
        if (
            checked is None
            or checked[0] != rows
            or checked[2] != state[2]
            or any(a is not b for a, b in zip(checked[1], buffers, strict=True))
        ):
            check_tables(cdf, cdf_length, offset, rows)
            self.__dict__["_checked_tables"] = state
        return cdf, cdf_length, offset

    @staticmethod
    def _symbols(x: Tensor, means: Tensor | None) -> Tensor:
        """``quantize(x, "symbols", means)``, refusing values an int64 symbol cannot carry.

        Checked on the rounded floats (converting 1e20 or NaN to int64 would silently wrap); one
        check covers non-finite inputs and means too.
        """
        rounded = _rounded(x.detach(), None if means is None else means.detach())
        if not bool((rounded.abs() < 2.0**MAX_ESCAPE_BITS).all()):  # also false for NaN
            raise EntropyCoderError(
                f"a value is NaN, infinite or 2**{MAX_ESCAPE_BITS} or more away from its mean: "
                "not codable as a symbol"
            )
        return rounded.to(torch.int64)  # exactly quantize(x, "symbols", means)

    def _encode(self, symbols: Tensor, rows_of_symbols: np.ndarray, rows: int) -> bytes:
        """Code int64 ``symbols`` (any shape, raster order) with the given table rows."""
        tables = self._tables(rows)
        return encode_symbols(symbols.detach().cpu().numpy().ravel(), rows_of_symbols, *tables)

    def _decode(self, data: bytes, rows_of_symbols: np.ndarray, rows: int) -> np.ndarray:
        """Decode the symbols of ``rows_of_symbols`` (raster order) from ``data``."""
        tables = self._tables(rows)
        return decode_symbols(data, rows_of_symbols, *tables)

    def _encode_into(
        self, encoder: AnsEncoder, symbols: Tensor, rows_of_symbols: np.ndarray, rows: int
    ) -> None:
        """Like :meth:`_encode`, as the next block of a stream shared with other calls."""
        if not isinstance(encoder, AnsEncoder):
            raise TypeError(f"encoder must be an AnsEncoder, got {type(encoder).__name__}")
        tables = self._tables(rows)
        encoder.encode(symbols.detach().cpu().numpy().ravel(), rows_of_symbols, *tables)

    def _decode_from(self, decoder: AnsDecoder, rows_of_symbols: np.ndarray, rows: int) -> np.ndarray:
        """Like :meth:`_decode`, reading the next block of a shared stream (no end-of-stream check)."""
        if not isinstance(decoder, AnsDecoder):
            raise TypeError(f"decoder must be an AnsDecoder, got {type(decoder).__name__}")
        tables = self._tables(rows)
        return decoder.decode(rows_of_symbols, *tables)

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list,
        unexpected_keys: list,
        error_msgs: list,
    ) -> None:
        """Resize table buffers to the incoming shapes first: tables grow and shrink with training."""
        for name in self._resizable_buffers:
            key = prefix + name
            current = self._buffers.get(name)
            if key in state_dict and current is not None and state_dict[key].shape != current.shape:
                self._buffers[name] = torch.empty(
                    state_dict[key].shape, dtype=current.dtype, device=current.device
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
