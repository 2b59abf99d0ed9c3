import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.coding.quantizer import (
    LatentGrid,
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


def test_cell_centres_are_dequantize_before_renormalization():
    from shared.coding.quantizer import cell_centres

    z = normalize(np.random.default_rng(6).standard_normal((20, 64)))
    codes = quantize(z, 5, 0.5)
    centres = cell_centres(codes, 5, 0.5)
    assert np.abs(centres - z)[np.abs(z) <= 0.5].max() <= 0.5 / 32 + 1e-6
    np.testing.assert_allclose(normalize(centres), dequantize(codes, 5), atol=1e-6)


def test_dequantization_needs_no_range():
    # The range scales every cell centre alike: the direction, all a unit latent is, is the same.
    z = normalize(np.random.default_rng(4).standard_normal((50, 64)))
    r = 0.375
    codes = quantize(z, 4, r)
    centres = ((codes.astype(np.float64) + 0.5) * (2.0 / 16) - 1.0) * r
    np.testing.assert_allclose(dequantize(codes, 4), normalize(centres), atol=1e-6)


def _skewed_latents(n: int, seed: int) -> np.ndarray:
    """Unit latents whose dimensions differ in offset and spread, as a learned codec's do."""
    rng = np.random.default_rng(seed)
    scale = np.geomspace(0.2, 3.0, 64)
    return normalize(rng.standard_normal((n, 64)) * scale + 0.5 * scale)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_a_per_dimension_grid_keeps_each_value_within_half_of_its_own_cell(bits):
    from shared.coding.quantizer import fit_latent_grid

    z = _skewed_latents(500, 5)
    grid = fit_latent_grid(z)
    levels = 1 << bits
    codes = quantize(z, bits, grid)
    centres = grid.centre + grid.half_range * ((codes.astype(np.float64) + 0.5) * 2 / levels - 1)
    inside = np.abs(z - grid.centre) <= grid.half_range
    assert inside.mean() > 0.99  # the fit covers 99.9 % of the values
    cell = np.broadcast_to(grid.half_range / levels, z.shape)
    assert (np.abs(centres - z)[inside] <= cell[inside] + 1e-6).all()
    np.testing.assert_allclose(dequantize(codes, bits, grid), normalize(centres), atol=1e-6)
    # Narrow dimensions get narrow cells: better directions than one range for all.
    err_grid = 1 - np.sum(dequantize(codes, bits, grid) * z, axis=1)
    r = float(np.quantile(np.abs(z), 0.999))
    err_range = 1 - np.sum(dequantize(quantize(z, bits, r), bits) * z, axis=1)
    assert err_grid.mean() < err_range.mean()


def test_a_grid_must_fit_the_latent_and_be_well_formed():
    grid = LatentGrid(np.zeros(4), np.full(4, 0.5), spread=0.3)
    with pytest.raises(QuantizerError, match="grid has 4 dimensions"):
        quantize(np.ones(8, np.float32) / 8**0.5, 4, grid)
    with pytest.raises(QuantizerError, match="grid has 4 dimensions"):
        dequantize(np.zeros(8, np.uint16), 4, grid)
    with pytest.raises(QuantizerError, match="> 0"):
        LatentGrid(np.zeros(4), np.array([0.5, 0.5, 0.0, 0.5]), spread=0.3)
    with pytest.raises(QuantizerError, match="equal-length"):
        LatentGrid(np.zeros(4), np.full(3, 0.5), spread=0.3)
    with pytest.raises(QuantizerError, match="spread"):
        LatentGrid(np.zeros(4), np.full(4, 0.5), spread=0.0)


def test_a_grid_survives_its_card_form_and_its_digest_tells_grids_apart():
    grid = LatentGrid(np.linspace(-0.1, 0.1, 8), np.linspace(0.2, 0.4, 8), spread=0.3)
    again = LatentGrid.from_dict(grid.to_dict())
    assert again.digest() == grid.digest()
    assert np.array_equal(again.centre, grid.centre)
    moved = LatentGrid(grid.centre + np.float32(1e-3), grid.half_range, spread=0.3)
    assert moved.digest() != grid.digest()
    wider = LatentGrid(grid.centre, grid.half_range, spread=0.31)  # the entropy coder's prior
    assert wider.digest() != grid.digest()
