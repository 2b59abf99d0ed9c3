"""The receiver process: the link websocket feeding :class:`ReceiverCore`, plus REST.

The link is served on its own port (``--link-port``, ``ws://host:9003/link``) by the websockets
library (:class:`shared.service.LinkServer`); REST, SSE and metrics on ``--port`` by uvicorn.

One link at a time. The first message must be a HELLO with our protocol version, link config
digest and codec digest; a mismatch is answered with an ERROR and a close code (4000-4003, see
:class:`shared.protocol.handshake.CloseCode`). After it every binary message is decoded and
handed to the core with ``time.monotonic()``; replies go back on the same websocket; a tick task
lets the core conceal frames whose refresh did not come in time.

The link's state follows :class:`shared.protocol.handshake.LinkStateMachine`: idle, handshaking
once a websocket is accepted, streaming once its HELLO passed, resyncing while the Tx's last DIGEST
shows the Rx memory differs (a corruption, a lost NEW) until a later DIGEST or the refreshes make
them agree again, and idle again when the link ends.

A *session* is one stream of sequence numbers: it starts with the first HELLO and ends with BYE.
A link that drops without BYE is resumed by the next HELLO (same core, same memory); a HELLO
after BYE starts a fresh session (new core, new accounting).

Final frames are decoded to pixels by the codec in a worker thread (so the link keeps moving) and,
with ``--reference``, compared with the ground truth regenerated locally from the same scenario
and seed (out of band: never link bits) for PSNR/SSIM. All figures come from
:mod:`shared.accounting` and the core's counters. ``GET /thumbnails/latest`` serves the last
measured frame and its ground truth as small PNGs for the dashboard (out of band too).
``--frame-log FILE`` appends one JSON line per frame decoded to pixels: session, seq, outcome,
and when its pixels were ready on ``time.monotonic()`` (one clock for every process of the
machine, so a benchmark can join it with the Tx's log for per-frame latency).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from receiver.core import RxStep
from receiver.metrics import RxMetrics
from receiver.record import FrameRecorder
from receiver.tokens import receiver_core
from shared.accounting import (
    FrameRecord,
    LinkLedger,
    LinkSummary,
    Outcome,
    psnr,
    ssim,
)
from shared.codec.cache import DecodeCache
from shared.codec.models import Codec
from shared.codec.tokens import link_codec
from shared.config import LinkConfig
from shared.protocol.handshake import (
    CloseCode,
    HandshakeError,
    IllegalTransition,
    LinkEvent,
    LinkState,
    LinkStateMachine,
    check_hello,
)
from shared.protocol.messages import (
    FRAME_MESSAGES,
    Bye,
    Digest,
    Error,
    Hello,
    Message,
    New,
    ProtocolError,
    Refresh,
    decode,
    encode,
    ws_frame_bytes,
)
from shared.protocol.seal import LinkAuth, MessageAuthError
from shared.protocol.security import (
    AuthError,
    NonceMemory,
    is_loopback,
    link_auth,
    sign_hello,
    verify_hello,
)
from shared.service import (
    FrameLog,
    Health,
    LinkServer,
    RxSettings,
    create_app,
    finite,
    get_service,
    never_finished,
    serve,
)

log = logging.getLogger("hoplink.rx")

TIMELINE_FRAMES = 300  # recent frames kept for a dashboard
# Pixels of recently shown latents (hits repeat recent prototypes): ~1,300 frames at 64x64, ~40
# token frames at 240 p. Small enough to fill within a soak's warm-up, so growth beyond it is real.
RX_DECODE_CACHE_BYTES = 16 * 2**20
SUMMARY_WINDOW = 20_000  # link figures cover the last this many settled frames (bounded cost)


# --- one session's bookkeeping (no I/O) ----------------------------------------------------------


@dataclass
class Traffic:
    """Bytes and bits that crossed this end of the link in one session."""

    messages_in: int = 0
    messages_out: int = 0
    payload_bytes_in: int = 0  # msgpack bytes
    payload_bytes_out: int = 0
    wire_bytes_in: int = 0  # msgpack + websocket framing (shared.protocol.messages.ws_frame_bytes)
    wire_bytes_out: int = 0
    decode_errors: int = 0  # messages shared.protocol.messages.decode rejected
    errors_sent: int = 0
    replies_dropped: int = 0  # replies produced while no link could carry them
    corrupt_events: int = 0  # CORRUPT events received from the channel
    core_failures: int = 0  # messages whose handling raised (caught, counted, frame concealed)
    # Messages dropped by per-message authentication (a link with a shared secret), by why:
    auth_unsealed: int = 0  # no seal
    auth_forged: int = 0  # a tag that does not verify: forged, or altered on the way
    auth_replayed: int = 0  # a counter accepted before (a replay or a channel duplicate)


class RxSession:
    """Accounting of one stream around a :class:`ReceiverCore`: records, traffic, digests.

    Pure bookkeeping: the shell passes messages, steps and times in; nothing here does I/O.
    """

    def __init__(
        self,
        config: LinkConfig,
        number: int,
        refresh_timeout: float,
        *,
        authenticated: bool = False,
    ) -> None:
        self.config = config
        self.number = number
        self.core = receiver_core(config, refresh_timeout=refresh_timeout)
        self.traffic = Traffic()
        # Frames that arrived and are not settled yet, and the session's refresh traffic.
        self.ledger = LinkLedger(config, retain="unsettled", authenticated=authenticated)
        self.ended = False  # BYE received
        self.settled: deque[FrameRecord] = deque(maxlen=SUMMARY_WINDOW)
        # (record, bits of the REFRESHes that arrived since the previous settled frame)
        self.timeline: deque[tuple[FrameRecord, int]] = deque(maxlen=TIMELINE_FRAMES)
        self._refresh_bits_due = 0
        self.provisional = 0  # concealing frames shown while a refresh was awaited
        self.admitted = 0  # distinct frames that arrived (duplicates excluded)
        self.held_bye: tuple[Bye, float] | None = None  # a BYE waiting for frames it overtook
        self.news_since_digest = 0
        self.digest_agree: bool | None = None
        self.last_digest_seq: int | None = None
        self.last_quality: FrameRecord | None = None
        self._summary: LinkSummary | None = None
        self._summary_key: tuple[int, int] | None = None
        self.quality_done = 0

    def on_message(self, message: Message, payload_bytes: int, now: float) -> RxStep:
        """Feed one decoded message; returns the core's step (frames settle via ``settled``).

        No exception of the core escapes: a failure is logged, counted (``core_failures``) and
        answered with an ERROR, and the frame it concerns is accounted as concealed."""
        try:
            step = self.core.on_message(message, now)
        except Exception as exc:  # a bug of the core must not end the link nor lose a frame
            self.traffic.core_failures += 1
            log.exception("session %d: %s message failed", self.number, message.TYPE)
            step = self.core.fail(message, f"{message.TYPE}: {type(exc).__name__}: {exc}")
        seq = getattr(message, "seq", None)
        if isinstance(message, FRAME_MESSAGES) and seq in step.admitted:
            # A frame the core admitted (not a duplicate): remember what it cost, now, even if
            # it waits for an earlier frame to decode. An entropy-coded frame's kind is known
            # once the core decoded it (step.hits).
            self.admitted += 1
            self.ledger.frame(seq, message, hit=False, wire_bytes=payload_bytes)
        elif not isinstance(message, FRAME_MESSAGES):  # REFRESH, DIGEST, BYE: link bits too
            bits = self.ledger.traffic(message, payload_bytes)
            if isinstance(message, Refresh):
                self._refresh_bits_due += bits
        match message:
            case New():
                self.news_since_digest += 1
            case Digest():
                self.news_since_digest = 0
                self.last_digest_seq = message.seq
            case Bye():
                self.ended = True
        if self.news_since_digest == 0 and self.core.tx_digest is not None:
            # The Tx's digest describes this memory until the next NEW; refreshes repair it.
            self.digest_agree = self.core.digest == self.core.tx_digest
        return step

    def hold_bye(self, bye: Bye, deadline: float) -> None:
        """Keep a BYE until every frame up to ``bye.last_seq`` arrived, or until ``deadline``.

        The channel may deliver BYE before frames it delayed (control messages skip delay), and
        a real network may reorder; finishing at once would count those frames lost.
        """
        self.held_bye = (bye, deadline)

    def release_bye(self, now: float, force: bool = False) -> Bye | None:
        """The held BYE, once all its frames arrived, its deadline passed, or ``force``."""
        if self.held_bye is None:
            return None
        bye, deadline = self.held_bye
        if force or now >= deadline or self.admitted >= bye.last_seq + 1:
            self.held_bye = None
            return bye
        return None

    def settle(self, step: RxStep) -> list[tuple[FrameRecord, np.ndarray]]:
        """Record the final outcomes of ``step``; returns (record, latent shown) to measure."""
        shown = []
        self.ledger.mark_hits(step.hits)
        for frame in step.frames:
            if frame.outcome is None:
                self.provisional += 1
                continue
            record = self.ledger.settle(frame.seq, frame.outcome)
            self.settled.append(record)
            self.timeline.append((record, self._refresh_bits_due))
            self._refresh_bits_due = 0
            if frame.latent is not None:
                # Copy: the latent may be a view of a memory slot that is rewritten later.
                shown.append((record, np.array(frame.latent, dtype=np.float32)))
        return shown

    def traffic_stats(self) -> dict[str, int]:
        """Bytes and messages of this end, with the ledger's bits (eq. 3) of what arrived."""
        ledger = self.ledger
        return {
            **asdict(self.traffic),
            "refreshes": ledger.refreshes,  # REFRESH messages received
            "refresh_bits": ledger.refresh_bits,  # part of bits/frame
            "semantic_bits_in": ledger.frame_bits + ledger.refresh_bits,
            "feedback_bits": ledger.feedback_bits,  # REFRESH_REQUEST sent to the Tx
        }

    def summary(self) -> LinkSummary | None:
        """shared.accounting's link figures over the settled window (cached between changes)."""
        key = (self.core.counters.messages + len(self.settled), self.quality_done)
        if key != self._summary_key and self.settled:
            self._summary = self.ledger.summary(list(self.settled))
            self._summary_key = key
        return self._summary


