import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.quantizer import (
    QuantizerError,
    dequantize,
    normalize,
    pack_codes,
    packed_size,
    quantize,
    unpack_codes,
)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 6, 8, 10, 12, 16])
def test_pack_round_trip_is_exact_and_tight(bits):
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 1 << bits, size=64, dtype=np.uint16)
    data = pack_codes(codes, bits)
    assert len(data) == packed_size(64, bits) == (64 * bits + 7) // 8
    np.testing.assert_array_equal(unpack_codes(data, bits, 64), codes)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantization_error_is_within_half_a_cell_before_renormalization(bits):
    rng = np.random.default_rng(0)
    z = normalize(rng.standard_normal((500, 64)))
    codes = quantize(z, bits)
    step = 2.0 / (1 << bits)
    centres = (codes.astype(np.float64) + 0.5) * step - 1.0
    assert np.abs(centres - z).max() <= step / 2 + 1e-6
    recon = dequantize(codes, bits)
    np.testing.assert_allclose(np.linalg.norm(recon, axis=1), 1.0, rtol=1e-5)
    # The centre error has norm <= sqrt(d)·step/2 = e, so the angle to z is at most asin(e).
    cos = np.sum(recon * z, axis=1)
    e = np.sqrt(64) * step / 2
    assert cos.min() >= (np.sqrt(1 - e**2) if e < 1 else 0.0) - 1e-6


def test_tx_and_rx_store_the_same_bits():
    rng = np.random.default_rng(1)
    z = normalize(rng.standard_normal(64))
    codes = quantize(z, 8)
    tx_proto = dequantize(codes, 8)
    rx_proto = dequantize(unpack_codes(pack_codes(codes, 8), 8, 64), 8)
    assert tx_proto.tobytes() == rx_proto.tobytes()


def test_bad_inputs_are_rejected():
    with pytest.raises(QuantizerError, match="NaN"):
        quantize(np.array([np.nan, 0.0]), 8)
    with pytest.raises(QuantizerError, match="expected 64"):
        unpack_codes(b"\x00" * 10, 8, 64)
    with pytest.raises(QuantizerError, match="out of range"):
        dequantize(np.array([300]), 8)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 16), st.lists(st.integers(0, 65535), min_size=1, max_size=80))
def test_pack_round_trip_property(bits, values):
    codes = np.array([v % (1 << bits) for v in values], dtype=np.uint16)
    np.testing.assert_array_equal(unpack_codes(pack_codes(codes, bits), bits, len(codes)), codes)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_a_fitted_range_gives_finer_cells_and_clips_beyond_it(bits):
    rng = np.random.default_rng(2)
    z = normalize(rng.standard_normal((400, 64)))  # values mostly within ±0.4
    r = 0.5
    centres = (quantize(z, bits, r).astype(np.float64) + 0.5) * (2.0 * r / (1 << bits)) - r
    inside = np.abs(z) <= r
    assert np.abs(centres - z)[inside].max() <= r / (1 << bits) + 1e-6  # half a (finer) cell
    assert np.array_equal(np.sign(centres[~inside]), np.sign(z[~inside]))  # clipped to the ends
    assert np.abs(centres[~inside]).max() < r
    err_fitted = 1 - np.sum(dequantize(quantize(z, bits, r), bits) * z, axis=1)
    err_paper = 1 - np.sum(dequantize(quantize(z, bits), bits) * z, axis=1)
    assert err_fitted.mean() < err_paper.mean()


def test_range_one_is_the_paper_quantizer_bit_for_bit():
    z = normalize(np.random.default_rng(3).standard_normal((50, 64)))
    assert np.array_equal(quantize(z, 6, 1.0), quantize(z, 6))


def test_dequantization_needs_no_range():
    # The range scales every cell centre alike: the direction, all a unit latent is, is the same.
    z = normalize(np.random.default_rng(4).standard_normal((50, 64)))
    r = 0.375
    codes = quantize(z, 4, r)
    centres = ((codes.astype(np.float64) + 0.5) * (2.0 / 16) - 1.0) * r
    np.testing.assert_allclose(dequantize(codes, 4), normalize(centres), atol=1e-6)
