"""``hoplink soak``: rx, channel and tx on loopback for N minutes; RSS growth and frame accounting.

Starts the three processes like ``hoplink demo`` (:class:`experiments.demo.Processes`, free
loopback ports, the demo's mild impairments unless ``--impair`` says otherwise) and streams
``minutes × fps`` frames of a scenario, paced at ``--fps``. The Tx streams a finite clip of that
length rather than ``--loop``: a looping Tx stops only by a signal, which cancels its stream
without a BYE, and without BYE the Rx cannot settle the last frames, so no exact accounting.
The Rx runs without ``--reference``: past the reference clip its ground truth would be wrong, and
a reference as long as the soak would be cached whole (growth by design, not a leak).

Every ``--interval`` seconds it reads each child's resident set size (``VmRSS`` in
``/proc/PID/status``). After a warm-up (20 % of the stream, at least 30 s when the stream is long
enough) it fits RSS against time by least squares, per process: the slope is the growth in MB/h
(MB = 10⁶ bytes). When the Tx has sent its BYE and the Rx has settled every frame, it checks the
accounting: the outcomes the Rx counted sum to the frames the Tx decided, in one session.

Exit status 0 when every frame is accounted for and the Rx grew at most ``--max-rx-growth`` MB/h;
1 otherwise, with the reason. Growth is judged only over a window of at least
:data:`MIN_JUDGED_S` seconds after the warm-up (a shorter slope, extrapolated to an hour, is noise);
the output says when it was not judged. Progress goes to stderr about every 10 s.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.demo import (
    DEMO_IMPAIRMENTS,
    Child,
    DemoError,
    Processes,
    add_impair_argument,
    config_flags,
    start_stack,
    wait_for,
)

MB = 1e6
WARMUP_FRACTION = 0.2
WARMUP_MIN_S = 30.0
MIN_JUDGED_S = 120.0  # post-warm-up window below which a slope per hour is not judged
PROGRESS_EVERY_S = 10.0
SETTLE_TIMEOUT_S = 60.0  # for the Rx to settle after BYE (bye_wait and the quality queue)
CHILD_ENV = {"HOPLINK_LOG_LEVEL": "warning"}


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` (``VmRSS``), or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # the kernel writes kB (KiB)
    except (OSError, ValueError, IndexError):
        return None
    return None


def slope_per_hour(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(seconds, MB)`` samples, in MB per hour; None under 2 times."""
    if len(samples) < 2:
        return None
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_y = sum(y for _, y in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (y - mean_y) for t, y in samples)
    return cov / var * 3600.0


def warmup_seconds(stream_s: float) -> float:
    """20 % of the stream, raised to 30 s when that leaves at least half of it to measure."""
    return max(WARMUP_FRACTION * stream_s, min(WARMUP_MIN_S, 0.5 * stream_s))


def default_interval(stream_s: float) -> float:
    """About 60 samples over the stream, between 0.5 s and 5 s apart."""
    return min(5.0, max(0.5, stream_s / 60.0))


@dataclass
class RssTrace:
    """One child's RSS samples, ``(seconds since the stream started, MB)``."""

    name: str
    pid: int
    samples: list[tuple[float, float]] = field(default_factory=list)

    def sample(self, t: float) -> None:
        rss = rss_bytes(self.pid)
        if rss is not None:
            self.samples.append((round(t, 3), round(rss / MB, 3)))

    def summary(self, warmup_s: float) -> dict[str, Any]:
        after = [(t, y) for t, y in self.samples if t >= warmup_s]
        growth = slope_per_hour(after)
        return {
            "pid": self.pid,
            "rss_start_mb": self.samples[0][1] if self.samples else None,
            "rss_after_warmup_mb": after[0][1] if after else None,
            "rss_end_mb": self.samples[-1][1] if self.samples else None,
            "rss_peak_mb": max((y for _, y in self.samples), default=None),
            "growth_mb_per_h": None if growth is None else round(growth, 3),
            "samples_after_warmup": len(after),
            "samples": self.samples,
        }


