"""The Rx's Prometheus metrics, declared once (served at ``GET /metrics``; see shared/metrics.py).

Counters and gauges are read from the ``/stats`` snapshot at scrape time; the Rx's counters
are those of its current session (a new Tx stream starts a new session, which Prometheus sees
as a counter reset). Two histograms are observed by the shell as things happen:

- ``hoplink_rx_frame_latency_seconds{outcome}``: from the arrival of a frame's message at the Rx
  to its pixels being ready (decoder output), refresh waits included;
- ``hoplink_rx_message_size_bytes{direction,type}``: the msgpack size of every message the Rx
  received (``tx_to_rx``) or sent (``rx_to_tx``).

Directions use the channel's names, so a dashboard can put the Rx's view of a direction beside
the channel's.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from shared.accounting import Outcome
from shared.metrics import (
    LATENCY_BUCKETS_SECONDS,
    SIZE_BUCKETS_BYTES,
    DeclaredCollector,
    by_label,
    counter,
    gauge,
    histogram,
    state_samples,
)
from shared.protocol.handshake import LinkState

IN, OUT = "tx_to_rx", "rx_to_tx"
MAX_PENDING_ARRIVALS = 8192  # frames whose arrival time is kept until their pixels are ready


def _bytes(bits: float | None) -> float | None:
    """Prometheus' base unit of information is the byte: bit figures are exposed as bits / 8."""
    return None if bits is None else bits / 8


def _directions(s: Any, key: str) -> dict[tuple[str, ...], float]:
    return {(IN,): s.traffic.get(f"{key}_in", 0), (OUT,): s.traffic.get(f"{key}_out", 0)}


DECLARED = (
    gauge(
        "hoplink_rx_link_state",
        "1 for the Rx link's current state (idle, handshaking, streaming, resyncing, ...), "
        "0 for the others",
        lambda s: state_samples(s.link.state, LinkState),
        ["state"],
    ),
    gauge("hoplink_rx_session", "Number of the current session", lambda s: s.link.session),
    counter(
        "hoplink_rx_links_accepted",
        "Tx links accepted after a valid HELLO",
        lambda s: s.link.links_accepted,
    ),
    counter(
        "hoplink_rx_links_refused",
        "Links refused, by reason (version, config or model mismatch, busy, bad HELLO, ...)",
        lambda s: by_label(s.link.links_refused_by_code),
        ["reason"],
    ),
    counter(
        "hoplink_rx_illegal_link_events",
        "Link events the handshake state table refused",
        lambda s: s.link.illegal_events,
    ),
    counter(
        "hoplink_rx_frames",
        "Frames settled in this session, by outcome: decoded, recovered by lookup or by "
        "refresh, concealed, or lost",
        lambda s: {(o.value,): s.counters.get(o.value, 0) for o in Outcome},
        ["outcome"],
    ),
    counter(
        "hoplink_rx_frame_messages",
        "Frame messages decoded in this session, by kind (hit: a reference into the memory; "
        "new: a quantized latent; delta: a residual to a prototype)",
        lambda s: {
            ("hit",): s.counters.get("hits", 0),
            ("new",): s.counters.get("news", 0),
            ("delta",): s.counters.get("deltas", 0),
        },
        ["kind"],
    ),
    gauge(
        "hoplink_rx_provisional_frames",
        "Concealing frames shown while a refresh was awaited (this session)",
        lambda s: s.provisional_frames,
    ),
    counter(
        "hoplink_rx_messages",
        "Link messages received (tx_to_rx) and sent (rx_to_tx) in this session",
        lambda s: _directions(s, "messages"),
        ["direction"],
    ),
    counter(
        "hoplink_rx_payload_bytes",
        "Msgpack bytes of link messages, by direction",
        lambda s: _directions(s, "payload_bytes"),
        ["direction"],
    ),
    counter(
        "hoplink_rx_wire_bytes",
        "Bytes on the socket (msgpack plus websocket framing), by direction",
        lambda s: _directions(s, "wire_bytes"),
        ["direction"],
    ),
    counter(
        "hoplink_rx_semantic_bytes",
        "Semantic bits received (eq. 3: frame messages and refreshes), divided by 8",
        lambda s: _bytes(s.traffic.get("semantic_bits_in")),
    ),
    counter(
        "hoplink_rx_refresh_bytes",
        "Semantic bits of the REFRESH messages received, divided by 8",
        lambda s: _bytes(s.traffic.get("refresh_bits")),
    ),
    counter(
        "hoplink_rx_feedback_bytes",
        "Bits of the REFRESH_REQUEST messages sent back to the Tx, divided by 8",
        lambda s: _bytes(s.traffic.get("feedback_bits")),
    ),
    gauge(
        "hoplink_rx_link_bytes_per_frame",
        "Link bits per frame divided by 8: every message of both directions at its coded "
        "width, over the recent window of settled frames",
        lambda s: _bytes(s.bits.link_per_frame),
    ),
    gauge(
        "hoplink_rx_semantic_bytes_per_frame",
        "Semantic bits per frame (the paper's eq. 3) divided by 8, over the recent window",
        lambda s: _bytes(s.bits.semantic_per_frame),
    ),
    gauge(
        "hoplink_rx_wire_bytes_per_frame",
        "Bytes on the socket per frame, both directions, msgpack and websocket framing included",
        lambda s: _bytes(s.bits.wire_bits_per_frame),
    ),
    gauge(
        "hoplink_rx_hit_ratio",
        "Fraction of recent frames sent as references into the memory",
        lambda s: s.hit_rate,
    ),
    gauge(
        "hoplink_rx_semantic_efficiency",
        "Semantic efficiency eta = hit rate x compression ratio (eq. 5), recent window",
        lambda s: s.bits.efficiency,
    ),
    gauge(
        "hoplink_rx_psnr_decibels",
        "PSNR of the last measured frame against the reference (needs --reference)",
        lambda s: s.quality.psnr_last,
    ),
    gauge(
        "hoplink_rx_psnr_mean_decibels",
        "Mean PSNR over the recent window of measured frames (needs --reference)",
        lambda s: s.quality.psnr_mean,
    ),
    gauge(
        "hoplink_rx_ssim",
        "SSIM of the last measured frame against the reference (needs --reference)",
        lambda s: s.quality.ssim_last,
    ),
    gauge(
        "hoplink_rx_quality_pending_frames",
        "Frames waiting for pixel decoding and quality measurement",
        lambda s: s.quality.pending,
    ),
    gauge(
        "hoplink_rx_memory_prototypes",
        "Prototypes stored in the Rx memory",
        lambda s: s.memory.filled,
    ),
    gauge(
        "hoplink_rx_memory_capacity_prototypes",
        "Prototypes the Rx memory can hold",
        lambda s: s.memory.capacity,
    ),
    gauge(
        "hoplink_rx_memory_digest_agreement",
        "1 when the Rx memory equals the Tx's at its last DIGEST, 0 when not (absent before "
        "the first DIGEST)",
        lambda s: None if s.digest.agree is None else float(s.digest.agree),
    ),
    counter(
        "hoplink_rx_cue_failures",
        "References whose SimHash cue did not match the Rx's prototype",
        lambda s: s.counters.get("cue_failures"),
    ),
    counter(
        "hoplink_rx_lookups",
        "Content-addressable lookups on a failed cue, by result",
        lambda s: {
            ("found",): s.counters.get("lookups_ok", 0),
            ("failed",): s.counters.get("lookups_failed", 0),
        },
        ["result"],
    ),
    counter(
        "hoplink_rx_refresh_requests",
        "REFRESH_REQUEST messages sent to the Tx",
        lambda s: s.counters.get("refresh_requests"),
    ),
    counter(
        "hoplink_rx_refreshes_applied",
        "REFRESH messages applied to the memory",
        lambda s: s.counters.get("refreshes_applied"),
    ),
    counter(
        "hoplink_rx_digests",
        "DIGEST messages received, by whether the memories agreed",
        lambda s: {
            ("agree",): s.counters.get("digests", 0) - s.counters.get("digest_mismatches", 0),
            ("mismatch",): s.counters.get("digest_mismatches", 0),
        },
        ["result"],
    ),
    counter(
        "hoplink_rx_duplicate_frames",
        "Frames received twice, or after being counted lost",
        lambda s: s.counters.get("duplicates"),
    ),
    counter(
        "hoplink_rx_corruption_events",
        "One-shot corruption events (CORRUPT) received from the channel",
        lambda s: s.traffic.get("corrupt_events"),
    ),
    counter(
        "hoplink_rx_bad_messages",
        "Messages that did not decode (malformed, unknown type, bad fields, oversize)",
        lambda s: s.traffic.get("decode_errors"),
    ),
    counter(
        "hoplink_rx_core_failures",
        "Messages whose handling failed unexpectedly (caught; their frame concealed)",
        lambda s: s.traffic.get("core_failures"),
    ),
    counter(
        "hoplink_rx_replies_dropped",
        "Replies produced while no link could carry them",
        lambda s: s.traffic.get("replies_dropped"),
    ),
)


