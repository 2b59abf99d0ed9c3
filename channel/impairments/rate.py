"""Rate limit: a bottleneck of ``bits_per_second`` over the wire bytes, with a FIFO queue.

A message of n bytes (+ ``overhead_bytes``, e.g. websocket/TCP framing) occupies the link for
8·n / rate seconds. It starts when the link is free (busy-until bookkeeping) and leaves when its
last bit is through (store and forward), so back-to-back messages leave spaced by their
transmission times. With ``queue_bytes`` set, a message arriving while the bytes still waiting
(those ahead of it plus itself) would exceed the queue is dropped; an idle link always admits.

In holding mode (the network channel) the queue is kept here and released by :meth:`Rate.poll`:
a change of ``bits_per_second`` or ``overhead_bytes`` reschedules what waits (the message on the
wire keeps the fraction of it already sent), and clearing the impairment releases it at once, so a
rate of 1 bit/s set and then lifted strands nothing.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
from pydantic import ConfigDict, Field

from channel.impairments.base import Impairment, ImpairmentAttributes, InFlight


class Attributes(ImpairmentAttributes):
    model_config = ConfigDict(title="rate")

    bits_per_second: float = Field(1e6, gt=0.0, le=1e12, description="link rate (bit/s)")
    queue_bytes: int | None = Field(
        None, ge=0, description="drop when the backlog would exceed this many bytes (None: no cap)"
    )
    overhead_bytes: int = Field(
        0, ge=0, le=65_536, description="extra bytes charged per message (framing)"
    )


@dataclass
class _Queued:
    item: InFlight
    arrived: float  # when it reached this stage (its send time without the rate limit)
    start: float  # when its first bit goes on the link
    depart: float  # when its last bit is through


class Rate(Impairment):
    name = "rate"
    Attributes = Attributes
    COUNTERS = ("dropped", "queued")
    transport = True

    busy_until = -math.inf

    def __init__(self, *args, **kwargs) -> None:
        self._queue: deque[_Queued] = deque()
        self._bytes = 0
        super().__init__(*args, **kwargs)

    def apply(self, item: InFlight, rng: np.random.Generator) -> list[InFlight]:
        a = self.attributes
        size = len(item.data) + a.overhead_bytes
        start = item.at
        if self.busy_until > start:
            backlog = (self.busy_until - start) * a.bits_per_second / 8.0
            if a.queue_bytes is not None and backlog + size > a.queue_bytes:
                self.counters["dropped"] += 1
                return []
            start = self.busy_until
            self.counters["queued"] += 1
        self.busy_until = start + 8.0 * size / a.bits_per_second
        if not self.hold:
            item.at = self.busy_until
            return [item]
        self._queue.append(_Queued(item, item.at, start, self.busy_until))
        self._bytes += len(item.data)
        return []

    def poll(self, now: float) -> list[InFlight]:
        out = []
        queue = self._queue
        while queue and queue[0].depart <= now:
            queued = queue.popleft()
            queued.item.at = queued.depart
            self._bytes -= len(queued.item.data)
            out.append(queued.item)
        return out

    def next_due(self) -> float | None:
        return self._queue[0].depart if self._queue else None

    def held(self) -> int:
        return len(self._queue)

    def held_bytes(self) -> int:
        return self._bytes

    def flush(self, now: float) -> list[InFlight]:
        """Everything queued goes on as if there were no limit (at its arrival time)."""
        released = [queued.item for queued in self._queue]
        self._queue.clear()
        self._bytes = 0
        self.busy_until = -math.inf
        return released

    def reschedule(self, now: float) -> None:
        """The rate changed at ``now``: the message on the wire sends what is left of it at the
        new rate, the ones behind it follow in order."""
        if not self._queue:
            self.busy_until = min(self.busy_until, now)
            return
        a = self.attributes
        busy = now
        for i, queued in enumerate(self._queue):
            duration = 8.0 * (len(queued.item.data) + a.overhead_bytes) / a.bits_per_second
            if i == 0 and queued.start <= now:
                span = queued.depart - queued.start
                left = min(max((queued.depart - now) / span, 0.0), 1.0) if span > 0 else 0.0
                queued.start, queued.depart = now, now + left * duration
            else:
                queued.start = max(busy, queued.arrived)
                queued.depart = queued.start + duration
            busy = queued.depart
        self.busy_until = busy
