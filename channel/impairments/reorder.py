"""Reordering: with ``probability`` a message is held back so that its successors overtake it.

* ``after_messages = 0`` (time mode): the chosen message leaves ``hold_ms`` later than it would
  have; every message that would leave within that window overtakes it. Nothing is held inside
  the channel (the later send time does it), so ``reordered`` counts messages set back, which
  are overtaken only if traffic follows within ``hold_ms``.
* ``after_messages = k ≥ 1`` (count mode): the chosen message is held until k later messages of
  the same direction have gone past it (selected or not — any message that passes this stage
  counts), then leaves one microsecond after the k-th; if fewer than k come within ``hold_ms``
  it is released by :meth:`Reorder.poll` at its hold deadline.

Reorder runs last in the pipeline, so released messages leave as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import ConfigDict, Field

from channel.impairments.base import Impairment, ImpairmentAttributes, InFlight

AFTER = 1e-6  # a released message leaves this long after the message that released it


class Attributes(ImpairmentAttributes):
    model_config = ConfigDict(title="reorder")

    probability: float = Field(0.01, ge=0.0, le=1.0, description="P(a message is held back)")
    hold_ms: float = Field(
        20.0,
        ge=0.0,
        le=600_000.0,
        description="how long a message is held (count mode: the longest it waits)",
    )
    after_messages: int = Field(
        0, ge=0, le=10_000, description="0: time mode; k: release after k later messages"
    )


@dataclass
class _Held:
    item: InFlight
    remaining: int  # later messages still to pass it
    deadline: float


class Reorder(Impairment):
    name = "reorder"
    Attributes = Attributes
    COUNTERS = ("reordered", "released_after_messages", "released_on_timeout")

    def __init__(self, *args, **kwargs) -> None:
        self._held: list[_Held] = []
        super().__init__(*args, **kwargs)

    def apply(self, item: InFlight, rng: np.random.Generator) -> list[InFlight]:
        a = self.attributes
        if not rng.random() < a.probability:
            return self.passing(item)
        self.counters["reordered"] += 1
        if a.after_messages == 0:
            item.at += a.hold_ms * 1e-3
            return [item]
        self._held.append(_Held(item, a.after_messages, item.at + a.hold_ms * 1e-3))
        return []

    def passing(self, item: InFlight) -> list[InFlight]:
        if not self._held:
            return [item]
        out = [item]
        still = []
        for held in self._held:
            held.remaining -= 1
            if held.remaining <= 0:
                held.item.at = max(held.item.at, item.at) + AFTER
                out.append(held.item)
                self.counters["released_after_messages"] += 1
            else:
                still.append(held)
        self._held = still
        return out

    def poll(self, now: float) -> list[InFlight]:
        due = [h for h in self._held if h.deadline <= now]
        if not due:
            return []
        self._held = [h for h in self._held if h.deadline > now]
        for held in due:
            held.item.at = max(held.item.at, held.deadline, now)
            self.counters["released_on_timeout"] += 1
        return [h.item for h in due]

    def next_due(self) -> float | None:
        return min((h.deadline for h in self._held), default=None)

    def held(self) -> int:
        return len(self._held)

    def held_bytes(self) -> int:
        return sum(len(h.item.data) for h in self._held)

    def flush(self, now: float) -> list[InFlight]:
        released = [h.item for h in self._held]
        for item in released:
            item.at = max(item.at, now)
        self._held = []
        return released
