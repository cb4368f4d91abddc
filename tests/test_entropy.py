"""Entropy models: round trips, rate vs likelihoods, errors, corrupt payloads, determinism, gradients."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nvc_train.entropy import (
    PRECISION,
    AnsDecoder,
    AnsEncoder,
    EntropyBottleneck,
    EntropyCoderError,
    GaussianConditional,
    quantize,
)
from nvc_train.entropy.coder import _cdf_tables, check_tables, decode_symbols, encode_symbols

REPO_ROOT = Path(__file__).resolve().parents[1]


def _gaussian_latent(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, ...]:
    """y ~ N(means, scales) with means U(-8, 8) and scales log-uniform in [0.11, 16]."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.exp(torch.empty(shape).uniform_(math.log(0.11), math.log(16.0), generator=g))
    means = torch.empty(shape).uniform_(-8.0, 8.0, generator=g)
    y = means + scales * torch.randn(shape, generator=g)
    return y, scales, means


@pytest.fixture(scope="module")
def gaussian() -> GaussianConditional:
    model = GaussianConditional()
    model.update()
    return model.eval()


@pytest.fixture(scope="module")
def bottleneck() -> EntropyBottleneck:
    torch.manual_seed(1)
    model = EntropyBottleneck(8)
    model.update()
    return model.eval()


# ------------------------------------------------------------------------------------- quantize
def test_quantize_roles() -> None:
    x = torch.tensor([-1.5, -0.4, 0.5, 1.49, 2.5, 7.2])
    means = torch.full_like(x, 0.25)
    noisy = quantize(x, "noise")
    assert ((noisy - x).abs() <= 0.5).all()
    assert torch.equal(quantize(x, "dequantize"), torch.round(x))
    assert torch.equal(quantize(x, "dequantize", means), torch.round(x - means) + means)
    symbols = quantize(x, "symbols", means)
    assert symbols.dtype == torch.int64
    assert torch.equal(symbols.to(x.dtype) + means, quantize(x, "dequantize", means))
    with pytest.raises(ValueError, match="unknown quantizer"):
        quantize(x, "round")


def test_ste_and_noise_pass_gradients() -> None:
    for mode in ("noise", "ste"):
        x = torch.randn(10, requires_grad=True)
        quantize(x, mode, torch.zeros(10)).sum().backward()
        assert torch.equal(x.grad, torch.ones(10))


# ---------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("shape", [(1, 8, 5, 7), (2, 3, 4, 4), (1, 1, 1, 1), (3, 17), (1, 64, 16, 16)])
@pytest.mark.parametrize("with_means", [True, False])
def test_gaussian_round_trip(gaussian: GaussianConditional, shape: tuple[int, ...], with_means: bool) -> None:
    y, scales, means = _gaussian_latent(shape, seed=sum(shape))
    means = means if with_means else None
    data = gaussian.compress(y, scales, means)
    y_hat = gaussian.decompress(data, scales, means)
    expected = gaussian(y, scales, means, "dequantize")[0]
    assert y_hat.shape == y.shape and y_hat.dtype == y.dtype
    assert torch.equal(y_hat, expected)  # bit-exact, not merely close
    rounded = torch.round(y) if means is None else torch.round(y - means) + means
    assert torch.equal(y_hat, rounded)  # the round trip equals the rounded input


def test_gaussian_escape_values(gaussian: GaussianConditional) -> None:
    y, scales, means = _gaussian_latent((1, 4, 8, 8), seed=3)
    extremes = torch.tensor([200.0, -200.0, 1e4, -3e6, 2.0**40, -(2.0**52), 4e17, 99.0, -99.0])
    y.view(-1)[: len(extremes)] = extremes + means.view(-1)[: len(extremes)]
    scales.view(-1)[:3] = 0.01  # below the smallest level, far outside its table
    data = gaussian.compress(y, scales, means)
    y_hat = gaussian.decompress(data, scales, means)
    assert torch.equal(y_hat, gaussian(y, scales, means, "dequantize")[0])
    assert torch.equal((y_hat - means).view(-1)[: len(extremes)], torch.round(extremes))


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (16, 16), (3, 40)])
def test_bottleneck_round_trip(bottleneck: EntropyBottleneck, shape: tuple[int, int]) -> None:
    z = 4.0 * torch.randn(1, 8, *shape, generator=torch.Generator().manual_seed(shape[0]))
    z_hat = bottleneck.decompress(bottleneck.compress(z), shape)
    assert torch.equal(z_hat, bottleneck(z, "dequantize")[0])
    medians = bottleneck.medians().view(1, -1, 1, 1)
    assert torch.equal(z_hat, torch.round(z - medians) + medians)


