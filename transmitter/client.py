"""The transmitter process: frames → codec → :class:`TransmitterCore` → websocket, plus REST.

The Tx dials ``--url`` (the channel by default, or the Rx directly), sends HELLO and waits for the
Rx's HELLO, then streams one HIT or NEW per frame, a DIGEST every ``--digest-every`` frames, and
at the end a last DIGEST and BYE. A reader task answers REFRESH_REQUEST with REFRESH (through the
core) on the same websocket.

Reconnects: a dropped link is dialed again with capped, jittered exponential backoff. The Tx does
not advance while disconnected: no frame is read or encoded until the link streams again, so no
frame is skipped silently (with ``--fps`` the pacing clock restarts after a reconnect). A frame
whose send failed when the link broke was already decided by the core; it is counted in
``frames_unsent`` and the Rx will count it lost. A refusal the Tx cannot fix by retrying (close
codes 4000-4003: protocol, version, config or model mismatch) stops the Tx with exit status 2.
A HELLO that does not come within ``--hello-timeout`` is transient (a long channel delay, a
restarting Rx): the Tx closes with 4007 and retries with backoff, and says so in its log.
The link's state follows :class:`shared.protocol.handshake.LinkStateMachine`: connecting (dialing
or backing off), handshaking, streaming, and closed after BYE or a refusal; the Tx never sees the
Rx's memory, so it never resyncs.

Pacing: with ``--fps`` the source is a camera, frame k exists from its slot on: it is read once
frame k-1 is out (not while it goes out: reading holds the GIL the sending thread needs) and
encoded at its slot, so a frame's latency starts when it reaches the encoder. Unpaced, the next
frame is read and encoded while this one goes out. ``--frame-log FILE`` appends one JSON
line per frame sent: seq, kind, and on ``time.monotonic()`` (one clock for every process of the
machine) when the frame reached the encoder, left it, and when its message was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from shared.accounting import LinkLedger
from shared.codec.models import Codec
from shared.codec.tokens import link_codec
from shared.config import LinkConfig
from shared.protocol.handshake import (
    FATAL_CLOSE_CODES,
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
    Error,
    Hello,
    Hit,
    Message,
    ProtocolError,
    Refresh,
    decode,
    encode,
    ws_frame_bytes,
)
from shared.protocol.seal import LinkAuth, MessageAuthError
from shared.protocol.security import AuthError, link_auth, sign_hello, verify_hello
from shared.service import FrameLog, Health, TxSettings, create_app, dial_link, finite, serve
from transmitter import metrics
from transmitter.tokens import transmitter_core

log = logging.getLogger("hoplink.tx")

EXIT_REFUSED = 2  # the link was refused for a reason retrying cannot fix
NOMINAL_FPS = 30.0  # frame times (HIT/NEW ``t``) when streaming unpaced (--fps 0)


class Backoff:
    """Capped exponential backoff with full jitter (the delay is uniform in [0, cap])."""

    def __init__(self, initial: float, maximum: float, rng: random.Random) -> None:
        self.initial, self.maximum, self.rng = initial, maximum, rng
        self.attempt = 0

    def next(self) -> float:
        cap = min(self.maximum, self.initial * 2**self.attempt)
        self.attempt += 1
        return self.rng.uniform(cap / 2, cap)  # half-jitter: never hammer, never wait 0

    def reset(self) -> None:
        self.attempt = 0


class LinkClosed(Exception):
    """The far end closed the link during the handshake; retrying may help (e.g. busy)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"link closed ({code}): {reason}")
        self.code, self.reason = code, reason


class LinkRefused(LinkClosed):
    """The far end refused the link with a close code that retrying cannot fix."""


@dataclass
class TxTraffic:
    frames_sent: int = 0
    frames_unsent: int = 0  # decided by the core, but the link broke during the send
    messages_out: int = 0
    messages_in: int = 0
    payload_bytes_out: int = 0
    wire_bytes_out: int = 0  # + websocket framing (client frames are masked)
    payload_bytes_in: int = 0
    wire_bytes_in: int = 0
    errors_received: int = 0  # ERROR messages from the Rx
    decode_errors: int = 0  # messages from the Rx that did not decode
    rejected: int = 0  # decoded messages the core does not accept
    connects: int = 0
    connect_failures: int = 0
    reconnects: int = 0  # links lost mid-stream and dialed again
    hello_timeouts: int = 0  # handshakes with no HELLO in time (retried with backoff)
    # Messages from the Rx dropped by per-message authentication (a shared secret), by why:
    auth_unsealed: int = 0
    auth_forged: int = 0  # forged, or altered on the way
    auth_replayed: int = 0  # replayed, or duplicated on the way


