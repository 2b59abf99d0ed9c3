"""``hoplink demo``: the three processes on loopback, a clip through a mildly impaired link.

Starts rx, channel and tx as separate processes (``python -m receiver`` …) on free loopback ports,
each only once the previous one answers ``/healthz``; prints the live URLs, the dashboard's first
(the channel serves it, see :mod:`channel.dashboard`); waits for the Tx to finish; reads the final
stats of all three and prints a compact summary that says what each figure means. The URLs are
printed first, before the children start (their ports are chosen up front). After the clip the
three keep running, and the dashboard with them, until Ctrl-C; ``--once`` (implied by ``--json``)
exits after the summary instead, ``--linger SECONDS`` after that long; ``--loop`` streams the clip
over and over until Ctrl-C, then prints the summary. The children are terminated on the way out,
Ctrl-C included. Their logs go to temporary files and are shown only when a child fails.

Also the launcher the end-to-end tests use (:class:`Processes`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.tables import fmt
from shared.config import LinkConfig

# Mild faults of a real link: rare bit errors on the forward path, 1 % loss, 5 ± 2 ms delay.
DEMO_IMPAIRMENTS = (
    "tx_to_rx.bit_errors.ber=1e-4",
    "tx_to_rx.loss.probability=0.01",
    "tx_to_rx.delay.delay_ms=5",
    "tx_to_rx.delay.jitter_ms=2",
)
MODULES = {"rx": "receiver", "channel": "channel", "tx": "transmitter"}


class DemoError(RuntimeError):
    """A child failed to start or the stream did not finish; the message says which and why."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it; a race with others is unlikely)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def request_json(method: str, url: str, body: Any = None, timeout: float = 5.0) -> Any:
    """``method`` ``url`` with a JSON ``body``; the decoded JSON answer (None when empty).

    The standard library only, so installed commands need no HTTP client beyond the runtime
    dependencies; an answer of 4xx/5xx raises :class:`urllib.error.HTTPError` (an OSError).
    """
    data = None if body is None else json.dumps(body).encode()
    headers = {} if body is None else {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        payload = response.read()
    return json.loads(payload) if payload else None


@dataclass
class Child:
    name: str
    port: int  # REST
    link_port: int  # the link websocket (rx and channel serve it; the Tx dials)
    process: subprocess.Popen
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.link_port}/link"

    def stats(self) -> dict[str, Any]:
        return get_json(f"{self.url}/stats")

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


