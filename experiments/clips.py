"""A clip as a link configuration sees it: frames at the codec's size, their latents, a decoder.

One place decides how a source reaches the encoder: a single-latent codec gets square frames of
its ``frame_size`` (:func:`shared.scenarios.load_clip`), a token codec frames at their working
size, aspect ratio kept (:func:`shared.scenarios.load_working_clip`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.codec.cache import DecodeCache
from shared.codec.tokens import link_codec
from shared.config import LinkConfig
from shared.scenarios import DEFAULT_SHORT_SIDE, load_clip, load_working_clip


@dataclass
class EncodedClip:
    frames: np.ndarray  # uint8 (N, H, W, 3), what the link is judged against
    latents: np.ndarray  # (N, d), or (N, h, w, d) token grids
    decoder: DecodeCache
    codec: object  # shared.codec.models.Codec or shared.codec.tokens.TokenCodec


def encoded_clip(
    config: LinkConfig,
    source: str,
    n_frames: int | None = None,
    *,
    short_side: int = DEFAULT_SHORT_SIDE,
    codec=None,
) -> EncodedClip:
    """Load ``source`` for ``config``'s codec and encode it (one frame at a time for tokens)."""
    codec = link_codec(config, codec)
    if config.token_link:
        frames = load_working_clip(source, n_frames, codec.stride, short_side, config.seed)
        latents = np.stack([codec.encode(f) for f in frames])
    else:
        frames = load_clip(source, n_frames=n_frames, size=codec.frame_size, seed=config.seed)
        latents = codec.encode(frames)
    return EncodedClip(frames, latents, DecodeCache(codec), codec)
