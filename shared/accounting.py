"""Bit accounting (eq. 3), the link's ledger, semantic efficiency and reasoning capacity (eq. 5),
frame quality.

Three rate figures, all per frame (DESIGN.md, "Counting bits"):

* **link bits** (primary): every message of the stream in both directions at its coded payload
  width — frame messages, REFRESH and REFRESH_REQUEST as eq. (3) counts them, DIGEST, HELLO, BYE
  and ERROR at the width of their fields (:func:`link_bits`), plus, on a link with a shared
  secret, each later message's seal (counter and tag, :data:`~shared.protocol.seal.SEAL_BITS`);
* **semantic bits**: the paper's eq. (3) view, frame messages and refreshes only
  (:func:`semantic_bits`; ``LinkSummary.bits_per_frame``);
* **wire bits**: what msgpack and websocket framing put on the socket, the emulator's overhead.

Every report, stats endpoint and plot reads its numbers from here: :class:`LinkLedger` turns what
the cores report (frame messages sent or admitted, refresh traffic, settled outcomes) into
per-frame records and totals, for the in-process link and the Rx's session alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Literal

import numpy as np
from skimage.metrics import structural_similarity

from shared.coding.residual import delta_bits
from shared.config import LinkConfig
from shared.protocol.messages import (
    Bye,
    Coded,
    Corrupt,
    Delta,
    Digest,
    Error,
    Hello,
    Hit,
    Message,
    New,
    Refresh,
    RefreshRequest,
    ws_frame_bytes,
)
from shared.protocol.seal import SEAL_BITS, SEALED_OVERHEAD

PSNR_CAP_DB = 99.0  # identical frames: report a finite ceiling so means stay meaningful


class Outcome(StrEnum):
    """What became of one frame at the Rx; every sequence number ends in exactly one."""

    DECODED = "decoded"  # reference verified by its cue, or a NEW
    RECOVERED_LOOKUP = "recovered_lookup"  # cue failed, content-addressable lookup found it
    RECOVERED_REFRESH = "recovered_refresh"  # cue and lookup failed, a refresh repaired it
    CONCEALED = "concealed"  # no repair in time: the last good frame was shown
    LOST = "lost"  # never arrived


def semantic_bits(message: Message, config: LinkConfig) -> int:
    """Bits of a message per eq. (3): index (+ weight) bits + K for a hit, d·b for a latent."""
    latent_bits = config.latent_dim * config.bits_per_value
    if isinstance(message, Hit):
        per_ref = config.index_bits + (config.weight_bits if message.weights else 0)
        return len(message.refs) * per_ref + config.cue_bits
    if isinstance(message, New):
        return latent_bits
    if isinstance(message, Refresh):
        return config.index_bits + latent_bits
    if isinstance(message, RefreshRequest):
        return config.index_bits
    if isinstance(message, Delta):
        return delta_bits(config, message.bits)
    if isinstance(message, Coded):
        return 8 * len(message.payload)  # entropy-coded: the bits actually sent
    return 0  # control messages (HELLO, DIGEST, BYE) are link overhead: see link_bits


SEQ_BITS = 32  # a frame sequence number
HASH_BITS = 256  # a sha256 digest (memory digest, config and model digests)
# role, protocol version, config and model digests, the Tx's next frame
HELLO_FIXED_BITS = 2 + 8 + 2 * HASH_BITS + SEQ_BITS


def link_bits(message: Message, config: LinkConfig) -> int:
    """Bits of any message at its coded payload width: what a link would have to carry.

    Frame messages, REFRESH and REFRESH_REQUEST count as eq. (3) does (:func:`semantic_bits`);
    a DIGEST its reference count, its sha256 and its per-reference hashes; a HELLO its role,
    version, two digests, next frame and whatever authentication, nonce and stream id it
    carries; BYE and ERROR their fields. A CORRUPT is the emulator's fault event, not link
    traffic (0). A sealed message's counter and tag are added by :class:`LinkLedger`.
    """
    match message:
        case Digest():
            count_bits = max(1, math.ceil(math.log2(config.capacity + 1)))
            return count_bits + HASH_BITS + 8 * len(message.slot_hashes)
        case Hello():
            extra = len(message.auth) + len(message.nonce) + len(message.stream.encode())
            return HELLO_FIXED_BITS + 8 * extra
        case Bye():
            return SEQ_BITS + 8 * len(message.reason.encode())
        case Error():
            return 8 * len(message.code.encode()) + 8 * len(message.reason.encode())
        case Corrupt():
            return 0
    return semantic_bits(message, config)


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """PSNR in dB between two uint8 images (capped at PSNR_CAP_DB for identical images)."""
    return float(psnr_batch(reference[None], test[None])[0])


def psnr_batch(reference: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Per-frame PSNR (N,) of uint8 frames (N, ...) against (N, ...), capped at PSNR_CAP_DB."""
    a = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    b = np.asarray(test, dtype=np.float64).reshape(len(test), -1)
    mse = ((a - b) ** 2).mean(axis=1)
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(255.0**2 / mse)
    return np.minimum(db, PSNR_CAP_DB)


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """SSIM of uint8 RGB images (scikit-image, Gaussian-free 7×7 windows, per channel mean)."""
    return float(structural_similarity(reference, test, channel_axis=-1, data_range=255))


