"""Delay with jitter: each message leaves ``delay_ms`` + jitter later.

Jitter is uniform on [−jitter_ms, +jitter_ms] or normal with standard deviation ``jitter_ms``;
the total is clipped at zero, so a message never leaves before it arrived. Independent jitter
lets messages overtake each other (as netem does); ``preserve_order`` instead holds a message
until its predecessor has left (delays then only grow).

In holding mode (the network channel) delayed messages are kept here and released by
:meth:`Delay.poll`: a change of ``delay_ms`` moves what is held (each keeps its own jitter draw),
and clearing the impairment releases it at once, so a long delay set and then lifted strands
nothing.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import Literal

import numpy as np
from pydantic import ConfigDict, Field

from channel.impairments.base import Impairment, ImpairmentAttributes, InFlight


class Attributes(ImpairmentAttributes):
    model_config = ConfigDict(title="delay")

    delay_ms: float = Field(0.0, ge=0.0, le=600_000.0, description="fixed one-way delay (ms)")
    jitter_ms: float = Field(
        0.0, ge=0.0, le=600_000.0, description="jitter: half-width (uniform) or std (normal), ms"
    )
    distribution: Literal["uniform", "normal"] = Field("uniform", description="jitter distribution")
    preserve_order: bool = Field(False, description="never let jitter reorder messages")


class Delay(Impairment):
    name = "delay"
    Attributes = Attributes
    COUNTERS = ("delayed",)
    transport = True

    _last_at = -math.inf

    def __init__(self, *args, **kwargs) -> None:
        # (release, order, item, time it reached this stage, jitter drawn in ms)
        self._heap: list[tuple[float, int, InFlight, float, float]] = []
        self._order = itertools.count()
        self._bytes = 0
        self._released_until = -math.inf  # the latest release so far (preserve_order)
        super().__init__(*args, **kwargs)

    def apply(self, item: InFlight, rng: np.random.Generator) -> list[InFlight]:
        a = self.attributes
        delay = a.delay_ms
        if a.jitter_ms > 0.0:
            if a.distribution == "uniform":
                delay += rng.uniform(-a.jitter_ms, a.jitter_ms)
            else:
                delay += rng.normal(0.0, a.jitter_ms)
        at = item.at + max(delay, 0.0) * 1e-3
        if a.preserve_order and at < self._last_at:
            at = self._last_at
        self._last_at = max(self._last_at, at)
        if at > item.at:
            self.counters["delayed"] += 1
        if not self.hold:
            item.at = at
            return [item]
        heapq.heappush(self._heap, (at, next(self._order), item, item.at, delay - a.delay_ms))
        self._bytes += len(item.data)
        return []

    def poll(self, now: float) -> list[InFlight]:
        out = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _, item, _, _ = heapq.heappop(heap)
            item.at = at
            self._bytes -= len(item.data)
            self._released_until = max(self._released_until, at)
            out.append(item)
        return out

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def held(self) -> int:
        return len(self._heap)

    def held_bytes(self) -> int:
        return self._bytes

    def flush(self, now: float) -> list[InFlight]:
        """Everything held goes on as if there were no delay (at its arrival time), in order."""
        released = [entry[2] for entry in sorted(self._heap, key=lambda e: e[1])]
        self._heap = []
        self._bytes = 0
        return released

    def reschedule(self, now: float) -> None:
        """``delay_ms`` (or ``preserve_order``) changed: each held message leaves its new delay
        after it arrived, with the jitter it drew (never before ``now``)."""
        a = self.attributes
        last = self._released_until
        entries = []
        for _, order, item, arrived, jitter in sorted(self._heap, key=lambda e: e[1]):
            at = max(arrived + max(a.delay_ms + jitter, 0.0) * 1e-3, now)
            if a.preserve_order:
                at = last = max(at, last)
            entries.append((at, order, item, arrived, jitter))
        heapq.heapify(entries)
        self._heap = entries
        self._last_at = max((e[0] for e in entries), default=min(self._last_at, now))
