"""Duplication: with ``probability`` a second copy of the message follows the original.

The copy leaves ``extra_delay_ms`` after the original and then goes through delay and reorder
on its own (its own jitter draw).
"""

from __future__ import annotations

import numpy as np
from pydantic import ConfigDict, Field

from channel.impairments.base import Impairment, ImpairmentAttributes, InFlight


class Attributes(ImpairmentAttributes):
    model_config = ConfigDict(title="duplicate")

    probability: float = Field(0.01, ge=0.0, le=1.0, description="P(a message is duplicated)")
    extra_delay_ms: float = Field(
        0.0, ge=0.0, le=600_000.0, description="how much later the copy leaves (ms)"
    )


class Duplicate(Impairment):
    name = "duplicate"
    Attributes = Attributes
    COUNTERS = ("duplicated",)

    def apply(self, item: InFlight, rng: np.random.Generator) -> list[InFlight]:
        if not rng.random() < self.attributes.probability:
            return [item]
        twin = item.copy()
        twin.at += self.attributes.extra_delay_ms * 1e-3
        self.counters["duplicated"] += 1
        return [item, twin]