class ReferenceFrames:
    """Ground-truth frames by sequence number, regenerated locally (never sent on the link)."""

    def __init__(self, source: str, frames: Iterator[np.ndarray]) -> None:
        self.source = source
        self._frames = frames  # a codec's source_frames: bad sources failed there
        self._cache: list[np.ndarray] = []
        self._exhausted = False

    def get(self, seq: int) -> np.ndarray | None:
        while not self._exhausted and len(self._cache) <= seq:
            frame = next(self._frames, None)
            if frame is None:
                self._exhausted = True
            else:
                self._cache.append(frame)
        if seq < len(self._cache):
            return self._cache[seq]
        # Past the end: the Tx loops its source (--loop) and keeps counting sequence numbers.
        return self._cache[seq % len(self._cache)] if self._cache else None


# --- stats models --------------------------------------------------------------------------------


class RxLinkStats(BaseModel):
    state: LinkState
    illegal_events: int  # link events refused by the state table (named errors, closed 4000)
    session: int
    session_ended: bool
    links_accepted: int
    links_refused_by_code: dict[str, int]
    last_close_code: int | None
    last_close_reason: str | None


class RxBits(BaseModel):
    link_per_frame: float | None  # every message both ways at its coded width (link_bits)
    semantic_per_frame: float | None  # eq. 3, frame messages + refreshes (shared.accounting)
    payload_bytes_per_frame: float | None  # msgpack bytes of the frame messages
    wire_bits_per_frame: float | None  # all link bytes both ways incl. websocket framing
    feedback_bits_per_frame: float | None
    compression_ratio: float | None
    efficiency: float | None  # η (eq. 5)
    capacity: float | None  # C (eq. 5)


