"""Throughput and rate overhead of GaussianConditional against constriction called directly.

Not a test: a script that prints figures. On ``--symbols`` Gaussian symbols (means U(-8, 8), scales
log-uniform in [0.11, 16], y ~ N(mean, scale)) on one core it measures

- ours: ``GaussianConditional.compress`` / ``decompress``, end to end from torch tensors (rounding,
  scale indexes, grouping by table, constriction ``Categorical`` per group, escapes, checks);
- direct: constriction's ``AnsCoder`` with ``QuantizedGaussian(-200, 200)`` and each symbol's own
  float64 scale (no scale table), on numpy arrays prepared beforehand; once with our symbols
  ``round(y - mean)`` under ``N(0, scale)`` (the same distribution: the ratio row), once with
  ``round(y)`` under ``N(mean, scale)`` (the other common convention; more bits for small scales);

in symbols per second (best of ``--repeats``) and their ratio (above 1: ours is faster), and the
payload size against the ideal ``-log2`` likelihood sum: ours against ``forward``'s likelihoods
(true scales, what training optimises) and against the table scales it codes with (the coder's own
overhead); direct against the exact Gaussian bin masses.

    .venv/bin/python bench/entropy_throughput.py [--symbols 1000000] [--repeats 3]
"""

from __future__ import annotations

import os

# One core for numpy's and torch's thread pools too; must be set before they are imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import constriction  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from nvc_train.entropy import GaussianConditional  # noqa: E402
from nvc_train.entropy.gaussian import gaussian_bin_mass  # noqa: E402


def _best_of(repeats: int, work: Callable[[], object]) -> tuple[float, object]:
    """Smallest wall time of ``repeats`` runs and the last result (the minimum is the least noisy)."""
    best, result = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    torch.set_num_threads(1)
    n = args.symbols
    g = torch.Generator().manual_seed(args.seed)
    scales = torch.exp(torch.empty(1, 1, n).uniform_(math.log(0.11), math.log(16.0), generator=g))
    means = torch.empty(1, 1, n).uniform_(-8.0, 8.0, generator=g)
    y = means + scales * torch.randn(1, 1, n, generator=g)

    # ---- ours
    model = GaussianConditional()
    update_s, _ = _best_of(1, model.update)
    model.eval()
    model.decompress(model.compress(y, scales, means), scales, means)  # warm-up
    enc_s, payload = _best_of(args.repeats, lambda: model.compress(y, scales, means))
    dec_s, y_hat = _best_of(args.repeats, lambda: model.decompress(payload, scales, means))
    with torch.no_grad():
        reference, likelihoods = model(y, scales, means, "dequantize")
    assert torch.equal(y_hat, reference), "round trip failed"
    ideal = float(-torch.log2(likelihoods.double()).sum())
    table_scales = model.scale_table[model.scale_indexes(scales)].double()
    table_masses = gaussian_bin_mass(reference.double() - means.double(), table_scales)
    ideal_table = float(-torch.log2(table_masses).sum())
    ours_bits = 8 * len(payload)

    # ---- constriction directly, one quantized Gaussian per symbol (exact, no scale table)
    family = constriction.stream.model.QuantizedGaussian(-200, 200)
    sigma = scales.view(-1).double().numpy()
    mu = means.view(-1).double().numpy()
    variants = {
        # the same symbols and distribution as ours: k = round(y - mean) under N(0, scale)
        "direct, same symbols": (
            (y - means).round().view(-1).numpy().astype(np.int32),
            np.zeros_like(mu),
        ),
        # the other convention: k = round(y) under N(mean, scale)
        "direct, round(y)": (torch.round(y).view(-1).numpy().astype(np.int32), mu),
    }
    direct = {}
    for name, (symbols, centre) in variants.items():

        def direct_encode(symbols: np.ndarray = symbols, centre: np.ndarray = centre) -> np.ndarray:
            coder = constriction.stream.stack.AnsCoder()
            coder.encode_reverse(symbols, family, centre, sigma)
            return coder.get_compressed()

        def direct_decode(words: np.ndarray, centre: np.ndarray = centre) -> np.ndarray:
            return constriction.stream.stack.AnsCoder(words).decode(family, centre, sigma)

        direct_decode(direct_encode())  # warm-up
        denc_s, words = _best_of(args.repeats, direct_encode)
        ddec_s, decoded = _best_of(args.repeats, lambda words=words, f=direct_decode: f(words))
        assert np.array_equal(decoded, symbols), f"{name}: round trip failed"
        masses = gaussian_bin_mass(torch.from_numpy(symbols - centre), torch.from_numpy(sigma))
        direct[name] = (denc_s, ddec_s, 32 * len(words), float(-torch.log2(masses).sum()))

    def rate(seconds: float) -> str:
        return f"{n / seconds / 1e6:6.2f} Msym/s"

    def row(name: str, enc: str, dec: str, bits: int, ideal_bits: float) -> None:
        overhead = 100 * (bits / ideal_bits - 1)
        print(f"{name:28s}{enc:>16s}{dec:>16s}{bits:>12d}{ideal_bits:>14.0f}{overhead:>9.3f}%")

    print(f"{n} symbols, means U(-8, 8), scales log-uniform [0.11, 16], one core, best of {args.repeats}")
    print(f"GaussianConditional.update(): {update_s * 1e3:.1f} ms ({len(model.scale_table)} tables)")
    print(f"{'':28s}{'encode':>16s}{'decode':>16s}{'bits':>12s}{'ideal':>14s}{'overhead':>10s}")
    row("ours (GaussianConditional)", rate(enc_s), rate(dec_s), ours_bits, ideal)
    row("  vs its table scales", "", "", ours_bits, ideal_table)
    for name, (denc_s, ddec_s, bits, ideal_bits) in direct.items():
        row(name, rate(denc_s), rate(ddec_s), bits, ideal_bits)
    denc_s, ddec_s, bits, _ = direct["direct, same symbols"]
    print(
        f"ratio ours / direct, same symbols (throughput, above 1: ours faster): "
        f"encode {denc_s / enc_s:.2f}x, decode {ddec_s / dec_s:.2f}x; size {ours_bits / bits:.4f}x"
    )


if __name__ == "__main__":
    main()