@dataclass
class Processes:
    """Children started with one environment and terminated together (a context manager)."""

    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    children: dict[str, Child] = field(default_factory=dict)

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        port: int | None = None,
        link_port: int | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
        timeout: float = 60.0,
        key: str | None = None,
    ) -> Child:
        """Start ``argv`` (``[module-or-executable, args…]``); wait for its /healthz."""
        port = port or free_port()
        while link_port is None or link_port == port:  # two picks of the OS may meet
            link_port = free_port()
        key = key or name
        log_path = self.log_dir / f"{key}.log"
        # The ports go by environment (HOPLINK_PORT, HOPLINK_LINK_PORT), so any service command
        # takes them (the Tx has no link port and ignores it).
        child_env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            **self.env,
            **(env or {}),
            "HOPLINK_PORT": str(port),
            "HOPLINK_LINK_PORT": str(link_port),
        }
        command = argv if argv[0] == sys.executable else [sys.executable, "-m", *argv]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops the children
            )
        child = Child(name, port, link_port, process, log_path)
        self.children[key] = child
        if wait:
            self.wait_healthy(child, timeout)
        return child

    def wait_healthy(self, child: Child, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise DemoError(
                    f"{child.name} exited with status {child.process.returncode}:\n"
                    + child.log_tail()
                )
            with contextlib.suppress(OSError, ValueError):
                if get_json(f"{child.url}/healthz", timeout=1.0).get("status") == "ok":
                    return
            time.sleep(0.1)
        raise DemoError(
            f"{child.name} did not answer /healthz in {timeout:.0f} s:\n" + child.log_tail()
        )

    def stop(self, key: str, timeout: float = 5.0) -> int | None:
        child = self.children.pop(key, None)
        if child is None:
            return None
        process = child.process
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def stop_all(self) -> None:
        for key in reversed(list(self.children)):
            self.stop(key)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``predicate()`` until it returns a truthy value; DemoError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (OSError, ValueError) as exc:
            last_error, value = exc, None
        if value:
            return value
        time.sleep(interval)
    raise DemoError(
        f"timed out after {timeout:.0f} s waiting for {what}"
        + (f" (last error: {last_error})" if last_error else "")
    )


# --- the demo ------------------------------------------------------------------------------------


def add_impair_argument(parser: argparse.ArgumentParser) -> None:
    """``--impair`` as the demo and the soak take it: the channel's startup impairments."""
    parser.add_argument(
        "--impair",
        action="append",
        default=None,
        metavar="DIR.NAME.ATTR=VALUE",
        help="channel impairment (repeatable); default: " + " ".join(DEMO_IMPAIRMENTS),
    )


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", default="low_motion", help="scenario or video file")
    parser.add_argument("--frames", type=int, default=120, help="frames to stream (default 120)")
    parser.add_argument("--fps", type=float, default=30.0, help="frames per second (0: unpaced)")
    add_impair_argument(parser)
    parser.add_argument("--no-impairments", action="store_true", help="a perfect channel")
    parser.add_argument(
        "--json", action="store_true", help="print the final stats as JSON (implies --once)"
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="exit after the clip's summary (for scripts and tests); default: keep the "
        "processes and the dashboard up until Ctrl-C",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after (seconds)")
    parser.add_argument(
        "--linger",
        type=float,
        default=None,
        metavar="SECONDS",
        help="keep the processes (and the dashboard) live this long after the clip, then exit "
        "(default: until Ctrl-C; 0 with --once)",
    )
    parser.add_argument(
        "--loop",
        action="store_true",
        help="stream the clip over and over until Ctrl-C (then print the summary); "
        "--timeout does not apply",
    )


def start_stack(
    procs: Processes,
    *,
    rx_args: list[str],
    tx_args: list[str],
    impairments: list[str],
    config: list[str],
    ports: tuple[int | None, int | None, int | None] = (None, None, None),
) -> tuple[Child, Child, Child]:
    """rx; the channel dialing it (its dashboard linked to the Rx's and the Tx's APIs) with
    ``impairments``; the Tx dialing the channel, kept serving after its BYE (``--linger``)."""
    rx_port, ch_port, tx_port = ports
    tx_port = tx_port or free_port()  # known up front: the channel's dashboard links to it
    rx = procs.start("rx", ["receiver", *rx_args, *config], port=rx_port)
    channel = procs.start(
        "channel",
        ["channel", "--rx-url", rx.ws_url, "--rx-api", rx.url,
         "--tx-api", f"http://127.0.0.1:{tx_port}", *(f"--impair={i}" for i in impairments),
         *config],
        port=ch_port,
    )  # fmt: skip
    tx = procs.start(
        "tx", ["transmitter", "--url", channel.ws_url, *tx_args, "--linger", *config], port=tx_port
    )
    return rx, channel, tx


def config_flags(args: argparse.Namespace) -> list[str]:
    """The link configuration flags given to the demo, passed on to every child."""

    flags = []
    for name in LinkConfig.model_fields:
        value = getattr(args, name, None)
        if value is not None:
            flags += ["--" + name.replace("_", "-"), str(value)]
    return flags


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; SIGTERM is taken as Ctrl-C, so the children never outlive it."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        return _run_demo(args)
    try:
        return _run_demo(args)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_demo(args: argparse.Namespace) -> int:
    started = time.monotonic()
    config = config_flags(args)
    impairments = [] if args.no_impairments else (args.impair or list(DEMO_IMPAIRMENTS))
    clip = ["--frames", str(args.frames)]
    quiet = args.json
    with (
        tempfile.TemporaryDirectory(prefix="hoplink-demo-") as logs,
        Processes(Path(logs)) as procs,
    ):
        rx_port, ch_port, tx_port = free_port(), free_port(), free_port()
        urls = {name: f"http://127.0.0.1:{port}" for name, port in
                (("rx", rx_port), ("channel", ch_port), ("tx", tx_port))}  # fmt: skip
        if not quiet:  # the addresses first: they are known before anything starts
            print(
                f"hoplink demo: {args.scenario}, {args.frames} frames at "
                f"{args.fps or 'max'} fps{' in a loop' if args.loop else ''}; "
                f"channel: {', '.join(impairments) or 'perfect'}"
            )
            print(f"  dashboard {urls['channel']}/dashboard/")
            for name, url in urls.items():
                print(f"  {name:8s} {url}/stats  {url}/stats/stream  {url}/metrics")
            print("  starting rx, channel and tx (each loads the codec: a few seconds) …")
            sys.stdout.flush()
        rx, channel, tx = start_stack(
            procs,
            rx_args=["--reference", args.scenario, *clip],
            tx_args=["--scenario", args.scenario, *clip, "--fps", str(args.fps),
                     *(["--loop"] if args.loop else [])],
            impairments=impairments,
            config=config,
            ports=(rx_port, ch_port, tx_port),
        )  # fmt: skip
        if not quiet:
            print(f"  all three up after {time.monotonic() - started:.1f} s; streaming", flush=True)
        if args.loop:
            rx_stats, channel_stats, tx_stats = _until_interrupted(rx, channel, tx, quiet)
            wall = time.monotonic() - started
            _report(args, rx_stats, channel_stats, tx_stats, wall)
            return 0
        deadline = started + args.timeout

        def tx_done() -> dict | None:
            if tx.process.poll() is not None:
                raise DemoError(f"tx exited with status {tx.process.returncode}:\n" + tx.log_tail())
            stats = tx.stats()
            return stats if stats["link"]["finished"] or stats["link"]["refused"] else None

        tx_stats = wait_for(tx_done, deadline - time.monotonic(), "the transmitter to finish")
        if tx_stats["link"]["refused"]:
            raise DemoError(f"the link was refused: {tx_stats['link']['last_error']}")

        def rx_done() -> dict | None:
            stats = rx.stats()
            done = stats["link"]["session_ended"] and stats["quality"]["pending"] == 0
            return stats if done else None

        rx_stats = wait_for(rx_done, max(deadline - time.monotonic(), 5), "the receiver")
        channel_stats = channel.stats()
        tx_stats = tx.stats()
        wall = time.monotonic() - started
        _report(args, rx_stats, channel_stats, tx_stats, wall)
        linger = args.linger
        if linger is None:
            linger = 0.0 if args.once or args.json else math.inf
        if linger > 0:
            _linger(linger, dashboard_url(channel), quiet)
    return 0


def dashboard_url(channel: Child) -> str:
    """The live dashboard's address (served by the channel)."""
    return f"{channel.url}/dashboard/"


def _report(args: argparse.Namespace, rx: dict, channel: dict, tx: dict, wall: float) -> None:
    if args.json:
        print(json.dumps({"rx": rx, "channel": channel, "tx": tx, "wall_s": wall}, indent=2))
    else:
        print(summary_table(rx, channel, tx))
        print(f"wall time {wall:.1f} s")
        live = not (args.once or args.loop) and args.linger != 0
        print(explanation(rx, live=live))
    sys.stdout.flush()


def explanation(rx: dict, live: bool) -> str:
    """One line each: what the figures of the summary mean, and where to look next."""
    lines = [
        "what the figures mean:",
        "  semantic bits/frame  the paper's count (eq. 3): a reference + cue per hit, a d·b-bit "
        "latent per miss, + refreshes",
    ]
    if _link_bits(rx) is not None:
        lines.append(
            "  link bits/frame      every message both ways at its coded width (HELLO, DIGEST, "
            "MACs too): what comparisons use"
        )
    lines += [
        "  wire bits/frame      what msgpack + websocket framing put on the socket: the "
        "emulator's overhead, not the scheme's",
        "  PSNR dB              the frames the Rx showed vs the clip; the codec alone caps it:",
        "                       ~33 dB for the token codec at 240 px, ~20 dB at 64x64 "
        "(docs/results.md)",
        "next: "
        + ("the dashboard (live until Ctrl-C); " if live else "")
        + f"`hoplink sim --scenario {rx['quality'].get('reference') or 'low_motion'}` "
        "(in process); `hoplink table`",
    ]
    return "\n".join(lines)


def _link_bits(rx: dict) -> float | None:
    bits = rx.get("bits", {})
    return bits.get("link_per_frame", bits.get("link_bits_per_frame"))


def _until_interrupted(rx: Child, channel: Child, tx: Child, quiet: bool) -> tuple[dict, ...]:
    """Stream until Ctrl-C (or until a child dies); the three processes' last stats."""
    if not quiet:
        print("  streaming in a loop: Ctrl-C stops and prints the summary", flush=True)
    try:
        while True:
            for child in (rx, channel, tx):
                if child.process.poll() is not None:
                    raise DemoError(
                        f"{child.name} exited with status {child.process.returncode}:\n"
                        + child.log_tail()
                    )
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    return rx.stats(), channel.stats(), tx.stats()


def _linger(seconds: float, url: str, quiet: bool) -> None:
    if not quiet:
        until = "until Ctrl-C" if math.isinf(seconds) else f"for {seconds:g} s (Ctrl-C ends)"
        print(f"the dashboard stays live at {url} {until}", flush=True)
    deadline = time.monotonic() + seconds
    with contextlib.suppress(KeyboardInterrupt):
        while time.monotonic() < deadline:
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))