def add_soak_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="how long to stream (default 10)"
    )
    parser.add_argument("--scenario", default="low_motion", help="scenario or video file")
    parser.add_argument("--fps", type=float, default=30.0, help="frames per second (> 0)")
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds between RSS samples (default: about 60 over the run, 0.5 to 5 s apart)",
    )
    parser.add_argument(
        "--max-rx-growth",
        type=float,
        default=10.0,
        metavar="MB_PER_H",
        help="fail when the Rx grows faster than this after the warm-up (default 10)",
    )
    add_impair_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run_soak(args: argparse.Namespace) -> int:
    """Run the soak; SIGTERM is taken as Ctrl-C, so the children never outlive it."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if args.minutes <= 0 or args.fps <= 0:
        raise DemoError("--minutes and --fps must be > 0")
    if args.interval is not None and args.interval <= 0:
        raise DemoError("--interval must be > 0")
    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        return _report(args, _soak(args))
    try:
        return _report(args, _soak(args))
    finally:
        signal.signal(signal.SIGTERM, previous)


def _progress(message: str) -> None:
    print(f"soak: {message}", file=sys.stderr, flush=True)


def _check_alive(children: list[Child]) -> None:
    for child in children:
        if child.process.poll() is not None:
            raise DemoError(
                f"{child.name} exited with status {child.process.returncode}:\n" + child.log_tail()
            )


def _soak(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    stream_s = args.minutes * 60.0
    frames = max(1, round(stream_s * args.fps))
    interval = args.interval or default_interval(stream_s)
    warmup_s = warmup_seconds(stream_s)
    impairments = args.impair if args.impair is not None else list(DEMO_IMPAIRMENTS)
    config = config_flags(args)
    _progress(
        f"{frames} frames of {args.scenario} at {args.fps:g} fps (~{stream_s:.0f} s); "
        f"channel: {', '.join(impairments) or 'perfect'}; starting rx, channel, tx"
    )
    with (
        tempfile.TemporaryDirectory(prefix="hoplink-soak-") as logs,
        Processes(Path(logs), env=CHILD_ENV) as procs,
    ):
        rx, channel, tx = start_stack(
            procs,
            rx_args=[],
            tx_args=["--scenario", args.scenario, "--frames", str(frames), "--fps", str(args.fps)],
            impairments=impairments,
            config=config,
        )
        children = [rx, channel, tx]
        traces = {c.name: RssTrace(c.name, c.process.pid) for c in children}
        t0 = time.monotonic()
        _progress(f"all three up after {t0 - started:.1f} s; streaming")
        # The Tx may fall behind its pace on a loaded machine: allow twice the time, plus a minute.
        limit = t0 + 2 * stream_s + 60.0
        next_progress = t0 + PROGRESS_EVERY_S
        while True:
            now = time.monotonic()
            for trace in traces.values():
                trace.sample(now - t0)
            _check_alive(children)
            tx_stats = tx.stats()
            if tx_stats["link"]["refused"]:
                raise DemoError(f"the link was refused: {tx_stats['link']['last_error']}")
            if tx_stats["link"]["finished"]:
                break
            if now >= next_progress:
                next_progress = now + PROGRESS_EVERY_S
                rss = ", ".join(
                    f"{n} {t.samples[-1][1]:.1f}" for n, t in traces.items() if t.samples
                )
                _progress(
                    f"{now - t0:5.0f}/{stream_s:.0f} s: tx {tx_stats['frames_sent']}/{frames} "
                    f"frames; RSS MB {rss}"
                )
            if now >= limit:
                raise DemoError(
                    f"the Tx sent {tx_stats['frames_sent']} of {frames} frames in "
                    f"{now - t0:.0f} s and did not finish"
                )
            time.sleep(max(0.0, min(interval, limit - time.monotonic())))
        stream_end = time.monotonic() - t0

        def rx_settled() -> dict | None:
            s = rx.stats()
            return s if s["link"]["session_ended"] and s["quality"]["pending"] == 0 else None

        _progress(f"the Tx sent BYE after {stream_end:.0f} s; waiting for the Rx to settle")
        rx_stats = wait_for(rx_settled, SETTLE_TIMEOUT_S, "the Rx to settle after BYE")
        tx_stats, channel_stats = tx.stats(), channel.stats()
    run = {
        "frames": frames,
        "stream_end": stream_end,
        "warmup_s": warmup_s,
        "interval": interval,
        "impairments": impairments,
        "wall": time.monotonic() - started,
    }
    return _result(args, run, traces, rx_stats, channel_stats, tx_stats)


def _result(
    args: argparse.Namespace,
    run: dict[str, Any],
    traces: dict[str, RssTrace],
    rx: dict,
    channel: dict,
    tx: dict,
) -> dict[str, Any]:
    frames, warmup_s, stream_end = run["frames"], run["warmup_s"], run["stream_end"]
    by_outcome = rx["frames_by_outcome"]
    rx_accounted = sum(by_outcome.values())
    sessions = rx["link"]["session"]
    # A shorter video ends the stream early: still accounted if the Rx settled what the Tx decided.
    accounted = rx_accounted == tx["frames"] and sessions == 1
    processes = {name: trace.summary(warmup_s) for name, trace in traces.items()}
    window = stream_end - warmup_s
    judged = window >= MIN_JUDGED_S
    rx_growth = processes["rx"]["growth_mb_per_h"]
    reasons = []
    if not accounted:
        reasons.append(
            f"frames not accounted: the Tx decided {tx['frames']}, the Rx counted "
            f"{rx_accounted} in {sessions} session(s)"
        )
    if judged and (rx_growth is None or rx_growth > args.max_rx_growth):
        reasons.append(f"the Rx grew {rx_growth} MB/h (limit {args.max_rx_growth:g})")
    loss = channel["directions"]["tx_to_rx"]["impairments"].get("loss", {})
    return {
        "scenario": args.scenario,
        "fps": args.fps,
        "minutes": args.minutes,
        "impairments": run["impairments"],
        "interval_s": run["interval"],
        "warmup_s": round(warmup_s, 3),
        "stream_s": round(stream_end, 3),
        "wall_s": round(run["wall"], 3),
        "processes": processes,
        "frames": {
            "planned": frames,
            "tx_decided": tx["frames"],
            "tx_sent": tx["frames_sent"],
            "tx_unsent": tx["traffic"]["frames_unsent"],
            "rx_accounted": rx_accounted,
            "rx_by_outcome": by_outcome,
            "rx_sessions": sessions,
            "channel_dropped": loss.get("dropped", 0),
            "tx_reconnects": tx["traffic"]["reconnects"],
        },
        "accounted": accounted,
        "growth_judged": judged,
        "growth_judged_note": None
        if judged
        else f"window after warm-up {window:.0f} s < {MIN_JUDGED_S:.0f} s: growth not judged",
        "max_rx_growth_mb_per_h": args.max_rx_growth,
        "ok": not reasons,
        "reasons": reasons,
    }


def _report(args: argparse.Namespace, result: dict[str, Any]) -> int:
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(summary(result))
    sys.stdout.flush()
    for reason in result["reasons"]:
        print(f"hoplink soak: {reason}", file=sys.stderr)
    return 0 if result["ok"] else 1


def summary(result: dict[str, Any]) -> str:
    """The table (process, RSS start / after warm-up / end, growth) and the accounting line."""

    def mb(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}"

    channel = ", ".join(result["impairments"]) or "perfect"
    lines = [
        f"soak: {result['scenario']} at {result['fps']:g} fps for {result['stream_s']:.0f} s; "
        f"warm-up {result['warmup_s']:.0f} s; channel: {channel}",
        f"  {'process':8s} {'RSS start':>10s} {'after w-up':>10s} {'end':>8s} {'growth MB/h':>12s}",
    ]
    for name, p in result["processes"].items():
        lines.append(
            f"  {name:8s} {mb(p['rss_start_mb']):>10s} {mb(p['rss_after_warmup_mb']):>10s} "
            f"{mb(p['rss_end_mb']):>8s} {mb(p['growth_mb_per_h']):>12s}"
        )
    f = result["frames"]
    outcomes = ", ".join(f"{k} {v}" for k, v in f["rx_by_outcome"].items() if v)
    lines.append(
        f"  frames: Tx decided {f['tx_decided']} (sent {f['tx_sent']}), Rx accounted "
        f"{f['rx_accounted']} ({outcomes}): "
        + ("every frame accounted" if result["accounted"] else "NOT accounted")
    )
    if result["growth_judged_note"]:
        lines.append(f"  {result['growth_judged_note']}")
    lines.append("  ok" if result["ok"] else "  FAILED: " + "; ".join(result["reasons"]))
    return "\n".join(lines)


__all__ = [
    "RssTrace",
    "add_soak_arguments",
    "rss_bytes",
    "run_soak",
    "slope_per_hour",
    "summary",
    "warmup_seconds",
]