class RxQuality(BaseModel):
    reference: str | None
    psnr_mean: float | None
    ssim_mean: float | None
    psnr_last: float | None
    ssim_last: float | None
    pending: int  # frames waiting for pixel decoding / quality


class RxMemory(BaseModel):
    count: int
    filled: int
    capacity: int
    occupancy: float


class RxDigest(BaseModel):
    rx: str
    tx_last: str | None
    agree: bool | None  # Rx memory == the Tx's at its last DIGEST (None: no DIGEST yet)
    last_digest_seq: int | None


class TimelineEntry(BaseModel):
    seq: int
    kind: str | None  # "HIT" | "NEW" | None (lost: nothing was shown)
    bits: int
    refresh_bits: int  # REFRESHes that arrived since the previous settled frame (eq. 3)
    outcome: str
    psnr: float | None


class Thumbnails(BaseModel):
    """The last measured frame, for the dashboard: PNG data URLs (out of band, not link bits)."""

    seq: int | None  # None: no frame decoded yet
    session: int
    original: str | None  # ground truth (None without --reference)
    reconstruction: str | None  # what the Rx shows
    psnr: float | None
    ssim: float | None


class RxStats(BaseModel):
    service: str = "rx"
    link: RxLinkStats
    frames: int  # settled frames
    frames_by_outcome: dict[str, int]  # + before_restart: sent before this Rx joined the stream
    provisional_frames: int
    hits: int
    news: int
    hit_rate: float | None
    bits: RxBits
    quality: RxQuality
    memory: RxMemory
    digest: RxDigest
    counters: dict[str, int]  # ReceiverCore counters (monotonic within a session)
    traffic: dict[str, int]
    timeline: list[TimelineEntry]


