"""Synthetic latent streams that behave like a video's (holds, drift, returns)."""

from __future__ import annotations

import numpy as np

from shared.quantizer import normalize


def drifting_latents(
    n: int = 200, dim: int = 64, views: int = 5, noise: float = 0.03, hold: int = 20, seed: int = 0
) -> np.ndarray:
    """A clip's latents: the camera holds one of ``views`` for ``hold`` frames, then moves on."""
    rng = np.random.default_rng(seed)
    bases = normalize(rng.standard_normal((views, dim)))
    picks = bases[(np.arange(n) // hold) % views]
    return normalize(picks + noise * rng.standard_normal((n, dim))).astype(np.float32)
