"""Delay with jitter: each message leaves ``delay_ms`` + jitter later.

Jitter is uniform on [−jitter_ms, +jitter_ms] or normal with standard deviation ``jitter_ms``;
the total is clipped at zero, so a message never leaves before it arrived. Independent jitter
lets messages overtake each other (as netem does); ``preserve_order`` instead holds a message
until its predecessor has left (delays then only grow).
"""

from __future__ import annotations

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
        item.at = at
        return [item]