def summary_table(rx: dict, channel: dict, tx: dict) -> str:
    """The demo's compact report: what the Rx made of the frames, and what the channel did."""

    def num(x: Any) -> Any:
        return float("nan") if x is None else x

    outcomes = ", ".join(f"{k} {v}" for k, v in rx["frames_by_outcome"].items())
    c = rx["counters"]
    injected = []
    for direction, d in channel["directions"].items():
        for name, counters in d["impairments"].items():
            shown = {k: v for k, v in counters.items() if k != "matched" and v}
            if shown:
                injected.append(
                    f"{direction}.{name}: " + ", ".join(f"{k} {v}" for k, v in shown.items())
                )
    events = {k: v for k, v in channel["events"].items() if v}
    if events:
        injected.append("events: " + ", ".join(f"{k} {v}" for k, v in events.items()))
    rows = [
        ["frames (Tx sent / Rx settled)", f"{tx['frames_sent']} / {rx['frames']}"],
        ["outcomes", outcomes],
        ["hit rate", num(rx["hit_rate"])],
        ["semantic bits/frame (eq. 3)", num(rx["bits"]["semantic_per_frame"])],
        *([["link bits/frame", num(_link_bits(rx))]] if _link_bits(rx) is not None else []),
        ["wire bits/frame", num(rx["bits"]["wire_bits_per_frame"])],
        ["PSNR dB (mean)", num(rx["quality"]["psnr_mean"])],
        ["SSIM (mean)", num(rx["quality"]["ssim_mean"])],
        ["refreshes (requested / applied)", f"{c['refresh_requests']} / {c['refreshes_applied']}"],
        ["cue failures / lookups ok", f"{c['cue_failures']} / {c['lookups_ok']}"],
        ["bad messages at Rx", rx["traffic"]["decode_errors"] + c["errors"]],
        ["memory digests agree", rx["digest"]["agree"]],
        ["channel injections", "; ".join(injected) or "none"],
        [
            "Tx fps / reconnects",
            f"{num(tx['fps']):.1f} / {tx['traffic']['reconnects']}"
            if tx["fps"]
            else f"- / {tx['traffic']['reconnects']}",
        ],
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {fmt(v)}" for k, v in rows)


__all__ = [
    "DEMO_IMPAIRMENTS",
    "Child",
    "DemoError",
    "Processes",
    "add_demo_arguments",
    "dashboard_url",
    "explanation",
    "free_port",
    "get_json",
    "request_json",
    "run_demo",
    "summary_table",
    "wait_for",
]
