"""One channel process carries several links: each Tx gets its own Rx leg, impairments and stats.

The channel runs as a real process (``python -m channel``); the Tx ends are websocket clients in
the test and the Rx legs land on one websockets server in the test, which tells them apart by the
stream id of the HELLO each leg carries first.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from experiments.demo import Processes, get_json, wait_for
from shared.protocol.messages import Hello, New, RefreshRequest, decode, encode
from tests.helpers import wait_until

FRAMES = 200

pytestmark = pytest.mark.e2e


class RxLegs:
    """The Rx side: records what each leg carried, keyed by the stream id of its HELLO, and
    answers every NEW with a REFRESH_REQUEST naming the same slot (traffic back to that Tx)."""

    def __init__(self) -> None:
        self.seqs: dict[str, list[int]] = defaultdict(list)
        self.slots: dict[str, set[int]] = defaultdict(set)

    async def handler(self, ws) -> None:
        hello = decode(await ws.recv())
        assert isinstance(hello, Hello)
        await ws.send(encode(Hello(role="rx", config_digest="c", model_digest="m")))
        async for data in ws:
            message = decode(data)
            self.seqs[hello.stream].append(message.seq)
            self.slots[hello.stream].add(message.slot)
            await ws.send(encode(RefreshRequest(ref=message.slot, seq=message.seq)))


async def tx_link(url: str, stream: str, slot: int, settled) -> list[RefreshRequest]:
    """Send a HELLO and FRAMES NEWs on one link; return the replies that came back on it, read
    until ``settled(stream, replies)`` says that every reply due has arrived."""
    hello = Hello(role="tx", config_digest="c", model_digest="m", stream=stream)
    replies = []
    async with connect(url, compression=None) as ws:
        await ws.send(encode(hello))
        assert isinstance(decode(await ws.recv()), Hello)

        async def read() -> None:
            async for data in ws:
                replies.append(decode(data))

        reader = asyncio.create_task(read())

        async def all_replies() -> bool:
            if reader.done():
                reader.result()  # the reader's error, if it met one
                pytest.fail(f"the channel closed {stream} before its replies came back")
            return await settled(stream, replies)

        try:
            for seq in range(FRAMES):
                await ws.send(encode(New(seq=seq, t=seq / 30, slot=slot, latent=bytes(64))))
                await asyncio.sleep(0)
            await wait_until(all_replies, 30, f"every frame and its reply on {stream}")
        finally:
            reader.cancel()
    return replies


async def test_two_links_through_one_channel_are_separate(tmp_path) -> None:
    legs = RxLegs()
    async with serve(legs.handler, "127.0.0.1", 0, compression=None) as server:
        rx_url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/link"
        with Processes(tmp_path) as procs:
            channel = procs.start("channel", ["channel", "--rx-url", rx_url, "--max-links", "2"])
            # Loss on the forward direction: each link draws its own, independent pattern.
            r = httpx.put(f"{channel.url}/impairments/tx_to_rx/loss", json={"probability": 0.3})
            assert r.status_code == 200
            async with connect(channel.ws_url, compression=None) as a:  # holds link 0 open
                await a.send(encode(Hello(role="tx", config_digest="c", model_digest="m")))
                await a.recv()
                async with connect(channel.ws_url, compression=None) as b:  # link 1
                    await b.send(encode(Hello(role="tx", config_digest="c", model_digest="m")))
                    await b.recv()
                    open_links = get_json(f"{channel.url}/stats")["open_links"]
                    assert [link["number"] for link in open_links] == [0, 1]
                    async with connect(channel.ws_url, compression=None) as third:
                        with pytest.raises(ConnectionClosed) as busy:
                            await third.recv()
                    assert busy.value.rcvd.code == 4004
                    assert "--max-links 2" in busy.value.rcvd.reason
            wait_for(lambda: get_json(f"{channel.url}/stats")["open_links"] == [], 10, "closes")

            async with httpx.AsyncClient(base_url=channel.url, timeout=5) as client:

                async def settled(stream: str, replies: list) -> bool:
                    """Every frame of both links is in the channel and out of it or dropped, the
                    Rx legs hold what came out, and this Tx holds the replies to its leg's."""
                    forward = (await client.get("/stats")).json()["directions"]["tx_to_rx"]
                    carried = sum(len(seqs) for seqs in legs.seqs.values())
                    return (
                        forward["messages_in"] == 2 * (FRAMES + 1) + 2
                        and forward["messages_out"] + forward["dropped"] == forward["messages_in"]
                        and forward["messages_out"] == carried + 4  # + the HELLOs
                        and len(replies) >= len(legs.seqs[stream])
                    )

                replies = await asyncio.gather(
                    tx_link(channel.ws_url, "tx-a", 1, settled),
                    tx_link(channel.ws_url, "tx-b", 2, settled),
                )

            def both_closed():
                s = get_json(f"{channel.url}/stats")
                return s if s["link"]["links"] == 4 and not s["open_links"] else None

            stats = wait_for(both_closed, 10, "both links to close")

    # Each Rx leg carried only its own Tx's frames, and each Tx got only its own replies back.
    assert legs.slots["tx-a"] == {1} and legs.slots["tx-b"] == {2}
    assert {r.ref for r in replies[0]} == {1} and {r.ref for r in replies[1]} == {2}
    assert [r.seq for r in replies[0]] == legs.seqs["tx-a"]
    assert [r.seq for r in replies[1]] == legs.seqs["tx-b"]
    # Independent loss: both links lost frames, not the same ones.
    a, b = set(legs.seqs["tx-a"]), set(legs.seqs["tx-b"])
    assert 0 < len(a) < FRAMES and 0 < len(b) < FRAMES and a != b
    # The totals sum both links; every frame sent is delivered or counted dropped.
    forward = stats["directions"]["tx_to_rx"]
    assert forward["messages_in"] == 2 * (FRAMES + 1) + 2  # + the two HELLO-only links
    assert forward["messages_out"] + forward["dropped"] == forward["messages_in"]
    assert forward["messages_out"] == len(a) + len(b) + 4  # + the HELLOs (control plane)
    assert stats["link"]["links_refused"] == 1 and stats["link"]["max_links"] == 2
    assert stats["impairments"]["tx_to_rx"]["loss"]["counters"]["dropped"] == forward["dropped"]
    # Every reply the channel carried back was read by its Tx (none came after the wait ended).
    backward = stats["directions"]["rx_to_tx"]
    assert backward["types_out"] == {"hello": 4, "refresh_request": len(replies[0] + replies[1])}
