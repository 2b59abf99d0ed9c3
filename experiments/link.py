"""The one in-process link and its stream loop: Tx core → channel core → Rx core (and back).

Every experiment (``hoplink sim``, table, rd, sweep, faults, snr, robustness, codec-eval and the
pipeline benchmark) streams through :func:`run_stream`, so they all run the code the network runs,
count bits in one :class:`~shared.accounting.LinkLedger`, and end a stream the way the Tx process
does: a last DIGEST, the refreshes it asks for, then BYE.

Messages are encoded and decoded as on the network; deliveries leave the channel core at the
times it gives them and are processed in time order on a virtual clock (no sockets, no sleeping).
With no impairment set the channel is ideal: every message and every refresh round trip arrives
at the instant it was sent.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from channel.core import ChannelCore
from receiver.core import RxCounters
from receiver.tokens import receiver_core
from shared.accounting import FrameRecord, LinkLedger, LinkSummary, Outcome, psnr, ssim
from shared.codec.cache import DecodeCache
from shared.config import LinkConfig
from shared.memory.cues import accept_probability, hamming
from shared.protocol.messages import (
    DIGEST_EVERY,
    Corrupt,
    Error,
    Hello,
    Hit,
    Message,
    ProtocolError,
    decode,
    encode,
)
from shared.protocol.security import NONCE_BYTES
from transmitter.core import TxCounters, TxFrame
from transmitter.tokens import transmitter_core

FPS = 30.0  # frame times of a stream (virtual seconds)
END_OF_STREAM_S = 30.0  # how long the end of a stream waits for the refreshes of its last DIGEST


class InProcessLink:
    """Tx core → channel core → Rx core (and back) on a virtual clock.

    Every message is encoded and decoded as on the network; deliveries leave the channel at the
    times it gives them and are processed in time order; the Rx ticks at every frame time.
    """

    def __init__(
        self,
        config: LinkConfig,
        *,
        seed: int = 0,
        refresh_timeout: float = 1.0,
        reorder_window: int = 64,
        model_cue_risk: bool = False,
        authenticated: bool = False,
    ) -> None:
        self.config = config
        # ``authenticated``: count what a link with a shared secret carries (HELLO nonces and
        # MACs, a seal on every later message) without sealing anything here.
        self.ledger = LinkLedger(config, authenticated=authenticated)
        self.model_cue_risk = model_cue_risk  # the fault matrix's bound on silent wrong frames
        self.shown: dict[int, np.ndarray] = {}  # the latent the Rx showed, per settled frame
        self.silent_decoded = 0  # hits decoded by their cue (no repair) to a latent not the Tx's
        self.tx = transmitter_core(config)
        self.rx = receiver_core(
            config, refresh_timeout=refresh_timeout, reorder_window=reorder_window
        )
        self.channel = ChannelCore(config, seed=seed)
        auth = {"nonce": bytes(NONCE_BYTES), "auth": bytes(32)} if authenticated else {}
        for hello in (  # the handshake the network link starts with (the Tx's names its stream)
            Hello(
                role="tx",
                config_digest=config.digest(),
                model_digest="0" * 64,
                stream="0" * 16,
                **auth,
            ),
            Hello(role="rx", config_digest=config.digest(), model_digest="0" * 64, **auth),
        ):
            self.ledger.traffic(hello, len(encode(hello)), masked=hello.role == "tx")
        self.now = 0.0
        self._heap: list[tuple[float, int, str, bytes]] = []
        self._order = itertools.count()
        # What the Tx meant, per frame: the latent a faithful Rx shows, and for hits the cue.
        self.expected: dict[int, np.ndarray] = {}
        self.true_cue: dict[int, int] = {}
        self.outcomes: dict[int, Outcome] = {}
        self.settled_twice = 0
        self.rx_decode_errors = 0
        self.tx_errors = 0  # messages from the Rx the Tx could not use
        self.silent: list[tuple[bytes, bytes]] = []  # (shown, true) of silent wrong frames
        self.risk = 0.0
        self.pair_risk: dict[tuple[bytes, bytes, int], float] = {}
        self.payload_wrong = 0
        self.refresh_wrong = 0  # hits shown from a refresh that were not the Tx's latent
        self._pending_risk: dict[int, dict[tuple[bytes, bytes, int], float]] = {}
        # Link tools (CODED, DELTA): frames that show a reference (a HIT's, a DELTA's base) are
        # accepted by that reference's cue — when one is sent — not carried by their payload, so
        # a wrong one is a silent wrong frame, modelled when the Rx resolves the reference.
        self.referencing: set[int] = set()
        self._tx_before: dict[int, np.ndarray] = {}  # Tx prototypes when such a frame was decided
        if model_cue_risk and hasattr(self.rx, "_apply_symbols") and not config.token_link:
            apply_symbols = self.rx._apply_symbols

            def modelled(seq, t, symbols, now, step):  # the Rx core's own, risk taken first
                before = self._tx_before.pop(seq, None)
                if symbols.kind != "new" and before is not None:
                    self._pending_risk[seq] = self._reference_risk(symbols.ref, symbols.cue, before)
                return apply_symbols(seq, t, symbols, now, step)

            self.rx._apply_symbols = modelled

    # -- moving messages ---------------------------------------------------------------------------

    def send(self, direction: str, message: Message | bytes) -> None:
        """Send a message (or a frame message already counted by :meth:`frame`) on the link."""
        if isinstance(message, bytes):
            data = message
        else:
            data = encode(message)
            self.ledger.traffic(message, len(data), masked=direction == "tx_to_rx")
        for delivery in self.channel.on_data(direction, data, self.now):
            self._push(delivery.at, direction, delivery.data)

    def inject(self, data: bytes) -> None:
        """A message from the channel itself to the Rx (corruption events), not impaired."""
        self._push(self.now, "tx_to_rx", data)

    def _push(self, at: float, direction: str, data: bytes) -> None:
        heapq.heappush(self._heap, (max(at, self.now), next(self._order), direction, data))

    def run_until(self, t: float) -> None:
        """Deliver everything due up to time ``t`` (held messages released on the way)."""
        while True:
            due = self.channel.next_poll_at()
            due = math.inf if due is None else max(due, self.now)
            at = self._heap[0][0] if self._heap else math.inf
            if min(due, at) > t:
                break
            if due <= at:
                self.now = due
                for direction, delivery in self.channel.poll(due):
                    self._push(delivery.at, direction, delivery.data)
                continue
            at, _, direction, data = heapq.heappop(self._heap)
            self.now = max(self.now, at)
            if direction == "tx_to_rx":
                self._to_rx(data)
            else:
                self._to_tx(data)
        self.now = max(self.now, t)

    @property
    def idle(self) -> bool:
        return not self._heap and self.channel.next_poll_at() is None

    def _to_rx(self, data: bytes) -> None:
        try:
            message = decode(data)
        except ProtocolError as exc:  # the shell counts it and answers with an ERROR
            self.rx_decode_errors += 1
            self.send("rx_to_tx", Error(code="bad_message", reason=str(exc)[:200]))
            return
        risk = self._hit_risk(message) if self.model_cue_risk and isinstance(message, Hit) else None
        step = self.rx.on_message(message, self.now)
        self._settle(step.frames, risk)
        for reply in step.replies:
            self.send("rx_to_tx", reply)

    def _to_tx(self, data: bytes) -> None:
        try:
            message = decode(data)
        except ProtocolError:
            self.tx_errors += 1
            return
        if isinstance(message, Error):
            self.tx_errors += 1
            return
        try:
            replies = self.tx.on_message(message)
        except ProtocolError:
            self.tx_errors += 1
            return
        for reply in replies:
            self.send("tx_to_rx", reply)

    def tick(self) -> None:
        self._settle(self.rx.tick(self.now).frames, None)

    # -- frames ------------------------------------------------------------------------------------

    def frame(self, seq: int, latent: np.ndarray) -> TxFrame:
        tools = self.config.uses_link_tools and not self.config.token_link
        before = self.tx.memory.prototypes.copy() if tools and self.model_cue_risk else None
        decision = self.tx.on_frame(seq, self.now, latent)
        self.expected[seq] = decision.latent
        if isinstance(decision.message, Hit):
            self.true_cue[seq] = decision.message.cue
        elif tools and decision.kind in ("hit", "delta"):
            self.referencing.add(seq)
            if before is not None:
                self._tx_before[seq] = before
        data = encode(decision.message)
        self.ledger.frame(
            seq,
            decision.message,
            hit=decision.hit,
            wire_bytes=len(data),
            similarity=decision.similarity,
        )
        self.send("tx_to_rx", data)
        return decision

    def end_stream(self, n: int, fps: float) -> None:
        """End of stream as the Tx client does it: a last DIGEST, then BYE (held by the Rx shell
        until the frames it overtook arrived); refreshes answering the last DIGEST are served
        meanwhile."""
        self.run_until(n / fps)
        self.send("tx_to_rx", self.tx.digest())
        deadline = self.now + END_OF_STREAM_S
        while (not self.idle or self.rx._pending) and self.now < deadline:
            self.run_until(self.now + 0.05)
            self.tick()
        self.run_until(self.now + 0.05)
        bye = self.tx.bye()  # the BYE the Tx process sends (its reason counts as link bits)
        self.ledger.traffic(bye, len(encode(bye)))
        self._settle(self.rx.on_message(bye, self.now).frames, None)

    def _settle(self, frames: Iterable, risk: dict[tuple[bytes, bytes, int], float] | None) -> None:
        for frame in frames:
            if frame.outcome is None:  # provisional: the hit waits for a refresh
                if risk is not None:
                    self._pending_risk[frame.seq] = risk
                continue
            if frame.seq in self.outcomes:
                self.settled_twice += 1
                continue
            self.outcomes[frame.seq] = frame.outcome
            record = self.ledger.settle(frame.seq, frame.outcome)
            if frame.latent is not None:
                # A copy: the latent may be a view of a memory row that a refresh rewrites later.
                self.shown[frame.seq] = np.array(frame.latent, dtype=np.float32)
            frame_risk = risk if risk is not None else self._pending_risk.pop(frame.seq, None)
            expected = self.expected.get(frame.seq)
            if frame_risk is not None:
                self.risk += min(1.0, sum(frame_risk.values()))
                for key, p in frame_risk.items():
                    self.pair_risk[key] = max(self.pair_risk.get(key, 0.0), p)
            if (
                expected is None
                or frame.latent is None
                or frame.outcome in (Outcome.CONCEALED, Outcome.LOST)
                or np.array_equal(frame.latent, expected)
            ):
                continue
            if frame.outcome is Outcome.DECODED and record is not None and record.hit:
                self.silent_decoded += 1
            if frame.seq in self.true_cue or frame.seq in self.referencing:
                # a frame that shows a reference accepted by its cue (after a repair or not)
                self.silent.append((_key(frame.latent), _key(expected)))
                if frame.outcome is Outcome.RECOVERED_REFRESH:
                    self.refresh_wrong += 1
            else:
                self.payload_wrong += 1

    # -- the cue model (what a silent wrong decode may cost) --------------------------------------

    def _hit_risk(self, hit: Hit) -> dict[tuple[bytes, bytes, int], float] | None:
        """Upper bounds of P(the Rx accepts a wrong latent for this hit), per wrong candidate
        (keyed by the comparison: shown latent, true latent, cue bits flipped on the way)."""
        expected = self.expected.get(hit.seq)
        true_cue = self.true_cue.get(hit.seq)
        if expected is None or true_cue is None:
            return None  # a seq the channel changed (whole-frame errors): not modelled
        rx, tolerance = self.rx, self.config.cue_tolerance
        flipped = hamming(hit.cue, true_cue)
        tally = _RiskTally(expected, self.config.cue_bits, tolerance, flipped)
        p_accept, add = tally.p_accept, tally.add

        # 1. Verification of the referenced prototype (or blend) in the Rx memory.
        fails = 1.0  # P(verification fails), when the lookup and refresh paths are taken
        candidate = self._reconstruct(rx.memory, rx.id_map, hit)
        if candidate is not None:
            if np.array_equal(candidate, expected):
                fails = float(flipped > tolerance)
            else:
                fails = 1.0 - p_accept(candidate)
                add(candidate)
        # 2. Content-addressable lookup (union bound over every stored prototype) and 3. the
        # refreshed references (the Tx's prototypes of the refs as received); each of these is
        # reached only when verification failed: P(fail and accept) <= min(P(fail), P(accept)).
        for slot in np.flatnonzero(rx.memory.filled):
            add(rx.memory.prototypes[slot], fails)
        refreshed = self._reconstruct(self.tx.memory, None, hit)
        if refreshed is not None:
            add(refreshed, fails)
        return tally.risk

    def _reference_risk(
        self, ref: int, cue: int | None, tx_prototypes: np.ndarray
    ) -> dict[tuple[bytes, bytes, int], float]:
        """Upper bounds of P(the Rx resolves reference ``ref`` of a CODED or DELTA frame to a
        prototype not the Tx's), as :meth:`_hit_risk` for a HIT. ``cue``: the cue the Rx decoded
        (None: not sent, the reference is trusted, so a wrong prototype is accepted for sure);
        ``tx_prototypes``: the Tx memory when it decided the frame."""
        cfg, rx = self.config, self.rx
        tolerance = cfg.cue_tolerance
        if not 0 <= ref < cfg.capacity:
            return {}
        true_latent = tx_prototypes[ref]
        verify = cue is not None and cfg.cue_bits > 0
        flipped = hamming(cue, self.tx.hasher.cue(true_latent)) if verify else 0
        # no cue: the reference is trusted, a wrong prototype accepted for sure (0 cue bits)
        tally = _RiskTally(true_latent, cfg.cue_bits if verify else 0, tolerance, flipped)
        p_accept, add = tally.p_accept, tally.add

        fails = 1.0
        slot = int(rx.id_map[ref])
        if rx.memory.filled[slot]:
            candidate = rx.memory.prototypes[slot]
            if np.array_equal(candidate, true_latent):
                fails = float(verify and flipped > tolerance)
            else:
                fails = 1.0 - p_accept(candidate)
                add(candidate)
        if verify:  # the lookup is taken only on a cue
            for filled in np.flatnonzero(rx.memory.filled):
                add(rx.memory.prototypes[filled], fails)
        # What a refresh brings: the Tx's prototype by then (its current one, or the slot a
        # DELTA writes, both bounded by the Tx memory now).
        if self.tx.memory.filled[ref]:
            add(self.tx.memory.prototypes[ref], fails)
        return tally.risk

    def _reconstruct(self, memory, id_map, hit: Hit) -> np.ndarray | None:
        """The latent ``memory`` rebuilds for ``hit`` (None: a reference it cannot resolve)."""
        if not hit.refs or any(r >= self.config.capacity for r in hit.refs):
            return None
        slots = tuple(int(id_map[r]) if id_map is not None else r for r in hit.refs)
        if not all(memory.filled[s] for s in slots):
            return None
        try:
            return memory.reconstruct(slots, hit.weights)
        except ValueError:  # MemoryAccessError, QuantizerError: a malformed reference
            return None

    # -- agreement ---------------------------------------------------------------------------------

    def agree(self) -> bool:
        return self.rx.digest == self.tx.memory.digest()

    def stale_refs(self) -> int:
        """References whose Rx prototype differs from the Tx's (or is missing): D."""
        tx, rx = self.tx.memory, self.rx
        theirs = tx.slot_hashes()
        ours = rx.memory.slot_hashes(order=rx.id_map)[: tx.count]
        stale = 0
        for ref in range(tx.count):
            slot = rx.id_map[ref]
            if ref >= len(ours) or ours[ref] != theirs[ref] or not rx.memory.filled[slot]:
                stale += 1
        return stale + int(rx.memory.count > tx.count)


class _RiskTally:
    """Upper bounds of P(the Rx accepts a wrong latent in place of ``true``), summed per wrong
    candidate and keyed by the comparison (shown latent, true latent, cue bits flipped)."""

    def __init__(self, true: np.ndarray, bits: int, tolerance: int, flipped: int) -> None:
        self.true, self.bits, self.tolerance, self.flipped = true, bits, tolerance, flipped
        self._true_key = _key(true)
        self.risk: dict[tuple[bytes, bytes, int], float] = {}

    def p_accept(self, latent: np.ndarray) -> float:
        """P(a cue of ``latent`` passes as the true one's); 1 with no cue bits."""
        if self.bits == 0:
            return 1.0
        cos = float(np.clip(np.dot(latent, self.true), -1.0, 1.0))
        return accept_probability(self.bits, self.tolerance, math.acos(cos), self.flipped)

    def add(self, latent: np.ndarray, cap: float = 1.0) -> None:
        """Count ``latent`` as a candidate reached with probability at most ``cap``."""
        if np.array_equal(latent, self.true):
            return
        key = (_key(latent), self._true_key, self.flipped)  # one comparison: same latents, bits
        self.risk[key] = min(1.0, self.risk.get(key, 0.0) + min(cap, self.p_accept(latent)))


def _key(latent: np.ndarray) -> bytes:
    return np.ascontiguousarray(latent, dtype=np.float32).tobytes()


# --- the stream loop -----------------------------------------------------------------------------

FrameHook = Callable[[int, InProcessLink], None]


def run_stream(
    latents: np.ndarray,
    link: InProcessLink,
    *,
    fps: float = FPS,
    digest_every: int = DIGEST_EVERY,
    at_frame_time: FrameHook | None = None,
    before_frame: FrameHook | None = None,
) -> InProcessLink:
    """Stream a clip's latents (N, d) — or token grids (N, h, w, d) on a token link — through
    ``link`` and end the stream; returns ``link``.

    At each frame time: ``at_frame_time(seq, link)`` (change impairments), deliver what is due,
    tick the Rx, ``before_frame(seq, link)`` (inject events, observe), then the Tx decides the
    frame; a DIGEST follows every ``digest_every`` frames (0: only the last one).
    """
    for seq, latent in enumerate(np.asarray(latents, dtype=np.float32)):
        if at_frame_time is not None:
            at_frame_time(seq, link)
        link.run_until(seq / fps)
        link.tick()
        if before_frame is not None:
            before_frame(seq, link)
        link.frame(seq, latent)
        if digest_every and (seq + 1) % digest_every == 0:
            link.send("tx_to_rx", link.tx.digest())
    link.end_stream(len(latents), fps)
    return link


# --- the simulator: one clip on an ideal channel, with its quality ------------------------------


@dataclass(frozen=True)
class Corruption:
    """One-shot corruption of the Rx memory just before frame ``at_frame`` (Fig. 3)."""

    at_frame: int
    rho: float = 0.0  # fraction of the ID map permuted
    sigma: float = 0.0  # Gaussian noise added to every Rx prototype
    seed: int = 0

    def apply(self, seq: int, link: InProcessLink) -> None:
        if seq == self.at_frame:
            link.inject(encode(Corrupt(rho=self.rho, sigma=self.sigma, seed=self.seed)))
            link.run_until(link.now)


@dataclass
class SimResult:
    config: LinkConfig
    records: list[FrameRecord]
    summary: LinkSummary
    tx: TxCounters
    rx: RxCounters
    digests_agree: bool
    silent_wrong: int  # hits decoded by their cue while the Rx latent differed from the Tx's
    rx_latents: np.ndarray
    refresh_bits: int  # Tx→Rx REFRESH traffic (semantic bits), included in bits/frame
    feedback_bits: int  # Rx→Tx REFRESH_REQUEST traffic
    link_bits: int  # every message in both directions (shared.accounting.link_bits)
    wire_bits: int  # every message as msgpack + websocket framing

    @property
    def refreshes(self) -> int:
        return self.summary.refreshes


def simulate(
    latents: np.ndarray,
    config: LinkConfig,
    *,
    frames: np.ndarray | None = None,
    decoder: DecodeCache | None = None,
    with_ssim: bool = True,
    fps: float = FPS,
    digest_every: int = DIGEST_EVERY,
    corruption: Corruption | None = None,
    authenticated: bool = False,
) -> SimResult:
    """Run a clip's latents (N, d) through an ideal link; quality needs ``frames`` and
    ``decoder``. ``corruption`` corrupts the Rx memory once, as the paper's Fig. 3 does;
    ``authenticated`` counts the link bits a link with a shared secret carries."""
    link = run_stream(
        latents,
        InProcessLink(config, seed=config.seed, authenticated=authenticated),
        fps=fps,
        digest_every=digest_every,
        before_frame=corruption.apply if corruption is not None else None,
    )
    n = len(latents)
    records = link.ledger.ordered(n)
    rx_latents = np.zeros(np.shape(latents), dtype=np.float32)  # (N, d), or (N, h, w, d) tokens
    for seq, latent in link.shown.items():
        if seq < n:
            rx_latents[seq] = latent
    if frames is not None and decoder is not None:
        measure_quality(records, frames, link.shown, decoder, with_ssim=with_ssim)
    ledger = link.ledger
    return SimResult(
        config=config,
        records=records,
        summary=ledger.summary(records),
        tx=link.tx.counters,
        rx=link.rx.counters,
        digests_agree=link.agree(),
        silent_wrong=link.silent_decoded,
        rx_latents=rx_latents,
        refresh_bits=ledger.refresh_bits,
        feedback_bits=ledger.feedback_bits,
        link_bits=ledger.link_bits,
        wire_bits=ledger.wire_bits,
    )


def measure_quality(
    records: list[FrameRecord],
    frames: np.ndarray,
    shown: dict[int, np.ndarray],
    decoder: DecodeCache,
    *,
    with_ssim: bool = False,
) -> None:
    """PSNR (and SSIM) of every frame the Rx showed, against the original frames."""
    for record in records:
        latent = shown.get(record.seq)
        if latent is None or record.outcome is Outcome.LOST:
            continue
        picture = decoder(latent)
        record.psnr = psnr(frames[record.seq], picture)
        if with_ssim:
            record.ssim = ssim(frames[record.seq], picture)
