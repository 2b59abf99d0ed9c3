"""Codec throughput: encode and decode frames/s at batch 1 and 32 for every shipped codec."""

from __future__ import annotations

import numpy as np

from benchmarks.timing import best_time
from shared.codec.models import CODECS, codecs_dir, load_codec


def shipped_codecs() -> list[str]:
    """Registered codecs whose weights are present (a registered one may still be training)."""
    return [name for name in CODECS if (codecs_dir() / f"{name}.pt").is_file()]


def run(batches=(1, 32), names: list[str] | None = None, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for name in names or shipped_codecs():
        codec = load_codec(name)
        s = codec.frame_size
        for batch in batches:
            frames = rng.integers(0, 256, (batch, s, s, 3), dtype=np.uint8)
            latents = codec.encode(frames)
            enc = best_time(lambda f=frames, c=codec: c.encode(f), repeats=3)
            dec = best_time(lambda z=latents, c=codec: c.decode(z), repeats=3)
            rows.append(
                {
                    "codec": name,
                    "size": s,
                    "batch": batch,
                    "encode_fps": batch / enc,
                    "decode_fps": batch / dec,
                    "encode_ms_per_frame": enc / batch * 1e3,
                    "decode_ms_per_frame": dec / batch * 1e3,
                }
            )
    return rows
