"""Associative memories of latent prototypes: one interface, one retrieval routine per kind.

Both ends hold a :class:`Memory`. The Tx decides (eq. 1) and chooses where a new prototype goes;
the Rx only writes where the Tx said and reconstructs from references, so the growth and eviction
policy runs on one side and cannot drift between copies.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from shared.config import LinkConfig
from shared.quantizer import dequantize, dequantize_weights, normalize, quantize_weights


class MemoryAccessError(ValueError):
    """A reference or write that does not fit this memory (slot out of range, empty slot)."""


# --- retrieval routines (functional cores, vectorized over queries and memory) ------------------


def vq_retrieve(queries: np.ndarray, patterns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hard nearest prototype by cosine: (best index (B,), best cosine (B,))."""
    scores = queries @ patterns.T
    best = np.argmax(scores, axis=1)
    return best, scores[np.arange(len(queries)), best]


def dot_scores(queries: np.ndarray, patterns: np.ndarray) -> np.ndarray:
    """Cosine similarity of unit vectors: (B, d) × (M, d) → (B, M)."""
    return queries @ patterns.T


def hopfield_retrieve(
    queries: np.ndarray,
    patterns: np.ndarray,
    beta: float,
    steps: int = 1,
    eps: float = 1e-4,
    similarity: Callable[[np.ndarray, np.ndarray], np.ndarray] = dot_scores,
) -> tuple[np.ndarray, np.ndarray]:
    """Modern Hopfield update T_β (eq. 4), iterated up to ``steps`` times or until it moves < eps.

    Returns the retrieved unit-norm states (B, d) and the last softmax weights (B, M).
    With unit-norm patterns and states, β·(ξ·x) is β·cos(ξ, x); ``similarity`` swaps in another
    score (the adaptive memory's learned one).
    """
    state = queries
    for _ in range(steps):
        logits = beta * similarity(state, patterns)
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        weights /= weights.sum(axis=1, keepdims=True)
        new_state = normalize(weights @ patterns)
        moved = float(np.abs(new_state - state).max())
        state = new_state
        if moved < eps:
            break
    return state, weights


# --- the memory -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recall:
    """What the Tx found: the references to send and the latent the Rx will rebuild from them."""

    refs: tuple[int, ...]
    weight_codes: tuple[int, ...]  # soft mode only; empty for index references
    latent: np.ndarray  # the Rx's reconstruction of these references
    similarity: float  # the decision statistic of eq. (1)
    metastable: bool = False  # HEN: the retrieved state is a mixture near no single prototype


