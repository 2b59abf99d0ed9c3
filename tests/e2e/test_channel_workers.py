"""``hoplink channel --workers 2``: links through one link port, carried by two worker processes.

The channel runs as real processes (its control plane and two workers); the Tx ends are websocket
clients in the test and the Rx legs land on one websockets server in the test, which tells them
apart by the stream id of the HELLO each leg carries first (as in test_channel_links.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import serve

from experiments.demo import Processes, get_json, wait_for
from shared.protocol.messages import Corrupt, Hello, New, decode, encode
from tests.helpers import wait_until

LINKS = 8
FRAMES = 30  # per phase and link
HELLO = {"config_digest": "c", "model_digest": "m"}

pytestmark = pytest.mark.e2e


class RxLegs:
    """The Rx side: the seqs each leg carried and the CORRUPTs it got, by the HELLO's stream."""

    def __init__(self) -> None:
        self.seqs: dict[str, list[int]] = defaultdict(list)
        self.corrupts: Counter[str] = Counter()

    async def handler(self, ws) -> None:
        hello = decode(await ws.recv())
        assert isinstance(hello, Hello)
        await ws.send(encode(Hello(role="rx", **HELLO)))
        async for data in ws:
            message = decode(data)
            if isinstance(message, Corrupt):
                self.corrupts[hello.stream] += 1
            else:
                self.seqs[hello.stream].append(message.seq)

    def carried(self, seqs: range) -> dict[str, set[int]]:
        return {stream: set(got) & set(seqs) for stream, got in self.seqs.items()}


async def open_link(url: str, stream: str) -> ClientConnection:
    ws = await connect(url, compression=None)
    await ws.send(encode(Hello(role="tx", stream=stream, **HELLO)))
    assert isinstance(decode(await ws.recv()), Hello)
    return ws


async def send_frames(links: list[ClientConnection], seqs: range) -> None:
    for ws in links:
        for seq in seqs:
            await ws.send(encode(New(seq=seq, t=seq / 30, slot=1, latent=bytes(64))))


def streams() -> list[str]:
    return [f"tx-{i}" for i in range(LINKS)]


