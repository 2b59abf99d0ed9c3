"""The Tx's Prometheus metrics, declared once (served at ``GET /metrics``; see shared/metrics.py).

Every series is read from the ``/stats`` snapshot at scrape time, so the two never disagree.
Directions use the channel's names: the Tx sends ``tx_to_rx`` and receives ``rx_to_tx``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.metrics import DeclaredCollector, counter, gauge, state_samples
from shared.protocol.handshake import LinkState

OUT, IN = "tx_to_rx", "rx_to_tx"


def _bytes(bits: float | None) -> float | None:
    """Prometheus' base unit of information is the byte: bit figures are exposed as bits / 8."""
    return None if bits is None else bits / 8


def _directions(s: Any, key: str) -> dict[tuple[str, ...], float]:
    return {(OUT,): s.traffic.get(f"{key}_out", 0), (IN,): s.traffic.get(f"{key}_in", 0)}


DECLARED = (
    gauge(
        "hoplink_tx_link_state",
        "1 for the Tx link's current state (connecting, handshaking, streaming, closed, ...), "
        "0 for the others",
        lambda s: state_samples(s.link.state, LinkState),
        ["state"],
    ),
    gauge(
        "hoplink_tx_finished",
        "1 once the stream has ended (BYE sent), else 0",
        lambda s: float(s.link.finished),
    ),
    counter(
        "hoplink_tx_dials",
        "Dials of the link URL, by outcome (connected, or failed and retried with backoff)",
        lambda s: {
            ("connected",): s.traffic.get("connects", 0),
            ("failed",): s.traffic.get("connect_failures", 0),
        },
        ["outcome"],
    ),
    counter(
        "hoplink_tx_reconnects",
        "Links lost mid-stream and dialed again",
        lambda s: s.traffic.get("reconnects"),
    ),
    counter(
        "hoplink_tx_hello_timeouts",
        "Handshakes with no HELLO from the Rx in time (retried with backoff)",
        lambda s: s.traffic.get("hello_timeouts"),
    ),
    counter(
        "hoplink_tx_illegal_link_events",
        "Link events the handshake state table refused",
        lambda s: s.link.illegal_events,
    ),
    counter(
        "hoplink_tx_frames",
        "Frames decided by the Tx core, by kind (hit: a reference into the memory; new: a "
        "quantized latent; delta: a residual to a prototype)",
        lambda s: {
            ("hit",): s.counters.get("hits", 0),
            ("new",): s.counters.get("news", 0),
            ("delta",): s.counters.get("deltas", 0),
        },
        ["kind"],
    ),
    counter(
        "hoplink_tx_frames_sent",
        "Frame messages sent on the link",
        lambda s: s.frames_sent,
    ),
    counter(
        "hoplink_tx_frames_unsent",
        "Frames decided by the core whose send failed because the link broke",
        lambda s: s.traffic.get("frames_unsent"),
    ),
    counter(
        "hoplink_tx_metastable_misses",
        "Misses because the Hopfield state was a mixture of prototypes",
        lambda s: s.counters.get("metastable"),
    ),
    counter(
        "hoplink_tx_unstored_misses",
        "Misses at memory capacity under the freeze policy (sent, not stored)",
        lambda s: s.counters.get("news_unstored"),
    ),
    counter(
        "hoplink_tx_messages",
        "Link messages sent (tx_to_rx) and received (rx_to_tx)",
        lambda s: _directions(s, "messages"),
        ["direction"],
    ),
    counter(
        "hoplink_tx_payload_bytes",
        "Msgpack bytes of link messages, by direction",
        lambda s: _directions(s, "payload_bytes"),
        ["direction"],
    ),
    counter(
        "hoplink_tx_wire_bytes",
        "Bytes on the socket (msgpack plus websocket framing), by direction",
        lambda s: _directions(s, "wire_bytes"),
        ["direction"],
    ),
    counter(
        "hoplink_tx_semantic_bytes",
        "Semantic bits of the frame messages sent (eq. 3), divided by 8",
        lambda s: _bytes(s.traffic.get("semantic_bits")),
    ),
    counter(
        "hoplink_tx_refresh_bytes",
        "Semantic bits of the REFRESH messages sent, divided by 8",
        lambda s: _bytes(s.traffic.get("refresh_bits")),
    ),
    counter(
        "hoplink_tx_refresh_requests",
        "REFRESH_REQUEST messages received from the Rx",
        lambda s: s.counters.get("refresh_requests"),
    ),
    counter(
        "hoplink_tx_refreshes",
        "Refresh requests answered, by outcome (sent, or refused: unknown reference or over "
        "the refresh budget)",
        lambda s: {
            ("sent",): s.counters.get("refreshes_sent", 0),
            ("refused",): s.counters.get("refreshes_refused", 0),
        },
        ["outcome"],
    ),
    counter(
        "hoplink_tx_digests_sent",
        "DIGEST messages sent",
        lambda s: s.counters.get("digests_sent"),
    ),
    counter(
        "hoplink_tx_errors_received",
        "ERROR messages received from the Rx",
        lambda s: s.traffic.get("errors_received"),
    ),
    counter(
        "hoplink_tx_bad_messages",
        "Messages from the Rx that did not decode, or that the core does not accept",
        lambda s: s.traffic.get("decode_errors", 0) + s.traffic.get("rejected", 0),
    ),
    gauge(
        "hoplink_tx_semantic_bytes_per_frame",
        "Semantic bits per frame sent (eq. 3: frame messages and refreshes) divided by 8, "
        "whole stream",
        lambda s: _bytes(s.bits_per_frame),
    ),
    gauge(
        "hoplink_tx_wire_bytes_per_frame",
        "Bytes on the socket per frame sent, both directions, framing included",
        lambda s: _bytes(s.wire_bits_per_frame),
    ),
    gauge(
        "hoplink_tx_hit_ratio",
        "Fraction of the frames decided so far that were sent as references",
        lambda s: s.hit_rate,
    ),
    gauge(
        "hoplink_tx_frame_rate_hertz",
        "Frames sent per second over the last second of sending",
        lambda s: s.fps,
    ),
    gauge(
        "hoplink_tx_target_frame_rate_hertz",
        "Frames per second the Tx paces to (0: unpaced)",
        lambda s: s.fps_target,
    ),
    gauge(
        "hoplink_tx_memory_prototypes",
        "Prototypes stored in the Tx memory",
        lambda s: s.memory_count,
    ),
    gauge(
        "hoplink_tx_memory_capacity_prototypes",
        "Prototypes the Tx memory can hold",
        lambda s: s.memory_capacity,
    ),
)


def collectors(snapshot: Callable[[], Any]) -> tuple[Any, ...]:
    """What the Tx's app registers: its declared families, read from ``snapshot``."""
    return (DeclaredCollector(DECLARED, snapshot),)


__all__ = ["DECLARED", "collectors"]
