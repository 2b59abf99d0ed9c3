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
from shared.coding.entropy import EntropyError, FrameSymbols, SymbolCoder
from shared.coding.quantizer import QuantizerError, dequantize, normalize, unpack_codes
from shared.coding.residual import SCALE_LEVELS, reconstruct_delta, residual_levels
from shared.config import LinkConfig
from shared.memory.cues import CueHasher, hamming, lookup
from shared.memory.store import Memory
from shared.protocol.messages import (
    FRAME_MESSAGES,
    Bye,
    Coded,
    Corrupt,
    Delta,
    Digest,
    Error,
    Hit,
    Message,
    New,
    ProtocolError,
    Refresh,
    RefreshRequest,
)

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
    seq_jumps_refused: int = 0  # frames far ahead of the stream, refused until confirmed
    frames_skipped: int = 0  # frames before a late join (restarted Rx), beyond max_seq_jump
    before_restart: int = 0  # frames the Tx sent before this Rx joined its stream (start_at)
    deltas: int = 0  # DELTA frames (link tools), by message or decoded from a CODED payload
    coded_desynced: int = 0  # CODED frames concealed: an earlier frame of their segment was lost
    internal_errors: int = 0  # messages whose handling failed unexpectedly (see ReceiverCore.fail)


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
    hits: list[int] = field(default_factory=list)  # frames decoded as hits (HIT, or CODED hit)
    # Frames whose message this step admitted (not a duplicate): their bits count on arrival,
    # even when decoding waits for an earlier frame (CODED frames decode in sequence order).
    admitted: list[int] = field(default_factory=list)


@dataclass
class _Pending:
    hit: Hit
    waiting_for: set[int]
    deadline: float
    verify: bool = True  # False: no cue describes what the frame waits for (a DELTA's slot)