class RxMetrics:
    """The Rx's metrics: the declared families (read from ``snapshot``) and the histograms the
    shell observes. Thread-safe where it must be: frames are shown from the quality worker."""

    def __init__(self) -> None:
        self.frame_latency = histogram(
            "hoplink_rx_frame_latency_seconds",
            "Seconds from a frame message's arrival at the Rx to its pixels being ready "
            "(refresh waits included), by outcome",
            ["outcome"],
            LATENCY_BUCKETS_SECONDS,
        )
        self.message_size = histogram(
            "hoplink_rx_message_size_bytes",
            "Msgpack size of each link message the Rx received (tx_to_rx) or sent (rx_to_tx), "
            "by message type",
            ["direction", "type"],
            SIZE_BUCKETS_BYTES,
        )
        # (session, seq) -> arrival time of the frame's first message; bounded (lost or
        # concealed frames without pixels are never shown, the oldest entries go first).
        self._arrived: OrderedDict[tuple[int, int], float] = OrderedDict()
        self._lock = threading.Lock()

    def received(self, kind: str, size: int) -> None:
        self.message_size.labels(IN, kind).observe(size)

    def sent(self, kind: str, size: int) -> None:
        self.message_size.labels(OUT, kind).observe(size)

    def frame_arrived(self, session: int, seq: int, now: float) -> None:
        with self._lock:
            self._arrived.setdefault((session, seq), now)  # a duplicate keeps the first arrival
            while len(self._arrived) > MAX_PENDING_ARRIVALS:
                self._arrived.popitem(last=False)

    def frame_shown(self, session: int, seq: int, outcome: str, now: float) -> None:
        with self._lock:
            arrived = self._arrived.pop((session, seq), None)
        if arrived is not None:
            self.frame_latency.labels(outcome).observe(max(now - arrived, 0.0))

    def collectors(self, snapshot: Callable[[], Any]) -> tuple[Any, ...]:
        return (DeclaredCollector(DECLARED, snapshot), self.frame_latency, self.message_size)


__all__ = ["DECLARED", "RxMetrics"]
