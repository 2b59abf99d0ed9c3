"""The channel as a hop: added latency and message throughput, and how it scales with links.

Floors come from the same run: a bare forwarder written with the same websocket library and the
same settings (no compression, same frame size limit), and a direct connection to the sink.
Every process here talks only to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from contextlib import asynccontextmanager

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from benchmarks.timing import percentiles
from shared.protocol import New, encode

WS_OPTIONS = {"compression": None, "max_size": 1 << 20}


def message_of_size(size: int) -> bytes:
    """A valid NEW message of about ``size`` bytes on the wire."""
    overhead = len(encode(New(seq=1, t=0.0, slot=1, latent=b"")))
    return encode(New(seq=1, t=0.0, slot=1, latent=bytes(max(0, size - overhead))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _echo(ws) -> None:
    async for data in ws:
        await ws.send(data)


@asynccontextmanager
async def echo_sink():
    """A websocket server that echoes every message (stands in for the Rx)."""
    async with serve(_echo, "127.0.0.1", 0, **WS_OPTIONS) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/link"


@asynccontextmanager
async def bare_forwarder(target: str):
    """The floor: a forwarder with the same library and settings, no impairment logic."""

    async def handler(client):
        async with connect(target, **WS_OPTIONS) as upstream:

            async def pump(src, dst):
                async for data in src:
                    await dst.send(data)

            tasks = {asyncio.create_task(pump(client, upstream)),
                     asyncio.create_task(pump(upstream, client))}  # fmt: skip
            # Either side closing ends the link (as the channel does).
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()

    async with serve(handler, "127.0.0.1", 0, **WS_OPTIONS) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/link"


@asynccontextmanager
async def channel_process(target: str):
    """The real channel process (``python -m channel``), no impairments."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HOPLINK_LOG_LEVEL": "warning"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "channel", "--port", str(port), "--rx-url", target],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await _wait_healthy(port)
        yield f"ws://127.0.0.1:{port}/link", proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def _wait_healthy(port: int, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"channel on port {port} did not become healthy")


async def round_trips(url: str, payload: bytes, count: int) -> list[float]:
    """One message at a time: seconds from send to echo."""
    samples = []
    async with connect(url, **WS_OPTIONS) as ws:
        for _ in range(20):  # warm-up
            await ws.send(payload)
            await ws.recv()
        for _ in range(count):
            start = time.perf_counter()
            await ws.send(payload)
            await ws.recv()
            samples.append(time.perf_counter() - start)
    return samples


async def throughput(url: str, payload: bytes, count: int) -> float:
    """Messages per second, sent back to back, counted when their echoes are all back."""
    async with connect(url, **WS_OPTIONS) as ws:

        async def drain():
            for _ in range(count):
                await ws.recv()

        start = time.perf_counter()
        reader = asyncio.create_task(drain())
        for _ in range(count):
            await ws.send(payload)
        await reader
        return count / (time.perf_counter() - start)


async def hop(sizes=(100, 600), count: int = 2000) -> list[dict]:
    rows = []
    async with echo_sink() as sink, bare_forwarder(sink) as bare, channel_process(sink) as (ch, _):
        for size in sizes:
            payload = message_of_size(size)
            direct = percentiles(await round_trips(sink, payload, count))
            via_bare = percentiles(await round_trips(bare, payload, count))
            via_channel = percentiles(await round_trips(ch, payload, count))
            # Each round trip crosses the hop twice: added one-way latency is half the extra RTT.
            add_bare = {k: (via_bare[k] - direct[k]) / 2 for k in direct}
            add_channel = {k: (via_channel[k] - direct[k]) / 2 for k in direct}
            tput_bare = await throughput(bare, payload, count)
            tput_channel = await throughput(ch, payload, count)
            rows.append(
                {
                    "bytes": len(payload),
                    "added_p50_ms_channel": add_channel["p50_ms"],
                    "added_p99_ms_channel": add_channel["p99_ms"],
                    "added_p50_ms_bare": add_bare["p50_ms"],
                    "added_p99_ms_bare": add_bare["p99_ms"],
                    "latency_ratio_p50": add_channel["p50_ms"] / max(add_bare["p50_ms"], 1e-9),
                    "msgs_per_s_channel": tput_channel,
                    "msgs_per_s_bare": tput_bare,
                    "throughput_ratio": tput_channel / tput_bare,
                }
            )
    return rows


async def scale(links=(1, 10, 100, 500), fps: float = 30.0, seconds: float = 3.0) -> list[dict]:
    """N links at ``fps`` each through ONE channel process: p99 round trip, drops, CPU.

    A channel process carries one link (a second Tx is refused with 4004), so every link beyond
    the first is counted in ``links_refused``: N links need N channel processes today.
    """
    payload = message_of_size(60)  # a HIT-sized message
    rows = []
    async with echo_sink() as sink, channel_process(sink) as (ch, pid):
        for n in links:
            cpu_before = _cpu_seconds(pid)
            started = time.perf_counter()
            results = await asyncio.gather(
                *(_paced_link(ch, payload, fps, seconds, i / (n * fps)) for i in range(n))
            )
            wall = time.perf_counter() - started
            cpu = (_cpu_seconds(pid) - cpu_before) / wall
            samples = [s for r in results for s in r[0]]
            sent = sum(r[1] for r in results)
            rows.append(
                {
                    "links": n,
                    "links_refused": sum(r[2] for r in results),
                    "offered_msgs_per_s": n * fps,
                    "sent": sent,
                    "echoed": len(samples),
                    "lost": sent - len(samples),
                    "rtt_p50_ms": percentiles(samples)["p50_ms"] if samples else float("nan"),
                    "rtt_p99_ms": percentiles(samples)["p99_ms"] if samples else float("nan"),
                    "channel_cpu": cpu,
                }
            )
    return rows


async def _paced_link(url, payload, fps, seconds, offset):
    try:
        return await _paced_link_inner(url, payload, fps, seconds, offset)
    except ConnectionClosed:  # the channel carries one link per process (close 4004)
        return [], 0, True


async def _paced_link_inner(url, payload, fps, seconds, offset):
    samples: list[float] = []
    sent = 0
    async with connect(url, **WS_OPTIONS) as ws:
        pending: asyncio.Queue[float] = asyncio.Queue()

        async def reader():
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await ws.recv()
                    samples.append(time.perf_counter() - await pending.get())

        task = asyncio.create_task(reader())
        await asyncio.sleep(offset)
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            pending.put_nowait(time.perf_counter())
            await ws.send(payload)
            sent += 1
            target = start + sent / fps
            await asyncio.sleep(max(0.0, target - time.perf_counter()))
        await asyncio.sleep(0.5)  # let the last echoes come back
        task.cancel()
    return samples, sent, False


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
