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

from shared.coding.quantizer import dequantize, dequantize_weights, normalize, quantize_weights
from shared.config import LinkConfig


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


BLOCK_ROWS = 8192  # patterns per block: 2 MiB at d=64, so both products read it from cache


@dataclass(frozen=True)
class Retrieval:
    """Result of the Hopfield update: states and the k largest softmax weights per query."""

    state: np.ndarray  # (B, d) unit-norm retrieved states T_β(x)
    top_slots: np.ndarray  # (B, k) indices of the largest weights, largest first
    top_weights: np.ndarray  # (B, k) their softmax weights


def hopfield_retrieve(
    queries: np.ndarray,
    patterns: np.ndarray,
    beta: float,
    steps: int = 1,
    eps: float = 1e-4,
    similarity: Callable[[np.ndarray, np.ndarray], np.ndarray] = dot_scores,
    top_k: int = 1,
) -> Retrieval:
    """Modern Hopfield update T_β (eq. 4), iterated up to ``steps`` times or until it moves < eps.

    With unit-norm patterns and states, β·(ξ·x) is β·cos(ξ, x); ``similarity`` swaps in another
    score (the adaptive memory's learned one). Each update is one blocked pass over the memory
    with an online softmax (running max and sum), so the (B, M) weights are never materialized.
    """
    state = np.asarray(queries, dtype=np.float32)
    for _ in range(steps):
        new_state, slots, weights = _hopfield_pass(state, patterns, beta, similarity, top_k)
        moved = float(np.abs(new_state - state).max())
        state = new_state
        if moved < eps:
            break
    return Retrieval(state, slots, weights)


