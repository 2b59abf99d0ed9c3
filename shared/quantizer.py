"""b-bit uniform scalar quantization of unit-norm latents, with exact byte packing (eq. 2).

A latent value in [-R, R] maps to one of 2^b cells (mid-rise; values beyond R clip to the end
cells); dequantization takes the cell centre and renormalizes. R (``latent_range``) is 1 in the
paper; a unit-norm d-dimensional latent rarely leaves ±4/√d, so a range fitted to the codec
(:func:`shared.codeceval.fit_latent_range`) spends the same bits on finer cells.
Tx stores ``dequantize(codes)`` and Rx computes the same function of the
same codes, so both memories hold the same float32 bits.
"""

from __future__ import annotations

import numpy as np


class QuantizerError(ValueError):
    """Codes or bytes that cannot be a quantized latent of this shape."""


def quantize(latent: np.ndarray, bits: int, latent_range: float = 1.0) -> np.ndarray:
    """Codes (uint16) of a latent of shape (d,) or (N, d); non-finite values are rejected."""
    latent = np.asarray(latent, dtype=np.float32)
    if not np.all(np.isfinite(latent)):
        raise QuantizerError("latent contains NaN or inf")
    levels = 1 << bits
    if latent_range != 1.0:
        latent = latent * np.float32(1.0 / latent_range)
    cells = np.floor((latent + 1.0) * (levels / 2.0))
    return np.clip(cells, 0, levels - 1).astype(np.uint16)


def dequantize(codes: np.ndarray, bits: int) -> np.ndarray:
    """Cell centres of ``codes``, renormalized to unit norm (float32).

    The range R of :func:`quantize` scales every centre alike, so the direction, which is all a
    unit-norm latent is, does not depend on it: both ends dequantize without knowing R.
    """
    codes = np.asarray(codes)
    levels = 1 << bits
    if codes.size and int(codes.max()) >= levels:
        raise QuantizerError(f"code {int(codes.max())} out of range for {bits} bits")
    values = (codes.astype(np.float32) + np.float32(0.5)) * np.float32(2.0 / levels) - np.float32(1)
    return normalize(values)


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
