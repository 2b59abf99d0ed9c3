"""The channel's Prometheus metrics, declared once (served at ``GET /metrics``; see
shared/metrics.py).

Every series is read from the ``/stats`` snapshot at scrape time. Totals are summed over every
link the channel carried (ended ones included); ``link`` labels the open links' own series
(bounded by ``--max-links``; a link's series end with it); with ``--workers N`` every series is
summed over the workers, and ``worker`` labels the links open on each. ``direction`` is
``tx_to_rx`` or ``rx_to_tx``; ``impairment`` is the impairment's name (by default its type, see
channel/control.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.metrics import DeclaredCollector, by_label, counter, gauge, state_samples
from shared.protocol.handshake import LinkState

BACKLOG = "backlog"  # the ``impairment`` label of arrivals dropped because the backlog was full


def _per_direction(s: Any, key: str) -> dict[tuple[str, ...], float]:
    return {(d,): stats.get(key, 0) for d, stats in s.directions.items()}


def _per_type(s: Any, key: str) -> dict[tuple[str, ...], float]:
    return {
        (d, kind): count
        for d, stats in s.directions.items()
        for kind, count in stats.get(key, {}).items()
    }


def _impairment_counter(key: str) -> Callable[[Any], dict[tuple[str, ...], float]]:
    def read(s: Any) -> dict[tuple[str, ...], float]:
        return {
            (d, name): counters[key]
            for d, stats in s.directions.items()
            for name, counters in stats.get("impairments", {}).items()
            if key in counters
        }

    return read


def _dropped(s: Any) -> dict[tuple[str, ...], float]:
    out = _impairment_counter("dropped")(s)
    for d, stats in s.directions.items():
        out[(d, BACKLOG)] = stats.get("overflow", 0)
    return out


def _impairment_actions(s: Any) -> dict[tuple[str, ...], float]:
    return {
        (d, name, action): value
        for d, stats in s.directions.items()
        for name, counters in stats.get("impairments", {}).items()
        for action, value in counters.items()
    }


def _outbox(key: str) -> Callable[[Any], dict[tuple[str, ...], float]]:
    return lambda s: {(d,): getattr(o, key) for d, o in s.outbox.items()}


def _per_link(key: str) -> Callable[[Any], dict[tuple[str, ...], float]]:
    return lambda s: {
        (str(link.number), d): getattr(stats, key)
        for link in s.open_links
        for d, stats in link.directions.items()
    }


DECLARED = (
    gauge(
        "hoplink_channel_link_state",
        "1 for the channel's current state (streaming while any link streams), 0 for the others",
        lambda s: state_samples(s.link.state, LinkState),
        ["state"],
    ),
    counter(
        "hoplink_channel_links_opened",
        "Tx links accepted whose Rx leg was reached",
        lambda s: s.link.links,
    ),
    gauge(
        "hoplink_channel_links_active",
        "Links open now (including those still dialing the Rx)",
        lambda s: s.link.active,
    ),
    gauge(
        "hoplink_channel_links_max",
        "Links the channel carries at once (--max-links)",
        lambda s: s.link.max_links,
    ),
    counter(
        "hoplink_channel_links_refused",
        "Tx links refused because --max-links were open",
        lambda s: s.link.links_refused,
    ),
    gauge(
        "hoplink_channel_worker_links_active",
        "Links open now on each worker process (--workers N > 1; none with one process)",
        lambda s: {(str(w.index),): w.active for w in s.workers},
        ["worker"],
    ),
    counter(
        "hoplink_channel_rx_dial_failures",
        "Dials of the Rx that failed (the Tx is closed with 4005 and retries)",
        lambda s: s.link.rx_connect_failures,
    ),
    counter(
        "hoplink_channel_messages_received",
        "Messages that entered the channel, by direction and message type",
        lambda s: _per_type(s, "types_in"),
        ["direction", "type"],
    ),
    counter(
        "hoplink_channel_messages_forwarded",
        "Messages that left the impairment pipeline, by direction and message type "
        "(duplicates included)",
        lambda s: _per_type(s, "types_out"),
        ["direction", "type"],
    ),
    counter(
        "hoplink_channel_received_bytes",
        "Bytes of the messages that entered the channel, by direction",
        lambda s: _per_direction(s, "bytes_in"),
        ["direction"],
    ),
    counter(
        "hoplink_channel_forwarded_bytes",
        "Bytes of the messages that left the impairment pipeline, by direction",
        lambda s: _per_direction(s, "bytes_out"),
        ["direction"],
    ),
    counter(
        "hoplink_channel_messages_dropped",
        "Messages dropped, by direction and by the impairment that dropped them (backlog: the "
        "link's backlog was full)",
        _dropped,
        ["direction", "impairment"],
    ),
    counter(
        "hoplink_channel_messages_duplicated",
        "Extra copies made by duplicate impairments, by direction and impairment",
        _impairment_counter("duplicated"),
        ["direction", "impairment"],
    ),
    counter(
        "hoplink_channel_impairment_matched_messages",
        "Messages an impairment acted on (selected by its types, sequence range and "
        "toxicity), by direction and impairment",
        _impairment_counter("matched"),
        ["direction", "impairment"],
    ),
    counter(
        "hoplink_channel_bit_flips",
        "Bit flips made by bit-error and physical-layer impairments, by direction and impairment",
        _impairment_counter("bits_flipped"),
        ["direction", "impairment"],
    ),
    counter(
        "hoplink_channel_impairment_actions",
        "Every counter of every impairment (what it did: dropped, delayed, reordered, noised, "
        "symbols, ...), by direction, impairment and action",
        _impairment_actions,
        ["direction", "impairment", "action"],
    ),
    gauge(
        "hoplink_channel_impairment_enabled",
        "1 for each impairment set now, by direction and impairment",
        lambda s: {(d, name): 1.0 for d, stages in s.impairments.items() for name in stages},
        ["direction", "impairment"],
    ),
    gauge(
        "hoplink_channel_held_messages",
        "Messages the impairments hold now (rate queue, delay line, reorder), by direction",
        lambda s: _per_direction(s, "held"),
        ["direction"],
    ),
    gauge(
        "hoplink_channel_held_bytes",
        "Bytes the impairments hold now, by direction",
        lambda s: _per_direction(s, "held_bytes"),
        ["direction"],
    ),
    gauge(
        "hoplink_channel_queued_messages",
        "Deliveries waiting for their send time or the socket, by direction",
        _outbox("queued"),
        ["direction"],
    ),
    gauge(
        "hoplink_channel_queued_bytes",
        "Bytes of the deliveries waiting to be sent, by direction",
        _outbox("queued_bytes"),
        ["direction"],
    ),
    counter(
        "hoplink_channel_deliveries",
        "Deliveries by direction and outcome: sent, failed (the peer was gone) or discarded "
        "(queued when a link ended)",
        lambda s: {
            (d, outcome): getattr(o, attr)
            for d, o in s.outbox.items()
            for outcome, attr in (
                ("sent", "sent"),
                ("failed", "send_failures"),
                ("discarded", "discarded"),
            )
        },
        ["direction", "outcome"],
    ),
    counter(
        "hoplink_channel_corruption_events",
        "One-shot corruption events sent to the Rx, by effect (corrupt: every event; "
        "id_desync: with rho > 0; prototype_noise: with sigma > 0)",
        lambda s: by_label(s.events),
        ["effect"],
    ),
    counter(
        "hoplink_channel_link_messages_received",
        "Messages that entered the channel on each open link, by direction",
        _per_link("messages_in"),
        ["link", "direction"],
    ),
    counter(
        "hoplink_channel_link_messages_forwarded",
        "Messages that left the pipeline on each open link, by direction",
        _per_link("messages_out"),
        ["link", "direction"],
    ),
    counter(
        "hoplink_channel_link_messages_dropped",
        "Messages dropped on each open link, by direction",
        _per_link("dropped"),
        ["link", "direction"],
    ),
    gauge(
        "hoplink_channel_link_held_messages",
        "Messages the impairments of each open link hold now, by direction",
        _per_link("held"),
        ["link", "direction"],
    ),
)


def collectors(snapshot: Callable[[], Any]) -> tuple[Any, ...]:
    """What the channel's app registers: its declared families, read from ``snapshot``."""
    return (DeclaredCollector(DECLARED, snapshot),)


__all__ = ["DECLARED", "collectors"]
