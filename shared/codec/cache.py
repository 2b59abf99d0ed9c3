"""Latents to frames for the Rx (and every experiment), reusing frames of latents seen before."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from shared.codec.models import Codec

DECODE_CACHE_BYTES = 64 * 2**20  # frames and their keys kept; a token frame at 240 p is ~0.4 MB


class DecodeCache:
    """Decodes latents to frames, reusing frames of latents seen before (hits repeat them).

    Bounded in bytes, not in frames, so its size does not depend on the frame size: at most
    ``max_bytes`` of keys and frames, the least recently used dropped first."""

    def __init__(self, codec: Codec, max_bytes: int = DECODE_CACHE_BYTES) -> None:
        self.codec = codec
        self.max_bytes = max_bytes
        self.bytes = 0
        self._frames: OrderedDict[bytes, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._frames)

    def __call__(self, latent: np.ndarray) -> np.ndarray:
        key = np.ascontiguousarray(latent, dtype=np.float32).tobytes()
        frame = self._frames.get(key)
        if frame is not None:
            self._frames.move_to_end(key)
            return frame
        frame = self.codec.decode(latent)
        # A single-latent codec decodes in batches (1, S, S, 3); a token codec a frame.
        frame = frame[0] if frame.ndim == 4 else frame
        self._frames[key] = frame
        self.bytes += len(key) + frame.nbytes
        while self.bytes > self.max_bytes and len(self._frames) > 1:
            old_key, old = self._frames.popitem(last=False)
            self.bytes -= len(old_key) + old.nbytes
        return frame
