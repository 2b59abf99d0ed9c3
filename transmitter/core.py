"""The transmitter's sans-I/O core: a latent in, a HIT or NEW out; refresh requests answered.

No sockets, no clocks: the caller passes the frame time and moves the messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shared.accounting import semantic_bits
from shared.coding import rdo
from shared.coding.entropy import FrameKind, FrameSymbols, SymbolCoder
from shared.coding.quantizer import dequantize, pack_codes, quantize
from shared.config import LinkConfig
from shared.memory.cues import CueHasher
from shared.memory.store import Memory, MemoryAccessError, Recall
from shared.protocol.messages import (
    Bye,
    Coded,
    Delta,
    Digest,
    Hit,
    Message,
    New,
    ProtocolError,
    Refresh,
    RefreshRequest,
)


@dataclass
class TxCounters:
    frames: int = 0
    hits: int = 0
    news: int = 0
    deltas: int = 0  # misses sent as a residual to a recalled prototype (link tools)
    news_unstored: int = 0  # misses at capacity under the freeze policy (NEW or DELTA)
    metastable: int = 0  # misses because the Hopfield state was a mixture (HEN)
    refresh_requests: int = 0
    refreshes_sent: int = 0
    refreshes_refused: int = 0  # unknown reference, or over the refresh budget
    digests_sent: int = 0
    # Token links (transmitter/tokens.py): tokens sent per symbol.
    tokens_skip: int = 0
    tokens_hit: int = 0
    tokens_new: int = 0


@dataclass(frozen=True)
class TxFrame:
    """The Tx's decision for one frame and the latent the Rx should reconstruct from it."""

    message: Hit | New | Delta | Coded
    latent: np.ndarray  # what a faithful Rx reconstructs
    similarity: float  # decision statistic (eq. 1); -inf on an empty memory
    kind: FrameKind | None = None  # with link tools: hit, delta or new (a CODED can be any)

    @property
    def hit(self) -> bool:
        return self.kind == "hit" if self.kind else isinstance(self.message, Hit)