def _hopfield_pass(state, patterns, beta, similarity, top_k):
    n, d = state.shape
    k = min(top_k, len(patterns))
    running_max = np.full(n, -np.inf, dtype=np.float32)
    running_sum = np.zeros(n, dtype=np.float32)
    acc = np.zeros((n, d), dtype=np.float32)
    best_logits = np.full((n, k), -np.inf, dtype=np.float32)
    best_slots = np.zeros((n, k), dtype=np.int64)
    rows = np.arange(n)[:, None]
    beta = np.float32(beta)
    for start in range(0, len(patterns), BLOCK_ROWS):
        block = patterns[start : start + BLOCK_ROWS]
        logits = similarity(state, block)
        logits *= beta
        # This block's k best (argmax for one: argpartition costs several passes).
        if k == 1:
            cand = logits.argmax(axis=1)[:, None]
        else:
            cand = np.argpartition(-logits, min(k, logits.shape[1]) - 1, axis=1)[:, :k]
        cand_logits = logits[rows, cand]
        new_max = np.maximum(running_max, cand_logits.max(axis=1))
        rescale = np.exp(running_max - new_max)
        weights = np.exp(np.subtract(logits, new_max[:, None], out=logits), out=logits)  # in place
        running_sum = running_sum * rescale + weights.sum(axis=1)
        acc *= rescale[:, None]
        acc += weights @ block
        running_max = new_max
        # Merge this block's k best logits with the best so far.
        merged_logits = np.concatenate([best_logits, cand_logits], axis=1)
        merged_slots = np.concatenate([best_slots, cand + start], axis=1)
        order = np.argsort(-merged_logits, axis=1, kind="stable")[:, :k]
        best_logits, best_slots = merged_logits[rows, order], merged_slots[rows, order]
    top_weights = np.exp(best_logits - running_max[:, None]) / running_sum[:, None]
    return normalize(acc), best_slots, top_weights.astype(np.float32)


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
            self.similarity = config.adaptive_similarity().scores

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
        k = 1 if cfg.transmission == "index" else min(cfg.top_k, self.count)
        found = hopfield_retrieve(
            query, patterns, cfg.beta, cfg.hopfield_steps, cfg.hopfield_eps, self.similarity, k
        )
        state, top, weights = found.state[0], found.top_slots[0], found.top_weights[0]
        # HEN: a fixed point far from every stored pattern is a meta-stable mixture, not a recall.
        metastable = bool(
            cfg.metastable_threshold > 0
            and float(np.max(patterns @ state)) < cfg.metastable_threshold
        )
        if cfg.transmission == "index":
            # Eq. (1): decide on cos(z, T_β(z)); send the dominant pattern, which the Rx recalls.
            slot = int(top[0])
            similarity = float(state @ query[0])
            return Recall((slot,), (), self.prototypes[slot], similarity, metastable)
        codes = quantize_weights(weights / weights.max(), cfg.weight_bits)
        keep = codes > 0
        refs, codes = tuple(int(s) for s in top[keep]), tuple(int(c) for c in codes[keep])
        blend = self.reconstruct(refs, codes)
        # Soft mode decides on the blend the Rx will rebuild from the quantized weights.
        return Recall(refs, codes, blend, float(blend @ query[0]), metastable)

    def recall_many(self, latents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index recall of a batch (B, d) in one pass: (best reference (B,), the decision
        statistic of eq. (1) (B,)); -inf where the memory is empty or the state is meta-stable.
        The token link's retrieval: every token of a frame at once."""
        queries = np.asarray(latents, dtype=np.float32)
        if self.count == 0:
            return np.zeros(len(queries), dtype=np.int64), np.full(len(queries), -np.inf)
        cfg = self.config
        patterns = self.prototypes[: self.count]
        if cfg.memory == "vq":
            best, cosine = vq_retrieve(queries, patterns)
            return best.astype(np.int64), cosine
        found = hopfield_retrieve(
            queries, patterns, cfg.beta, cfg.hopfield_steps, cfg.hopfield_eps, self.similarity
        )
        similarity = np.einsum("bd,bd->b", found.state, queries)
        if cfg.metastable_threshold > 0:
            nearest = (found.state @ patterns.T).max(axis=1)
            similarity = np.where(nearest < cfg.metastable_threshold, -np.inf, similarity)
        return found.top_slots[:, 0].astype(np.int64), similarity

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
        prototype = dequantize(codes, self.config.bits_per_value, self.config.quantizer_grid())
        self.prototypes[slot] = prototype
        self.codes[slot] = codes
        self.count = max(self.count, slot + 1)
        self.filled[slot] = True
        self._clock += 1
        self._inserted[slot] = self._last_used[slot] = self._clock
        return prototype

    def store_many(self, slots: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Write ``dequantize(codes[i])`` at ``slots[i]`` (distinct slots); returns them."""
        slots = np.asarray(slots, dtype=np.int64)
        if len(slots) and not (slots.min() >= 0 and slots.max() < self.capacity):
            raise MemoryAccessError(f"cannot write slots outside capacity {self.capacity}")
        prototypes = dequantize(codes, self.config.bits_per_value, self.config.quantizer_grid())
        self.prototypes[slots] = prototypes
        self.codes[slots] = codes
        if len(slots):
            self.count = max(self.count, int(slots.max()) + 1)
        self.filled[slots] = True
        self._clock += 1
        self._inserted[slots] = self._last_used[slots] = self._clock
        return prototypes

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

    def block_hashes(self, order: np.ndarray | None = None, block: int = 64) -> np.ndarray:
        """A 32-bit hash per ``block`` consecutive references: a digest of a large memory
        (the token link's) that still narrows a divergence down to a block."""
        per_ref = self.slot_hashes(order)
        padded = np.zeros(-(-len(per_ref) // block) * block, dtype=np.uint64)
        padded[: len(per_ref)] = per_ref
        acc = np.full(len(padded) // block, 2166136261, dtype=np.uint64)
        for col in range(block):
            acc = ((acc ^ padded[col::block]) * np.uint64(16777619)) & np.uint64(0xFFFFFFFF)
        return acc.astype(np.uint32)

    def slot_hashes(self, order: np.ndarray | None = None) -> np.ndarray:
        """A 32-bit hash per filled reference, to find which slots diverged."""
        slots = np.arange(self.count) if order is None else np.asarray(order[: self.count])
        rows = np.ascontiguousarray(self.prototypes[slots]).view(np.uint32)
        # FNV-style mix over the row's words: cheap, order-sensitive, enough to spot a change.
        acc = np.full(len(slots), 2166136261, dtype=np.uint64)
        for col in range(rows.shape[1]):
            acc = ((acc ^ rows[:, col]) * np.uint64(16777619)) & np.uint64(0xFFFFFFFF)
        return acc.astype(np.uint32)
