"""SimHash cues: K-bit fingerprints of prototypes from seeded random hyperplanes.

Bit k of the cue is 1 iff the k-th hyperplane sees the latent on its positive side. Two latents
at angle θ differ in each bit with probability θ/π, so a small Hamming distance means a small
angle: the Rx verifies a reference by comparing the cue it was sent with its own prototype's.
"""

from __future__ import annotations

import numpy as np

_DOMAIN = 0x5C0E  # keeps the cue hyperplanes independent of other seeded streams


class CueHasher:
    """Computes K-bit cues (as Python ints) for d-dimensional latents."""

    def __init__(self, dim: int, bits: int, seed: int) -> None:
        if not 0 <= bits <= 64:
            raise ValueError(f"cue bits must be in 0..64, got {bits}")
        self.dim = dim
        self.bits = bits
        rng = np.random.default_rng([seed, _DOMAIN])
        self.hyperplanes = rng.standard_normal((bits, dim)).astype(np.float32)
        self._weights = [1 << (bits - 1 - k) for k in range(bits)]

    def cue(self, latent: np.ndarray) -> int:
        """The cue of one latent of shape (d,)."""
        return int(self.cues(np.asarray(latent)[None, :])[0])

    def cues(self, latents: np.ndarray) -> np.ndarray:
        """Cues of a batch (N, d) as uint64."""
        if self.bits == 0:
            return np.zeros(len(latents), dtype=np.uint64)
        signs = (np.asarray(latents, dtype=np.float32) @ self.hyperplanes.T) > 0
        weights = np.array(self._weights, dtype=np.uint64)
        return (signs.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


def hamming(a: int, b: int) -> int:
    return (int(a) ^ int(b)).bit_count()


def hamming_many(cues: np.ndarray, cue: int) -> np.ndarray:
    """Hamming distance of every entry of ``cues`` (uint64) to ``cue``."""
    x = np.bitwise_xor(np.asarray(cues, dtype=np.uint64), np.uint64(cue))
    return np.bitwise_count(x).astype(np.int64)


def lookup(cues: np.ndarray, cue: int, tolerance: int) -> int | None:
    """Content-addressable lookup: the unique slot whose cue is nearest ``cue`` within tolerance.

    Returns None when no slot is within tolerance or when two slots tie for nearest (an ambiguous
    match is no better than a guess).
    """
    if len(cues) == 0:
        return None
    distances = hamming_many(cues, cue)
    best = int(distances.min())
    if best > tolerance:
        return None
    winners = np.flatnonzero(distances == best)
    return int(winners[0]) if len(winners) == 1 else None


def false_accept_probability(bits: int, tolerance: int) -> float:
    """Chance that an unrelated prototype's cue (independent fair bits) passes verification."""
    from math import comb

    return sum(comb(bits, i) for i in range(tolerance + 1)) / 2.0**bits


def accept_probability(bits: int, tolerance: int, angle: float, flipped: int = 0) -> float:
    """Chance that a prototype at ``angle`` (radians) from the true latent passes verification.

    Each of the K hyperplanes separates two latents at angle θ with probability θ/π (SimHash), so
    the cue distance is binomial; ``flipped`` cue bits already inverted on the way (bit errors)
    differ unless the hyperplane separates the two. At θ = π/2 with nothing flipped this is
    :func:`false_accept_probability`. Returns P(distance ≤ tolerance).
    """
    from math import comb, pi

    q = min(max(angle / pi, 0.0), 1.0)
    flipped = min(max(flipped, 0), bits)
    clean = bits - flipped

    def pmf(n: int, p: float, k: int) -> float:
        return comb(n, k) * p**k * (1.0 - p) ** (n - k)

    total = 0.0
    for y in range(min(tolerance, flipped) + 1):  # flipped bits that still differ
        below = sum(pmf(clean, q, x) for x in range(min(tolerance - y, clean) + 1))
        total += pmf(flipped, 1.0 - q, y) * below
    return min(total, 1.0)