async def test_workers_carry_the_links_and_the_control_plane_sums_and_steers_them(
    tmp_path,
) -> None:
    legs = RxLegs()
    perfect, lost, half, again = (range(k * FRAMES, (k + 1) * FRAMES) for k in range(4))
    async with serve(legs.handler, "127.0.0.1", 0, compression=None) as server:
        rx_url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/link"
        with Processes(tmp_path) as procs:
            channel = procs.start("channel", ["channel", "--rx-url", rx_url, "--workers", "2"])
            async with httpx.AsyncClient(base_url=channel.url, timeout=10) as api:

                async def forward() -> dict:
                    return (await api.get("/stats")).json()["directions"]["tx_to_rx"]

                async def settled(count: int) -> bool:
                    """The channel took in ``count`` messages; each left it or was dropped."""
                    f = await forward()
                    return f["messages_in"] == count and f["messages_out"] + f["dropped"] == count

                links = [await open_link(channel.ws_url, stream) for stream in streams()]
                try:
                    # A perfect channel: every frame of every link reaches its Rx leg.
                    await send_frames(links, perfect)
                    await wait_until(
                        lambda: (
                            all(len(got) == FRAMES for got in legs.carried(perfect).values())
                            and len(legs.seqs) == LINKS
                        ),
                        30,
                        "every frame at the Rx",
                    )
                    stats = (await api.get("/stats")).json()
                    workers = stats["workers"]
                    worker_stats = [
                        get_json(f"http://127.0.0.1:{w['port']}/stats") for w in workers
                    ]

                    # Loss 1.0, set on the control plane, drops everything on every link.
                    new = {"type": "loss", "attributes": {"probability": 1.0}}
                    assert (await api.post("/impairments/tx_to_rx", json=new)).status_code == 201
                    for w in workers:
                        own = get_json(f"http://127.0.0.1:{w['port']}/impairments")
                        assert [(i["name"], i["attributes"]["probability"]) for i in own] == [
                            ("loss", 1.0)
                        ]
                    await send_frames(links, lost)
                    await wait_until(lambda: settled(LINKS * (2 * FRAMES + 1)), 30, "the drops")
                    assert (await forward())["dropped"] == LINKS * FRAMES

                    # Loss 0.5: each link draws its own pattern, whichever worker carries it.
                    patch = {"attributes": {"probability": 0.5}}
                    r = await api.patch("/impairments/tx_to_rx/loss", json=patch)
                    assert r.status_code == 200
                    await send_frames(links, half)
                    await wait_until(lambda: settled(LINKS * (3 * FRAMES + 1)), 30, "half lost")

                    # Removed from every worker: everything arrives again.
                    assert (await api.delete("/impairments/tx_to_rx/loss")).status_code == 204
                    for w in workers:
                        assert get_json(f"http://127.0.0.1:{w['port']}/impairments") == []
                    await send_frames(links, again)
                    await wait_until(
                        lambda: all(len(got) == FRAMES for got in legs.carried(again).values()),
                        30,
                        "every frame at the Rx once the loss is gone",
                    )

                    # A corruption event goes to every link of every worker.
                    r = await api.post("/events/corrupt", json={"rho": 0.05})
                    assert r.status_code == 200 and r.json()["links"] == LINKS
                    await wait_until(
                        lambda: sum(legs.corrupts.values()) == LINKS, 30, "the CORRUPTs"
                    )
                    final = (await api.get("/stats")).json()
                    metrics = (await api.get("/metrics")).text
                finally:
                    await asyncio.gather(*(ws.close() for ws in links))

    # The control plane's /stats sums both workers: every link, every message.
    assert [w["index"] for w in workers] == [0, 1]
    assert len({w["pid"] for w in workers} | {channel.process.pid}) == 3
    assert stats["link"]["links"] == stats["link"]["active"] == LINKS
    assert sum(w["links"] for w in workers) == LINKS
    assert stats["link"]["max_links"] == 2 * 1024  # --max-links holds per worker
    first = stats["directions"]["tx_to_rx"]
    assert first["messages_in"] == first["messages_out"] == LINKS * (FRAMES + 1)  # + the HELLOs
    assert [s["directions"]["tx_to_rx"]["messages_in"] for s in worker_stats] == [
        (FRAMES + 1) * w["links"] for w in workers
    ]
    # Worker i numbers its links i, i+2, i+4…: unique numbers, each seeding its own draws.
    numbers = sorted(link["number"] for link in stats["open_links"])
    assert len(set(numbers)) == LINKS
    for w, s in zip(workers, worker_stats, strict=True):
        own = [link["number"] for link in s["open_links"]]
        assert own == list(range(w["index"], 2 * w["links"], 2))

    # Everything sent under loss 1.0 was dropped; under 0.5, no two links lost the same frames.
    assert all(not got for got in legs.carried(lost).values())
    patterns = [frozenset(legs.carried(half)[stream]) for stream in streams()]
    assert len(set(patterns)) == LINKS and all(0 < len(p) < FRAMES for p in patterns)
    assert all(len(got) == FRAMES for got in legs.carried(again).values())
    forward_total = final["directions"]["tx_to_rx"]
    assert forward_total["messages_in"] == LINKS * (4 * FRAMES + 1)
    half_dropped = LINKS * FRAMES - sum(len(p) for p in patterns)
    assert forward_total["dropped"] == LINKS * FRAMES + half_dropped
    assert forward_total["impairments"]["loss"]["dropped"] == forward_total["dropped"]
    assert final["impairments"] == {"tx_to_rx": {}, "rx_to_tx": {}}
    assert final["events"]["corrupt"] == LINKS and set(legs.corrupts.values()) == {1}
    # /metrics reads the same sums, and the links open on each worker.
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
    }
    new_in = (("direction", "tx_to_rx"), ("type", "new"))
    assert samples[("hoplink_channel_messages_received_total", new_in)] == LINKS * 4 * FRAMES
    assert (
        sum(
            samples[("hoplink_channel_worker_links_active", (("worker", str(w["index"])),))]
            for w in workers
        )
        == sum(w["active"] for w in final["workers"])
        == LINKS
    )


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie not yet reaped by its new parent counts)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_workers_never_outlive_their_control_plane_nor_it_them(tmp_path) -> None:
    argv = ["channel", "--rx-url", "ws://127.0.0.1:9/link", "--workers", "2"]
    with Processes(tmp_path) as procs:
        # A worker killed: the control plane stops (status 1), and with it the other worker.
        channel = procs.start("channel", argv, key="a")
        pids = [w["pid"] for w in channel.stats()["workers"]]
        os.kill(pids[0], signal.SIGKILL)
        assert channel.process.wait(30) == 1
        wait_for(lambda: _gone(pids[1]), 30, "the other worker to stop")

        # The control plane killed (no chance to stop them): its workers stop by themselves.
        channel = procs.start("channel", argv, key="b")
        pids = [w["pid"] for w in channel.stats()["workers"]]
        channel.process.kill()
        wait_for(lambda: all(_gone(pid) for pid in pids), 30, "the workers to stop")
