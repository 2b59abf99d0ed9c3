"""ID desync on memory writes: a NEW's ``slot`` is replaced by another valid slot.

With ``probability`` the slot s of a NEW (by default only NEW; a REFRESH's ``ref`` if selected
with ``types``) becomes a uniformly drawn other slot in 0..capacity−1, ≠ s, so the Rx stores the
prototype where the Tx did not. NEWs that store nothing (slot −1), a capacity of 1 and messages
that do not decode are skipped. The one-shot event that permutes a fraction ρ of the Rx ID map
is :meth:`channel.core.ChannelCore.corruption_event`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from pydantic import ConfigDict, Field

from channel.impairments.base import Impairment, ImpairmentAttributes, InFlight
from shared.protocol.messages import New, Refresh


class Attributes(ImpairmentAttributes):
    model_config = ConfigDict(title="id_desync")

    probability: float = Field(0.01, ge=0.0, le=1.0, description="P(a write's slot is changed)")


class IdDesync(Impairment):
    name = "id_desync"
    Attributes = Attributes
    DEFAULT_TYPES = frozenset({"new"})
    COUNTERS = ("desynced", "skipped")

    def apply(self, item: InFlight, rng: np.random.Generator) -> list[InFlight]:
        if not rng.random() < self.attributes.probability:
            return [item]
        message = item.message
        capacity = self.config.capacity
        if isinstance(message, New) and message.slot >= 0 and capacity > 1:
            slot = (message.slot + int(rng.integers(1, capacity))) % capacity
            item.set_message(dataclasses.replace(message, slot=slot))
        elif isinstance(message, Refresh) and capacity > 1:
            ref = (message.ref + int(rng.integers(1, capacity))) % capacity
            item.set_message(dataclasses.replace(message, ref=ref))
        else:
            self.counters["skipped"] += 1
            return [item]
        self.counters["desynced"] += 1
        return [item]