# --- the shell -----------------------------------------------------------------------------------


class RxService:
    """The Rx's I/O shell: websocket link, tick task, quality worker, stats."""

    name = "rx"

    def __init__(
        self, config: LinkConfig, settings: RxSettings, codec: Codec | None = None
    ) -> None:
        self.config = config
        self.settings = settings
        self.codec = link_codec(config, codec)
        self.config_digest = config.digest()
        self.reference = (
            ReferenceFrames(
                settings.reference,
                self.codec.source_frames(settings.reference, settings.frames, config.seed),
            )
            if settings.reference
            else None
        )
        self.decoder = DecodeCache(self.codec, max_bytes=RX_DECODE_CACHE_BYTES)
        self.metrics = RxMetrics()  # receiver/metrics.py: what GET /metrics serves
        self.session = self._new_session(0)
        self.sessions = 0
        self.machine = LinkStateMachine()  # the link's state (one link at a time)
        self.link: ServerConnection | None = None
        self._link_free = asyncio.Event()  # set while no socket holds the link slot
        self._link_free.set()
        self.links_accepted = 0
        self.refusals: dict[str, int] = {}
        self.last_close: tuple[int, str] | None = None
        self._send_lock = asyncio.Lock()
        self._quality: asyncio.Queue[tuple[RxSession, FrameRecord, np.ndarray]] = asyncio.Queue()
        self._quality_busy = 0
        self._tasks: list[asyncio.Task] = []
        self._warned = 0
        self._nonces = NonceMemory()  # HELLO nonces seen: a replayed HELLO is refused
        self._preauth = 0  # sockets accepted whose HELLO has not passed yet
        self._auth: LinkAuth | None = None  # seals and opens the link's messages (a secret set)
        self._auth_warned = 0
        self._stream_id = ""  # the stream id of the current session's Tx (Hello.stream)
        # (session, record, truth, shown) of the last measured frame, and its thumbnails
        self._latest: tuple[int, FrameRecord, np.ndarray | None, np.ndarray] | None = None
        self._thumbnails: tuple[tuple[int, int], Thumbnails] | None = None
        self._frame_log = FrameLog(None)
        self._recorder = FrameRecorder(settings.record) if settings.record else None

    def _new_session(self, number: int) -> RxSession:
        return RxSession(
            self.config,
            number,
            self.settings.refresh_timeout,
            authenticated=self.settings.secret is not None,
        )

    # -- lifespan ---------------------------------------------------------------------------------

    async def start(self) -> None:
        if not is_loopback(self.settings.host) and self.settings.secret is None:
            log.warning(
                "the link listens on %s without a shared secret: anyone who reaches this port "
                "can stream to this receiver (set HOPLINK_SECRET on rx and tx)",
                self.settings.host,
            )
        self._frame_log = FrameLog(self.settings.frame_log)
        self._tasks = [
            asyncio.create_task(self._tick_loop(), name="rx-tick"),
            asyncio.create_task(self._quality_loop(), name="rx-quality"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._frame_log.close()
        if self._recorder is not None:
            self._recorder.close()
            log.info("recorded %d frames to %s", self._recorder.frames, self._recorder.path)
        if self.link is not None:
            with contextlib.suppress(Exception):
                await self.link.close(CloseCode.GOING_AWAY, "receiver shutting down")

    wait_finished = staticmethod(never_finished)

    # -- the link ---------------------------------------------------------------------------------

    @property
    def state(self) -> LinkState:
        return self.machine.state

    async def serve_link(self, ws: ServerConnection) -> None:
        """A socket takes the link slot only once its HELLO passed: until then it is one of at
        most ``--preauth-max`` unauthenticated sockets, each with ``--hello-timeout`` to send
        its HELLO, so idle or slow strangers cannot keep the real Tx out."""
        if self._preauth >= self.settings.preauth_max:
            self._refused(CloseCode.LINK_BUSY, "preauth_full")
            with contextlib.suppress(Exception):
                await ws.close(CloseCode.LINK_BUSY, "too many links awaiting their hello")
            return
        self._preauth += 1
        try:
            first = await self._read_hello(ws)
        finally:
            self._preauth -= 1
        if first is None:
            return
        if self.link is not None:
            if not self._supersedes(first[0]):
                self._refused(CloseCode.LINK_BUSY)
                with contextlib.suppress(Exception):
                    await ws.close(CloseCode.LINK_BUSY, "the receiver already serves a link")
                return
            await self._drop_link(CloseCode.SUPERSEDED, "a new link of this stream took over")
            if self.link is not None:  # another socket took the slot meanwhile
                self._refused(CloseCode.LINK_BUSY)
                with contextlib.suppress(Exception):
                    await ws.close(CloseCode.LINK_BUSY, "the receiver already serves a link")
                return
        self.link = ws
        self._link_free.clear()
        self.machine.handle(LinkEvent.ACCEPT)
        try:
            self.machine.handle(LinkEvent.HELLO_RECEIVED)
            await self._open(*first)
            await self._stream(ws)
        except IllegalTransition as exc:  # a bug of this shell, not of the peer: say so, close
            code, reason = self.machine.close_for(exc)
            log.error("link closed: %s", exc)
            self.last_close = (int(code), reason)
            with contextlib.suppress(Exception):
                await ws.close(code, reason)
        finally:
            self.link = None
            self._auth = None
            self.machine.handle(LinkEvent.HANG_UP)
            self._link_free.set()

    def _supersedes(self, hello: Hello) -> bool:
        """Whether ``hello`` may take the slot from the link being served: with a secret, a
        HELLO that passed its MAC and its nonce check comes from a holder of the secret, and one
        of the stream being served is that stream's Tx reconnecting (its old socket may be dead,
        or held by someone who replayed an old HELLO to a restarted Rx and can seal nothing)."""
        return (
            self.settings.secret is not None
            and bool(hello.stream)
            and (hello.stream == self._stream_id)
        )

    async def _drop_link(self, code: CloseCode, reason: str) -> None:
        """Close the link being served and wait until its handler has let the slot go."""
        old = self.link
        if old is None:
            return
        log.warning("closing the link being served (%d): %s", code, reason)
        self._refused(code, "superseded")
        with contextlib.suppress(Exception):
            await old.close(code, reason)
        await self._link_free.wait()

    async def _read_hello(self, ws: ServerConnection) -> tuple[Hello, bytes] | None:
        """The socket's first message, a valid HELLO (MAC, nonce, version, digests), or None
        once it was refused (counted, answered with an ERROR and a close code)."""
        try:
            async with asyncio.timeout(self.settings.hello_timeout):
                data = await ws.recv()
            if isinstance(data, str):
                raise HandshakeError(CloseCode.PROTOCOL_ERROR, "expected a binary HELLO frame")
            try:
                hello = decode(data)
            except ProtocolError as exc:
                raise HandshakeError(CloseCode.PROTOCOL_ERROR, f"bad hello: {exc}") from None
            if not isinstance(hello, Hello):
                raise HandshakeError(
                    CloseCode.PROTOCOL_ERROR, f"first message must be hello, got {hello.TYPE}"
                )
            try:  # the MAC first: a stranger learns nothing, not even our digests
                verify_hello(hello, self.settings.secret)
                if self.settings.secret is not None:
                    self._nonces.check_and_remember(hello.nonce)
            except AuthError as exc:
                raise HandshakeError(CloseCode.AUTH_FAILED, str(exc)) from None
            check_hello(hello, "tx", self.config_digest, self.codec.digest)
        except ConnectionClosed:
            return None
        except TimeoutError:  # transient for a real Tx (a long channel delay): it retries
            await self._refuse(ws, HandshakeError(CloseCode.HELLO_TIMEOUT, "no hello in time"))
            return None
        except HandshakeError as exc:
            await self._refuse(ws, exc)
            return None
        return hello, data

    async def _open(self, hello: Hello, data: bytes) -> None:
        """The link slot is ours: resume or start the session, answer the HELLO."""
        await self._release_bye(time.monotonic(), force=True)
        if self.session.ended or self.sessions == 0 or hello.stream != self._stream_id:
            # A new stream (after BYE, or from a restarted Tx: another stream id) starts a new
            # session; the same stream reconnecting resumes its session.
            self.sessions += 1
            self.session = self._new_session(self.sessions)
            self._stream_id = hello.stream
            if hello.next_seq:  # a stream under way (this Rx restarted): join it where it is
                self.session.core.start_at(hello.next_seq)
        self.session.traffic.messages_in += 1
        self._count_in(len(data))
        self.session.ledger.traffic(hello, len(data))
        reply = Hello(role="rx", config_digest=self.config_digest, model_digest=self.codec.digest)
        reply = sign_hello(reply, self.settings.secret, peer_nonce=hello.nonce)
        await self._send(reply)
        # Every later message is sealed under keys bound to both nonces (ours is fresh).
        self._auth = link_auth(self.settings.secret, "rx", hello, reply)
        self.links_accepted += 1
        self.machine.handle(LinkEvent.HELLO_ACCEPTED)
        self._follow_digest()  # a resumed session may still disagree with the Tx
        log.info("link open (session %d)", self.session.number)

    async def _refuse(self, ws: ServerConnection, exc: HandshakeError) -> None:
        log.warning("link refused (%d): %s", exc.code, exc.detail)
        self._refused(exc.code)
        with contextlib.suppress(Exception):
            await ws.send(encode(Error(code=exc.error_code, reason=exc.detail)))
            await ws.close(exc.code, exc.reason)

    def _refused(self, code: CloseCode, key: str | None = None) -> None:
        key = key or code.name.lower()
        self.refusals[key] = self.refusals.get(key, 0) + 1
        self.last_close = (int(code), key)

    async def _stream(self, ws: ServerConnection) -> None:
        while True:
            try:
                data = await ws.recv()
            except ConnectionClosed as exc:
                close = exc.rcvd
                self.last_close = (close.code, close.reason) if close else (1006, "")
                log.info("link closed by peer: %s %s", *self.last_close)
                return
            session = self.session
            session.traffic.messages_in += 1
            if isinstance(data, str):
                self._count_in(len(data.encode()))
                await self._bad_input(ProtocolError("text frame: messages are binary msgpack"))
                continue
            self._count_in(len(data))
            if self._auth is not None:
                try:
                    data = self._auth.open(data)
                except MessageAuthError as exc:  # dropped before any core sees it
                    self._auth_failed(exc)
                    continue
            try:
                message = decode(data)
            except ProtocolError as exc:
                await self._bad_input(exc)
                continue
            if isinstance(message, Hello):  # illegal once streaming: counted, answered, kept
                try:
                    self.machine.handle(LinkEvent.HELLO_RECEIVED)
                except IllegalTransition as exc:
                    await self._bad_input(exc)
                    continue
            if message.TYPE == "corrupt":
                session.traffic.corrupt_events += 1
            now = time.monotonic()
            self.metrics.received(message.TYPE, len(data))
            if isinstance(message, FRAME_MESSAGES):
                self.metrics.frame_arrived(session.number, message.seq, now)
            if isinstance(message, Bye):
                session.hold_bye(message, now + self.settings.bye_wait)
            else:
                await self._handle(session.on_message(message, len(data), now))
            await self._release_bye(now)

    def _count_in(self, n: int) -> None:
        t = self.session.traffic
        t.payload_bytes_in += n
        t.wire_bytes_in += ws_frame_bytes(n, masked=True)  # client-to-server frames are masked

    def _auth_failed(self, exc: MessageAuthError) -> None:
        """Counted and logged, never answered: a forger learns nothing and cannot make us
        send (bit errors on an authenticated link land here too)."""
        t = self.session.traffic
        setattr(t, f"auth_{exc.kind}", getattr(t, f"auth_{exc.kind}") + 1)
        self._auth_warned += 1
        if self._auth_warned <= 10 or self._auth_warned % 100 == 0:
            log.warning("message dropped (%d so far): %s", self._auth_warned, exc)

    async def _bad_input(self, exc: ProtocolError) -> None:
        self.session.traffic.decode_errors += 1
        self._warned += 1
        if self._warned <= 10 or self._warned % 100 == 0:
            log.warning("bad message (%d so far): %s", self._warned, exc)
        self.session.traffic.errors_sent += 1
        await self._send(Error(code="bad_message", reason=str(exc)[:1024]))

    def _follow_digest(self) -> None:
        """Resyncing while the Tx's last DIGEST shows our memory differs from its memory,
        streaming again once they agree (RxSession.digest_agree; refreshes repair it)."""
        agree, state = self.session.digest_agree, self.machine.state
        if agree is False and state is LinkState.STREAMING:
            self.machine.handle(LinkEvent.DIVERGED)
            log.info("memory differs from the Tx's DIGEST: resyncing")
        elif agree is True and state is LinkState.RESYNCING:
            self.machine.handle(LinkEvent.CONVERGED)
            log.info("memory agrees with the Tx's DIGEST again: streaming")

    async def _handle(self, step: RxStep) -> None:
        self._follow_digest()  # the message of this step may have settled a DIGEST's verdict
        session = self.session
        for record, latent in session.settle(step):
            self._quality.put_nowait((session, record, latent))
        for reply in step.replies:
            if isinstance(reply, Error):
                self.session.traffic.errors_sent += 1
            await self._send(reply)

    async def _send(self, message: Message) -> None:
        ws = self.link
        t = self.session.traffic
        if ws is None:
            t.replies_dropped += 1
            return
        body = encode(message)
        try:
            async with self._send_lock:
                data = body if self._auth is None else self._auth.seal(body)
                await ws.send(data)
        except Exception:  # the peer went away (the receive loop sees the close), or the
            t.replies_dropped += 1  # counter ran out (the Tx opens a new link)
            return
        t.messages_out += 1
        t.payload_bytes_out += len(data)
        self.metrics.sent(message.TYPE, len(body))
        self.session.ledger.traffic(message, len(body), masked=False)  # REFRESH_REQUEST, HELLO…
        t.wire_bytes_out += ws_frame_bytes(len(data), masked=False)

    async def _release_bye(self, now: float, force: bool = False) -> None:
        bye = self.session.release_bye(now, force)
        if bye is not None:
            await self._handle(self.session.on_message(bye, len(encode(bye)), now))
            log.info("session %d ended at frame %d", self.session.number, bye.last_seq)

    # -- background tasks -------------------------------------------------------------------------

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_interval)
            now = time.monotonic()
            await self._handle(self.session.core.tick(now))
            await self._release_bye(now)

    async def _quality_loop(self) -> None:
        while True:
            batch = [await self._quality.get()]
            while not self._quality.empty() and len(batch) < 64:
                batch.append(self._quality.get_nowait())
            self._quality_busy = len(batch)
            try:
                await asyncio.to_thread(self._measure, batch)
            except Exception:  # keep serving: a bad frame must not stop quality for the rest
                log.exception("quality measurement failed")
            finally:
                self._quality_busy = 0

    def _measure(self, batch: list[tuple[RxSession, FrameRecord, np.ndarray]]) -> None:
        """Decode shown latents to pixels and compare with the reference (worker thread)."""
        for session, record, latent in batch:
            session.quality_done += 1
            shown = self.decoder(latent)
            if self._recorder is not None:
                self._recorder.write(shown)
            self.metrics.frame_shown(
                session.number, record.seq, record.outcome.value, time.monotonic()
            )
            if self._frame_log:
                self._frame_log.write(
                    session=session.number, seq=record.seq, outcome=record.outcome.value,
                    decoded=time.monotonic(),
                )  # fmt: skip
            truth = self.reference.get(record.seq) if self.reference is not None else None
            if truth is not None:
                record.psnr = psnr(truth, shown)
                record.ssim = ssim(truth, shown)
                session.last_quality = record
            self._latest = (session.number, record, truth, shown)

    # -- stats ------------------------------------------------------------------------------------

    def health(self) -> Health:
        return Health(service=self.name, link=self.state)

    def thumbnails(self) -> Thumbnails:
        """The last measured frame and its ground truth as PNG data URLs (encoded once)."""
        latest = self._latest
        if latest is None:
            return Thumbnails(
                seq=None,
                session=self.session.number,
                original=None,
                reconstruction=None,
                psnr=None,
                ssim=None,
            )
        number, record, truth, shown = latest
        key = (number, record.seq)
        if self._thumbnails is None or self._thumbnails[0] != key:
            self._thumbnails = (
                key,
                Thumbnails(
                    seq=record.seq,
                    session=number,
                    original=None if truth is None else _png_data_url(truth),
                    reconstruction=_png_data_url(shown),
                    psnr=finite(record.psnr),
                    ssim=finite(record.ssim),
                ),
            )
        return self._thumbnails[1]

    def snapshot(self) -> RxStats:
        s = self.session
        core = s.core
        c = core.counters
        summary = s.summary()
        settled = summary.frames if summary else 0
        outcomes = summary.outcomes if summary else {o.value: 0 for o in Outcome}
        # Frames the Tx sent before this Rx joined its stream: not lost, unknown here; with
        # them the outcomes add up to what the Tx sent.
        outcomes = {**outcomes, "before_restart": c.before_restart}
        wire = s.traffic.wire_bytes_in + s.traffic.wire_bytes_out
        last = s.last_quality
        memory = core.memory
        filled = int(memory.filled.sum())
        return RxStats(
            link=RxLinkStats(
                state=self.state,
                illegal_events=self.machine.illegal,
                session=s.number,
                session_ended=s.ended,
                links_accepted=self.links_accepted,
                links_refused_by_code=dict(self.refusals),
                last_close_code=self.last_close[0] if self.last_close else None,
                last_close_reason=self.last_close[1] if self.last_close else None,
            ),
            frames=settled,
            frames_by_outcome=outcomes,
            provisional_frames=s.provisional,
            hits=c.hits,
            news=c.news,
            hit_rate=finite(summary.hit_rate) if summary else None,
            bits=RxBits(
                link_per_frame=s.ledger.link_bits / settled if settled else None,
                semantic_per_frame=finite(summary.bits_per_frame) if summary else None,
                payload_bytes_per_frame=finite(summary.wire_bytes_per_frame) if summary else None,
                wire_bits_per_frame=8 * wire / settled if settled else None,
                feedback_bits_per_frame=finite(summary.feedback_bits_per_frame)
                if summary
                else None,
                compression_ratio=finite(summary.compression_ratio) if summary else None,
                efficiency=finite(summary.efficiency) if summary else None,
                capacity=finite(summary.capacity) if summary else None,
            ),
            quality=RxQuality(
                reference=self.reference.source if self.reference else None,
                psnr_mean=finite(summary.psnr) if summary else None,
                ssim_mean=finite(summary.ssim) if summary else None,
                psnr_last=finite(last.psnr) if last else None,
                ssim_last=finite(last.ssim) if last else None,
                pending=self._quality.qsize() + self._quality_busy,
            ),
            memory=RxMemory(
                count=memory.count,
                filled=filled,
                capacity=memory.capacity,
                occupancy=filled / memory.capacity,
            ),
            digest=RxDigest(
                rx=core.digest,
                tx_last=core.tx_digest,
                agree=s.digest_agree,
                last_digest_seq=s.last_digest_seq,
            ),
            counters=asdict(c),
            traffic=s.traffic_stats(),
            timeline=[
                TimelineEntry(
                    seq=r.seq,
                    kind=None if r.outcome is Outcome.LOST else ("HIT" if r.hit else "NEW"),
                    bits=r.bits,
                    refresh_bits=refresh_bits,
                    outcome=r.outcome.value,
                    psnr=finite(r.psnr),
                )
                for r, refresh_bits in s.timeline
            ],
        )


def _png_data_url(frame: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(frame, dtype=np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# --- app and entry point -------------------------------------------------------------------------

router = APIRouter(tags=["link"])


@router.get("/thumbnails/latest", response_model=Thumbnails, tags=["dashboard"])
async def thumbnails(request: Request) -> Thumbnails:
    """The last measured frame beside its ground truth, as PNG data URLs (a few KB): the
    dashboard polls it a few times a second. Out of band: never counted as link bits."""
    return get_service(request).thumbnails()


def build_app(config: LinkConfig, settings: RxSettings, codec: Codec | None = None):
    service = RxService(config, settings, codec)
    return create_app(
        service,
        RxStats,
        title="hoplink receiver",
        routers=[router],
        stats_interval=settings.stats_interval,
        metrics=service.metrics.collectors(service.snapshot),
        link=LinkServer(service.serve_link, settings),  # HELLO, then HIT/NEW/… in, replies out
    )


def run(config: LinkConfig, settings: RxSettings) -> int:
    return serve(build_app(config, settings), settings)


__all__ = [
    "RxService",
    "RxSession",
    "RxStats",
    "ReferenceFrames",
    "Thumbnails",
    "Traffic",
    "build_app",
    "run",
]
