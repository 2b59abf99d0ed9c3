"""The control plane of ``--workers N`` (channel.workers), without processes: summing the workers'
stats, combining their answers to a change, numbering their links, and the line that configures
each of them."""

from __future__ import annotations

import argparse
import json

import pytest

from channel.core import ChannelCore
from channel.server import (
    ChannelLinkStats,
    ChannelStats,
    OpenLinkStats,
    OutboxStats,
    WorkerStats,
    add_counts,
    link_number,
)
from channel.workers import (
    Reply,
    disagreement,
    sum_snapshots,
    summed_corruption,
    summed_state,
    worker_spec,
)
from shared.config import ConfigError, build_config
from shared.protocol.handshake import LinkState
from shared.service import ChannelSettings, add_settings_arguments, settings_from_args
from tests.synthetic import CONFIG, TX, hits, send

LOSS = {"probability": 0.5}
OWN = ("messages_in", "messages_out", "dropped")  # a link's own counters in /stats


def worker_stats(numbers: list[int], frames: int, state: LinkState, **link) -> ChannelStats:
    """What a worker's /stats says after carrying ``frames`` HITs on each of its links (numbered
    ``numbers``) under 50 % loss: real cores' counters, in the service's shape."""
    cores = [ChannelCore(CONFIG, link=number) for number in numbers]
    directions: dict = {}
    open_links = []
    for number, core in zip(numbers, cores, strict=True):
        core.set_impairment(TX, "loss", LOSS)
        send(core, hits(frames))
        counts = core.stats()
        counts.pop("events")
        own = {d: {**{k: s[k] for k in OWN}, "held": 0, "queued": 0} for d, s in counts.items()}
        open_links.append(OpenLinkStats(number=number, state=state, directions=own))
        add_counts(directions, counts)
    impairments = cores[0].impairments()
    for core in cores[1:]:
        add_counts(impairments[TX]["loss"]["counters"], core.impairments()[TX]["loss"]["counters"])
    outbox = OutboxStats(queued=1, sent=len(numbers) * frames, send_failures=0, discarded=0)
    return ChannelStats(
        link=ChannelLinkStats(
            **{
                "state": state,
                "rx_url": "ws://127.0.0.1:9003/link",
                "links": len(numbers),
                "active": len(numbers),
                "max_links": 1024,
                "links_refused": 0,
                "rx_connect_failures": 0,
                "last_close_code": None,
                "last_close_reason": None,
                "last_closed_by": None,
                **link,
            }
        ),
        directions=directions,
        events={"corrupt": 1, "id_desync": 1, "prototype_noise": 0},
        impairments=impairments,
        outbox={"tx_to_rx": outbox, "rx_to_tx": outbox},
        open_links=open_links,
    )


def test_the_control_plane_sums_its_workers_stats() -> None:
    zero = worker_stats([0, 2], 40, LinkState.STREAMING, links_refused=1)
    one = worker_stats([1], 40, LinkState.IDLE, last_close_code=1000, last_closed_by="tx")
    settings = ChannelCore(CONFIG).impairments()  # the control plane's template...
    settings[TX] = {"loss": {**zero.impairments[TX]["loss"], "counters": {"dropped": 0}}}
    workers = [WorkerStats(index=i, pid=100 + i, port=8100 + i, state=LinkState.IDLE, links=1,
                           active=1) for i in (0, 1)]  # fmt: skip

    total = sum_snapshots([zero, one], settings, workers)

    assert total.link.links == total.link.active == 3 and total.link.max_links == 2048
    assert total.link.state is LinkState.STREAMING and total.link.links_refused == 1
    assert (total.link.last_close_code, total.link.last_closed_by) == (1000, "tx")
    forward = total.directions[TX]
    assert forward["messages_in"] == 3 * 40
    for key in ("messages_out", "dropped", "bytes_in"):
        assert forward[key] == zero.directions[TX][key] + one.directions[TX][key]
    assert forward["types_in"] == {"hit": 120}
    assert forward["impairments"]["loss"]["dropped"] == forward["dropped"] > 0
    # The settings are the control plane's (not added up); their counters are the workers' sum.
    loss = total.impairments[TX]["loss"]
    assert loss["probability"] == 0.5 and loss["counters"]["dropped"] == forward["dropped"]
    assert total.events == {"corrupt": 2, "id_desync": 2, "prototype_noise": 0}
    assert total.outbox["tx_to_rx"].sent == 3 * 40 and total.outbox["tx_to_rx"].queued == 2
    assert [link.number for link in total.open_links] == [0, 1, 2]
    assert total.workers == workers
    assert settings[TX]["loss"]["counters"] == {"dropped": 0}  # its input is left alone


