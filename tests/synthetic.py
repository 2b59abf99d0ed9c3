"""Synthetic test material: latent streams that behave like a video's (holds, drift, returns),
and random HIT/NEW messages with helpers to push them through the channel core."""

from __future__ import annotations

import math

import numpy as np

from channel.core import DIRECTIONS, Delivery
from shared.coding.quantizer import normalize, pack_codes, quantize
from shared.config import build_config
from shared.protocol.messages import Error, Hit, New, decode, encode

# The channel tests' link: d = 64, M = 200 (8-bit references), K = 32 cue bits.
CONFIG = build_config({"latent_dim": 64, "capacity": 200, "cue_bits": 32}, read_env=False)
TX, RX = DIRECTIONS


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


# --- random messages through the channel core ----------------------------------------------------


def news(n: int, config=CONFIG, seed: int = 0, first: int = 0) -> list[New]:
    rng = np.random.default_rng(seed)
    latents = normalize(rng.standard_normal((n, config.latent_dim)))
    return [
        New(
            seq=first + i,
            t=(first + i) / 30,
            slot=int(rng.integers(config.capacity)),
            latent=pack_codes(quantize(latents[i], config.bits_per_value), config.bits_per_value),
        )
        for i in range(n)
    ]


def hits(n: int, config=CONFIG, seed: int = 1, first: int = 0) -> list[Hit]:
    rng = np.random.default_rng(seed)
    k = config.top_k if config.transmission == "soft" else 1
    out = []
    for i in range(n):
        refs = tuple(int(r) for r in rng.choice(config.capacity, size=k, replace=False))
        weights = tuple(int(w) for w in rng.integers(1, 1 << config.weight_bits, size=k))
        out.append(
            Hit(
                seq=first + i,
                t=(first + i) / 30,
                refs=refs,
                cue=int(rng.integers(1 << config.cue_bits)) if config.cue_bits else 0,
                weights=weights if k > 1 else (),
            )
        )
    return out


def send(core, messages, direction=TX, start=0.0, dt=1e-3):
    """Feed messages (encoded) one per ``dt``; returns [(index, Delivery)] in emission order."""
    out = []
    for i, message in enumerate(messages):
        now = start + i * dt
        data = message if isinstance(message, bytes) else encode(message)
        for delivery in core.on_data(direction, data, now):
            assert isinstance(delivery, Delivery)
            assert delivery.at >= now  # never before it arrived
            out.append((i, delivery))
    return out


def differing_bits(a: bytes, b: bytes) -> int:
    assert len(a) == len(b)
    return int(np.unpackbits(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())


def within(measured: float, expected: float, n: int, sds: float = 4.5) -> bool:
    """A binomial proportion within ``sds`` standard errors of its expectation."""
    sd = math.sqrt(max(expected * (1 - expected), 1e-12) / n)
    return abs(measured - expected) <= sds * sd
