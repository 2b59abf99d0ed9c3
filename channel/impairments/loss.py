"""Message loss: independent (each message lost with ``probability``) or Gilbert–Elliott bursts.

Gilbert–Elliott: a two-state Markov chain (good, bad) steps once per message this impairment
applies to — good→bad with ``p_good_to_bad``, bad→good with ``p_bad_to_good`` — and the message is
then lost with ``loss_in_good`` or ``loss_in_bad``. The stationary loss rate is
π_bad·loss_in_bad + (1 − π_bad)·loss_in_good with π_bad = p_gb / (p_gb + p_bg); the mean time in
the bad state is 1/p_bg messages, which makes losses come in bursts. The chain starts good.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import ConfigDict, Field

from channel.impairments.base import Impairment, ImpairmentAttributes, InFlight


class Attributes(ImpairmentAttributes):
    model_config = ConfigDict(title="loss")

    model: Literal["independent", "gilbert_elliott"] = Field(
        "independent", description="independent losses, or Gilbert–Elliott bursts"
    )
    probability: float = Field(0.01, ge=0.0, le=1.0, description="independent: P(loss)")
    p_good_to_bad: float = Field(0.01, ge=0.0, le=1.0, description="G–E: P(good → bad)")
    p_bad_to_good: float = Field(0.25, ge=0.0, le=1.0, description="G–E: P(bad → good)")
    loss_in_good: float = Field(0.0, ge=0.0, le=1.0, description="G–E: P(loss) in good state")
    loss_in_bad: float = Field(1.0, ge=0.0, le=1.0, description="G–E: P(loss) in bad state")


class Loss(Impairment):
    name = "loss"
    Attributes = Attributes
    COUNTERS = ("dropped", "bad_state")

    bad = False  # Gilbert–Elliott state

    def apply(self, item: InFlight, rng: np.random.Generator) -> list[InFlight]:
        a = self.attributes
        if a.model == "independent":
            p = a.probability
        else:
            if self.bad:
                self.bad = not rng.random() < a.p_bad_to_good
            else:
                self.bad = rng.random() < a.p_good_to_bad
            if self.bad:
                self.counters["bad_state"] += 1
            p = a.loss_in_bad if self.bad else a.loss_in_good
        if p > 0.0 and rng.random() < p:
            self.counters["dropped"] += 1
            return []
        return [item]

    @staticmethod
    def stationary_loss(attributes: Attributes) -> float:
        """Long-run loss rate of these attributes."""
        if attributes.model == "independent":
            return attributes.probability
        switch = attributes.p_good_to_bad + attributes.p_bad_to_good
        bad = attributes.p_good_to_bad / switch if switch > 0 else 0.0
        return bad * attributes.loss_in_bad + (1.0 - bad) * attributes.loss_in_good
