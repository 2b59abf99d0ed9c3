"""The transmitter's core for token links: a grid of tokens in, one CODED frame message out.

Per token the memory decides by eq. (1) (the memory kind's own statistic, every token of the
frame retrieved in one batch). A hit is a SKIP (it costs almost nothing) when its position's
previous prototype still passes τ (``token_skip=sticky``) or is the best recall (``best``), any
other hit a HIT, a miss a NEW written to the memory's ring. With ``sticky``, a HIT also prefers,
as video coders prefer a merge candidate, the best of the references the previous frame had
nearby (:data:`~shared.coding.tokens.NEAR_RADIUS`) when it passes τ: content moves, and such a
reference costs a few bits where any other costs ⌈log2 M⌉.
Refresh requests, DIGESTs and BYE are the single-latent core's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.coding.quantizer import quantize
from shared.coding.tokens import (
    DIGEST_BLOCK,
    HIT,
    NEW,
    SKIP,
    TokenCoder,
    TokenSymbols,
    frame_cues,
    near_window,
)
from shared.protocol.messages import Coded
from transmitter.core import TransmitterCore, TxFrame


@dataclass
class TokenTransmitterCore(TransmitterCore):
    # A token memory holds thousands of prototypes and a corruption event can touch all of them:
    # the budget still bounds what one DIGEST period's requests can make the Tx send.
    refresh_budget: int = 8192

    def __post_init__(self) -> None:
        super().__post_init__()
        self.coder = TokenCoder(self.config)
        self.slot_cues = np.zeros(self.config.capacity, dtype=np.uint64)
        self.ring = 0  # the slot the next NEW token takes

    def on_frame(self, seq: int, t: float, latent: np.ndarray) -> TxFrame:
        """Decide every token of a (h, w, d) grid of unit-norm latents; one CODED message."""
        cfg, memory, coder = self.config, self.memory, self.coder
        grid = np.asarray(latent, dtype=np.float32)
        if grid.ndim != 3 or grid.shape[2] != cfg.latent_dim:
            raise ValueError(f"token grid shape {grid.shape}, expected (h, w, {cfg.latent_dim})")
        h, w, d = grid.shape
        if h * w > cfg.capacity:
            raise ValueError(
                f"a {h}x{w} token grid needs a memory of at least {h * w} prototypes "
                f"(capacity is {cfg.capacity})"
            )
        self.counters.frames += 1
        self.last_seq = seq
        coder.begin(seq)
        tokens = grid.reshape(-1, d)
        best, similarity = memory.recall_many(tokens)
        hit = similarity >= cfg.threshold
        kinds = np.where(hit, HIT, NEW).astype(np.uint8)
        refs = best.copy()
        prev = coder.prev_refs
        if prev is not None and prev.shape == (h, w):
            prev = prev.ravel()
            if cfg.token_skip == "best":
                still = best == prev
            else:  # the previous reference while it is good enough: a SKIP costs almost nothing
                still = np.einsum("nd,nd->n", tokens, memory.prototypes[prev]) >= cfg.threshold
            skip = hit & still & memory.filled[prev]
            kinds[skip], refs[skip] = SKIP, prev[skip]
            if cfg.token_skip == "sticky":
                self._prefer_near(tokens, kinds, refs, near_window(coder.prev_refs, (h, w)))
        new = kinds == NEW
        n_new = int(new.sum())
        shown = memory.prototypes[refs].copy()  # recalls read the memory before its writes
        base = self.ring
        codes = np.zeros((0, d), dtype=np.uint16)
        if n_new:
            slots = (base + np.arange(n_new)) % cfg.capacity
            codes = quantize(tokens[new], cfg.bits_per_value, cfg.quantizer_grid())
            shown[new] = memory.store_many(slots, codes)
            self.slot_cues[slots] = self.hasher.cues(shown[new])
            refs[new] = slots
            self.ring = int((base + n_new) % cfg.capacity)
        kinds, refs = kinds.reshape(h, w), refs.reshape(h, w)
        frame_cue, region_cues = frame_cues(seq, kinds, refs, self.slot_cues, cfg.cue_bits)
        symbols = TokenSymbols(kinds, refs, codes, base, frame_cue, region_cues)
        payload = coder.encode(symbols)
        skips, hits, news = symbols.counts()
        self.counters.tokens_skip += skips
        self.counters.tokens_hit += hits
        self.counters.tokens_new += news
        if news:
            self.counters.news += 1
        else:
            self.counters.hits += 1
        finite = similarity[np.isfinite(similarity)]
        mean_similarity = float(finite.mean()) if len(finite) else float("-inf")
        message = Coded(seq=seq, t=t, payload=payload)
        return TxFrame(message, shown.reshape(h, w, d), mean_similarity, symbols.kind)

    def _prefer_near(
        self, tokens: np.ndarray, kinds: np.ndarray, refs: np.ndarray, window: np.ndarray
    ) -> None:
        """Point each HIT at the most similar reference of its window in the previous frame
        when that one passes τ (in place; flat ``kinds`` and ``refs``)."""
        memory, d = self.memory, tokens.shape[1]
        hits = np.flatnonzero(kinds == HIT)
        if not len(hits):
            return
        candidates = window.reshape(-1, window.shape[-1])[hits]  # (n, places)
        usable = candidates >= 0
        usable[usable] = memory.filled[candidates[usable]]
        safe = np.where(usable, candidates, 0)
        similarity = np.einsum(
            "nd,npd->np", tokens[hits], memory.prototypes[safe.ravel()].reshape(*safe.shape, d)
        )
        similarity[~usable] = -np.inf
        best = similarity.argmax(1)
        take = similarity[np.arange(len(hits)), best] >= self.config.threshold
        refs[hits[take]] = candidates[take, best[take]]

    def _reference_hashes(self) -> np.ndarray:
        """One hash per DIGEST_BLOCK references: a token memory holds thousands, and a hash
        each would cost more than the frames."""
        return self.memory.block_hashes(block=DIGEST_BLOCK)


def transmitter_core(config, **kwargs) -> TransmitterCore:
    """The Tx core a link configuration needs: the token core for a token codec."""
    return (TokenTransmitterCore if config.token_link else TransmitterCore)(config, **kwargs)