def test_bottleneck_escape_values(bottleneck: EntropyBottleneck) -> None:
    z = torch.randn(1, 8, 6, 6)
    z[0, :, 0, 0] = torch.tensor([1e3, -1e3, 5e5, -5e5, 1e12, -1e12, 3e4, 0.0])
    z_hat = bottleneck.decompress(bottleneck.compress(z), (6, 6))
    assert torch.equal(z_hat, bottleneck(z, "dequantize")[0])
    assert (z_hat - z).abs().max() <= 0.5 + 1e-3 * z.abs().max() * 2**-20


def test_symbols_beyond_int64_headroom_refused(gaussian: GaussianConditional) -> None:
    y, scales, means = _gaussian_latent((1, 1, 2, 2))
    y[0, 0, 0, 0] = 1e20
    with pytest.raises(EntropyCoderError, match="not codable"):
        gaussian.compress(y, scales, means)


def test_medians_centre_the_symbols() -> None:
    torch.manual_seed(2)
    model = EntropyBottleneck(4)
    with torch.no_grad():  # shift each channel's density so medians are far from zero
        model.biases[-1].add_(torch.tensor([-30.0, -5.0, 0.0, 20.0]).view(4, 1, 1))
    before = model.medians().clone()
    model.update()
    assert torch.equal(before, model.medians())
    cdf_at_median = torch.sigmoid(model._logits(model.medians().double().view(4, 1, 1), torch.float64))
    assert torch.allclose(cdf_at_median.view(-1), torch.full((4,), 0.5, dtype=torch.float64), atol=1e-6)
    assert (model.medians()[:2] > 0).all() and (model.medians()[3] < 0)
    # Symbols are centred: symbol 0's bin holds the median, so the table masses below and above it
    # differ by at most symbol 0's own mass (plus a little integer rounding).
    cdf = model._cdf.numpy().astype(np.int64)
    for c in range(4):
        zero = -int(model._offset[c])  # table entry of symbol 0
        n = int(model._cdf_length[c])
        below, p0, above = cdf[c, zero], cdf[c, zero + 1] - cdf[c, zero], cdf[c, n - 1] - cdf[c, zero + 1]
        assert abs(below - above) <= p0 + (1 << PRECISION) // 200, (c, below, p0, above)


# ----------------------------------------------------------------------------- rate vs the ideal
def test_gaussian_payload_close_to_ideal(gaussian: GaussianConditional) -> None:
    y, scales, means = _gaussian_latent((1, 64, 32, 32), seed=7)
    _, likelihoods = gaussian(y, scales, means, "dequantize")
    ideal = float(-torch.log2(likelihoods.double()).sum())
    bits = 8 * len(gaussian.compress(y, scales, means))
    assert bits <= 1.01 * ideal + 64, (bits, ideal)
    assert bits >= 0.99 * ideal, (bits, ideal)


def test_bottleneck_payload_close_to_ideal() -> None:
    torch.manual_seed(3)
    model = EntropyBottleneck(64, init_scale=4.0)
    model.update()
    z = torch.randn(1, 64, 32, 32) * 3.0
    with torch.no_grad():
        _, likelihoods = model(z, "dequantize")
    ideal = float(-torch.log2(likelihoods.double()).sum())
    bits = 8 * len(model.compress(z))
    assert 0.99 * ideal <= bits <= 1.01 * ideal + 64, (bits, ideal)