@dataclass
class TransmitterCore:
    config: LinkConfig
    refresh_budget: int = 64  # refreshes answered per digest period (bounds amplification)
    counters: TxCounters = field(default_factory=TxCounters)

    def __post_init__(self) -> None:
        cfg = self.config
        self.memory = Memory(cfg)
        self.hasher = CueHasher(cfg.latent_dim, cfg.cue_bits, cfg.seed)
        self._refresh_tokens = self.refresh_budget
        self.last_seq = -1
        self.coder = SymbolCoder(cfg) if cfg.entropy_coding else None

    def on_frame(self, seq: int, t: float, latent: np.ndarray) -> TxFrame:
        """Decide HIT or NEW for the frame's unit-norm latent (eq. 1) and update the memory."""
        latent = np.asarray(latent, dtype=np.float32)
        if latent.shape != (self.config.latent_dim,):
            raise ValueError(f"latent shape {latent.shape}, expected ({self.config.latent_dim},)")
        self.counters.frames += 1
        self.last_seq = seq
        hit, recall = self.memory.decide(latent)
        if recall is not None and recall.metastable:
            self.counters.metastable += 1
        similarity = recall.similarity if recall is not None else float("-inf")
        if self.config.uses_link_tools:
            return self._decide_with_tools(seq, t, latent, hit, recall, similarity)
        if hit:
            self.counters.hits += 1
            self.memory.touch(recall.refs)
            cue = self.hasher.cue(recall.latent)
            message = Hit(seq=seq, t=t, refs=recall.refs, cue=cue, weights=recall.weight_codes)
            return TxFrame(message, recall.latent, similarity)
        self.counters.news += 1
        codes = quantize(latent, self.config.bits_per_value, self.config.quantizer_grid())
        slot = self.memory.slot_for_new()
        if slot is None:
            self.counters.news_unstored += 1
            reconstruction = dequantize(
                codes, self.config.bits_per_value, self.config.quantizer_grid()
            )
        else:
            reconstruction = self.memory.store(slot, codes)
        packed = pack_codes(codes, self.config.bits_per_value)
        message = New(seq=seq, t=t, slot=-1 if slot is None else slot, latent=packed)
        return TxFrame(message, reconstruction, similarity)

    def _decide_with_tools(
        self,
        seq: int,
        t: float,
        latent: np.ndarray,
        hit: bool,
        recall: Recall | None,
        similarity: float,
    ) -> TxFrame:
        """HIT, DELTA or NEW by τ (paper) or by min D + λ·R (rdo); see shared/coding/rdo.py."""
        cfg, coder = self.config, self.coder
        if coder is not None:
            coder.begin(seq)
        slot = self.memory.slot_for_new()
        last_ref = coder.last_ref if coder is not None else -1
        stored_at = -1 if slot is None else slot
        cands = rdo.candidates(
            latent, self.memory, recall, cfg, stored_at, last_ref, self.hasher.cue
        )
        if coder is not None:
            encoded = [coder.encode(c.symbols) for c in cands]
            rates = [e.bits for e in encoded]
        else:
            messages = [fixed_message(c.symbols, seq, t, cfg) for c in cands]
            rates = [semantic_bits(m, cfg) for m in messages]
        if cfg.decision == "rdo":
            choice = rdo.lagrangian_choice(cands, rates, cfg.rdo_lambda)
        else:
            choice = rdo.threshold_choice(cands, rates, hit, cfg.threshold)
        chosen = cands[choice]
        symbols = chosen.symbols
        if symbols.kind == "hit":
            self.counters.hits += 1
            self.memory.touch((symbols.ref,))
        else:
            if symbols.kind == "delta":
                self.counters.deltas += 1
            else:
                self.counters.news += 1
            if slot is None:
                self.counters.news_unstored += 1
            else:
                self.memory.store(slot, chosen.stored_codes)
        if coder is not None:
            coder.commit(encoded[choice])
            message = Coded(seq=seq, t=t, payload=encoded[choice].payload)
        else:
            message = messages[choice]
        return TxFrame(message, chosen.latent, similarity, symbols.kind)

    def on_message(self, message: Message) -> list[Message]:
        """Handle a message from the Rx; returns what to send back."""
        if isinstance(message, RefreshRequest):
            return self._refresh(message)
        raise ProtocolError(f"transmitter does not accept {message.TYPE!r} messages")

    def _refresh(self, request: RefreshRequest) -> list[Message]:
        self.counters.refresh_requests += 1
        try:
            self.memory.check_slot(request.ref)
        except MemoryAccessError:
            self.counters.refreshes_refused += 1
            return []
        if self._refresh_tokens <= 0:
            self.counters.refreshes_refused += 1
            return []
        self._refresh_tokens -= 1
        self.counters.refreshes_sent += 1
        packed = pack_codes(self.memory.codes[request.ref], self.config.bits_per_value)
        return [Refresh(ref=request.ref, seq=request.seq, latent=packed)]

    def digest(self) -> Digest:
        """A DIGEST of the memory after the last frame; also refills the refresh budget."""
        self.counters.digests_sent += 1
        self._refresh_tokens = self.refresh_budget
        memory = self.memory
        return Digest(
            seq=self.last_seq,
            count=memory.count,
            digest=memory.digest(),
            slot_hashes=self._reference_hashes().astype("<u4").tobytes(),
        )

    def _reference_hashes(self) -> np.ndarray:
        """The DIGEST's 32-bit hashes that let the Rx find what diverged: one per reference."""
        return self.memory.slot_hashes()

    def bye(self, reason: str = "end of stream") -> Bye:
        return Bye(last_seq=self.last_seq, reason=reason)


def fixed_message(
    symbols: FrameSymbols, seq: int, t: float, config: LinkConfig
) -> Hit | Delta | New:
    """The fixed-length (not entropy-coded) message of a frame's symbols."""
    if symbols.kind == "hit":
        return Hit(seq=seq, t=t, refs=(symbols.ref,), cue=symbols.cue or 0)
    if symbols.kind == "delta":
        return Delta(
            seq=seq,
            t=t,
            slot=symbols.slot,
            ref=symbols.ref,
            cue=symbols.cue or 0,
            bits=symbols.delta_bits,
            scale=symbols.scale,
            residual=pack_codes(symbols.codes, symbols.delta_bits),
        )
    return New(
        seq=seq, t=t, slot=symbols.slot, latent=pack_codes(symbols.codes, config.bits_per_value)
    )
