"""Rate limit: a bottleneck of ``bits_per_second`` over the wire bytes, with a FIFO queue.

A message of n bytes (+ ``overhead_bytes``, e.g. websocket/TCP framing) occupies the link for
8·n / rate seconds. It starts when the link is free (busy-until bookkeeping) and leaves when its
last bit is through (store and forward), so back-to-back messages leave spaced by their
transmission times. With ``queue_bytes`` set, a message arriving while the bytes still waiting
(those ahead of it plus itself) would exceed the queue is dropped; an idle link always admits.
"""

from __future__ import annotations

import math

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


class Rate(Impairment):
    name = "rate"
    Attributes = Attributes
    COUNTERS = ("dropped", "queued")
    transport = True

    busy_until = -math.inf

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
        item.at = self.busy_until
        return [item]
