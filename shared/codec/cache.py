"""Latents to frames for the Rx (and every experiment), reusing frames of latents seen before."""

from __future__ import annotations

import numpy as np

from shared.codec.models import Codec


class DecodeCache:
    """Decodes latents to frames, reusing frames of latents seen before (hits repeat them)."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self._frames: dict[bytes, np.ndarray] = {}

    def __call__(self, latent: np.ndarray) -> np.ndarray:
        key = np.ascontiguousarray(latent, dtype=np.float32).tobytes()
        frame = self._frames.get(key)
        if frame is None:
            frame = self.codec.decode(latent)
            # A single-latent codec decodes in batches (1, S, S, 3); a token codec a frame.
            frame = self._frames[key] = frame[0] if frame.ndim == 4 else frame
        return frame