@dataclass
class FrameRecord:
    """One frame's fate: what the Tx sent, what the Rx made of it, and its quality."""

    seq: int
    hit: bool
    bits: int  # semantic bits of the frame's own message
    wire_bytes: int  # encoded message bytes (before websocket framing)
    outcome: Outcome
    similarity: float = float("nan")  # Tx decision statistic (eq. 1)
    psnr: float = float("nan")
    ssim: float = float("nan")


@dataclass
class LinkSummary:
    frames: int
    hits: int
    news: int
    hit_rate: float
    bits_per_frame: float  # semantic bits (eq. 3) of frame messages + refreshes, per frame
    wire_bytes_per_frame: float  # msgpack bytes of the frame messages, per frame
    feedback_bits_per_frame: float  # Rx→Tx refresh requests
    compression_ratio: float  # B_raw / B_sem with B_raw = d·b (every frame sent as a latent)
    efficiency: float  # η = hit rate × compression ratio (eq. 5)
    capacity: float  # C = κ·log2(1 + η)
    psnr: float
    ssim: float
    outcomes: dict[str, int] = field(default_factory=dict)
    refreshes: int = 0
    link_bits_per_frame: float = float("nan")  # every message, both directions (link_bits)
    wire_bits_per_frame: float = float("nan")  # every message: msgpack + websocket framing

    @property
    def semantic_bits_per_frame(self) -> float:
        """The paper's eq. (3) figure (frame messages and refreshes), by its name."""
        return self.bits_per_frame

    def as_dict(self) -> dict:
        return asdict(self)