@dataclass
class ReceiverCore:
    config: LinkConfig
    refresh_timeout: float = 1.0  # seconds a frame may wait for its refresh
    reorder_window: int = 64  # frames a sequence gap may stay open before it counts as lost
    max_seq_jump: int = 4096  # frames one message may declare lost (bounds the work per message)
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
        self._suspect: int | None = None  # a frame refused for jumping ahead of the stream
        # Entropy-coded links: CODED frames are decoded in sequence order within a segment.
        self.coder = SymbolCoder(cfg) if cfg.entropy_coding else None
        self._coded_held: dict[int, Coded] = {}  # arrived, waiting for earlier frames
        self._coded_next = 0  # the next sequence number the decoder takes
        self._coded_broken = -1  # a segment whose models lost sync (its frames are concealed)

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
                case Delta():
                    self._on_delta(message, now, step)
                case Coded():
                    self._on_coded(message, now, step)
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

    def fail(self, message: Message, reason: str) -> RxStep:
        """``message``'s handling raised an unexpected error (a bug, not bad input): count it,
        answer with an ERROR, and account the frame it concerns as concealed so no sequence
        number is left unsettled. The step its handling was building is lost, so a frame it
        had settled already is settled again here (the shell's ledger never saw the first)."""
        self.counters.errors += 1
        self.counters.internal_errors += 1
        step = RxStep(replies=[Error(code="internal_error", reason=reason[:1024])])
        seq = getattr(message, "seq", None)
        if not isinstance(message, FRAME_MESSAGES) or not isinstance(seq, int) or seq < 0:
            return step
        if seq < self._floor and seq not in self._received:
            return step  # counted lost already
        pending = self._pending.pop(seq, None)
        for ref in pending.hit.refs if pending is not None else ():
            waiting = self._awaiting.get(ref)
            if waiting is not None:
                waiting.discard(seq)
        if seq >= self._floor:
            self._received.add(seq)
            self._highest = max(self._highest, seq)
        self._settle(seq, message.t, self.last_good, Outcome.CONCEALED, step)
        return step

    def start_at(self, seq: int) -> None:
        """Join a stream at frame ``seq`` (the Tx's HELLO says where it is): a restarted Rx
        cannot know what became of the frames before; they are counted ``before_restart``,
        never lost. Only before the first frame of the session."""
        if self._highest >= 0 or self._floor > 0 or seq < 0:
            raise ProtocolError(f"cannot join the stream at frame {seq}: it has started")
        self.counters.before_restart = seq
        self._floor, self._highest = seq, seq - 1
        if self.coder is not None and seq > 0:
            self._coded_next = seq
            if seq != self.coder.segment_of(seq) * self.config.entropy_reset:
                # Joined inside a segment: its models miss the updates of the frames before.
                self._coded_broken = self.coder.segment_of(seq)

    def tick(self, now: float) -> RxStep:
        """Conceal frames whose refresh did not come in time."""
        step = RxStep()
        for seq in [s for s, p in self._pending.items() if p.deadline <= now]:
            self._settle_pending(seq, Outcome.CONCEALED, step)
        return step

    def finish(self, last_seq: int, step: RxStep | None = None) -> RxStep:
        """End of stream: conceal what still waits, count never-seen frames up to last_seq lost."""
        step = step if step is not None else RxStep()
        limit = max(self._highest, self._floor - 1) + self.max_seq_jump
        if self.coder is not None:  # decode what waited for frames that will never come
            self._declare_lost(min(last_seq, limit), step)
            self._drain_coded(float("inf"), step)
        for seq in list(self._pending):
            self._settle_pending(seq, Outcome.CONCEALED, step)
        self._declare_lost(min(last_seq, limit), step)
        if last_seq > limit:
            raise ProtocolError(
                f"bye: last_seq {last_seq} is more than {self.max_seq_jump} frames ahead of the "
                f"stream (frame {self._highest}); frames after {limit} are not counted"
            )
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
        step.hits.append(hit.seq)
        cfg = self.config
        if any(ref >= cfg.capacity for ref in hit.refs) or not hit.refs:
            self._settle(hit.seq, hit.t, self.last_good, Outcome.CONCEALED, step)
            raise ProtocolError(f"hit {hit.seq}: reference outside capacity {cfg.capacity}")
        if hit.weights and len(hit.weights) != len(hit.refs):
            self._settle(hit.seq, hit.t, self.last_good, Outcome.CONCEALED, step)
            raise ProtocolError(f"hit {hit.seq}: {len(hit.refs)} refs, {len(hit.weights)} weights")
        if not hit.weights and len(hit.refs) != 1 or hit.weights and not any(hit.weights):
            self._settle(hit.seq, hit.t, self.last_good, Outcome.CONCEALED, step)
            raise ProtocolError(
                f"hit {hit.seq}: {len(hit.refs)} refs need weights (one ref without), not all zero"
            )
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
            latent = dequantize(codes, cfg.bits_per_value, cfg.quantizer_grid())
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
        memory = self.memory
        if memory.count > digest.count:
            # Writes the Tx never made (a NEW whose slot was changed on the way): forget them,
            # or the two memories could never agree again.
            memory.filled[digest.count :] = False
            memory.count = digest.count
        if digest.digest == self.digest:
            return
        self.counters.digest_mismatches += 1
        theirs = np.frombuffer(digest.slot_hashes, dtype="<u4")
        ours = memory.slot_hashes(order=self.id_map)
        stale = [
            ref
            for ref in range(digest.count)
            if ref >= len(ours) or ours[ref] != theirs[ref] or not memory.filled[self.id_map[ref]]
        ]
        for ref in stale[:MAX_REFRESHES_PER_DIGEST]:
            # Ask again even if a request is outstanding: it or its REFRESH may have been lost
            # (or refused over the Tx's budget); the DIGEST period is the retry timer.
            self._request_refresh(ref, -1, "digest mismatch", step, retry=True)

    # -- link tools: DELTA and CODED frames (shared/coding/rdo.py, shared/coding/entropy.py) ------

    def _on_delta(self, delta: Delta, now: float, step: RxStep) -> None:
        if not self._admit(delta.seq, step):
            return
        self.counters.deltas += 1
        cfg = self.config
        try:
            if not cfg.delta or delta.bits not in cfg.delta_bit_set:
                raise ProtocolError(f"b′={delta.bits} is not one of delta_bits")
            if delta.scale >= SCALE_LEVELS or not 0 <= delta.ref < cfg.capacity:
                raise ProtocolError(f"scale {delta.scale} or reference {delta.ref} out of range")
            if delta.slot >= cfg.capacity:
                raise ProtocolError(f"slot {delta.slot} outside capacity {cfg.capacity}")
            codes = unpack_codes(delta.residual, delta.bits, cfg.latent_dim)
            if codes.max(initial=0) > 2 * residual_levels(delta.bits):  # a bit error can make one
                raise ProtocolError(f"residual code {int(codes.max())} out of range")
        except (ProtocolError, QuantizerError) as exc:
            self._settle(delta.seq, delta.t, self.last_good, Outcome.CONCEALED, step)
            raise ProtocolError(f"delta {delta.seq}: {exc}") from None
        symbols = FrameSymbols(
            "delta", delta.ref, delta.cue, delta.slot, delta.bits, delta.scale, codes
        )
        self._apply_symbols(delta.seq, delta.t, symbols, now, step)

    def _on_coded(self, coded: Coded, now: float, step: RxStep) -> None:
        if self.coder is None:
            raise ProtocolError(f"coded {coded.seq}: this link is not entropy-coded")
        if not self._admit(coded.seq, step):
            return
        if coded.seq < self._coded_next:  # its segment was given up on (see _drain_coded)
            self.counters.coded_desynced += 1
            self._settle(coded.seq, coded.t, self.last_good, Outcome.CONCEALED, step)
            return
        self._coded_held[coded.seq] = coded
        self._drain_coded(now, step)

    def _drain_coded(self, now: float, step: RxStep) -> None:
        """Decode held CODED frames in sequence order; a frame counted lost breaks its segment."""
        coder = self.coder
        while True:
            seq = self._coded_next
            coded = self._coded_held.pop(seq, None)
            if coded is None:
                if seq >= self._floor and not self._later_segment_held(seq):
                    return  # not here yet, and not given up on
                # Counted lost, or a frame of a later segment came first: the Tx has reset its
                # models since, so waiting for this one (up to the reorder window) would only hold
                # every later frame back; what is left of its segment cannot be decoded without
                # it. Not settled here: it is counted lost, or concealed if it still comes.
                self._coded_broken = coder.segment_of(seq)
                self._coded_next += 1
                continue
            self._coded_next += 1
            coder.begin(seq)
            if coder.segment.number == self._coded_broken:
                self.counters.coded_desynced += 1
                self._settle(seq, coded.t, self.last_good, Outcome.CONCEALED, step)
                continue
            try:
                symbols = self._decode_payload(coded)
            except EntropyError as exc:
                self._coded_broken = coder.segment.number
                self._settle(seq, coded.t, self.last_good, Outcome.CONCEALED, step)
                self.counters.errors += 1
                step.replies.append(Error(code="bad_message", reason=f"coded {seq}: {exc}"))
                continue
            self.counters.hits += symbols.kind == "hit"
            if symbols.kind == "hit":
                step.hits.append(seq)
            self.counters.deltas += symbols.kind == "delta"
            self.counters.news += symbols.kind == "new"
            self._apply_symbols(seq, coded.t, symbols, now, step)

    def _later_segment_held(self, seq: int) -> bool:
        """A CODED frame of a segment after ``seq``'s has arrived."""
        held = max(self._coded_held, default=-1)
        return self.coder.segment_of(held) > self.coder.segment_of(seq)

    def _decode_payload(self, coded: Coded) -> FrameSymbols:
        """The symbols of a CODED frame (the token core decodes a grid instead)."""
        return self.coder.decode(coded.payload)

    def _apply_symbols(self, seq: int, t: float, symbols: FrameSymbols, now: float, step) -> None:
        """Show (and store) a frame given as symbols: a verified reference, or a DELTA/NEW."""
        cfg = self.config
        if symbols.kind == "new":
            if symbols.slot < 0:
                latent = dequantize(symbols.codes, cfg.bits_per_value, cfg.quantizer_grid())
            else:
                latent = self._write(symbols.slot, symbols.codes, step)
            self._settle(seq, t, latent, Outcome.DECODED, step)
            return
        slot, outcome = self._resolve_reference(symbols.ref, symbols.cue)
        if slot is None:
            # The reference (a DELTA's base) is missing or failed its cue and lookup: the frame
            # waits for a refresh of what it shows — the reference, or the slot the DELTA writes.
            wanted = symbols.ref if symbols.kind == "hit" else symbols.slot
            if wanted < 0:
                self._settle(seq, t, self.last_good, Outcome.CONCEALED, step)
                return
            verify = symbols.kind == "hit" and symbols.cue is not None
            waiting = Hit(seq=seq, t=t, refs=(wanted,), cue=symbols.cue if verify else 0)
            deadline = now + self.refresh_timeout
            self._pending[seq] = _Pending(waiting, {wanted}, deadline, verify)
            self._request_refresh(wanted, seq, "reference failed its cue and lookup", step)
            step.frames.append(RxFrame(seq, t, self.last_good, None))
            return
        if symbols.kind == "hit":
            self._settle(seq, t, self.memory.prototypes[slot], outcome, step)
            return
        stored, latent = reconstruct_delta(
            self.memory.prototypes[slot],
            symbols.scale,
            symbols.codes,
            symbols.delta_bits,
            cfg.bits_per_value,
            cfg.quantizer_grid(),
        )
        if symbols.slot >= 0:
            latent = self._write(symbols.slot, stored, step)
        self._settle(seq, t, latent, outcome, step)

    def _resolve_reference(self, ref: int, cue: int | None) -> tuple[int | None, Outcome]:
        """The slot holding reference ``ref``, verified by ``cue`` (None: not sent, trusted), or
        found by content-addressable lookup on the cue; (None, CONCEALED) if neither works."""
        cfg = self.config
        if not 0 <= ref < cfg.capacity:
            return None, Outcome.CONCEALED
        slot = int(self.id_map[ref])
        verify = cue is not None and cfg.cue_bits > 0
        if self.memory.filled[slot]:
            if not verify or hamming(self.slot_cues[slot], cue) <= cfg.cue_tolerance:
                return slot, Outcome.DECODED
            self.counters.cue_failures += 1
        else:
            self.counters.missing_refs += 1
        if not verify:
            return None, Outcome.CONCEALED
        found = lookup(self.slot_cues[self.memory.filled], cue, cfg.cue_tolerance)
        if found is None:
            self.counters.lookups_failed += 1
            return None, Outcome.CONCEALED
        self.counters.lookups_ok += 1
        slot = int(np.flatnonzero(self.memory.filled)[found])
        self.id_map[ref] = slot
        return slot, Outcome.RECOVERED_LOOKUP

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

    def _request_refresh(
        self, ref: int, seq: int, reason: str, step: RxStep, retry: bool = False
    ) -> None:
        waiting = self._awaiting.get(ref)
        already_asked = waiting is not None
        self._awaiting.setdefault(ref, set())
        if seq >= 0:
            self._awaiting[ref].add(seq)
        if already_asked and not retry:
            return  # one outstanding request per reference: no flood towards the Tx
        self.counters.refresh_requests += 1
        step.replies.append(RefreshRequest(ref=ref, seq=seq, reason=reason))

    def _settle_pending(self, seq: int, outcome: Outcome, step: RxStep) -> None:
        pending = self._pending.pop(seq)
        for ref in pending.hit.refs:
            waiting = self._awaiting.get(ref)
            if waiting is not None:
                waiting.discard(seq)
                if not waiting and outcome is Outcome.CONCEALED:
                    del self._awaiting[ref]  # timed out: the next hit on it asks again
        hit = pending.hit
        latent = self.last_good
        slots = tuple(int(self.id_map[r]) for r in hit.refs)
        if outcome is Outcome.RECOVERED_REFRESH and not all(self.memory.filled[s] for s in slots):
            # A reference refreshed earlier was dropped since (a DIGEST truncated the memory
            # to the Tx's count): nothing trustworthy to show, the frame is concealed.
            self.counters.missing_refs += 1
            outcome = Outcome.CONCEALED
        if outcome is Outcome.RECOVERED_REFRESH:
            repaired = self.memory.reconstruct(slots, hit.weights)
            own_cue = self.slot_cues[slots[0]] if not hit.weights else self.hasher.cue(repaired)
            cfg = self.config
            if (
                not pending.verify
                or cfg.cue_bits == 0
                or hamming(own_cue, hit.cue) <= cfg.cue_tolerance
            ):
                latent = repaired
            else:  # the repaired reference still fails its cue: the reference itself was wrong
                self.counters.cue_failures += 1
                outcome = Outcome.CONCEALED
        self._settle(seq, hit.t, latent, outcome, step)

    def _settle(
        self, seq: int, t: float, latent: np.ndarray | None, outcome: Outcome, step: RxStep
    ) -> None:
        setattr(self.counters, outcome.value, getattr(self.counters, outcome.value) + 1)
        if outcome is not Outcome.CONCEALED and latent is not None:
            self.last_good = latent
        step.frames.append(RxFrame(seq, t, latent, outcome))

    def _admit(self, seq: int, step: RxStep) -> bool:
        """Record a frame's arrival; False for duplicates and frames already counted lost.

        A frame far ahead of the stream (a sequence number corrupted on the way, or bad data
        from the peer) must not count hundreds of frames lost, nor make the frames that follow
        look like duplicates: beyond the reorder window it is refused (a ProtocolError) unless
        the next frame confirms the jump. A confirmed jump past ``max_seq_jump`` (a restarted
        Rx joining a long stream) skips the older frames, counted in ``frames_skipped``.
        """
        if seq < self._floor or seq in self._received:
            self.counters.duplicates += 1
            return False
        ahead = seq - max(self._highest, self._floor - 1)
        if ahead > self.reorder_window:
            suspect, self._suspect = self._suspect, seq
            if suspect is None or not 0 < seq - suspect <= self.reorder_window:
                self.counters.seq_jumps_refused += 1
                raise ProtocolError(
                    f"frame {seq} is {ahead} frames ahead of the stream; refused unless the "
                    "next frame confirms the jump"
                )
            if ahead > self.max_seq_jump:
                skip_to = seq - self.max_seq_jump
                arrived = {s for s in self._received if s < skip_to}  # settled already
                self.counters.frames_skipped += skip_to - self._floor - len(arrived)
                self._received -= arrived
                self._floor = skip_to
                if self.coder is not None and self._coded_next < skip_to:
                    self._coded_held = {s: c for s, c in self._coded_held.items() if s >= skip_to}
                    self._coded_next = skip_to
                    self._coded_broken = self.coder.segment_of(skip_to)  # its models are gone
        self._suspect = None
        self._received.add(seq)
        self._highest = max(self._highest, seq)
        step.admitted.append(seq)
        self._declare_lost(self._highest - self.reorder_window, step)
        return True

    def _declare_lost(self, upto: int, step: RxStep) -> None:
        while self._floor <= upto:
            if self._floor in self._received:
                self._received.discard(self._floor)
            else:
                self._settle(self._floor, float("nan"), None, Outcome.LOST, step)
            self._floor += 1