def test_the_channel_streams_while_any_worker_does() -> None:
    assert summed_state([LinkState.IDLE, LinkState.STREAMING]) is LinkState.STREAMING
    assert summed_state([LinkState.IDLE, LinkState.CONNECTING]) is LinkState.CONNECTING
    assert summed_state([LinkState.IDLE, LinkState.CLOSED]) is LinkState.IDLE


def test_a_worker_that_answers_otherwise_is_named() -> None:
    agreed = [Reply("worker 0", 201), Reply("worker 1", 201)]
    assert disagreement(201, agreed) is None
    odd = disagreement(201, [Reply("worker 0", 201), Reply("worker 1", 409, b'{"detail":"x"}')])
    assert odd == 'worker 1 answered 409: {"detail":"x"}'
    silent = disagreement(204, [Reply("worker 1 (pid 7, port 9)", None, b"ConnectionRefused")])
    assert silent == "worker 1 (pid 7, port 9) did not answer: ConnectionRefused"


def test_a_corruption_event_counts_the_links_of_every_worker() -> None:
    def sent(links: int) -> Reply:
        body = {"sent": True, "rho": 0.1, "sigma": 0.0, "bytes": 30, "links": links}
        return Reply("worker", 200, json.dumps(body).encode())

    no_link = Reply("worker 2", 409, b'{"detail":"no link"}')
    status, body = summed_corruption([sent(3), no_link, sent(2)])
    assert status == 200 and body["links"] == 5 and body["sent"] is True
    assert summed_corruption([no_link, no_link])[0] == 409
    status, body = summed_corruption([sent(3), Reply("worker 1 (pid 7, port 9)", None, b"gone")])
    assert status == 502 and "worker 1 (pid 7, port 9) did not answer" in body["detail"]


def test_workers_number_their_links_apart() -> None:
    one = ChannelSettings(link_port=0)
    assert [link_number(k, one) for k in range(4)] == [0, 1, 2, 3]
    numbers = {
        i: [link_number(k, ChannelSettings(workers=3, worker_index=i)) for k in range(4)]
        for i in range(3)
    }
    assert numbers == {0: [0, 3, 6, 9], 1: [1, 4, 7, 10], 2: [2, 5, 8, 11]}


def test_workers_need_a_shared_link_port_and_an_index_below_their_count() -> None:
    assert ChannelSettings(workers=4).control_plane
    assert not ChannelSettings(workers=4, worker_index=3).control_plane
    assert not ChannelSettings().control_plane
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, ChannelSettings)
    for argv, fault in (
        (["--workers", "2", "--link-port", "0"], "fixed --link-port"),
        (["--workers", "2", "--worker-index", "2"], "worker_index 2 of 2"),
        (["--workers", "65"], "workers"),
    ):
        with pytest.raises(ConfigError, match=fault):
            settings_from_args(ChannelSettings, parser.parse_args(argv))


def test_a_worker_is_configured_as_its_control_plane_with_its_index_and_port() -> None:
    config = build_config({"seed": 7, "capacity": 64}, read_env=False)
    settings = ChannelSettings(
        workers=2,
        control_token="t0ken",
        impair=["tx_to_rx.loss.probability=0.1"],
        channel_impairments={"rx_to_tx": {"delay": {"delay_ms": 3}}},
        max_links=9,
    )
    spec = json.loads(worker_spec(config, settings, index=1, port=41234))
    worker = ChannelSettings(**spec["settings"])
    assert build_config(spec["config"], read_env=False).digest() == config.digest()
    assert (worker.worker_index, worker.port, worker.workers) == (1, 41234, 2)
    assert worker.control_token.get_secret_value() == "t0ken"
    same = {"worker_index", "port", "control_token"}
    assert worker.model_dump(exclude=same) == settings.model_dump(exclude=same)