class LinkLedger:
    """The one place that builds per-frame records and counts refresh traffic for a stream.

    Frames enter when their message is sent (the in-process link, which knows the Tx's decision
    statistic) or admitted (the Rx's session); REFRESH and REFRESH_REQUEST are counted where the
    owner sees them (sent in process; at the Rx, a REFRESH on arrival). Each frame settles once:
    a second outcome for the same frame is counted, never applied. ``retain`` says which records
    stay: ``all`` (a clip in process), ``unsettled`` (the Rx's session, which keeps its own window
    of settled frames) or ``none`` (the Tx's shell, which needs only the totals).

    ``authenticated``: the link has a shared secret, so every message but the HELLOs carries a
    seal (:mod:`shared.protocol.seal`): its bits are link overhead (``auth_bits``, part of
    ``link_bits``) and its bytes part of the wire. Sizes given to :meth:`frame` and
    :meth:`traffic` are the messages' own msgpack bytes, without the seal.
    """

    def __init__(
        self,
        config: LinkConfig,
        *,
        retain: Literal["all", "unsettled", "none"] = "all",
        authenticated: bool = False,
    ) -> None:
        self.config = config
        self.retain = retain
        self.authenticated = authenticated
        self.auth_bits = 0  # seals (counter + tag) of the messages counted, part of link_bits
        self.records: dict[int, FrameRecord] = {}
        self.frames = 0  # frame messages entered
        self.frame_bits = 0  # their semantic bits
        self.refresh_bits = 0  # Tx→Rx REFRESH traffic (semantic bits), part of bits/frame
        self.feedback_bits = 0  # Rx→Tx REFRESH_REQUEST traffic
        self.refreshes = 0
        self.link_bits = 0  # every message this ledger saw, at its coded payload width
        self.wire_bits = 0  # every message it saw a size of: msgpack + websocket framing
        self.settled_twice = 0
        self._settled: set[int] = set()

    def frame(
        self,
        seq: int,
        message: Message,
        *,
        hit: bool,
        wire_bytes: int,
        similarity: float = float("nan"),
    ) -> FrameRecord:
        """A frame message (HIT, NEW, DELTA or CODED) for frame ``seq``; lost until settled."""
        record = FrameRecord(
            seq=seq,
            hit=hit,
            bits=semantic_bits(message, self.config),
            wire_bytes=wire_bytes,
            outcome=Outcome.LOST,
            similarity=similarity,
        )
        if self.retain != "none":
            self.records[seq] = record
        self.frames += 1
        self.frame_bits += record.bits
        self.link_bits += record.bits + self._seal(message)
        self.wire_bits += 8 * ws_frame_bytes(self._sealed_size(message, wire_bytes), masked=True)
        return record

    def _seal(self, message: Message) -> int:
        """The seal bits ``message`` carries on this link (the HELLOs carry none)."""
        if not self.authenticated or isinstance(message, Hello):
            return 0
        self.auth_bits += SEAL_BITS
        return SEAL_BITS

    def _sealed_size(self, message: Message, payload_bytes: int) -> int:
        sealed = self.authenticated and not isinstance(message, Hello)
        return payload_bytes + (SEALED_OVERHEAD if sealed else 0)

    def mark_hits(self, seqs: Iterable[int]) -> None:
        """Frames the Rx decoded as hits (an entropy-coded frame's kind is known only then)."""
        for seq in seqs:
            record = self.records.get(seq)
            if record is not None:
                record.hit = True

    def traffic(
        self, message: Message, payload_bytes: int | None = None, *, masked: bool = True
    ) -> int:
        """Count a message other than a frame's (REFRESH, REFRESH_REQUEST, DIGEST, HELLO, BYE,
        ERROR) that this end saw, with its msgpack size when known; returns its semantic bits."""
        bits = semantic_bits(message, self.config)
        if isinstance(message, Refresh):
            self.refresh_bits += bits
            self.refreshes += 1
        elif isinstance(message, RefreshRequest):
            self.feedback_bits += bits
        self.link_bits += link_bits(message, self.config) + self._seal(message)
        if payload_bytes is not None:
            size = self._sealed_size(message, payload_bytes)
            self.wire_bits += 8 * ws_frame_bytes(size, masked=masked)
        return bits

    def settle(self, seq: int, outcome: Outcome) -> FrameRecord | None:
        """The final outcome of frame ``seq`` (a frame no message described is a lost record);
        None when the frame had settled already."""
        if self.retain != "all":
            record = self.records.pop(seq, None)
            if record is None:  # lost: no message ever described it
                record = _undescribed(seq, outcome)
            record.outcome = outcome
            return record
        record = self.records.get(seq)
        if record is None:
            record = self.records[seq] = _undescribed(seq, outcome)
            self._settled.add(seq)
            return record
        if seq in self._settled:
            self.settled_twice += 1
            return None
        self._settled.add(seq)
        record.outcome = outcome
        return record

    def ordered(self, frames: int) -> list[FrameRecord]:
        """Records of frames 0 … ``frames``−1 in order; a frame never described is lost."""
        return [self.records.get(seq) or _undescribed(seq, Outcome.LOST) for seq in range(frames)]

    def summary(self, records: list[FrameRecord], kappa: float = 1.0) -> LinkSummary:
        """The link figures of ``records`` with this stream's refresh traffic."""
        return summarize(
            records,
            self.config,
            refresh_bits=self.refresh_bits,
            feedback_bits=self.feedback_bits,
            refreshes=self.refreshes,
            kappa=kappa,
            link_bits=self.link_bits,
            wire_bits=self.wire_bits,
        )


def _undescribed(seq: int, outcome: Outcome) -> FrameRecord:
    """The record of a frame no message described (lost on the way, or never sent)."""
    return FrameRecord(seq=seq, hit=False, bits=0, wire_bytes=0, outcome=outcome)


def summarize(
    records: list[FrameRecord],
    config: LinkConfig,
    refresh_bits: int = 0,
    feedback_bits: int = 0,
    refreshes: int = 0,
    kappa: float = 1.0,
    link_bits: int | None = None,
    wire_bits: int | None = None,
) -> LinkSummary:
    """Aggregate frame records (plus refresh traffic) into the paper's link figures."""
    n = len(records)
    if n == 0:
        raise ValueError("no frames to summarize")
    hits = sum(r.hit for r in records)
    bits = (sum(r.bits for r in records) + refresh_bits) / n
    raw = config.latent_dim * config.bits_per_value
    ratio = raw / bits if bits > 0 else float("inf")
    eta = hits / n * ratio
    outcomes = {o.value: 0 for o in Outcome}
    for r in records:
        outcomes[r.outcome.value] += 1
    return LinkSummary(
        frames=n,
        hits=hits,
        news=n - hits,
        hit_rate=hits / n,
        bits_per_frame=bits,
        wire_bytes_per_frame=sum(r.wire_bytes for r in records) / n,
        feedback_bits_per_frame=feedback_bits / n,
        compression_ratio=ratio,
        efficiency=eta,
        capacity=kappa * math.log2(1.0 + eta),
        psnr=_nanmean([r.psnr for r in records]),
        ssim=_nanmean([r.ssim for r in records]),
        outcomes=outcomes,
        refreshes=refreshes,
        link_bits_per_frame=link_bits / n if link_bits is not None else float("nan"),
        wire_bits_per_frame=wire_bits / n if wire_bits is not None else float("nan"),
    )


def _nanmean(values: list[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(arr)) if np.isfinite(arr).any() else float("nan")
