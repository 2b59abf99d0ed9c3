"""The channel's impairments, one module each (Toxiproxy style), and their pipeline order.

Each direction (tx_to_rx, rx_to_tx) runs the impairments set on it in this fixed order:

1. ``rate``            — bottleneck serialization at the channel's ingress, FIFO in arrival
                         order; every admitted message takes link time, even one lost later;
2. ``loss``            — lost on the link (independent or Gilbert–Elliott);
3. ``phy``             — the physical layer of what gets through: bit errors from SNR,
                         modulation, AWGN/Rayleigh fading and FEC; airtime (optionally delay);
4. ``bit_errors``      — corrupted on the link at a fixed BER (payload fields, or the whole frame);
5. ``id_desync``       — memory-write fault on what arrives: a NEW's slot changed;
6. ``prototype_noise`` — memory-write fault: noise on a NEW's latent;
7. ``duplicate``       — a second copy (each copy then gets its own delay/jitter);
8. ``delay``           — propagation delay with jitter (independent jitter may reorder);
9. ``reorder``         — held back so successors overtake it (last: releases leave as they are).

Field-aware stages (3 and 4 in field mode, 5, 6) skip messages that do not decode, e.g. after a
whole-frame corruption; control-plane messages (hello, bye, error, corrupt) pass every stage
untouched unless a stage names them in ``types`` (see :mod:`channel.impairments.base`).

Adding an impairment: one module with an ``Attributes`` model and an :class:`Impairment`
subclass, plus one line in ``IMPAIRMENTS`` below (its position is its place in the pipeline).
"""

from __future__ import annotations

from typing import Any

from channel.impairments.base import (
    CONTROL_TYPES,
    UNDECODABLE,
    Impairment,
    ImpairmentAttributes,
    ImpairmentError,
    InFlight,
)
from channel.impairments.bit_errors import BitErrors
from channel.impairments.delay import Delay
from channel.impairments.duplicate import Duplicate
from channel.impairments.id_desync import IdDesync
from channel.impairments.loss import Loss
from channel.impairments.phy import Phy
from channel.impairments.prototype_noise import PrototypeNoise
from channel.impairments.rate import Rate
from channel.impairments.reorder import Reorder

IMPAIRMENTS: dict[str, type[Impairment]] = {
    cls.name: cls
    for cls in (Rate, Loss, Phy, BitErrors, IdDesync, PrototypeNoise, Duplicate, Delay, Reorder)
}
PIPELINE_ORDER: tuple[str, ...] = tuple(IMPAIRMENTS)


def impairment_schemas() -> dict[str, dict[str, Any]]:
    """JSON schema of every impairment's attributes (for the REST API and the dashboard)."""
    return {name: cls.Attributes.model_json_schema() for name, cls in IMPAIRMENTS.items()}


__all__ = [
    "CONTROL_TYPES",
    "IMPAIRMENTS",
    "PIPELINE_ORDER",
    "UNDECODABLE",
    "Impairment",
    "ImpairmentAttributes",
    "ImpairmentError",
    "InFlight",
    "impairment_schemas",
]
