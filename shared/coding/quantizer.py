"""b-bit uniform scalar quantization of unit-norm latents, with exact byte packing (eq. 2).

A latent value in [-R, R] maps to one of 2^b cells (mid-rise; values beyond R clip to the end
cells); dequantization takes the cell centre and renormalizes. R (``latent_range``) is 1 in the
paper; a unit-norm d-dimensional latent rarely leaves ±4/√d, so a range fitted to the codec
(:func:`shared.coding.quantizer.fit_latent_range`) spends the same bits on finer cells.

A :class:`LatentGrid` goes one step further: each dimension i has its own interval
[c_i − h_i, c_i + h_i], fitted to where that dimension's values lie, still with 2^b uniform
cells. A learned latent's dimensions differ several-fold in spread, so one R sized for the widest
dimension wastes bits on all the others.

Tx stores ``dequantize(codes)`` and Rx computes the same function of the
same codes, so both memories hold the same float32 bits.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np


class QuantizerError(ValueError):
    """Codes or bytes that cannot be a quantized latent of this shape."""


@dataclass(frozen=True, eq=False)
class LatentGrid:
    """Per-dimension quantizer intervals: dimension i spans ``centre[i] ± half_range[i]``.

    ``spread`` is the typical |z_i − c_i| / h_i (about 1/3 for intervals fitted at the 99.9 %
    quantiles), which sets the entropy coder's starting model.
    """

    centre: np.ndarray
    half_range: np.ndarray
    spread: float

    def __post_init__(self) -> None:
        centre = np.asarray(self.centre, dtype=np.float32)
        half = np.asarray(self.half_range, dtype=np.float32)
        if centre.ndim != 1 or centre.shape != half.shape:
            raise QuantizerError(
                f"grid centre and half_range must be equal-length vectors, got shapes "
                f"{centre.shape} and {half.shape}"
            )
        if not (np.isfinite(centre).all() and np.isfinite(half).all() and (half > 0).all()):
            raise QuantizerError("grid centres must be finite and half-ranges finite and > 0")
        if not 0 < self.spread <= 1:
            raise QuantizerError(f"grid spread must lie in (0, 1], got {self.spread}")
        object.__setattr__(self, "centre", centre)
        object.__setattr__(self, "half_range", half)

    @property
    def dim(self) -> int:
        return int(self.centre.shape[0])

    def digest(self) -> str:
        """sha256 of the float32 intervals and the spread: equal digests code alike."""
        blob = self.centre.tobytes() + self.half_range.tobytes() + np.float64(self.spread).tobytes()
        return hashlib.sha256(blob).hexdigest()

    def to_dict(self) -> dict:
        return {
            "centre": [float(v) for v in self.centre],
            "half_range": [float(v) for v in self.half_range],
            "spread": self.spread,
        }

    @classmethod
    def from_dict(cls, d: dict) -> LatentGrid:
        return cls(np.asarray(d["centre"]), np.asarray(d["half_range"]), float(d["spread"]))


Grid = LatentGrid | float  # a per-dimension grid, or the range R shared by every dimension


def quantize(latent: np.ndarray, bits: int, grid: Grid = 1.0) -> np.ndarray:
    """Codes (uint16) of a latent of shape (d,) or (N, d); non-finite values are rejected.

    ``grid`` is the range R of every dimension (1 in the paper) or a :class:`LatentGrid`.
    """
    latent = np.asarray(latent, dtype=np.float32)
    if not np.all(np.isfinite(latent)):
        raise QuantizerError("latent contains NaN or inf")
    levels = 1 << bits
    if isinstance(grid, LatentGrid):
        _check_dim(grid, latent.shape[-1])
        latent = (latent - grid.centre) / grid.half_range
    elif grid != 1.0:
        latent = latent * np.float32(1.0 / grid)
    cells = np.floor((latent + 1.0) * (levels / 2.0))
    return np.clip(cells, 0, levels - 1).astype(np.uint16)


def dequantize(codes: np.ndarray, bits: int, grid: Grid = 1.0) -> np.ndarray:
    """Cell centres of ``codes``, renormalized to unit norm (float32).

    A range R scales every centre alike, so the direction, which is all a unit-norm latent is,
    does not depend on it: only a :class:`LatentGrid` changes what the codes mean.
    """
    if not isinstance(grid, LatentGrid):
        grid = 1.0
    return normalize(cell_centres(codes, bits, grid))


def cell_centres(codes: np.ndarray, bits: int, grid: Grid = 1.0) -> np.ndarray:
    """The values at the centres of ``codes``' cells (float32), not renormalized."""
    codes = np.asarray(codes)
    levels = 1 << bits
    if codes.size and int(codes.max()) >= levels:
        raise QuantizerError(f"code {int(codes.max())} out of range for {bits} bits")
    values = (codes.astype(np.float32) + np.float32(0.5)) * np.float32(2.0 / levels) - np.float32(1)
    if isinstance(grid, LatentGrid):
        _check_dim(grid, values.shape[-1])
        return grid.centre + grid.half_range * values
    return values if grid == 1.0 else values * np.float32(grid)


