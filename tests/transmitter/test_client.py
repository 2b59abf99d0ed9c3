"""The Tx's frame source: preloaded or streamed, the frames are the same."""

from __future__ import annotations

import numpy as np

from shared.config import build_config
from shared.service import TxSettings
from transmitter.client import TxService


def _frames(service: TxService, n: int) -> list[np.ndarray]:
    return [service._next_frame() for _ in range(n)]


def test_preloaded_source_gives_the_same_frames_and_replays_on_loop(codec) -> None:
    config = build_config({}, read_env=False)
    streamed = TxService(config, TxSettings(scenario="low_motion", frames=4), codec)
    preloaded = TxService(
        config, TxSettings(scenario="low_motion", frames=4, preload=True, loop=True), codec
    )
    first = _frames(streamed, 5)
    assert first[4] is None  # the end of a 4-frame source
    again = _frames(preloaded, 8)
    for a, b in zip(first[:4], again[:4], strict=True):
        assert np.array_equal(a, b)
    for a, b in zip(again[:4], again[4:], strict=True):  # the loop replays the clip
        assert np.array_equal(a, b)


async def test_no_hello_in_time_is_retried_with_backoff_not_fatal(codec) -> None:
    """A receiver that never answers the HELLO (a long channel delay, a restarting Rx): the Tx
    closes with 4007, counts it and dials again; it does not stop."""
    import asyncio

    from websockets.asyncio.server import serve

    from shared.protocol.handshake import CloseCode

    hellos: list[bytes] = []
    closes: list[int] = []

    async def silent(ws) -> None:
        hellos.append(await ws.recv())
        await ws.wait_closed()
        closes.append(ws.close_code)

    config = build_config({}, read_env=False)
    async with serve(silent, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        settings = TxSettings(
            url=f"ws://127.0.0.1:{port}/link",
            frames=4,
            hello_timeout=0.2,
            backoff_initial=0.05,
            backoff_max=0.1,
        )
        tx = TxService(config, settings, codec)
        await tx.start()
        try:
            async with asyncio.timeout(30):
                while tx.traffic.hello_timeouts < 3:
                    await asyncio.sleep(0.05)
            assert not tx.refused and not tx._done.done()
        finally:
            await tx.stop()
    assert len(hellos) >= 3 and CloseCode.HELLO_TIMEOUT in closes
    assert tx.last_close[0] == CloseCode.HELLO_TIMEOUT