# --- stats models --------------------------------------------------------------------------------


class TxLinkStats(BaseModel):
    state: LinkState
    illegal_events: int  # link events refused by the state table (named errors, closed 4000)
    url: str
    finished: bool
    refused: bool
    last_close_code: int | None
    last_close_reason: str | None
    last_error: str | None


class TxStats(BaseModel):
    service: str = "tx"
    link: TxLinkStats
    scenario: str
    frames: int  # frames decided by the core
    frames_sent: int
    hits: int
    news: int
    hit_rate: float | None
    bits_per_frame: float | None  # eq. 3, HIT/NEW plus REFRESH, per frame sent
    wire_bits_per_frame: float | None  # every message both ways incl. websocket framing
    fps: float | None  # frames per second over the last second of sending
    fps_mean: float | None  # over the whole stream
    fps_target: float
    memory_count: int
    memory_capacity: int
    digest: str
    counters: dict[str, int]  # TransmitterCore counters
    traffic: dict[str, int]


# --- the shell -----------------------------------------------------------------------------------


class TxService:
    """The Tx's I/O shell: the streaming task, its websocket, stats."""

    name = "tx"

    def __init__(
        self, config: LinkConfig, settings: TxSettings, codec: Codec | None = None
    ) -> None:
        self.config = config
        self.settings = settings
        self.codec = link_codec(config, codec)
        self.hello = Hello(  # one stream id per process: a restarted Tx is a new Rx session
            role="tx",
            config_digest=config.digest(),
            model_digest=self.codec.digest,
            stream=f"{random.getrandbits(64):016x}",
        )
        self._preloaded: np.ndarray | None = None
        self._source = self._open_source()  # bad scenarios and files fail here, before serving
        self.core = transmitter_core(config)
        self.traffic = TxTraffic()
        self.ledger = LinkLedger(  # eq. 3 bits of what was sent
            config, retain="none", authenticated=settings.secret is not None
        )
        self._auth: LinkAuth | None = None  # seals and opens this link's messages (a secret)
        self.machine = LinkStateMachine()  # the link's state, across reconnects
        self.refused = False
        self.finished = False
        self.last_close: tuple[int, str] | None = None
        self.last_error: str | None = None
        self._seq = 0
        self._prefetch: asyncio.Future | None = None
        self._sent_times: list[float] = []
        self._first_sent: float | None = None
        self._backoff = Backoff(settings.backoff_initial, settings.backoff_max, random.Random())
        self._done: asyncio.Future[int] | None = None
        self._task: asyncio.Task | None = None
        self._warned = 0
        self._frame_log = FrameLog(None)

    # -- lifespan ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._frame_log = FrameLog(self.settings.frame_log)
        self._done = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name="tx-stream")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._frame_log.close()

    async def wait_finished(self) -> int:
        assert self._done is not None
        code = await self._done
        if self.settings.linger and code == 0:
            await asyncio.Event().wait()  # keep serving the REST API
        return code

    def _finish(self, code: int, event: LinkEvent = LinkEvent.CLOSE) -> None:
        """The stream is over: BYE when it finished, CLOSE when refused for good."""
        self.machine.handle(event)
        if self._done is not None and not self._done.done():
            self._done.set_result(code)

    # -- frames -----------------------------------------------------------------------------------

    def _open_source(self) -> Iterator[np.ndarray]:
        s = self.settings
        if not s.preload:
            return self.codec.source_frames(s.scenario, s.frames, self.config.seed)
        if self._preloaded is None:  # read once; a looping source replays it
            self._preloaded = np.stack(
                list(self.codec.source_frames(s.scenario, s.frames, self.config.seed))
            )
        return iter(self._preloaded)

    def _next_frame(self) -> np.ndarray | None:
        """The next frame, or None at the end of the source (worker thread)."""
        frame = next(self._source, None)
        if frame is None and self.settings.loop:
            self._source = self._open_source()
            frame = next(self._source, None)
        return frame

    def _encode(self, frame: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
        """The frame's latent, and when the frame reached the encoder and left it (worker
        thread)."""
        captured = time.monotonic()
        latent = self.codec.encode_frame(frame)
        return latent, (captured, time.monotonic())

    def _next_latent(self) -> tuple[np.ndarray, tuple[float, float]] | None:
        """The next frame encoded (see :meth:`_encode`), or None at the end (worker thread)."""
        frame = self._next_frame()
        return None if frame is None else self._encode(frame)

    # -- the link ---------------------------------------------------------------------------------

    @property
    def state(self) -> LinkState:
        return self.machine.state

    async def _run(self) -> None:
        self.machine.handle(LinkEvent.DIAL)
        while True:
            try:
                ws = await dial_link(self.settings.url)
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                self.traffic.connect_failures += 1
                self.last_error = f"connect {self.settings.url}: {exc}"
                if isinstance(exc, InvalidURI):
                    log.error("%s", self.last_error)
                    self.refused = True
                    return self._finish(EXIT_REFUSED)
                self.machine.handle(LinkEvent.RETRY)
                await asyncio.sleep(self._backoff.next())
                continue
            self.traffic.connects += 1
            try:
                async with ws:
                    await self._handshake(ws)
                    self._backoff.reset()
                    await self._stream(ws)
                self.last_close = (ws.close_code or 1000, ws.close_reason or "")
                log.info("stream finished: %d frames", self.core.counters.frames)
                self.finished = True
                return self._finish(0, LinkEvent.BYE)
            except IllegalTransition as exc:  # a bug of this shell: close clearly, stop
                code, reason = self.machine.close_for(exc)
                log.error("link closed: %s", exc)
                with contextlib.suppress(Exception):
                    await ws.close(code, reason)
                self.last_close = (int(code), reason)
                self.last_error = str(exc)
                self.refused = True
                return self._finish(EXIT_REFUSED)
            except LinkRefused as exc:
                log.error("%s", exc)
                self.last_close = (exc.code, exc.reason)
                self.last_error = str(exc)
                self.refused = True
                return self._finish(EXIT_REFUSED)
            except (ConnectionClosed, LinkClosed) as exc:
                if isinstance(exc, LinkClosed):
                    code, reason = exc.code, exc.reason
                elif exc.rcvd is not None:
                    code, reason = exc.rcvd.code, exc.rcvd.reason
                else:
                    code, reason = 1006, "connection lost"
                self.last_close = (code, reason)
                if code in FATAL_CLOSE_CODES:
                    self.refused = True
                    self.last_error = f"link refused ({code}): {reason}"
                    log.error("%s", self.last_error)
                    return self._finish(EXIT_REFUSED)
                self.traffic.reconnects += 1
                log.warning("link lost (%d %s); reconnecting", code, reason)
                self.machine.handle(LinkEvent.RETRY)
                await asyncio.sleep(self._backoff.next())

    async def _handshake(self, ws: ClientConnection) -> None:
        self._auth = None  # the HELLOs go unsealed; a new link gets new keys
        # A fresh nonce for every link; the next frame, so a restarted Rx knows what it missed.
        hello = sign_hello(
            dataclasses.replace(self.hello, next_seq=self._seq), self.settings.secret
        )
        await self._send(ws, hello)
        self.machine.handle(LinkEvent.HELLO_SENT)
        timeout = self.settings.hello_timeout
        try:
            async with asyncio.timeout(timeout):
                data = await ws.recv()
                self._count_in(data)
                reply = decode(data) if isinstance(data, bytes) else None
                if isinstance(reply, Error):  # a refusal: the close code follows
                    self.last_error = reply.reason
                    await ws.wait_closed()
        except TimeoutError:  # transient (a long delay, a restarting Rx): retried with backoff
            self.traffic.hello_timeouts += 1
            reason = f"no hello from the receiver within {timeout:g} s"
            await ws.close(CloseCode.HELLO_TIMEOUT, "no hello in time")
            raise LinkClosed(CloseCode.HELLO_TIMEOUT, reason) from None
        except ProtocolError as exc:
            await ws.close(CloseCode.PROTOCOL_ERROR, "bad hello")
            raise LinkRefused(CloseCode.PROTOCOL_ERROR, f"bad hello: {exc}") from None
        if isinstance(reply, Error):
            code, reason = ws.close_code or CloseCode.PROTOCOL_ERROR, ws.close_reason or ""
            if code in FATAL_CLOSE_CODES:
                raise LinkRefused(code, reason or reply.reason)
            raise LinkClosed(code, reason or reply.reason)
        if not isinstance(reply, Hello):
            await ws.close(CloseCode.PROTOCOL_ERROR, "expected hello")
            raise LinkRefused(CloseCode.PROTOCOL_ERROR, f"expected hello, got {reply!r:.80}")
        self.machine.handle(LinkEvent.HELLO_RECEIVED)
        try:  # with a secret, the Rx's MAC binds our nonce: a fresh answer from a holder of it
            verify_hello(reply, self.settings.secret, peer_nonce=hello.nonce)
        except AuthError as exc:
            await ws.close(CloseCode.AUTH_FAILED, "receiver not authenticated")
            raise LinkRefused(CloseCode.AUTH_FAILED, f"receiver not authenticated: {exc}") from None
        try:
            check_hello(reply, "rx", self.hello.config_digest, self.hello.model_digest)
        except HandshakeError as exc:
            await ws.close(exc.code, exc.reason)
            raise LinkRefused(exc.code, exc.detail) from None
        self._auth = link_auth(self.settings.secret, "tx", hello, reply)
        self.machine.handle(LinkEvent.HELLO_ACCEPTED)

    async def _stream(self, ws: ClientConnection) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.create_task(self._read(ws), name="tx-read")
        fps, every = self.settings.fps, self.settings.digest_every
        fetch = self._next_frame if fps > 0 else self._next_latent  # see the module docstring
        try:
            started, first = loop.time(), self._seq
            while True:
                if self._prefetch is None:
                    self._prefetch = loop.run_in_executor(None, fetch)
                item = await self._prefetch
                self._prefetch = None
                if item is None:
                    break
                if fps > 0:
                    delay = started + (self._seq - first) / fps - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    item = await loop.run_in_executor(None, self._encode, item)
                latent, times = item
                if fps <= 0:  # encode the next frame while this one goes out
                    self._prefetch = loop.run_in_executor(None, fetch)
                seq = self._seq
                self._seq += 1
                decision = self.core.on_frame(seq, seq / (fps or NOMINAL_FPS), latent)
                await self._send(ws, decision.message)
                if self._frame_log:
                    captured, encoded = times
                    self._frame_log.write(
                        seq=seq, kind=decision.message.TYPE, captured=captured, encoded=encoded,
                        sent=time.monotonic(),
                    )  # fmt: skip
                if every and (seq + 1) % every == 0:
                    await self._send(ws, self.core.digest())
            await self._send(ws, self.core.digest())
            await self._send(ws, self.core.bye())
            # Refresh requests answering the last DIGEST may still come: serve them a moment.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.bye_grace):
                    await asyncio.shield(reader)
            await ws.close(CloseCode.NORMAL, "end of stream")
        finally:
            reader.cancel()

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in ws:
                self._count_in(data)
                if self._auth is not None and isinstance(data, bytes):
                    try:
                        data = self._auth.open(data)
                    except MessageAuthError as exc:  # dropped before the core sees it
                        kind = f"auth_{exc.kind}"
                        setattr(self.traffic, kind, getattr(self.traffic, kind) + 1)
                        self._warn("message from the receiver dropped: %s", exc)
                        continue
                try:
                    if not isinstance(data, bytes):
                        raise ProtocolError("text frame: messages are binary msgpack")
                    message = decode(data)
                except ProtocolError as exc:
                    self.traffic.decode_errors += 1
                    self._warn("bad message from the receiver: %s", exc)
                    continue
                if isinstance(message, Error):
                    self.traffic.errors_received += 1
                    self.last_error = f"{message.code}: {message.reason}"
                    self._warn("receiver reports %s", self.last_error)
                    continue
                try:
                    if isinstance(message, Hello):  # illegal once streaming: raises, counted
                        self.machine.handle(LinkEvent.HELLO_RECEIVED)
                    replies = self.core.on_message(message)
                except ProtocolError as exc:  # IllegalTransition included
                    self.traffic.rejected += 1
                    self._warn("%s", exc)
                    continue
                for reply in replies:
                    await self._send(ws, reply)

    async def _send(self, ws: ClientConnection, message: Message) -> None:
        body = encode(message)
        data = body if self._auth is None else self._auth.seal(body)
        frame = isinstance(message, FRAME_MESSAGES)
        try:
            await ws.send(data)
        except ConnectionClosed:
            if frame:
                self.traffic.frames_unsent += 1
            raise
        t = self.traffic
        t.messages_out += 1
        t.payload_bytes_out += len(data)
        t.wire_bytes_out += ws_frame_bytes(len(data), masked=True)
        if frame:
            t.frames_sent += 1
            self.ledger.frame(
                message.seq, message, hit=isinstance(message, Hit), wire_bytes=len(body)
            )
            now = time.monotonic()
            if self._first_sent is None:
                self._first_sent = now
            self._sent_times.append(now)
            if len(self._sent_times) > 1024:
                del self._sent_times[:512]
        elif isinstance(message, Refresh):
            self.ledger.traffic(message)

    def _count_in(self, data: bytes | str) -> None:
        t = self.traffic
        t.messages_in += 1
        t.payload_bytes_in += len(data)
        t.wire_bytes_in += ws_frame_bytes(len(data), masked=False)

    def _warn(self, fmt: str, *args: object) -> None:
        self._warned += 1
        if self._warned <= 10 or self._warned % 100 == 0:
            log.warning(fmt, *args)

    # -- stats ------------------------------------------------------------------------------------

    def health(self) -> Health:
        return Health(service=self.name, link=self.state)

    def snapshot(self) -> TxStats:
        c, t, ledger = self.core.counters, self.traffic, self.ledger
        sent = t.frames_sent
        times = self._sent_times
        # Over the last second of sending (still meaningful once the stream has ended).
        recent = [x for x in times[-256:] if times[-1] - x <= 1.0] if times else []
        fps = (len(recent) - 1) / max(recent[-1] - recent[0], 1e-9) if len(recent) > 1 else None
        mean = None
        if self._first_sent is not None and sent > 1:
            mean = (sent - 1) / max(times[-1] - self._first_sent, 1e-9)
        return TxStats(
            link=TxLinkStats(
                state=self.state,
                illegal_events=self.machine.illegal,
                url=self.settings.url,
                finished=self.finished,
                refused=self.refused,
                last_close_code=self.last_close[0] if self.last_close else None,
                last_close_reason=self.last_close[1] if self.last_close else None,
                last_error=self.last_error,
            ),
            scenario=self.settings.scenario,
            frames=c.frames,
            frames_sent=sent,
            hits=c.hits,
            news=c.news,
            hit_rate=c.hits / c.frames if c.frames else None,
            bits_per_frame=(ledger.frame_bits + ledger.refresh_bits) / sent if sent else None,
            wire_bits_per_frame=8 * (t.wire_bytes_out + t.wire_bytes_in) / sent if sent else None,
            fps=finite(fps),
            fps_mean=finite(mean),
            fps_target=self.settings.fps,
            memory_count=self.core.memory.count,
            memory_capacity=self.core.memory.capacity,
            digest=self.core.memory.digest(),
            counters=asdict(c),
            traffic={
                **asdict(t),
                "semantic_bits": ledger.frame_bits,  # HIT/NEW/DELTA/CODED messages sent
                "refresh_bits": ledger.refresh_bits,  # REFRESH messages sent
            },
        )


def build_app(config: LinkConfig, settings: TxSettings, codec: Codec | None = None):
    service = TxService(config, settings, codec)
    return create_app(
        service,
        TxStats,
        title="hoplink transmitter",
        stats_interval=settings.stats_interval,
        metrics=metrics.collectors(service.snapshot),  # transmitter/metrics.py
    )


def run(config: LinkConfig, settings: TxSettings) -> int:
    return serve(build_app(config, settings), settings)


__all__ = ["Backoff", "TxService", "TxStats", "build_app", "run"]
