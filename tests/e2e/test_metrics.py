"""``GET /metrics`` of the three real processes after a stream through an impaired channel:
``promtool check metrics`` passes on each, and the declared series agree with /stats."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from experiments.demo import Processes, wait_for
from tests.metrics_check import promtool_check

pytestmark = pytest.mark.e2e

FRAMES = 60
ENV = {"HOPLINK_LOG_LEVEL": "warning", "HOPLINK_SEED": "0", "HOPLINK_THRESHOLD": "0.99"}


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[str, dict]]]:
    """{service: (its /metrics text, its /stats)} once a stream has settled."""
    logs = tmp_path_factory.mktemp("metrics-logs")
    with Processes(Path(logs), env=ENV) as procs:
        rx = procs.start("rx", ["receiver", "--reference", "low_motion", "--frames", str(FRAMES)])
        channel = procs.start(
            "channel",
            [
                "channel",
                "--rx-url",
                rx.ws_url,
                "--impair",
                "tx_to_rx.loss.probability=0.1",
                "--impair",
                "tx_to_rx.delay.delay_ms=2",
            ],
        )
        tx = procs.start(
            "tx",
            ["transmitter", "--url", channel.ws_url, "--scenario", "low_motion"]
            + ["--frames", str(FRAMES), "--fps", "0", "--linger"],
        )
        wait_for(lambda: tx.stats()["link"]["finished"], 60, "the Tx to finish")
        wait_for(
            lambda: (s := rx.stats())["link"]["session_ended"] and s["quality"]["pending"] == 0,
            30,
            "the Rx to settle",
        )
        yield {
            name: (httpx.get(f"{child.url}/metrics", timeout=5).text, child.stats())
            for name, child in (("rx", rx), ("channel", channel), ("tx", tx))
        }


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _sum(samples: dict, name: str, **labels: str) -> float:
    return sum(
        v
        for (n, ls), v in samples.items()
        if n == name and all((k, val) in ls for k, val in labels.items())
    )


@pytest.mark.parametrize("service", ["rx", "channel", "tx"])
def test_promtool_accepts_the_metrics_of_every_process(scraped, service) -> None:
    text, _ = scraped[service]
    status, problems = promtool_check(text)
    assert (status, problems) == (0, ""), f"promtool check metrics on {service}:\n{problems}"


def test_rx_series_count_every_frame_and_time_the_shown_ones(scraped) -> None:
    text, stats = scraped["rx"]
    m = _samples(text)
    assert _sum(m, "hoplink_rx_frames_total") == FRAMES
    lost = _sum(m, "hoplink_rx_frames_total", outcome="lost")
    assert lost == stats["counters"]["lost"] > 0  # the channel's loss reached the Rx
    # Every frame that arrived and was shown has one latency sample (lost ones never arrived).
    assert _sum(m, "hoplink_rx_frame_latency_seconds_count") == FRAMES - lost
    assert _sum(m, "hoplink_rx_frame_latency_seconds_sum") > 0
    hits = _sum(m, "hoplink_rx_message_size_bytes_count", direction="tx_to_rx", type="hit")
    news = _sum(m, "hoplink_rx_message_size_bytes_count", direction="tx_to_rx", type="new")
    assert hits + news == FRAMES - lost
    assert (
        _sum(m, "hoplink_rx_payload_bytes_total", direction="tx_to_rx")
        == (stats["traffic"]["payload_bytes_in"])
    )


def test_channel_series_name_direction_and_impairment_in_labels(scraped) -> None:
    text, stats = scraped["channel"]
    m = _samples(text)
    forward = stats["directions"]["tx_to_rx"]
    assert (
        _sum(m, "hoplink_channel_messages_received_total", direction="tx_to_rx")
        == (forward["messages_in"])
    )
    dropped = _sum(m, "hoplink_channel_messages_dropped_total", impairment="loss")
    assert dropped == forward["impairments"]["loss"]["dropped"] > 0
    delayed = m[
        (
            "hoplink_channel_impairment_actions_total",
            (("action", "delayed"), ("direction", "tx_to_rx"), ("impairment", "delay")),
        )
    ]
    assert delayed == forward["impairments"]["delay"]["delayed"] > 0
    enabled = {ls for (n, ls), v in m.items() if n == "hoplink_channel_impairment_enabled"}
    assert enabled == {
        (("direction", "tx_to_rx"), ("impairment", "loss")),
        (("direction", "tx_to_rx"), ("impairment", "delay")),
    }
    assert not any("tx_to_rx" in name for name, _ in m)  # directions are labels, never names


def test_tx_series_count_what_it_sent(scraped) -> None:
    text, stats = scraped["tx"]
    m = _samples(text)
    assert _sum(m, "hoplink_tx_frames_total") == FRAMES == stats["frames"]
    assert m[("hoplink_tx_frames_sent_total", ())] == stats["frames_sent"] == FRAMES
    assert m[("hoplink_tx_dials_total", (("outcome", "connected"),))] >= 1
    assert m[("hoplink_tx_link_state", (("state", "closed"),))] == 1
