"""The channel as a hop: added latency and message throughput, and how it scales with links.

Floors come from the same run: a bare forwarder written with the same websocket library and the
same settings (no compression, same frame size limit), and a direct connection to the sink.
Every process here talks only to 127.0.0.1. The scale section needs two open files per link in
the channel process (the Tx's socket and the Rx leg's).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import numpy as np
from msgpack import unpackb
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from benchmarks.timing import cpu_seconds, percentiles, rss_mb
from experiments.demo import get_json
from shared.protocol.messages import Hello, New, ProtocolError, decode, encode

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
async def channel_process(target: str, workers: int = 1):
    """The real channel (``python -m channel``), no impairments; with ``workers`` > 1, its
    control plane and that many worker processes behind the one link port. Yields its link URL,
    the PIDs of its processes (the control plane's first) and its REST base."""
    port, link_port = free_port(), free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HOPLINK_LOG_LEVEL": "warning"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "channel", "--port", str(port), "--link-port", str(link_port),
         "--rx-url", target, "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await _wait_healthy(port)
        api = f"http://127.0.0.1:{port}"
        stats = await asyncio.to_thread(get_json, f"{api}/stats")
        pids = [proc.pid, *(worker["pid"] for worker in stats["workers"])]
        yield f"ws://127.0.0.1:{link_port}/link", pids, api
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def _wait_healthy(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            health = await asyncio.to_thread(get_json, f"http://127.0.0.1:{port}/healthz", 1.0)
            if health.get("status") == "ok":
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"channel on port {port} did not become healthy")


async def round_trips(urls: list[str], payload: bytes, count: int) -> list[list[float]]:
    """One message at a time, seconds from send to echo, over each URL in turn (the paths are
    interleaved message by message, so a machine whose load or clock drifts weighs on all of
    them alike)."""
    async with contextlib.AsyncExitStack() as stack:
        links = [await stack.enter_async_context(connect(u, **WS_OPTIONS)) for u in urls]
        for ws in links:
            for _ in range(20):  # warm-up
                await ws.send(payload)
                await ws.recv()
        samples: list[list[float]] = [[] for _ in urls]
        for _ in range(count):
            for ws, times in zip(links, samples, strict=True):
                start = time.perf_counter()
                await ws.send(payload)
                await ws.recv()
                times.append(time.perf_counter() - start)
    return samples


async def throughput(urls: list[str], payload: bytes, count: int, rounds: int = 5) -> list[float]:
    """Messages per second over each URL, sent back to back and counted when their echoes are
    all back: the median of ``rounds`` bursts of ``count / rounds``, the URLs taking turns."""
    burst = max(count // rounds, 1)
    rates: list[list[float]] = [[] for _ in urls]
    async with contextlib.AsyncExitStack() as stack:
        links = [await stack.enter_async_context(connect(u, **WS_OPTIONS)) for u in urls]
        for _ in range(rounds):
            for ws, rate in zip(links, rates, strict=True):

                async def drain(ws=ws):
                    for _ in range(burst):
                        await ws.recv()

                start = time.perf_counter()
                reader = asyncio.create_task(drain())
                for _ in range(burst):
                    await ws.send(payload)
                await reader
                rate.append(burst / (time.perf_counter() - start))
    return [float(np.median(rate)) for rate in rates]


async def hop(sizes=(100, 600), count: int = 2000) -> list[dict]:
    """Added one-way latency and messages/s of the channel and of a bare forwarder, each in a
    process of its own (a hop between processes pays the wake-up of another process, which an
    in-process forwarder would not), both forwarding to an echo sink in this process. The three
    paths take turns message by message (latency) and burst by burst (throughput)."""
    rows = []
    async with echo_sink() as sink, channel_process(sink) as (ch, _, _):
        with ChildProcess("forwarder", sink) as forwarder:
            for size in sizes:
                payload = message_of_size(size)
                direct, via_bare, via_channel = (
                    percentiles(times)
                    for times in await round_trips([sink, forwarder.url, ch], payload, count)
                )
                # A round trip crosses the hop twice: added one-way latency is half the extra RTT.
                add_bare = {k: (via_bare[k] - direct[k]) / 2 for k in direct}
                add_channel = {k: (via_channel[k] - direct[k]) / 2 for k in direct}
                tput_bare, tput_channel = await throughput([forwarder.url, ch], payload, count)
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


# --- scale: N links at 30 fps each through one channel process -----------------------------------
#
# Simulated endpoints keep the load light: each Tx is a websocket client that sends a HELLO, waits
# for the Rx's, then one NEW of 100-600 B every 1/fps s whose ``t`` is its send time on
# time.monotonic() (CLOCK_MONOTONIC: one clock for every process of the machine). One Rx sink, in
# its own process so that it does not share an event loop with the senders, answers every leg's
# HELLO and takes each frame's one-way latency at arrival. The same senders run straight to the
# sink (the reference for "added" latency), through a bare forwarder process, and through the
# channel process.

SCALE_BYTES = (100, 600)  # frame messages on the wire, drawn uniformly in this range
BENCH_HELLO = {"config_digest": "bench", "model_digest": "bench"}


def frame_latents(count: int = 64, seed: int = 0) -> list[bytes]:
    """Latent fields that make NEW messages of sizes spread over :data:`SCALE_BYTES`."""
    overhead = len(message_of_size(0))
    sizes = np.random.default_rng(seed).integers(SCALE_BYTES[0], SCALE_BYTES[1] + 1, count)
    return [bytes(max(0, int(size) - overhead)) for size in sizes]


async def _rx_sink(commands: Callable[[], Awaitable[str]], reply: Callable[[str], None]) -> None:
    """The Rx of every link (run in its own process): replies its URL, then answers each
    ``collect`` with what arrived since the last one, once every leg has closed (or after 10 s)."""
    got = {"legs": 0, "open": 0, "arrivals": [], "latencies": []}

    async def handler(ws) -> None:
        try:
            hello = decode(await ws.recv())
        except (ConnectionClosed, ProtocolError):
            return
        if not isinstance(hello, Hello):
            return
        await ws.send(encode(Hello(role="rx", **BENCH_HELLO)))
        got["legs"] += 1
        got["open"] += 1
        arrivals, latencies = got["arrivals"], got["latencies"]
        try:
            async for data in ws:
                now = time.monotonic()
                arrivals.append(now)
                latencies.append(now - unpackb(data)["t"])
        except ConnectionClosed:
            pass
        finally:
            got["open"] -= 1

    async with serve(handler, "127.0.0.1", 0, **WS_OPTIONS) as server:
        reply(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/link")
        while await commands() == "collect":
            deadline = time.monotonic() + 10
            while got["open"] and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            reply(json.dumps({k: got[k] for k in ("legs", "arrivals", "latencies")}))
            got.update(legs=0, arrivals=[], latencies=[])


async def _forwarder(
    commands: Callable[[], Awaitable[str]], reply: Callable[[str], None], target: str
) -> None:
    """The bare forwarder in its own process: replies its URL, serves until ``stop``."""
    async with bare_forwarder(target) as url:
        reply(url)
        while await commands() != "stop":
            pass


class ChildProcess:
    """A helper process of this benchmark (``python -m benchmarks.channel_hop ROLE ...``),
    driven by one-line commands on its stdin, answering one line on its stdout."""

    def __init__(self, role: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.channel_hop", role, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        self.pid = self.process.pid
        self.url = self._line()

    def _line(self) -> str:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark helper {self.process.args[3:]} exited")
        return line.decode().strip()

    async def ask(self, command: str) -> str:
        self.process.stdin.write(f"{command}\n".encode())
        self.process.stdin.flush()
        return await asyncio.to_thread(self._line)

    def __enter__(self) -> ChildProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.process.stdin.write(b"stop\n")
            self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _child_main(argv: list[str]) -> None:
    """Entry point of a :class:`ChildProcess`: ``sink`` or ``forwarder TARGET``."""

    def reply(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def commands() -> str:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            return line.strip() or "stop"  # end of input: the parent is gone

        if argv[0] == "sink":
            await _rx_sink(commands, reply)
        else:
            await _forwarder(commands, reply, argv[1])

    asyncio.run(main())


async def _open_link(url: str, number: int) -> ClientConnection | None:
    """A simulated Tx's link after the HELLO exchange; None if it was refused."""
    ws = await connect(url, **WS_OPTIONS)
    try:
        await ws.send(encode(Hello(role="tx", stream=f"link-{number}", **BENCH_HELLO)))
        await ws.recv()
    except ConnectionClosed:
        return None
    return ws


async def _paced_frames(
    ws: ClientConnection, number: int, fps: float, start: float, stop: float, latents: list[bytes]
) -> int:
    """NEWs at ``fps`` from ``start`` until ``stop`` (late ones go at once); returns how many."""
    sent = 0
    with contextlib.suppress(ConnectionClosed):
        while (due := start + sent / fps) < stop:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            latent = latents[(number + sent) % len(latents)]
            await ws.send(encode(New(seq=sent, t=time.monotonic(), slot=number, latent=latent)))
            sent += 1
    return sent


async def scale_run(
    url: str,
    sink: ChildProcess,
    n: int,
    fps: float,
    seconds: float,
    hop_pids: Sequence[int] = (),
) -> dict:
    """``n`` links at ``fps`` each for ``seconds`` through ``url`` into ``sink``. CPU in cores
    busy over the paced window: the senders (this process), the sink, and the hop's processes
    (``hop_pids``, summed) with their CPU per delivered message and their RSS."""
    latents = frame_latents()
    opened = await asyncio.gather(*(_open_link(url, i) for i in range(n)))
    links = [ws for ws in opened if ws is not None]
    start = time.monotonic() + 0.1
    stop = start + seconds
    hop_cpu = sum(cpu_seconds(pid) for pid in hop_pids)
    senders_cpu, sink_cpu = sum(os.times()[:2]), cpu_seconds(sink.pid)
    sent = await asyncio.gather(
        *(
            _paced_frames(ws, i, fps, start + i / (n * fps), stop, latents)
            for i, ws in enumerate(links)
        )
    )
    wall = time.monotonic() - start
    load = {
        "senders": (sum(os.times()[:2]) - senders_cpu) / wall,
        "sink": (cpu_seconds(sink.pid) - sink_cpu) / wall,
    }
    hop_cpu = sum(cpu_seconds(pid) for pid in hop_pids) - hop_cpu if hop_pids else float("nan")
    rss = sum(rss_mb(pid) for pid in hop_pids) if hop_pids else float("nan")
    await asyncio.gather(*(ws.close() for ws in links))
    got = json.loads(await sink.ask("collect"))
    delivered = len(got["latencies"])
    in_window = sum(1 for t in got["arrivals"] if t <= stop)
    latency = percentiles(got["latencies"]) if delivered else {}
    return {
        "links": len(links),
        "refused": n - len(links),
        "legs": got["legs"],
        "sent": sum(sent),
        "delivered": delivered,
        "lost": sum(sent) - delivered,
        "delivered_msgs_per_s": in_window / seconds,
        "p50_ms": latency.get("p50_ms", float("nan")),
        "p99_ms": latency.get("p99_ms", float("nan")),
        "cpu": hop_cpu / wall,
        "cpu_us_per_msg": hop_cpu / max(in_window, 1) * 1e6,
        "rss_mb": rss,
        "load_cpu": load,
    }


async def scale(
    links=(1, 10, 100, 500), fps: float = 30.0, seconds: float = 3.0, workers: int = 1
) -> list[dict]:
    """N links at ``fps`` each through ONE channel process, beside a bare forwarder process and
    straight to the sink at the same N (in turn at each N, so that a machine whose load drifts
    weighs on all alike): delivered messages/s, one-way p50/p99 and what the hop adds to it,
    losses and refusals, and each hop process's CPU (cores, and µs per message) and RSS.
    ``accounting`` holds the channel run's counts: every frame sent is delivered or lost.

    With ``workers`` > 1, the same N also go through a channel of that many worker processes
    behind one link port (``--workers``): the ``*_workers`` columns, CPU and RSS summed over its
    processes, ``accounting_workers`` with the links each worker carried."""
    rows = []
    async with contextlib.AsyncExitStack() as stack:
        sink = stack.enter_context(ChildProcess("sink"))
        forwarder = stack.enter_context(ChildProcess("forwarder", sink.url))
        channel = await stack.enter_async_context(channel_process(sink.url))
        scaled = None
        if workers > 1:
            scaled = await stack.enter_async_context(channel_process(sink.url, workers))
        for n in links:
            direct = await scale_run(sink.url, sink, n, fps, seconds)
            bare = await scale_run(forwarder.url, sink, n, fps, seconds, [forwarder.pid])
            run, accounting = await _channel_run(channel, sink, n, fps, seconds)
            row = {
                "links": n,
                "offered_msgs_per_s": n * fps,
                "delivered_msgs_per_s": run["delivered_msgs_per_s"],
                "delivered_msgs_per_s_bare": bare["delivered_msgs_per_s"],
                "lost": run["lost"],
                "refused": run["refused"],
                "p50_ms_direct": direct["p50_ms"],
                "p99_ms_direct": direct["p99_ms"],
                "added_p50_ms": run["p50_ms"] - direct["p50_ms"],
                "added_p99_ms": run["p99_ms"] - direct["p99_ms"],
                "added_p50_ms_bare": bare["p50_ms"] - direct["p50_ms"],
                "added_p99_ms_bare": bare["p99_ms"] - direct["p99_ms"],
                "channel_cpu": run["cpu"],
                "bare_cpu": bare["cpu"],
                "channel_us_per_msg": run["cpu_us_per_msg"],
                "bare_us_per_msg": bare["cpu_us_per_msg"],
                "channel_rss_mb": run["rss_mb"],
                "load_cpu": run["load_cpu"],
                "accounting": accounting,
            }
            if scaled is not None:
                run, accounting = await _channel_run(scaled, sink, n, fps, seconds)
                row |= {
                    "channel_workers": workers,
                    "delivered_msgs_per_s_workers": run["delivered_msgs_per_s"],
                    "lost_workers": run["lost"],
                    "added_p50_ms_workers": run["p50_ms"] - direct["p50_ms"],
                    "added_p99_ms_workers": run["p99_ms"] - direct["p99_ms"],
                    "workers_cpu": run["cpu"],
                    "workers_us_per_msg": run["cpu_us_per_msg"],
                    "workers_rss_mb": run["rss_mb"],
                    "load_cpu_workers": run["load_cpu"],
                    "accounting_workers": accounting,
                }
            rows.append(row)
    return rows


async def _channel_run(
    channel: tuple[str, list[int], str], sink: ChildProcess, n: int, fps: float, seconds: float
) -> tuple[dict, dict]:
    """One :func:`scale_run` through a channel from :func:`channel_process`, and its accounting:
    the run's counts beside the channel's own (and the links each of its workers took)."""
    url, pids, api = channel
    before = await asyncio.to_thread(get_json, f"{api}/stats")
    run = await scale_run(url, sink, n, fps, seconds, pids)
    after = await asyncio.to_thread(get_json, f"{api}/stats")
    accounting = {k: run[k] for k in ("sent", "delivered", "lost", "refused", "legs")}
    (in_before, out_before), (in_after, out_after) = _frames_counted(before), _frames_counted(after)
    accounting["channel_frames_in"] = in_after - in_before
    accounting["channel_frames_out"] = out_after - out_before
    if after["workers"]:
        accounting["links_per_worker"] = [
            a["links"] - b["links"]
            for a, b in zip(after["workers"], before["workers"], strict=True)
        ]
    return run, accounting


def _frames_counted(stats: dict) -> tuple[int, int]:
    """NEW messages the channel took in and sent on so far (summed over its links)."""
    forward = stats["directions"]["tx_to_rx"]
    return forward["types_in"].get("new", 0), forward["types_out"].get("new", 0)


if __name__ == "__main__":
    _child_main(sys.argv[1:])
