"""Declared metrics (shared.metrics): names that promtool accepts, checked where they are
declared, and each process's declarations exposed in Prometheus text that promtool passes."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from channel.metrics import DECLARED as CHANNEL
from receiver.metrics import DECLARED as RX
from receiver.metrics import RxMetrics
from shared.metrics import (
    DeclaredCollector,
    MetricDeclarationError,
    by_label,
    check_name,
    counter,
    gauge,
    state_samples,
)
from tests.metrics_check import promtool_check
from transmitter.metrics import DECLARED as TX


@pytest.mark.parametrize(
    ("name", "kind", "labels", "rule"),
    [
        ("hoplink_rx_latency_ms", "gauge", (), "base unit"),
        ("hoplink_rx_semantic_bits_per_frame", "gauge", (), "base unit"),
        ("hoplink_rx_memory_count", "gauge", (), "reserved"),
        ("hoplink_rx_frames_total", "counter", (), "reserved"),
        ("hoplink_channel_directions_tx_to_rx_bytes_in", "counter", (), None),
        ("hoplink_rx_Frames", "counter", (), "snake_case"),
        ("rx_frames", "counter", (), "snake_case"),
        ("hoplink_rx_frames", "counter", ("le",), "label"),
    ],
)
def test_names_are_checked_where_they_are_declared(name, kind, labels, rule) -> None:
    if rule is None:  # well formed: conventions cannot see data built into a name
        assert check_name(name, kind, labels) == name
        return
    with pytest.raises(MetricDeclarationError, match=name):
        check_name(name, kind, labels)


class _Snapshot(BaseModel):
    frames: dict[str, int]
    state: str
    psnr: float | None


def _text(collector) -> str:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    return generate_latest(registry).decode()


def test_a_declared_collector_reads_its_families_from_the_snapshot() -> None:
    declared = [
        counter(
            "hoplink_rx_frames", "Frames by outcome", lambda s: by_label(s.frames), ["outcome"]
        ),
        gauge(
            "hoplink_rx_link_state",
            "1 for the current state",
            lambda s: state_samples(s.state, ["idle", "streaming"]),
            ["state"],
        ),
        gauge("hoplink_rx_psnr_decibels", "PSNR of the last frame", lambda s: s.psnr),
    ]
    snapshot = _Snapshot(frames={"decoded": 7, "lost": 1}, state="streaming", psnr=None)
    text = _text(DeclaredCollector(declared, lambda: snapshot))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples == {
        ("hoplink_rx_frames_total", (("outcome", "decoded"),)): 7.0,
        ("hoplink_rx_frames_total", (("outcome", "lost"),)): 1.0,
        ("hoplink_rx_link_state", (("state", "idle"),)): 0.0,
        ("hoplink_rx_link_state", (("state", "streaming"),)): 1.0,
    }  # an undefined PSNR is left out, not reported as NaN
    assert "# HELP hoplink_rx_frames_total Frames by outcome" in text
    assert promtool_check(text) == (0, "")
    with pytest.raises(MetricDeclarationError, match="twice"):
        DeclaredCollector([declared[0], declared[0]], lambda: snapshot)


@pytest.mark.parametrize("declared", [RX, TX, CHANNEL], ids=["rx", "tx", "channel"])
def test_each_process_declares_distinct_names_with_help(declared) -> None:
    names = [d.name for d in declared]
    assert len(names) == len(set(names))
    # HELP says what it counts in words (not the JSON path of a /stats field)
    assert all(len(d.help.split()) >= 3 and "(from /stats)" not in d.help for d in declared)


def test_rx_histograms_time_frames_from_arrival_to_pixels() -> None:
    metrics = RxMetrics()
    metrics.frame_arrived(1, 0, now=10.0)
    metrics.frame_arrived(1, 0, now=10.5)  # a duplicate keeps the first arrival
    metrics.frame_arrived(1, 1, now=11.0)
    metrics.frame_shown(1, 0, "decoded", now=10.02)
    metrics.frame_shown(1, 1, "recovered_refresh", now=11.3)
    metrics.frame_shown(2, 0, "decoded", now=12.0)  # never arrived in that session: no sample
    metrics.received("hit", 40)
    metrics.received("new", 300)
    metrics.sent("refresh_request", 20)
    text = _text(metrics.frame_latency) + _text(metrics.message_size)
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    decoded = (("outcome", "decoded"),)
    assert values[("hoplink_rx_frame_latency_seconds_count", decoded)] == 1
    assert values[("hoplink_rx_frame_latency_seconds_sum", decoded)] == pytest.approx(0.02)
    assert values[("hoplink_rx_frame_latency_seconds_bucket", (("le", "0.01"), *decoded))] == 0
    assert values[("hoplink_rx_frame_latency_seconds_bucket", (("le", "0.025"), *decoded))] == 1
    refresh = (("outcome", "recovered_refresh"),)
    assert values[("hoplink_rx_frame_latency_seconds_sum", refresh)] == pytest.approx(0.3)
    new = (("direction", "tx_to_rx"), ("type", "new"))
    assert values[("hoplink_rx_message_size_bytes_sum", new)] == 300
    assert promtool_check(text) == (0, "")