def test_likelihoods_match_float64_reference(gaussian: GaussianConditional) -> None:
    y_hat = torch.tensor([0.0, 1.0, -3.0, 12.0, 40.0], dtype=torch.float64)
    scales = torch.tensor([0.5, 2.0, 1.0, 1.5, 4.0], dtype=torch.float64)
    likelihoods = gaussian.likelihood(y_hat, scales)

    def phi(v: float) -> float:
        return 0.5 * math.erfc(-v / math.sqrt(2))

    for v, s, p in zip(y_hat.tolist(), scales.tolist(), likelihoods.tolist(), strict=True):
        reference = max(phi((v + 0.5) / s) - phi((v - 0.5) / s), 1e-9)
        assert p == pytest.approx(reference, rel=1e-6)
    tail = gaussian.likelihood(torch.tensor([8.0]), torch.tensor([1.0]))  # ~2e-15 -> the bound
    assert float(tail) == pytest.approx(1e-9)
    assert float(gaussian.likelihood(torch.tensor([5.0]), torch.tensor([1.0]))) == pytest.approx(
        phi(-4.5) - phi(-5.5), rel=1e-4
    )


def test_bottleneck_density_sums_to_one(bottleneck: EntropyBottleneck) -> None:
    grid = torch.arange(-400, 401, dtype=torch.float32).view(1, 1, -1).expand(1, 8, -1)
    masses = bottleneck._bin_likelihood(bottleneck._to_channels(grid)).sum(-1)
    assert torch.allclose(masses.view(-1), torch.ones(8), atol=1e-4)


def test_tables_are_valid_integer_cdfs(gaussian: GaussianConditional, bottleneck: EntropyBottleneck) -> None:
    for model in (gaussian, bottleneck):
        cdf = model._cdf.numpy().astype(np.int64)
        for r, n in enumerate(model._cdf_length.tolist()):
            row = cdf[r, : n + 1]
            assert row[0] == 0 and row[-1] == 1 << PRECISION and (np.diff(row) >= 1).all()
    # The escape symbol (last) carries at least one count, even for a mass of zero.
    cdf, length = _cdf_tables(np.array([[0.5, 0.5, 0.0]]), np.array([3]), np.array([0.0]))
    assert length.tolist() == [4] and (np.diff(cdf[0, :5]) >= 1).all() and cdf[0, 4] == 1 << PRECISION


def test_scale_indexes_are_bucketize_on_stored_bounds(gaussian: GaussianConditional) -> None:
    bounds = gaussian.scale_bounds
    scales = torch.cat(
        [
            torch.exp(torch.empty(100_000).uniform_(-12.0, 8.0)),
            bounds,
            torch.nextafter(bounds, torch.tensor(0.0)),
            torch.nextafter(bounds, torch.tensor(1e9)),
            torch.tensor([0.0, -0.0, -1.0, 1e-45, 3e38]),
        ]
    )
    indexes = gaussian.scale_indexes(scales)
    assert indexes.dtype == torch.int64
    assert torch.equal(indexes, torch.bucketize(scales, bounds))
    assert int(indexes.min()) == 0 and int(indexes.max()) == len(gaussian.scale_table) - 1
    dense = GaussianConditional(scale_min=1.0, scale_max=1.2, num_scales=500)  # several per bucket
    scales = torch.empty(100_000).uniform_(0.9, 1.3)
    assert torch.equal(dense.scale_indexes(scales), torch.bucketize(scales, dense.scale_bounds))


# ---------------------------------------------------------------------------------------- errors
def test_coding_before_update_raises() -> None:
    y, scales, means = _gaussian_latent((1, 2, 3, 3))
    with pytest.raises(EntropyCoderError, match=r"update\(\)"):
        GaussianConditional().compress(y, scales, means)
    with pytest.raises(EntropyCoderError, match=r"update\(\)"):
        GaussianConditional().decompress(b"\x01\x00\x00\x00", scales, means)
    with pytest.raises(EntropyCoderError, match=r"update\(\)"):
        EntropyBottleneck(2).compress(torch.zeros(1, 2, 3, 3))
    with pytest.raises(EntropyCoderError, match=r"update\(\)"):
        EntropyBottleneck(2).decompress(b"\x01\x00\x00\x00", (3, 3))


