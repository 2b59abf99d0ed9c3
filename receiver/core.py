"""The receiver's sans-I/O core: messages in, reconstructed latents and replies out.

Every reference is verified by its SimHash cue; a failed cue falls back to content-addressable
lookup, and a failed lookup asks the Tx for a refresh while the frame waits (concealed on
timeout). Every sequence number ends in exactly one :class:`~shared.accounting.Outcome`.

Reference r lives in slot ``id_map[r]``. The map starts as the identity (the Tx's slots are the
references); corruption may permute it. A NEW or REFRESH of r is authoritative: it writes slot r
and points r back at it, so repairs converge to the Tx's layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shared.accounting import Outcome
from shared.config import LinkConfig
from shared.cues import CueHasher, hamming, lookup
from shared.memory import Memory
from shared.protocol import (
    Bye,
    Corrupt,
    Digest,
    Error,
    Hit,
    Message,
    New,
    ProtocolError,
    Refresh,
    RefreshRequest,
)
from shared.quantizer import QuantizerError, dequantize, normalize, unpack_codes

MAX_REFRESHES_PER_DIGEST = 32


@dataclass
class RxCounters:
    messages: int = 0
    hits: int = 0
    news: int = 0
    decoded: int = 0
    recovered_lookup: int = 0
    recovered_refresh: int = 0
    concealed: int = 0
    lost: int = 0
    cue_failures: int = 0  # references whose cue did not match the Rx's prototype
    missing_refs: int = 0  # references to slots the Rx never received
    lookups_ok: int = 0
    lookups_failed: int = 0
    refresh_requests: int = 0
    refreshes_applied: int = 0
    digests: int = 0
    digest_mismatches: int = 0
    duplicates: int = 0  # frames seen twice, or after being counted lost
    ids_desynced: int = 0  # references moved by corruption events
    prototypes_noised: int = 0  # prototypes hit by noise events
    errors: int = 0


@dataclass(frozen=True)
class RxFrame:
    """A latent to show for ``seq``; ``outcome`` None marks a provisional (concealing) frame."""

    seq: int
    t: float
    latent: np.ndarray | None  # None only for lost frames
    outcome: Outcome | None


@dataclass
class RxStep:
    frames: list[RxFrame] = field(default_factory=list)
    replies: list[Message] = field(default_factory=list)


@dataclass
class _Pending:
    hit: Hit
    waiting_for: set[int]
    deadline: float


@dataclass
class ReceiverCore:
    config: LinkConfig
    refresh_timeout: float = 1.0  # seconds a frame may wait for its refresh
    reorder_window: int = 64  # frames a sequence gap may stay open before it counts as lost
    counters: RxCounters = field(default_factory=RxCounters)

    def __post_init__(self) -> None:
        cfg = self.config
        self.memory = Memory(cfg)
        self.hasher = CueHasher(cfg.latent_dim, cfg.cue_bits, cfg.seed)
        self.id_map = np.arange(cfg.capacity, dtype=np.int64)
        self.slot_cues = np.zeros(cfg.capacity, dtype=np.uint64)
        self.last_good: np.ndarray | None = None
        self.tx_digest: str | None = None  # the last digest the Tx announced
        self._pending: dict[int, _Pending] = {}
        self._awaiting: dict[int, set[int]] = {}  # ref -> seqs waiting for its refresh
        self._received: set[int] = set()
        self._floor = 0  # every seq below is settled (received or counted lost)
        self._highest = -1

    # -- entry points ----------------------------------------------------------------------------

    def on_message(self, message: Message, now: float) -> RxStep:
        self.counters.messages += 1
        step = RxStep()
        try:
            match message:
                case Hit():
                    self._on_hit(message, now, step)
                case New():
                    self._on_new(message, step)
                case Refresh():
                    self._on_refresh(message, step)
                case Digest():
                    self._on_digest(message, step)
                case Bye():
                    self.finish(message.last_seq, step)
                case Corrupt():
                    self._on_corrupt(message)
                case _:
                    raise ProtocolError(f"receiver does not accept {message.TYPE!r} messages")
        except ProtocolError as exc:
            self.counters.errors += 1
            step.replies.append(Error(code="bad_message", reason=str(exc)))
        return step

    def tick(self, now: float) -> RxStep:
        """Conceal frames whose refresh did not come in time."""
        step = RxStep()
        for seq in [s for s, p in self._pending.items() if p.deadline <= now]:
            self._settle_pending(seq, Outcome.CONCEALED, step)
        return step

    def finish(self, last_seq: int, step: RxStep | None = None) -> RxStep:
        """End of stream: conceal what still waits, count never-seen frames up to last_seq lost."""
        step = step if step is not None else RxStep()
        for seq in list(self._pending):
            self._settle_pending(seq, Outcome.CONCEALED, step)
        self._declare_lost(last_seq, step)
        return step

    @property
    def digest(self) -> str:
        return self.memory.digest(order=self.id_map)

    # -- corruption of the Rx memory (paper's robustness experiment) ------------------------------

    def corrupt_id_map(self, rho: float, rng: np.random.Generator) -> int:
        """Permute the slots of a fraction ρ of the references; returns how many moved."""
        refs = np.flatnonzero(self.memory.filled[: self.memory.count])
        chosen = rng.choice(refs, size=int(round(rho * len(refs))), replace=False)
        if len(chosen) < 2:
            return 0
        self.id_map[chosen] = self.id_map[np.roll(chosen, 1)]  # a cycle: every chosen ref moves
        return len(chosen)

    def corrupt_prototypes(self, sigma: float, rng: np.random.Generator) -> int:
        """Add N(0, σ²) noise to every stored prototype and renormalize; returns how many."""
        filled = np.flatnonzero(self.memory.filled)
        noise = rng.standard_normal((len(filled), self.config.latent_dim)).astype(np.float32)
        self.memory.prototypes[filled] = normalize(self.memory.prototypes[filled] + sigma * noise)
        self.slot_cues[filled] = self.hasher.cues(self.memory.prototypes[filled])
        return len(filled)

    def _on_corrupt(self, event: Corrupt) -> None:
        if not (0.0 <= event.rho <= 1.0 and 0.0 <= event.sigma <= 10.0):
            raise ProtocolError(f"corrupt: rho {event.rho} or sigma {event.sigma} out of range")
        rng = np.random.default_rng([event.seed, 0xC0])
        if event.rho > 0:
            self.counters.ids_desynced += self.corrupt_id_map(event.rho, rng)
        if event.sigma > 0:
            self.counters.prototypes_noised += self.corrupt_prototypes(event.sigma, rng)

    # -- handlers ----------------------------------------------------------------------------------

    def _on_hit(self, hit: Hit, now: float, step: RxStep) -> None:
        if not self._admit(hit.seq, step):
            return
        self.counters.hits += 1
        cfg = self.config
        if any(ref >= cfg.capacity for ref in hit.refs) or not hit.refs:
            self._settle(hit.seq, hit.t, self.last_good, Outcome.CONCEALED, step)
            raise ProtocolError(f"hit {hit.seq}: reference outside capacity {cfg.capacity}")
        if hit.weights and len(hit.weights) != len(hit.refs):
            self._settle(hit.seq, hit.t, self.last_good, Outcome.CONCEALED, step)
            raise ProtocolError(f"hit {hit.seq}: {len(hit.refs)} refs, {len(hit.weights)} weights")
        slots = tuple(int(self.id_map[r]) for r in hit.refs)
        missing = {r for r, s in zip(hit.refs, slots, strict=True) if not self.memory.filled[s]}
        if not missing:
            latent = self.memory.reconstruct(slots, hit.weights)
            own_cue = self.slot_cues[slots[0]] if not hit.weights else self.hasher.cue(latent)
            if cfg.cue_bits == 0 or hamming(own_cue, hit.cue) <= cfg.cue_tolerance:
                self._settle(hit.seq, hit.t, latent, Outcome.DECODED, step)
                return
            self.counters.cue_failures += 1
        else:
            self.counters.missing_refs += len(missing)
        found = lookup(self.slot_cues[self.memory.filled], hit.cue, cfg.cue_tolerance)
        if found is not None and cfg.cue_bits > 0:
            self.counters.lookups_ok += 1
            slot = int(np.flatnonzero(self.memory.filled)[found])
            if not hit.weights:
                self.id_map[hit.refs[0]] = slot
            recovered = self.memory.prototypes[slot]
            self._settle(hit.seq, hit.t, recovered, Outcome.RECOVERED_LOOKUP, step)
            return
        self.counters.lookups_failed += 1
        waiting = set(hit.refs)
        self._pending[hit.seq] = _Pending(hit, waiting, now + self.refresh_timeout)
        for ref in waiting:
            self._request_refresh(ref, hit.seq, "cue and lookup failed", step)
        step.frames.append(RxFrame(hit.seq, hit.t, self.last_good, None))

    def _on_new(self, new: New, step: RxStep) -> None:
        if not self._admit(new.seq, step):
            return
        self.counters.news += 1
        cfg = self.config
        try:
            codes = unpack_codes(new.latent, cfg.bits_per_value, cfg.latent_dim)
        except QuantizerError as exc:
            self._settle(new.seq, new.t, self.last_good, Outcome.CONCEALED, step)
            raise ProtocolError(f"new {new.seq}: {exc}") from None
        if new.slot >= cfg.capacity:
            self._settle(new.seq, new.t, self.last_good, Outcome.CONCEALED, step)
            raise ProtocolError(f"new {new.seq}: slot {new.slot} outside capacity {cfg.capacity}")
        if new.slot < 0:
            latent = dequantize(codes, cfg.bits_per_value)
        else:
            latent = self._write(new.slot, codes, step)
        self._settle(new.seq, new.t, latent, Outcome.DECODED, step)

    def _on_refresh(self, refresh: Refresh, step: RxStep) -> None:
        cfg = self.config
        if not 0 <= refresh.ref < cfg.capacity:
            raise ProtocolError(f"refresh: reference {refresh.ref} outside capacity")
        try:
            codes = unpack_codes(refresh.latent, cfg.bits_per_value, cfg.latent_dim)
        except QuantizerError as exc:
            raise ProtocolError(f"refresh {refresh.ref}: {exc}") from None
        self.counters.refreshes_applied += 1
        self._write(refresh.ref, codes, step)

    def _on_digest(self, digest: Digest, step: RxStep) -> None:
        self.counters.digests += 1
        self.tx_digest = digest.digest
        if len(digest.slot_hashes) != 4 * digest.count or digest.count > self.config.capacity:
            raise ProtocolError(f"digest: {len(digest.slot_hashes)} hash bytes for {digest.count}")
        if digest.digest == self.digest:
            return
        self.counters.digest_mismatches += 1
        theirs = np.frombuffer(digest.slot_hashes, dtype="<u4")
        memory = self.memory
        ours = memory.slot_hashes(order=self.id_map)
        stale = [
            ref
            for ref in range(digest.count)
            if ref >= len(ours) or ours[ref] != theirs[ref] or not memory.filled[self.id_map[ref]]
        ]
        for ref in stale[:MAX_REFRESHES_PER_DIGEST]:
            self._request_refresh(ref, -1, "digest mismatch", step)

    # -- helpers -----------------------------------------------------------------------------------

    def _write(self, ref: int, codes: np.ndarray, step: RxStep) -> np.ndarray:
        """Authoritative write of reference ``ref``: slot ref, mapped back to itself."""
        prototype = self.memory.store(ref, codes)
        self.id_map[ref] = ref
        self.slot_cues[ref] = self.hasher.cue(prototype)
        for seq in sorted(self._awaiting.pop(ref, ())):
            pending = self._pending.get(seq)
            if pending is None:
                continue
            pending.waiting_for.discard(ref)
            if not pending.waiting_for:
                self._settle_pending(seq, Outcome.RECOVERED_REFRESH, step)
        return prototype

    def _request_refresh(self, ref: int, seq: int, reason: str, step: RxStep) -> None:
        waiting = self._awaiting.get(ref)
        already_asked = waiting is not None
        self._awaiting.setdefault(ref, set())
        if seq >= 0:
            self._awaiting[ref].add(seq)
        if already_asked:
            return  # one outstanding request per reference: no flood towards the Tx
        self.counters.refresh_requests += 1
        step.replies.append(RefreshRequest(ref=ref, seq=seq, reason=reason))

    def _settle_pending(self, seq: int, outcome: Outcome, step: RxStep) -> None:
        pending = self._pending.pop(seq)
        for ref in pending.hit.refs:
            self._awaiting.get(ref, set()).discard(seq)
        hit = pending.hit
        if outcome is Outcome.RECOVERED_REFRESH:
            slots = tuple(int(self.id_map[r]) for r in hit.refs)
            latent = self.memory.reconstruct(slots, hit.weights)
        else:
            latent = self.last_good
        self._settle(seq, hit.t, latent, outcome, step)

    def _settle(
        self, seq: int, t: float, latent: np.ndarray | None, outcome: Outcome, step: RxStep
    ) -> None:
        setattr(self.counters, outcome.value, getattr(self.counters, outcome.value) + 1)
        if outcome is not Outcome.CONCEALED and latent is not None:
            self.last_good = latent
        step.frames.append(RxFrame(seq, t, latent, outcome))

    def _admit(self, seq: int, step: RxStep) -> bool:
        """Record a frame's arrival; False for duplicates and frames already counted lost."""
        if seq < self._floor or seq in self._received:
            self.counters.duplicates += 1
            return False
        self._received.add(seq)
        self._highest = max(self._highest, seq)
        self._declare_lost(self._highest - self.reorder_window, step)
        return True

    def _declare_lost(self, upto: int, step: RxStep) -> None:
        while self._floor <= upto:
            if self._floor in self._received:
                self._received.discard(self._floor)
            else:
                self._settle(self._floor, float("nan"), None, Outcome.LOST, step)
            self._floor += 1