def _check_dim(grid: LatentGrid, dim: int) -> None:
    if dim != grid.dim:
        raise QuantizerError(f"latent has {dim} values but the grid has {grid.dim} dimensions")


def normalize(x: np.ndarray) -> np.ndarray:
    """Unit-norm rows (float32); an all-zero row stays zero rather than becoming NaN."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, np.float32(1e-12))).astype(np.float32)


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Pack a (d,) code vector into ⌈d·b/8⌉ bytes, most significant bit first."""
    codes = np.asarray(codes, dtype=np.uint16).ravel()
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint16)
    bit_matrix = ((codes[:, None] >> shifts) & 1).astype(np.uint8)
    return np.packbits(bit_matrix.ravel()).tobytes()


def unpack_codes(data: bytes, bits: int, dim: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`; the byte length must be exactly ⌈dim·bits/8⌉."""
    expected = packed_size(dim, bits)
    if len(data) != expected:
        raise QuantizerError(f"packed latent has {len(data)} bytes, expected {expected}")
    bit_array = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: dim * bits]
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint16)
    return (bit_array.reshape(dim, bits).astype(np.uint16) * weights).sum(axis=1).astype(np.uint16)


def packed_size(dim: int, bits: int) -> int:
    return (dim * bits + 7) // 8


def quantize_weights(weights: np.ndarray, bits: int) -> np.ndarray:
    """Soft-mode weights in [0, 1] to integer codes 0..2^b-1 (at least one code is non-zero)."""
    top = (1 << bits) - 1
    codes = np.rint(np.clip(weights, 0.0, 1.0) * top).astype(np.uint16)
    if not codes.any():
        codes[int(np.argmax(weights))] = 1
    return codes


def dequantize_weights(codes: np.ndarray) -> np.ndarray:
    """Weight codes to float32 weights summing to one."""
    codes = np.asarray(codes, dtype=np.float32)
    total = codes.sum()
    if total <= 0:
        raise QuantizerError("soft weights are all zero")
    return (codes / total).astype(np.float32)


# --- fitting a grid to a codec's latents (training writes it on the card) ----------------------

RANGE_COVERAGE = 0.999  # fraction of latent values the fitted quantizer range keeps unclipped


def fit_latent_range(latents: np.ndarray, coverage: float = RANGE_COVERAGE) -> float:
    """The quantizer range R: the ``coverage`` quantile of |z| over sample latents (N, d).

    Unit-norm latents use far less than [−1, 1] (about ±4/√d), so cells spent outside R are
    wasted; values beyond R clip, which costs little at this coverage. Rounded up to 1/64 so the
    number reads well in configs.
    """
    values = np.abs(np.asarray(latents, dtype=np.float64)).ravel()
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError("need finite sample latents to fit a quantizer range")
    r = float(np.quantile(values, coverage))
    return min(1.0, math.ceil(r * 64) / 64)


def fit_latent_grid(latents: np.ndarray, coverage: float = RANGE_COVERAGE) -> LatentGrid:
    """Per-dimension quantizer intervals: dimension i spans the central ``coverage`` of its
    sample values (N, d), from the (1 − coverage)/2 to the (1 + coverage)/2 quantile."""
    z = np.asarray(latents, dtype=np.float64)
    if z.ndim != 2 or len(z) < 2 or not np.isfinite(z).all():
        raise ValueError("need finite sample latents (N >= 2, d) to fit a quantizer grid")
    tail = (1 - coverage) / 2
    lo, hi = np.quantile(z, [tail, 1 - tail], axis=0)
    half = np.maximum((hi - lo) / 2, 1e-6)
    centre = (hi + lo) / 2
    spread = float(np.mean(np.abs(z - centre) / half))
    return LatentGrid(centre, half, min(1.0, spread))
