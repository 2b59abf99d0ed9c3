"""Synthetic latent streams that behave like a video's (holds, drift, returns)."""

from __future__ import annotations

import numpy as np

from shared.protocol import Error, decode, encode
from shared.quantizer import normalize


def drifting_latents(
    n: int = 200, dim: int = 64, views: int = 5, noise: float = 0.03, hold: int = 20, seed: int = 0
) -> np.ndarray:
    """A clip's latents: the camera holds one of ``views`` for ``hold`` frames, then moves on."""
    rng = np.random.default_rng(seed)
    bases = normalize(rng.standard_normal((views, dim)))
    picks = bases[(np.arange(n) // hold) % views]
    return normalize(picks + noise * rng.standard_normal((n, dim))).astype(np.float32)


def deliver(tx, rx, message, now: float = 0.0) -> list:
    """Deliver a message Tx→Rx through the wire codec and answer refresh requests at once
    (an ideal channel); returns every frame the Rx emitted."""
    frames, pending = [], [message]
    while pending:
        step = rx.on_message(decode(encode(pending.pop(0))), now)
        frames += step.frames
        for reply in step.replies:
            assert not isinstance(reply, Error), reply
            pending += tx.on_message(decode(encode(reply)))
    return frames