class Memory:
    """Up to ``capacity`` unit-norm prototypes with their quantizer codes."""

    def __init__(self, config: LinkConfig) -> None:
        self.config = config
        self.capacity = config.capacity
        self.prototypes = np.zeros((config.capacity, config.latent_dim), dtype=np.float32)
        self.codes = np.zeros((config.capacity, config.latent_dim), dtype=np.uint16)
        self.count = 0  # one past the highest filled slot (the Tx fills slots in order)
        self.filled = np.zeros(config.capacity, dtype=bool)  # an Rx may miss a write (loss)
        self._last_used = np.zeros(config.capacity, dtype=np.int64)
        self._inserted = np.zeros(config.capacity, dtype=np.int64)
        self._clock = 0
        self.similarity = dot_scores
        if config.memory == "adaptive":
            from shared.adaptive import load_adaptive

            self.similarity = load_adaptive(config.latent_dim).scores

    # -- decisions (Tx) --------------------------------------------------------------------------

    def recall(self, latent: np.ndarray) -> Recall | None:
        """The best recall of ``latent`` under this memory kind, or None if the memory is empty."""
        if self.count == 0:
            return None
        cfg = self.config
        patterns = self.prototypes[: self.count]
        query = np.asarray(latent, dtype=np.float32)[None, :]
        if cfg.memory == "vq":
            best, cosine = vq_retrieve(query, patterns)
            slot = int(best[0])
            return Recall((slot,), (), self.prototypes[slot], float(cosine[0]))
        state, weights = hopfield_retrieve(
            query, patterns, cfg.beta, cfg.hopfield_steps, cfg.hopfield_eps, self.similarity
        )
        weights = weights[0]
        # HEN: a fixed point far from every stored pattern is a meta-stable mixture, not a recall.
        metastable = bool(
            cfg.metastable_threshold > 0
            and float(np.max(patterns @ state[0])) < cfg.metastable_threshold
        )
        if cfg.transmission == "index":
            # Eq. (1): decide on cos(z, T_β(z)); send the dominant pattern, which the Rx recalls.
            slot = int(np.argmax(weights))
            similarity = float(state[0] @ query[0])
            return Recall((slot,), (), self.prototypes[slot], similarity, metastable)
        k = min(cfg.top_k, self.count)
        top = np.argsort(-weights, kind="stable")[:k]
        codes = quantize_weights(weights[top] / weights[top].max(), cfg.weight_bits)
        keep = codes > 0
        refs, codes = tuple(int(s) for s in top[keep]), tuple(int(c) for c in codes[keep])
        blend = self.reconstruct(refs, codes)
        # Soft mode decides on the blend the Rx will rebuild from the quantized weights.
        return Recall(refs, codes, blend, float(blend @ query[0]), metastable)

    def decide(self, latent: np.ndarray) -> tuple[bool, Recall | None]:
        recall = self.recall(latent)
        if recall is None or recall.metastable:
            return False, recall
        return recall.similarity >= self.config.threshold, recall

    # -- reconstruction (Rx, and Tx to know what the Rx shows) -----------------------------------

    def reconstruct(self, refs: tuple[int, ...], weight_codes: tuple[int, ...] = ()) -> np.ndarray:
        for slot in refs:
            self.check_slot(slot)
        if not weight_codes:
            if len(refs) != 1:
                raise MemoryAccessError(f"an index reference names one slot, got {len(refs)}")
            return self.prototypes[refs[0]]
        if len(weight_codes) != len(refs):
            raise MemoryAccessError(f"{len(refs)} references but {len(weight_codes)} weights")
        weights = dequantize_weights(np.asarray(weight_codes))
        return normalize(weights @ self.prototypes[list(refs)])

    def check_slot(self, slot: int) -> None:
        if not 0 <= slot < self.capacity:
            raise MemoryAccessError(f"slot {slot} out of range (capacity {self.capacity})")
        if not self.filled[slot]:
            raise MemoryAccessError(f"slot {slot} holds no prototype")

    # -- growth ----------------------------------------------------------------------------------

    def slot_for_new(self) -> int | None:
        """Where the next prototype goes: the next free slot, else per eviction policy."""
        if self.count < self.capacity:
            return self.count
        policy = self.config.eviction
        if policy == "freeze":
            return None
        ages = self._inserted if policy == "fifo" else self._last_used
        return int(np.argmin(ages))

    def store(self, slot: int, codes: np.ndarray) -> np.ndarray:
        """Write the prototype ``dequantize(codes)`` at ``slot``."""
        if not 0 <= slot < self.capacity:
            raise MemoryAccessError(f"cannot write slot {slot}: capacity is {self.capacity}")
        prototype = dequantize(codes, self.config.bits_per_value)
        self.prototypes[slot] = prototype
        self.codes[slot] = codes
        self.count = max(self.count, slot + 1)
        self.filled[slot] = True
        self._clock += 1
        self._inserted[slot] = self._last_used[slot] = self._clock
        return prototype

    def touch(self, refs: tuple[int, ...]) -> None:
        """Mark references as used (for the lru policy)."""
        self._clock += 1
        self._last_used[list(refs)] = self._clock

    # -- agreement -------------------------------------------------------------------------------

    def digest(self, order: np.ndarray | None = None) -> str:
        """sha256 of the filled prototypes, in reference order (``order`` maps ref → slot)."""
        slots = np.arange(self.count) if order is None else np.asarray(order[: self.count])
        h = hashlib.sha256(self.count.to_bytes(8, "little"))
        h.update(np.ascontiguousarray(self.prototypes[slots]).tobytes())
        return h.hexdigest()

    def slot_hashes(self, order: np.ndarray | None = None) -> np.ndarray:
        """A 32-bit hash per filled reference, to find which slots diverged."""
        slots = np.arange(self.count) if order is None else np.asarray(order[: self.count])
        rows = np.ascontiguousarray(self.prototypes[slots]).view(np.uint32)
        # FNV-style mix over the row's words: cheap, order-sensitive, enough to spot a change.
        acc = np.full(len(slots), 2166136261, dtype=np.uint64)
        for col in range(rows.shape[1]):
            acc = ((acc ^ rows[:, col]) * np.uint64(16777619)) & np.uint64(0xFFFFFFFF)
        return acc.astype(np.uint32)
