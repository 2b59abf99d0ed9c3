"""Small helpers shared by the benchmarks: best-of-repeats timing, percentiles, and a process's
CPU time and resident memory read from /proc."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np


def best_time(fn: Callable[[], object], repeats: int = 5, min_seconds: float = 0.05) -> float:
    """Seconds per call: the best of ``repeats`` batches, each long enough to time reliably."""
    calls = 1
    while True:  # grow the batch until one batch takes min_seconds
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds or calls >= 1 << 20:
            break
        calls *= 2
    best = elapsed / calls
    for _ in range(repeats - 1):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def copy_bandwidth(nbytes: int) -> float:
    """Bytes per second of a plain array copy of ``nbytes`` (read once, written once)."""
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    return nbytes / best_time(lambda: np.copyto(dst, src), repeats=3)


def percentiles(samples_s: list[float]) -> dict[str, float]:
    arr = np.asarray(samples_s) * 1e3
    return {"p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99))}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")
