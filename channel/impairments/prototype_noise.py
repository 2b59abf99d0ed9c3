"""Prototype noise on memory writes: Gaussian noise on a NEW's latent.

With ``probability`` the packed latent of a NEW (by default only NEW; a REFRESH if selected with
``types``) is unpacked and dequantized, gets N(0, σ²) added per dimension, is renormalized to
unit norm (as the paper's corrupted prototypes are), then quantized and packed again, so the
message stays valid and the Rx stores a noisier prototype. Messages that do not decode or whose
latent has the wrong size are skipped. The one-shot event that noises every Rx prototype is
:meth:`channel.core.ChannelCore.corruption_event`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from pydantic import ConfigDict, Field

from channel.impairments.base import Impairment, ImpairmentAttributes, InFlight
from shared.coding.quantizer import (
    QuantizerError,
    dequantize,
    normalize,
    pack_codes,
    quantize,
    unpack_codes,
)
from shared.protocol.messages import New, Refresh


class Attributes(ImpairmentAttributes):
    model_config = ConfigDict(title="prototype_noise")

    probability: float = Field(0.01, ge=0.0, le=1.0, description="P(a write's latent is noised)")
    sigma: float = Field(0.1, ge=0.0, le=10.0, description="noise standard deviation σ")


class PrototypeNoise(Impairment):
    name = "prototype_noise"
    Attributes = Attributes
    DEFAULT_TYPES = frozenset({"new"})
    COUNTERS = ("noised", "codes_changed", "skipped")

    def apply(self, item: InFlight, rng: np.random.Generator) -> list[InFlight]:
        if not rng.random() < self.attributes.probability:
            return [item]
        message = item.message
        if not isinstance(message, New | Refresh):
            self.counters["skipped"] += 1
            return [item]
        bits, dim = self.config.bits_per_value, self.config.latent_dim
        try:
            codes = unpack_codes(message.latent, bits, dim)
        except QuantizerError:
            self.counters["skipped"] += 1
            return [item]
        noise = rng.standard_normal(dim).astype(np.float32)
        grid = self.config.quantizer_grid()
        noise *= np.float32(self.attributes.sigma)
        latent = normalize(dequantize(codes, bits, grid) + noise)
        noisy = quantize(latent, bits, grid)
        item.set_message(dataclasses.replace(message, latent=pack_codes(noisy, bits)))
        self.counters["noised"] += 1
        self.counters["codes_changed"] += int(np.count_nonzero(noisy != codes))
        return [item]
