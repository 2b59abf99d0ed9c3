"""Rate-distortion-optimized frame decisions: HIT, DELTA or NEW per frame.

**DELTA** (predictive new latent): the residual to the recalled prototype, coded by
:mod:`shared.coding.residual`.

**Decisions.** The candidates of a frame are HIT (the recalled reference), in entropy-coded rdo
mode also HIT of the previous frame's reference (cheaper to code), DELTA(b′) on the recalled
reference for every b′ in ``delta_bits`` when ``delta`` is on, and NEW. Their distortion is
measured in latent space,

    D = 1 − cos(z, ẑ)        (= ½‖z − ẑ‖² for unit vectors, so squared error ranks the same),

where ẑ is exactly what the Rx will show. Their rate R is the bits the frame would be counted for:
the range-coded payload bits with entropy coding (a trial encode against the current models), the
fixed-length bits of the frame's message (:func:`shared.accounting.semantic_bits`) without. Then

* ``decision=rdo``: the candidate with the smallest D + λ·R (ties: fewer bits, then the order
  above);
* ``decision=paper``: HIT iff the paper's decision statistic reaches τ (eq. 1); otherwise the
  cheapest DELTA whose reconstruction reaches cos ≥ τ, otherwise NEW.

Only the Tx decides; the Rx never re-runs a decision — it reproduces reconstructions, through the
same :func:`reconstruct_delta`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from shared.coding.entropy import FrameSymbols
from shared.coding.quantizer import dequantize, quantize
from shared.coding.residual import quantize_residual, reconstruct_delta
from shared.config import LinkConfig
from shared.memory.store import Memory, Recall


def distortion(latent: np.ndarray, shown: np.ndarray) -> float:
    """D = 1 − cos(z, ẑ) for unit-norm z and ẑ (computed in float64)."""
    return 1.0 - float(np.dot(np.asarray(latent, np.float64), np.asarray(shown, np.float64)))


@dataclass(frozen=True, eq=False)
class Candidate:
    """One way to send a frame: its symbols, what the Rx would show, and its distortion."""

    symbols: FrameSymbols
    latent: np.ndarray  # ẑ, what a faithful Rx shows
    stored_codes: np.ndarray | None  # DELTA/NEW: the b-bit codes both memories store
    distortion: float

    @property
    def kind(self) -> str:
        return self.symbols.kind


def candidates(
    latent: np.ndarray,
    memory: Memory,
    recall: Recall | None,
    config: LinkConfig,
    slot: int,
    last_ref: int,
    cue_of: Callable[[np.ndarray], int],
) -> list[Candidate]:
    """Every candidate of a frame, in a fixed order: HIT, HIT(previous), DELTA(b′)…, NEW."""
    latent = np.asarray(latent, dtype=np.float32)
    grid = config.quantizer_grid()
    out: list[Candidate] = []

    def hit(ref: int) -> Candidate:
        shown = memory.prototypes[ref].copy()
        symbols = FrameSymbols("hit", ref=ref, cue=cue_of(shown))
        return Candidate(symbols, shown, None, distortion(latent, shown))

    if recall is not None:
        ref = recall.refs[0]
        out.append(hit(ref))
        previous_ok = 0 <= last_ref < memory.capacity and memory.filled[last_ref]
        if config.decision == "rdo" and config.entropy_coding and previous_ok and last_ref != ref:
            out.append(hit(last_ref))
        if config.delta:
            base = memory.prototypes[ref]
            cue = out[0].symbols.cue
            for bits in config.delta_bit_set:
                scale, codes = quantize_residual(latent, base, bits)
                stored, shown = reconstruct_delta(
                    base, scale, codes, bits, config.bits_per_value, grid
                )
                symbols = FrameSymbols("delta", ref, cue, slot, bits, scale, codes)
                out.append(Candidate(symbols, shown, stored, distortion(latent, shown)))
    codes = quantize(latent, config.bits_per_value, grid)
    shown = dequantize(codes, config.bits_per_value, grid)
    symbols = FrameSymbols("new", slot=slot, codes=codes)
    out.append(Candidate(symbols, shown, codes, distortion(latent, shown)))
    return out


def lagrangian_choice(cands: Sequence[Candidate], rates: Sequence[float], lam: float) -> int:
    """Index of the candidate with the smallest D + λ·R (ties: fewer bits, then order)."""
    costs = [
        (c.distortion + lam * r, r, i) for i, (c, r) in enumerate(zip(cands, rates, strict=True))
    ]
    return min(costs)[2]


def threshold_choice(
    cands: Sequence[Candidate], rates: Sequence[float], hit: bool, threshold: float
) -> int:
    """The paper's rule (eq. 1) extended to DELTA: HIT when the memory's decision says so (its
    statistic reached τ); else the cheapest DELTA whose reconstruction reaches cos ≥ τ and costs
    less than NEW; else NEW (the last candidate)."""
    if hit and cands[0].kind == "hit":
        return 0
    deltas = [
        (rates[i], i)
        for i, c in enumerate(cands)
        if c.kind == "delta" and 1.0 - c.distortion >= threshold and rates[i] < rates[-1]
    ]
    return min(deltas)[1] if deltas else len(cands) - 1
