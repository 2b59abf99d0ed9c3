"""Bit errors: each payload bit flips independently with probability ``ber``.

Field mode (default) decodes the message, flips bits only in its payload fields and re-encodes
it, so the frame always parses and the Rx sees wrong *content*:

* NEW.latent and REFRESH.latent — the d·b bits of the packed codes (padding bits excluded; a
  latent of unexpected length has all its bytes' bits exposed);
* HIT.refs — each reference within its ``index_bits`` = ⌈log2 capacity⌉ (eq. 3), so a flipped
  reference may point past the capacity when M is not a power of two;
* HIT.cue — within ``cue_bits`` (K);
* HIT.weights (soft mode) — each within ``weight_bits``.

Headers (type, seq, t, slot) and messages without payload (digest, refresh_request, …) are left
alone. ``whole_frame`` flips bits over the whole raw msgpack frame instead, headers included, so
the Rx counts decode errors. The number of flips is drawn as Binomial(nbits, ber) and then that
many distinct positions, so a low BER on a long frame costs one draw; the payload size is read
from the raw msgpack map and the message is fully decoded (validated) only when a flip is due.
``skipped_undecodable`` counts messages left alone because they did not decode.

Where the bits are and how they are flipped lives here once (:class:`PayloadBits`,
:class:`PayloadBitErrors`); the ``phy`` impairment draws its errors differently (from an SNR,
a modulation, fading and FEC) and flips them through the same machinery.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import msgpack
import numpy as np
from pydantic import ConfigDict, Field

from channel.impairments.base import (
    Impairment,
    ImpairmentAttributes,
    InFlight,
    bit_positions,
    flip_bits,
)
from shared.coding.quantizer import packed_size
from shared.config import LinkConfig
from shared.protocol.messages import Hit, Message, New, Refresh


class PayloadBits:
    """The payload bits of a message exposed to bit errors, and how to flip them.

    Bit order (the ``positions`` of :meth:`flip`): for latents, the packed bit order (bit 0 =
    MSB of byte 0); for hits, the references (each ``index_bits`` wide, LSB first), then the cue
    (``cue_bits``), then the weights (each ``weight_bits``).
    """

    def __init__(self, config: LinkConfig) -> None:
        self.config = config

    def latent_bits(self, latent: bytes) -> int:
        cfg = self.config
        if len(latent) == packed_size(cfg.latent_dim, cfg.bits_per_value):
            return cfg.latent_dim * cfg.bits_per_value
        return 8 * len(latent)

    def raw_count(self, item: InFlight) -> int | None:
        """Payload bits read from the raw msgpack map (cheap: no validation); None if the frame
        is not a map. Messages without payload fields have 0."""
        if item.type not in ("new", "refresh", "hit"):
            return 0
        try:
            fields = msgpack.unpackb(item.data, raw=False)
        except msgpack.ExtraData as extra:  # a sealed message: the seal follows the map
            fields = extra.unpacked
        except Exception:  # msgpack raises several unrelated types for bad bytes
            return None
        if not isinstance(fields, dict):
            return None
        cfg = self.config
        if item.type == "hit":
            refs, weights = fields.get("refs", ()), fields.get("weights", ())
            if not isinstance(refs, list) or not isinstance(weights, list):
                return None
            return len(refs) * cfg.index_bits + cfg.cue_bits + len(weights) * cfg.weight_bits
        latent = fields.get("latent")
        return self.latent_bits(latent) if isinstance(latent, bytes) else None

    def count(self, message: Message) -> int:
        """How many payload bits of ``message`` are exposed to bit errors."""
        cfg = self.config
        match message:
            case New() | Refresh():
                return self.latent_bits(message.latent)
            case Hit():
                return (
                    len(message.refs) * cfg.index_bits
                    + cfg.cue_bits
                    + len(message.weights) * cfg.weight_bits
                )
        return 0

    def flip(self, message: Message, positions: Sequence[int]) -> Message:
        """``message`` with the payload bits at ``positions`` (class docstring order) flipped."""
        if isinstance(message, New | Refresh):
            return dataclasses.replace(message, latent=flip_bits(message.latent, positions))
        assert isinstance(message, Hit)
        cfg = self.config
        refs, weights, cue = list(message.refs), list(message.weights), message.cue
        ref_bits = len(refs) * cfg.index_bits
        for p in positions:
            if p < ref_bits:
                refs[p // cfg.index_bits] ^= 1 << (p % cfg.index_bits)
            elif p < ref_bits + cfg.cue_bits:
                cue ^= 1 << (p - ref_bits)
            else:
                q = p - ref_bits - cfg.cue_bits
                weights[q // cfg.weight_bits] ^= 1 << (q % cfg.weight_bits)
        return dataclasses.replace(message, refs=tuple(refs), cue=cue, weights=tuple(weights))


class PayloadBitErrors(Impairment):
    """Base of the impairments that flip bits (``bit_errors``, ``phy``): which bits are exposed
    (:meth:`exposed_bits`), flipping them in place and counting (:meth:`corrupt`)."""

    COUNTERS: tuple[str, ...] = ("bits_flipped", "messages_corrupted", "skipped_undecodable")

    def __init__(self, attributes: ImpairmentAttributes, config: LinkConfig) -> None:
        self.payload = PayloadBits(config)
        super().__init__(attributes, config)

    def exposed_bits(self, item: InFlight, whole_frame: bool) -> int | None:
        """Bits of ``item`` exposed to errors: every bit of the frame, or (field mode) its
        payload bits read from the raw map; None, counted as ``skipped_undecodable``, when the
        frame is not a map."""
        if whole_frame:
            return 8 * len(item.data)
        nbits = self.payload.raw_count(item)
        if nbits is None:
            self.counters["skipped_undecodable"] += 1
        return nbits

    def corrupt(
        self, item: InFlight, nbits: int, positions: Sequence[int], whole_frame: bool
    ) -> int:
        """Flip the distinct ``positions`` (each < ``nbits`` from :meth:`exposed_bits`) in
        ``item`` and count them; returns how many were flipped. Field mode decodes (validates)
        the message here, and skips one whose payload does not match ``nbits``."""
        if not len(positions):
            return 0
        if whole_frame:
            item.set_data(flip_bits(item.data, positions))
        else:
            message = item.message  # decoded (and validated) only when a flip is due
            if message is None or self.payload.count(message) != nbits:
                self.counters["skipped_undecodable"] += 1
                return 0
            item.set_message(self.payload.flip(message, positions))
        self.counters["bits_flipped"] += len(positions)
        self.counters["messages_corrupted"] += 1
        return len(positions)


class Attributes(ImpairmentAttributes):
    model_config = ConfigDict(title="bit_errors")

    ber: float = Field(1e-4, ge=0.0, le=1.0, description="bit-error rate: P(a bit flips)")
    whole_frame: bool = Field(
        False, description="flip bits over the whole msgpack frame instead of payload fields"
    )


class BitErrors(PayloadBitErrors):
    name = "bit_errors"
    Attributes = Attributes

    def apply(self, item: InFlight, rng: np.random.Generator) -> list[InFlight]:
        ber = self.attributes.ber
        if ber <= 0.0:
            return [item]
        whole_frame = self.attributes.whole_frame
        nbits = self.exposed_bits(item, whole_frame)
        if not nbits:
            return [item]
        flips = int(rng.binomial(nbits, ber))
        if flips:
            self.corrupt(item, nbits, bit_positions(rng, nbits, flips), whole_frame)
        return [item]
