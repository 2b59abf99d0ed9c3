"""Rate-distortion-optimized frame decisions and predictive (DELTA) latents.

**DELTA** (predictive new latent). On a miss, instead of the full b-bit latent the Tx may send the
residual r = z − ξ between the latent and the recalled prototype ξ, quantized with b′ < b bits per
dimension: a mid-tread uniform quantizer with L = 2^(b′−1) − 1 levels on each side of zero
(codes 0..2L), step s/L, where the scale s is the smallest of :data:`SCALE_LEVELS` exactly
representable float32 values (2 down to ~3e-5, eight per octave) that covers max |r|. Both ends
rebuild ẑ = normalize(ξ + r̂) and store Q_b(ẑ) — the b-bit quantization of the reconstruction —
with the same float32 operations in :func:`reconstruct_delta`, so the stored prototype is
bit-identical on both ends and is again a plain quantized latent (REFRESH, DIGEST and SimHash cues
work on it unchanged).

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

from shared.coding.entropy import SCALE_LEVELS, FrameSymbols
from shared.coding.quantizer import Grid, QuantizerError, dequantize, normalize, quantize
from shared.config import LinkConfig
from shared.memory.store import Memory, Recall


def scale_value(code: int) -> np.float32:
    """The residual scale of ``code``: (32 − 2·(code mod 8))·2^(−4 − code div 8), exact float32."""
    if not 0 <= code < SCALE_LEVELS:
        raise QuantizerError(f"scale code {code} outside 0..{SCALE_LEVELS - 1}")
    return np.float32(np.ldexp(np.float32(32 - 2 * (code % 8)), -4 - code // 8))


_SCALES = np.array([scale_value(c) for c in range(SCALE_LEVELS)], dtype=np.float32)  # decreasing


def scale_code_for(peak: float) -> int:
    """The finest scale code whose scale still covers ``peak`` (code 0 if none does)."""
    covering = np.flatnonzero(np.float32(peak) <= _SCALES)
    return int(covering[-1]) if len(covering) else 0


def residual_levels(bits: int) -> int:
    """L: a b′-bit residual code takes 2L + 1 values, L = 2^(b′−1) − 1."""
    return (1 << (bits - 1)) - 1


def quantize_residual(latent: np.ndarray, base: np.ndarray, bits: int) -> tuple[int, np.ndarray]:
    """(scale code, residual codes 0..2L) of z − ξ with b′ = ``bits`` (Tx only)."""
    residual = np.asarray(latent, dtype=np.float32) - np.asarray(base, dtype=np.float32)
    levels = residual_levels(bits)
    code = scale_code_for(float(np.abs(residual).max()))
    step = _SCALES[code] / np.float32(levels)
    q = np.clip(np.rint(residual / step), -levels, levels)
    return code, (q + levels).astype(np.uint16)


def reconstruct_delta(
    base: np.ndarray,
    scale: int,
    codes: np.ndarray,
    bits: int,
    bits_per_value: int,
    grid: Grid = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(stored codes, stored prototype) of a DELTA: Q_b(normalize(ξ + r̂)), on both ends.

    The one function both ends run; every operation is float32 on identical inputs.
    """
    levels = residual_levels(bits)
    codes = np.asarray(codes)
    if codes.size and int(codes.max()) > 2 * levels:
        raise QuantizerError(f"residual code {int(codes.max())} out of range for b′={bits}")
    step = scale_value(scale) / np.float32(levels)
    residual = (codes.astype(np.float32) - np.float32(levels)) * step
    latent = normalize(np.asarray(base, dtype=np.float32) + residual)
    stored = quantize(latent, bits_per_value, grid)
    return stored, dequantize(stored, bits_per_value, grid)


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