def test_wrong_shapes_and_values_raise(gaussian: GaussianConditional, bottleneck: EntropyBottleneck) -> None:
    y, scales, means = _gaussian_latent((1, 4, 5, 5))
    with pytest.raises(EntropyCoderError, match="scales has shape"):
        gaussian.compress(y, scales[:, :3], means)
    with pytest.raises(EntropyCoderError, match="means has shape"):
        gaussian.compress(y, scales, means[..., :4])
    with pytest.raises(EntropyCoderError, match="means has shape"):
        gaussian.decompress(gaussian.compress(y, scales, means), scales, means[0])
    y_bad = y.clone()
    y_bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(EntropyCoderError, match="NaN"):
        gaussian.compress(y_bad, scales, means)
    with pytest.raises(EntropyCoderError, match="NaN"):
        gaussian.compress(y, scales, torch.full_like(means, float("-inf")))
    with pytest.raises(EntropyCoderError, match="finite"):
        gaussian.compress(y, scales.clone().fill_(float("inf")), means)
    for z in (torch.zeros(1, 7, 4, 4), torch.zeros(2, 8, 4, 4), torch.zeros(8, 4, 4), torch.zeros(1, 8, 4)):
        with pytest.raises(EntropyCoderError, match="z must be"):
            bottleneck.compress(z)
    with pytest.raises(EntropyCoderError, match="NaN"):
        bottleneck.compress(torch.full((1, 8, 2, 2), float("inf")))
    data = bottleneck.compress(torch.zeros(1, 8, 4, 4))
    for shape in ((4,), (0, 4), (4, 4, 1)):
        with pytest.raises(EntropyCoderError, match="shape must be"):
            bottleneck.decompress(data, shape)
    with pytest.raises(ValueError, match="z must be"):
        bottleneck(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="quantizer"):
        gaussian(y, scales, means, "symbols")


