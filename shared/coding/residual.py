"""Predictive new latents (DELTA): the residual to a recalled prototype, coded in b′ < b bits.

**DELTA** (predictive new latent). On a miss, instead of the full b-bit latent the Tx may send the
residual r = z − ξ between the latent and the recalled prototype ξ, quantized with b′ < b bits per
dimension: a mid-tread uniform quantizer with L = 2^(b′−1) − 1 levels on each side of zero
(codes 0..2L), step s/L, where the scale s is the smallest of :data:`SCALE_LEVELS` exactly
representable float32 values (2 down to ~3e-5, eight per octave) that covers max |r|. Both ends
rebuild ẑ = normalize(ξ + r̂) and store Q_b(ẑ) — the b-bit quantization of the reconstruction —
with the same float32 operations in :func:`reconstruct_delta`, so the stored prototype is
bit-identical on both ends and is again a plain quantized latent (REFRESH, DIGEST and SimHash cues
work on it unchanged).
"""

from __future__ import annotations

import math

import numpy as np

from shared.coding.quantizer import Grid, QuantizerError, dequantize, normalize, quantize
from shared.config import LinkConfig

SCALE_LEVELS = 128  # residual scale codes: 2 down to ~3e-5, eight per octave
SCALE_BITS = SCALE_LEVELS.bit_length() - 1  # a fixed-length scale code


def scale_value(code: int) -> np.float32:
    """The residual scale of ``code``: (32 − 2·(code mod 8))·2^(−4 − code div 8), exact float32."""
    if not 0 <= code < SCALE_LEVELS:
        raise QuantizerError(f"scale code {code} outside 0..{SCALE_LEVELS - 1}")
    return np.float32(np.ldexp(np.float32(32 - 2 * (code % 8)), -4 - code // 8))


_SCALES = np.array([scale_value(c) for c in range(SCALE_LEVELS)], dtype=np.float32)  # decreasing


def scale_code_for(peak: float) -> int:
    """The finest scale code whose scale still covers ``peak`` (code 0 if none does)."""
    covering = np.flatnonzero(np.float32(peak) <= _SCALES)
    return int(covering[-1]) if len(covering) else 0


def residual_levels(bits: int) -> int:
    """L: a b′-bit residual code takes 2L + 1 values, L = 2^(b′−1) − 1."""
    return (1 << (bits - 1)) - 1


def quantize_residual(latent: np.ndarray, base: np.ndarray, bits: int) -> tuple[int, np.ndarray]:
    """(scale code, residual codes 0..2L) of z − ξ with b′ = ``bits`` (Tx only)."""
    residual = np.asarray(latent, dtype=np.float32) - np.asarray(base, dtype=np.float32)
    levels = residual_levels(bits)
    code = scale_code_for(float(np.abs(residual).max()))
    step = _SCALES[code] / np.float32(levels)
    q = np.clip(np.rint(residual / step), -levels, levels)
    return code, (q + levels).astype(np.uint16)


def reconstruct_delta(
    base: np.ndarray,
    scale: int,
    codes: np.ndarray,
    bits: int,
    bits_per_value: int,
    grid: Grid = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(stored codes, stored prototype) of a DELTA: Q_b(normalize(ξ + r̂)), on both ends.

    The one function both ends run; every operation is float32 on identical inputs.
    """
    levels = residual_levels(bits)
    codes = np.asarray(codes)
    if codes.size and int(codes.max()) > 2 * levels:
        raise QuantizerError(f"residual code {int(codes.max())} out of range for b′={bits}")
    step = scale_value(scale) / np.float32(levels)
    residual = (codes.astype(np.float32) - np.float32(levels)) * step
    latent = normalize(np.asarray(base, dtype=np.float32) + residual)
    stored = quantize(latent, bits_per_value, grid)
    return stored, dequantize(stored, bits_per_value, grid)


def delta_bits(config: LinkConfig, bits: int) -> int:
    """Fixed-length bits of a DELTA (eq. 3 extended): base reference + cue + b′ choice + scale +
    d·b′ residual; like a NEW, its slot is the shared policy's and is not counted."""
    choices = len(config.delta_bit_set) if config.delta else 1
    choice_bits = math.ceil(math.log2(choices)) if choices > 1 else 0
    return config.index_bits + config.cue_bits + choice_bits + SCALE_BITS + config.latent_dim * bits
