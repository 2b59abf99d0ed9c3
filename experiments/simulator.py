"""The in-process simulator: the Tx and Rx cores wired through an ideal channel.

Messages go through the same msgpack codec as on the network, so wire bytes are real; refresh
requests are answered at once. Optional one-shot corruption of the Rx memory reproduces the
paper's robustness experiment.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from receiver.core import ReceiverCore, RxCounters, RxStep
from shared.accounting import (
    FrameRecord,
    LinkSummary,
    Outcome,
    psnr,
    semantic_bits,
    ssim,
    summarize,
)
from shared.codec.cache import DecodeCache
from shared.config import LinkConfig
from shared.protocol.messages import Corrupt, Message, Refresh, RefreshRequest, decode, encode
from transmitter.core import TransmitterCore, TxCounters


@dataclass(frozen=True)
class Corruption:
    """One-shot corruption of the Rx memory just before frame ``at_frame`` (Fig. 3)."""

    at_frame: int
    rho: float = 0.0  # fraction of the ID map permuted
    sigma: float = 0.0  # Gaussian noise added to every Rx prototype
    seed: int = 0


@dataclass
class SimResult:
    config: LinkConfig
    records: list[FrameRecord]
    summary: LinkSummary
    tx: TxCounters
    rx: RxCounters
    digests_agree: bool
    silent_wrong: int  # references accepted while the Rx latent differed from the Tx's
    rx_latents: np.ndarray
    refresh_bits: int  # Tx→Rx REFRESH traffic (semantic bits), included in bits/frame
    feedback_bits: int  # Rx→Tx REFRESH_REQUEST traffic


def simulate(
    latents: np.ndarray,
    config: LinkConfig,
    *,
    frames: np.ndarray | None = None,
    decoder: DecodeCache | None = None,
    with_ssim: bool = True,
    fps: float = 30.0,
    digest_every: int = 30,
    corruption: Corruption | None = None,
) -> SimResult:
    """Run a clip's latents (N, d) through the link; quality needs ``frames`` and ``decoder``."""
    tx, rx = TransmitterCore(config), ReceiverCore(config)
    records: dict[int, FrameRecord] = {}
    rx_latents = np.zeros_like(latents, dtype=np.float32)
    traffic = {"refresh_bits": 0, "feedback_bits": 0, "refreshes": 0}
    silent_wrong = 0
    expected: dict[int, np.ndarray] = {}

    def deliver_to_rx(message: Message, now: float) -> None:
        step = rx.on_message(decode(encode(message)), now)
        settle(step)
        replies = deque(step.replies)
        while replies:  # the ideal channel answers every request at once
            reply = replies.popleft()
            if isinstance(reply, RefreshRequest):
                traffic["feedback_bits"] += semantic_bits(reply, config)
                for answer in tx.on_message(decode(encode(reply))):
                    if isinstance(answer, Refresh):
                        traffic["refresh_bits"] += semantic_bits(answer, config)
                        traffic["refreshes"] += 1
                    step = rx.on_message(decode(encode(answer)), now)
                    settle(step)
                    replies.extend(step.replies)

    def settle(step: RxStep) -> None:
        nonlocal silent_wrong
        for out in step.frames:
            if out.outcome is None or out.seq not in records:
                continue
            records[out.seq].outcome = out.outcome
            if out.latent is not None:
                rx_latents[out.seq] = out.latent
            if (
                out.outcome is Outcome.DECODED
                and records[out.seq].hit
                and not np.array_equal(out.latent, expected[out.seq])
            ):
                silent_wrong += 1

    for seq, latent in enumerate(np.asarray(latents, dtype=np.float32)):
        now = seq / fps
        if corruption is not None and seq == corruption.at_frame:
            event = Corrupt(rho=corruption.rho, sigma=corruption.sigma, seed=corruption.seed)
            rx.on_message(decode(encode(event)), now)
        decision = tx.on_frame(seq, now, latent)
        expected[seq] = decision.latent
        records[seq] = FrameRecord(
            seq=seq,
            hit=decision.hit,
            bits=semantic_bits(decision.message, config),
            wire_bytes=len(encode(decision.message)),
            outcome=Outcome.LOST,  # until the Rx says otherwise
            similarity=decision.similarity,
        )
        deliver_to_rx(decision.message, now)
        settle(rx.tick(now))
        if digest_every and (seq + 1) % digest_every == 0:
            deliver_to_rx(tx.digest(), now)
    settle(rx.finish(len(latents) - 1))

    ordered = [records[s] for s in range(len(latents))]
    if frames is not None and decoder is not None:
        for record in ordered:
            if record.outcome is Outcome.LOST:
                continue
            shown = decoder(rx_latents[record.seq])
            record.psnr = psnr(frames[record.seq], shown)
            if with_ssim:
                record.ssim = ssim(frames[record.seq], shown)
    summary = summarize(
        ordered,
        config,
        refresh_bits=traffic["refresh_bits"],
        feedback_bits=traffic["feedback_bits"],
        refreshes=traffic["refreshes"],
    )
    return SimResult(
        config=config,
        records=ordered,
        summary=summary,
        tx=tx.counters,
        rx=rx.counters,
        digests_agree=tx.memory.digest() == rx.digest,
        silent_wrong=silent_wrong,
        rx_latents=rx_latents,
        refresh_bits=traffic["refresh_bits"],
        feedback_bits=traffic["feedback_bits"],
    )