def test_corrupt_payloads_raise_or_decode(
    gaussian: GaussianConditional, bottleneck: EntropyBottleneck
) -> None:
    rng = np.random.default_rng(0)
    y, scales, means = _gaussian_latent((1, 8, 12, 12), seed=5)
    y.view(-1)[:4] += torch.tensor([500.0, -800.0, 1e6, -1e9])  # escapes in the stream too
    payload = gaussian.compress(y, scales, means)
    z = 5.0 * torch.randn(1, 8, 9, 9)
    z[0, 0, 0, 0] = 1e5
    z_payload = bottleneck.compress(z)

    def mutations(data: bytes, count: int):
        raw = np.frombuffer(data, dtype=np.uint8)
        yield b""
        yield data[:-4]
        yield data[4:]
        yield data + b"\x00\x00\x00\x00"
        yield data[:-1]
        for _ in range(count):
            kind = rng.integers(4)
            if kind == 0:  # truncate to whole words
                yield data[: 4 * int(rng.integers(0, len(data) // 4))]
            elif kind == 1:  # random bytes
                yield rng.integers(
                    0, 256, 4 * int(rng.integers(1, 2 * len(data) // 4)), dtype=np.uint8
                ).tobytes()
            else:  # flip a few bits
                flipped = raw.copy()
                for _ in range(int(rng.integers(1, 4))):
                    flipped[rng.integers(len(flipped))] ^= np.uint8(1 << int(rng.integers(8)))
                yield flipped.tobytes()

    outcomes = {"raised": 0, "decoded": 0}
    start = time.monotonic()
    for data in mutations(payload, 200):
        try:
            out = gaussian.decompress(data, scales, means)
            assert out.shape == y.shape
            outcomes["decoded"] += 1
        except EntropyCoderError:
            outcomes["raised"] += 1
    for data in mutations(z_payload, 100):
        try:
            assert bottleneck.decompress(data, (9, 9)).shape == z.shape
            outcomes["decoded"] += 1
        except EntropyCoderError:
            outcomes["raised"] += 1
    assert sum(outcomes.values()) == 310
    assert outcomes["raised"] > 0
    assert time.monotonic() - start < 60  # bounded work per payload: no hang


# ----------------------------------------------------------------------------------- determinism
def test_update_is_deterministic() -> None:
    a, b = GaussianConditional(), GaussianConditional()
    a.update()
    first = {k: v.clone() for k, v in a.state_dict().items()}
    a.update()
    b.update()
    for key, value in first.items():
        assert torch.equal(value, a.state_dict()[key]) and torch.equal(value, b.state_dict()[key]), key
    torch.manual_seed(4)
    eb = EntropyBottleneck(16)
    assert eb.update() is True
    first = {k: v.clone() for k, v in eb.state_dict().items()}
    assert eb.update() is False  # already built
    assert eb.update(force=True) is True
    for key, value in first.items():
        assert torch.equal(value, eb.state_dict()[key]), key


def test_state_dict_round_trip_without_update(tmp_path: Path) -> None:
    torch.manual_seed(5)
    eb = EntropyBottleneck(8, init_scale=3.0)
    eb.update()
    gc = GaussianConditional(num_scales=32)
    gc.update()
    torch.save({"eb": eb.state_dict(), "gc": gc.state_dict()}, tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)

    fresh_eb = EntropyBottleneck(8)  # other random init, empty tables
    fresh_eb.load_state_dict(state["eb"])
    fresh_gc = GaussianConditional()  # 64 levels; the checkpoint's 32 win
    fresh_gc.load_state_dict(state["gc"])
    assert fresh_eb.tables_built and fresh_gc.tables_built
    assert len(fresh_gc.scale_table) == 32

    z = 3.0 * torch.randn(1, 8, 6, 6)
    assert torch.equal(fresh_eb.decompress(eb.compress(z), (6, 6)), eb(z, "dequantize")[0])
    y, scales, means = _gaussian_latent((2, 4, 6, 6))
    assert torch.equal(
        fresh_gc.decompress(gc.compress(y, scales, means), scales, means),
        gc.decompress(gc.compress(y, scales, means), scales, means),
    )

    # Tables grow and shrink with training: a checkpoint with other table shapes loads too.
    wide = EntropyBottleneck(8, init_scale=50.0)
    wide.update()
    assert wide._cdf.shape != fresh_eb._cdf.shape
    fresh_eb.load_state_dict(wide.state_dict())
    assert fresh_eb._cdf.shape == wide._cdf.shape
    fresh_eb.load_state_dict(EntropyBottleneck(8).state_dict())  # never updated: empty tables
    assert not fresh_eb.tables_built
    with pytest.raises(EntropyCoderError, match=r"update\(\)"):
        fresh_eb.compress(z)


_DECODER_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from nvc_train.entropy import EntropyBottleneck, GaussianConditional
    folder = sys.argv[1]
    saved = torch.load(folder + "/encoder.pt", weights_only=True)
    torch.manual_seed(12345)  # different random init: everything must come from the state_dict
    eb = EntropyBottleneck(16)
    eb.load_state_dict(saved["eb"])
    gc = GaussianConditional()
    gc.load_state_dict(saved["gc"])
    z_hat = eb.decompress(saved["z_payload"], tuple(saved["z_shape"]))
    y_hat = gc.decompress(saved["y_payload"], saved["scales"], saved["means"])
    torch.save({"z_hat": z_hat, "y_hat": y_hat}, folder + "/decoded.pt")
    """
)


@pytest.mark.slow
def test_cross_process_decoding_is_identical(tmp_path: Path) -> None:
    torch.manual_seed(6)
    eb = EntropyBottleneck(16)
    eb.update()
    gc = GaussianConditional()
    gc.update()
    z = 4.0 * torch.randn(1, 16, 8, 12)
    z[0, 3, 2, 2] = 7e3  # an escape
    y, scales, means = _gaussian_latent((1, 32, 16, 16), seed=11)
    torch.save(
        {
            "eb": eb.state_dict(),
            "gc": gc.state_dict(),
            "z_payload": eb.compress(z),
            "z_shape": [8, 12],
            "y_payload": gc.compress(y, scales, means),
            "scales": scales,
            "means": means,
        },
        tmp_path / "encoder.pt",
    )
    subprocess.run(
        [sys.executable, "-c", _DECODER_SCRIPT, str(tmp_path)], check=True, cwd=REPO_ROOT, timeout=120
    )
    decoded = torch.load(tmp_path / "decoded.pt", weights_only=True)
    assert torch.equal(decoded["z_hat"], eb(z, "dequantize")[0])
    assert torch.equal(decoded["y_hat"], gc(y, scales, means, "dequantize")[0])


# ------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("quantizer", ["noise", "ste"])
def test_gradients_flow(quantizer: str) -> None:
    torch.manual_seed(7)
    gc = GaussianConditional()
    y = torch.randn(2, 4, 5, 5, requires_grad=True)
    scales = (torch.rand(2, 4, 5, 5) * 3).requires_grad_()
    means = torch.randn(2, 4, 5, 5, requires_grad=True)
    y_hat, likelihoods = gc(y, scales, means, quantizer)
    (-torch.log2(likelihoods).sum() + y_hat.square().sum()).backward()
    for tensor in (y, scales, means):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0

    eb = EntropyBottleneck(4)
    z = (3 * torch.randn(2, 4, 6, 6)).requires_grad_()
    z_hat, likelihoods = eb(z, quantizer)
    (-torch.log2(likelihoods).sum() + z_hat.square().sum()).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    for parameter in eb.parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all()
    assert eb.loss().item() == 0.0


def test_scale_bound_keeps_gradient_that_raises_the_scale() -> None:
    gc = GaussianConditional()
    scales = torch.tensor([0.01, 1.0], requires_grad=True)
    gc.likelihood(torch.tensor([0.6, 3.0]), scales).log().sum().neg().backward()
    assert scales.grad[0] < 0  # the loss wants a larger scale: the gradient reaches it below the bound


def test_low_level_coder_with_rows_in_any_order() -> None:
    """Rows interleaved in raster order: the decoder rebuilds the grouping from the rows alone."""
    pmf = np.array([[0.1, 0.8, 0.1, 0.0], [0.25, 0.25, 0.25, 0.25]])
    cdf, length = _cdf_tables(pmf, np.array([3, 4]), np.array([1e-6, 1e-6]))
    offset = np.array([-1, 0], dtype=np.int32)
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 2, 1000)
    symbols = np.where(rows == 0, rng.integers(-1, 2, 1000), rng.integers(0, 4, 1000))
    symbols[:3] = [-70, 2**40, -(2**61)]
    data = encode_symbols(symbols, rows, cdf, length, offset)
    assert np.array_equal(decode_symbols(data, rows, cdf, length, offset), symbols)


def test_golden_payload_pins_the_integer_models() -> None:
    """Hand-made integer tables give these exact bytes: a constriction upgrade that quantized our
    tables differently (and so could not decode existing bitstreams) fails here, not in the field."""
    cdf = np.array([[0, 1000, 60000, 65535, 65536, 65536], [0, 16384, 32768, 49152, 65535, 65536]])
    length, offset = np.array([4, 5]), np.array([-1, 0])
    rows = np.array([0, 1, 0, 0, 1, 1, 0, 1, 0, 1, 1, 0])
    symbols = np.array([0, 3, 0, -1, 1, 2, 1, 0, -9, 77777, 0, 0])  # -9 and 77777 escape
    golden = bytes.fromhex("7efa2e0ff41ffa9d4e6a925c04000000")
    assert encode_symbols(symbols, rows, cdf, length, offset) == golden
    assert np.array_equal(decode_symbols(golden, rows, cdf, length, offset), symbols)


# --------------------------------------------------------------------------------- shared stream
def _shared_stream_inputs(seed: int = 8) -> tuple[torch.Tensor, ...]:
    """A z and a y, both with escapes, as one frame of a hyperprior codec would code them."""
    g = torch.Generator().manual_seed(seed)
    z = 4.0 * torch.randn(1, 8, 5, 7, generator=g)
    z[0, 2, 1, 3] = -4e4  # escapes of both models share the one stream too
    y, scales, means = _gaussian_latent((1, 16, 10, 14), seed=seed)
    y.view(-1)[:3] += torch.tensor([900.0, -2e5, 3e9])
    return z, y, scales, means


def test_shared_stream_round_trip_is_bit_exact_and_smaller(
    gaussian: GaussianConditional, bottleneck: EntropyBottleneck
) -> None:
    """z then y in ONE stream: decoded in that order, exact, and smaller than two separate payloads."""
    z, y, scales, means = _shared_stream_inputs()
    encoder = AnsEncoder()
    z_enc = bottleneck.encode_into(encoder, z)
    y_enc = gaussian.encode_into(encoder, y, scales, means)
    stream = encoder.to_bytes()
    assert torch.equal(z_enc, bottleneck(z, "dequantize")[0])  # what the decoder will rebuild
    assert torch.equal(y_enc, gaussian(y, scales, means, "dequantize")[0])

    decoder = AnsDecoder(stream)
    z_hat = bottleneck.decode_from(decoder, (5, 7))
    y_hat = gaussian.decode_from(decoder, scales, means)
    decoder.finish()
    assert torch.equal(z_hat, z_enc) and torch.equal(y_hat, y_enc)

    # One flush and one word alignment fewer: 3-8 bytes for inputs like these (4 for this one).
    separate = len(bottleneck.compress(z)) + len(gaussian.compress(y, scales, means))
    assert len(stream) < separate, (len(stream), separate)
    assert stream[-1] != 0  # the zero high bytes of the last word are not sent


def test_shared_stream_refuses_damage_and_misuse(
    gaussian: GaussianConditional, bottleneck: EntropyBottleneck
) -> None:
    z, y, scales, means = _shared_stream_inputs(seed=9)
    encoder = AnsEncoder()
    bottleneck.encode_into(encoder, z)
    gaussian.encode_into(encoder, y, scales, means)
    stream = encoder.to_bytes()

    def decode(data: bytes, blocks: int = 2) -> None:
        decoder = AnsDecoder(data)
        bottleneck.decode_from(decoder, (5, 7))
        if blocks == 2:
            gaussian.decode_from(decoder, scales, means)
        decoder.finish()

    decode(stream)
    with pytest.raises(EntropyCoderError, match="zero byte"):
        AnsDecoder(stream + b"\0")  # padding (or a cut that ends in a zero byte)
    for damaged in (stream[:-1], stream[:-4], stream + b"\x01", stream[1:]):
        with pytest.raises(EntropyCoderError):
            decode(damaged)
    with pytest.raises(EntropyCoderError, match="left after decoding"):
        decode(stream, blocks=1)  # the y block left unread
    with pytest.raises(EntropyCoderError, match="must be bytes"):
        AnsDecoder("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="AnsEncoder"):
        bottleneck.encode_into(b"", z)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="AnsDecoder"):
        gaussian.decode_from(stream, scales, means)  # type: ignore[arg-type]


def test_shared_stream_format_is_the_word_format_without_padding() -> None:
    """One block in an AnsEncoder is encode_symbols' payload minus the zero high bytes of its top
    word: the golden bytes pin the single-stream format as well."""
    cdf = np.array([[0, 1000, 60000, 65535, 65536, 65536], [0, 16384, 32768, 49152, 65535, 65536]])
    length, offset = np.array([4, 5]), np.array([-1, 0])
    rows = np.array([0, 1, 0, 0, 1, 1, 0, 1, 0, 1, 1, 0])
    symbols = np.array([0, 3, 0, -1, 1, 2, 1, 0, -9, 77777, 0, 0])
    encoder = AnsEncoder()
    encoder.encode(symbols, rows, cdf, length, offset)
    assert encoder.to_bytes() == bytes.fromhex("7efa2e0ff41ffa9d4e6a925c04")
    decoder = AnsDecoder(encoder.to_bytes())
    assert np.array_equal(decoder.decode(rows, cdf, length, offset), symbols)
    decoder.finish()
    empty = AnsEncoder().to_bytes()  # nothing coded: an empty stream, which decodes as empty
    assert empty == b""
    AnsDecoder(empty).finish()


def test_check_tables_names_the_first_invalid_row_and_ignores_padding() -> None:
    """Each rule of a valid CDF row is checked on every row (the check is vectorised over rows)."""
    total = 1 << PRECISION
    valid = np.array([[0, 7, total, 0, 0], [0, 1, 2, total, 99], [0, 5, total, 3, 0]], dtype=np.int32)
    lengths = np.array([2, 3, 2])
    check_tables(valid, lengths, np.zeros(3), 3)  # entries past a row's length are padding
    broken = [  # (row, column, value): starts above 0, ends below the total, a flat step, a falling step
        (1, 0, 1),
        (1, 3, total - 1),
        (1, 2, 1),
        (1, 1, 3),
        (0, 2, total - 1),
    ]
    for row, column, value in broken:
        table = valid.copy()
        table[row, column] = value
        with pytest.raises(EntropyCoderError, match=f"row {row} is not a valid"):
            check_tables(table, lengths, np.zeros(3), 3)


def test_tables_are_checked_again_after_an_in_place_change() -> None:
    """The per-state cache of the table check must not hide a table broken after the first use."""
    model = EntropyBottleneck(2)
    model.update(force=True)
    model.compress(torch.zeros(1, 2, 2, 2))  # checked and cached
    with torch.no_grad():
        model._cdf[0, 1] = 0  # a flat first step: no longer a valid CDF (bumps the version)
    with pytest.raises(EntropyCoderError, match="row 0 is not a valid"):
        model.compress(torch.zeros(1, 2, 2, 2))
