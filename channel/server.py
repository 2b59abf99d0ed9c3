"""The channel process: a websocket proxy between Tx and Rx that impairs the link, plus REST.

The Tx connects to ``/link``; for each Tx link the channel dials the Rx (``--rx-url``) and moves
every message of both directions through :meth:`ChannelCore.on_data`, sending each delivery at
its ``at`` (one :class:`Outbox` per direction: a heap in (time, arrival) order and a sender task,
so equal times keep their order). Messages the core holds (reorder, delay) are released by a poll
task woken at :meth:`ChannelCore.next_poll_at`. The handshake goes through the core too: HELLO,
BYE, ERROR and CORRUPT are control plane and pass untouched unless an impairment names them.

When one side closes, what is still queued towards the other side is delivered (up to
``--flush-timeout``), then the other side is closed with the same code and reason, so a refusal
by the Rx (4001-4003) reaches the Tx as it was sent.

REST control API (Toxiproxy-like): ``GET /impairments``, ``PUT /impairments/{direction}/{name}``
(JSON attributes, merged into an existing impairment), ``DELETE /impairments/{direction}/{name}``,
``DELETE /impairments``, ``POST /events/corrupt`` (one-shot corruption of the Rx memory),
``GET /impairments/schemas`` (every impairment's attributes as JSON schema). The channel also
serves the live dashboard at ``/dashboard/`` (:mod:`shared.dashboard`; ``--rx-api``/``--tx-api``
tell the page where the other processes are).

This module must not import torch (checked by a test): the channel needs no codec.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Request, WebSocket
from pydantic import BaseModel, Field
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from channel.core import DIRECTIONS, MAX_CORRUPT_SIGMA, ChannelCore, Delivery, ImpairmentError
from channel.impairments import impairment_schemas
from shared.config import ConfigError, LinkConfig
from shared.security import check_control_binding, require_control_token
from shared.service import (
    WS_MAX_SIZE,
    ChannelSettings,
    CloseCode,
    Health,
    LinkState,
    create_app,
    get_service,
    never_finished,
    serve,
)

log = logging.getLogger("hoplink.channel")

Direction = Literal["tx_to_rx", "rx_to_tx"]
MAX_BACKLOG = 4096  # queued deliveries per direction before the reader waits (backpressure)
_UNSENDABLE = {1005: (1000, ""), 1006: (1011, "peer connection lost")}  # RFC 6455 §7.4.1


class Outbox:
    """Sends one direction's deliveries at their times, in (time, arrival) order, over the
    websocket of the current link (:meth:`run` serves one link; counters span all links)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, bytes]] = []
        self._count = 0
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self.sent = 0
        self.failed = 0
        self.discarded = 0  # queued when a link ended and could not be flushed
        self._sending = False

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def idle(self) -> bool:
        """Nothing queued and no send in progress."""
        return not self._heap and not self._sending

    def push(self, delivery: Delivery) -> None:
        self._count += 1
        heapq.heappush(self._heap, (delivery.at, self._count, delivery.data))
        if self._heap[0][1] == self._count:  # a new earliest: the sender may sleep too long
            self._wake.set()
        if len(self._heap) >= MAX_BACKLOG:
            self._space.clear()

    async def wait_space(self) -> None:
        await self._space.wait()

    def clear(self) -> None:
        self.discarded += len(self._heap)
        self._heap.clear()
        self._space.set()

    async def run(self, send: Callable[[bytes], Awaitable[Any]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._heap:
                self._wake.clear()
                await self._wake.wait()
                continue
            delay = self._heap[0][0] - loop.time()
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                continue
            _, _, data = heapq.heappop(self._heap)
            if len(self._heap) < MAX_BACKLOG // 2:
                self._space.set()
            self._sending = True
            try:
                await send(data)
                self.sent += 1
            except Exception:  # the peer is gone; its reader reports the close
                self.failed += 1
            finally:
                self._sending = False


class _Link:
    """One Tx link and its Rx leg."""

    def __init__(self, tx: WebSocket, rx: ClientConnection) -> None:
        self.tx, self.rx = tx, rx
        self.senders = {"tx_to_rx": rx.send, "rx_to_tx": tx.send_bytes}


# --- stats models --------------------------------------------------------------------------------


class ChannelLinkStats(BaseModel):
    state: LinkState
    rx_url: str
    links: int
    links_refused: int
    rx_connect_failures: int
    last_close_code: int | None
    last_close_reason: str | None
    last_closed_by: str | None  # "tx" | "rx"


class OutboxStats(BaseModel):
    queued: int
    sent: int
    send_failures: int
    discarded: int


class ChannelStats(BaseModel):
    service: str = "channel"
    link: ChannelLinkStats
    directions: dict[str, dict[str, Any]]  # ChannelCore.stats() per direction
    events: dict[str, int]  # one-shot events sent to the Rx
    impairments: dict[str, dict[str, Any]]  # ChannelCore.impairments()
    outbox: dict[str, OutboxStats]


class CorruptEvent(BaseModel):
    """One-shot corruption of the Rx memory (the paper's robustness experiment)."""

    rho: float = Field(0.0, description="fraction of the Rx ID map to permute")
    sigma: float = Field(0.0, description="std of the Gaussian noise added to Rx prototypes")


class CorruptResult(BaseModel):
    sent: bool
    rho: float
    sigma: float
    bytes: int


# --- the shell -----------------------------------------------------------------------------------


class ChannelService:
    """The channel's I/O shell: the proxy link, the poll task, the control API's backend."""

    name = "channel"

    def __init__(self, config: LinkConfig, settings: ChannelSettings) -> None:
        try:  # beyond loopback, the control API must not be open to anyone
            check_control_binding(settings.host, settings.control_token)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.config = config
        self.settings = settings
        self.core = ChannelCore(config, seed=config.seed)
        for direction, name, attributes in startup_impairments(settings):
            try:
                self.core.set_impairment(direction, name, attributes)
            except ImpairmentError as exc:
                raise ConfigError(f"startup impairment: {exc}") from None
        self.state = LinkState.IDLE
        self.link: _Link | None = None
        self.links = 0
        self.links_refused = 0
        self.rx_connect_failures = 0
        self.last_close: tuple[int, str, str] | None = None
        self.outboxes = {d: Outbox() for d in DIRECTIONS}
        self._wake = asyncio.Event()
        self._next_poll: float | None = None
        self._poller: asyncio.Task | None = None

    # -- lifespan ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._poller = asyncio.create_task(self._poll_loop(), name="channel-poll")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        link = self.link
        if link is not None:
            with contextlib.suppress(Exception):
                await link.rx.close(CloseCode.GOING_AWAY, "channel shutting down")
            with contextlib.suppress(Exception):
                await link.tx.close(CloseCode.GOING_AWAY, "channel shutting down")

    wait_finished = staticmethod(never_finished)

    # -- the link ---------------------------------------------------------------------------------

    async def serve_link(self, tx: WebSocket) -> None:
        await tx.accept()
        if self.link is not None or self.state is not LinkState.IDLE:
            self.links_refused += 1
            await tx.close(CloseCode.LINK_BUSY, "the channel already serves a link")
            return
        self.state = LinkState.CONNECTING
        try:
            rx = await connect(
                self.settings.rx_url,
                compression=None,
                max_size=WS_MAX_SIZE,
                open_timeout=5,
                close_timeout=2,
            )
        except Exception as exc:  # refused, timeout, bad URL: the Tx retries with backoff
            self.rx_connect_failures += 1
            self.state = LinkState.IDLE
            log.warning("cannot reach the receiver at %s: %s", self.settings.rx_url, exc)
            await tx.close(CloseCode.RX_UNREACHABLE, f"receiver unreachable: {exc}"[:123])
            return
        link = self.link = _Link(tx, rx)
        self.links += 1
        self.state = LinkState.STREAMING
        senders = [asyncio.create_task(self.outboxes[d].run(link.senders[d])) for d in DIRECTIONS]
        from_tx = asyncio.create_task(self._pump_tx(link), name="channel-from-tx")
        from_rx = asyncio.create_task(self._pump_rx(link), name="channel-from-rx")
        try:
            done, _ = await asyncio.wait({from_tx, from_rx}, return_when=asyncio.FIRST_COMPLETED)
            first = done.pop()
            code, reason = first.result()
            closer, other = ("tx", "tx_to_rx") if first is from_tx else ("rx", "rx_to_tx")
            self.last_close = (code, reason, closer)
            log.info("%s closed the link (%d %s)", closer, code, reason)
            await self._flush(other)
            code, reason = _UNSENDABLE.get(code, (code, reason))
            if closer == "tx":
                await link.rx.close(code, reason)
            else:
                with contextlib.suppress(Exception):
                    await link.tx.close(code, reason)
        finally:
            for task in (from_tx, from_rx, *senders):
                task.cancel()
            with contextlib.suppress(Exception):
                await link.rx.close()
            for outbox in self.outboxes.values():
                outbox.clear()
            self.link = None
            self.state = LinkState.IDLE

    async def _pump_tx(self, link: _Link) -> tuple[int, str]:
        loop = asyncio.get_running_loop()
        while True:
            event = await link.tx.receive()
            if event["type"] == "websocket.disconnect":
                return event.get("code", 1005), event.get("reason") or ""
            data = event.get("bytes")
            if data is None:  # text is not our protocol; forward it as bytes for the Rx to reject
                data = (event.get("text") or "").encode()
            await self._forward("tx_to_rx", data, loop.time())

    async def _pump_rx(self, link: _Link) -> tuple[int, str]:
        loop = asyncio.get_running_loop()
        try:
            async for data in link.rx:
                if isinstance(data, str):
                    data = data.encode()
                await self._forward("rx_to_tx", data, loop.time())
        except ConnectionClosed:
            pass
        close = link.rx.protocol.close_rcvd
        return (close.code, close.reason) if close else (1006, "receiver connection lost")

    async def _forward(self, direction: str, data: bytes, now: float) -> None:
        outbox = self.outboxes[direction]
        for delivery in self.core.on_data(direction, data, now):
            outbox.push(delivery)
        self._poke()
        if len(outbox) >= MAX_BACKLOG:
            await outbox.wait_space()

    async def _flush(self, direction: str) -> None:
        """Deliver what is still queued or held towards the side that stays open."""
        outbox = self.outboxes[direction]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.flush_timeout):
                while not outbox.idle or self.core.stats()[direction]["held"]:
                    await asyncio.sleep(0.005)

    # -- held deliveries --------------------------------------------------------------------------

    def _poke(self) -> None:
        """Wake the poll task if the core now holds something due before it would wake."""
        due = self.core.next_poll_at()
        if due is not None and (self._next_poll is None or due < self._next_poll):
            self._wake.set()

    async def _poll_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = self.core.next_poll_at()
            now = loop.time()
            if due is not None and due <= now:
                for direction, delivery in self.core.poll(now):
                    if self.link is not None:
                        self.outboxes[direction].push(delivery)
                continue
            self._next_poll = due
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if due is None else max(due - now, 0.0005)):
                    await self._wake.wait()
            self._next_poll = None

    # -- control ----------------------------------------------------------------------------------

    def corrupt(self, event: CorruptEvent) -> CorruptResult:
        link = self.link
        if link is None or self.state is not LinkState.STREAMING:
            raise HTTPException(409, "no link: a corruption event needs a connected Tx and Rx")
        try:
            data = self.core.corruption_event(event.rho, event.sigma)
        except ImpairmentError as exc:
            raise HTTPException(400, str(exc)) from None
        self.outboxes["tx_to_rx"].push(Delivery(data, asyncio.get_running_loop().time()))
        return CorruptResult(sent=True, rho=event.rho, sigma=event.sigma, bytes=len(data))

    def set_impairment(self, direction: str, name: str, attributes: Any) -> dict:
        try:
            state = self.core.set_impairment(direction, name, attributes)
        except ImpairmentError as exc:
            raise HTTPException(400, str(exc)) from None
        self._poke()
        return state

    def clear_impairment(self, direction: str, name: str) -> None:
        try:
            self.core.clear_impairment(direction, name)
        except ImpairmentError as exc:
            raise HTTPException(404, str(exc)) from None
        self._wake.set()  # released messages go out at the next poll

    def clear_all(self) -> None:
        self.core.clear_all()
        self._wake.set()

    # -- stats ------------------------------------------------------------------------------------

    def health(self) -> Health:
        return Health(service=self.name, link=self.state)

    def snapshot(self) -> ChannelStats:
        stats = self.core.stats()
        events = stats.pop("events")
        return ChannelStats(
            link=ChannelLinkStats(
                state=self.state,
                rx_url=self.settings.rx_url,
                links=self.links,
                links_refused=self.links_refused,
                rx_connect_failures=self.rx_connect_failures,
                last_close_code=self.last_close[0] if self.last_close else None,
                last_close_reason=self.last_close[1] if self.last_close else None,
                last_closed_by=self.last_close[2] if self.last_close else None,
            ),
            directions=stats,
            events=events,
            impairments=self.core.impairments(),
            outbox={
                d: OutboxStats(
                    queued=len(o), sent=o.sent, send_failures=o.failed, discarded=o.discarded
                )
                for d, o in self.outboxes.items()
            },
        )


def startup_impairments(settings: ChannelSettings) -> Iterable[tuple[str, str, dict[str, Any]]]:
    """(direction, name, attributes) from ``--channel-impairments`` JSON and ``--impair`` items
    ``DIRECTION.NAME[.ATTR=VALUE]`` (VALUE parsed as JSON when it parses, else a string)."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for direction, impairments in settings.channel_impairments.items():
        for name, attributes in impairments.items():
            merged.setdefault((direction, name), {}).update(attributes)
    for item in settings.impair:
        key, has_value, raw = item.partition("=")
        parts = key.strip().split(".")
        if len(parts) not in (2, 3) or (len(parts) == 3) != bool(has_value):
            raise ConfigError(
                f"--impair {item!r}: expected DIRECTION.NAME or DIRECTION.NAME.ATTR=VALUE, "
                "e.g. tx_to_rx.loss.probability=0.01"
            )
        attributes = merged.setdefault((parts[0], parts[1]), {})
        if len(parts) == 3:
            try:
                attributes[parts[2]] = json.loads(raw)
            except json.JSONDecodeError:
                attributes[parts[2]] = raw
    return [(d, n, a) for (d, n), a in merged.items()]


# --- app and entry point -------------------------------------------------------------------------

link_router = APIRouter(tags=["link"])
# PUT/DELETE/POST need the bearer token when one is set, and a same-origin caller.
control = APIRouter(tags=["impairments"], dependencies=[Depends(require_control_token)])


@link_router.websocket("/link")
async def link_endpoint(ws: WebSocket) -> None:
    """The Tx's side of the link; the channel dials the Rx for each Tx link."""
    await get_service(ws).serve_link(ws)


@control.get("/impairments")
async def get_impairments(request: Request) -> dict[str, dict[str, Any]]:
    """Every impairment set, per direction, with its attributes and counters."""
    return get_service(request).core.impairments()


@control.get("/impairments/schemas")
async def get_impairment_schemas() -> dict[str, dict[str, Any]]:
    """JSON schema of every impairment's attributes, in pipeline order (the dashboard builds its
    controls from these)."""
    return impairment_schemas()


@control.put("/impairments/{direction}/{name}")
async def put_impairment(
    request: Request,
    direction: Direction,
    name: str,
    attributes: Annotated[dict[str, Any], Body(default_factory=dict)],
) -> dict[str, Any]:
    """Add an impairment, or update one (attributes are merged into its current ones)."""
    return get_service(request).set_impairment(direction, name, attributes)


@control.delete("/impairments/{direction}/{name}")
async def delete_impairment(request: Request, direction: Direction, name: str) -> dict[str, str]:
    get_service(request).clear_impairment(direction, name)
    return {"cleared": f"{direction}/{name}"}


@control.delete("/impairments")
async def delete_all_impairments(request: Request) -> dict[str, str]:
    get_service(request).clear_all()
    return {"cleared": "all"}


@control.post("/events/corrupt", response_model=CorruptResult)
async def post_corrupt(request: Request, event: CorruptEvent) -> CorruptResult:
    """Send a one-shot CORRUPT to the Rx: permute a fraction ρ of its ID map, add noise σ."""
    return get_service(request).corrupt(event)


def build_app(config: LinkConfig, settings: ChannelSettings):
    from shared.dashboard import dashboard_router, http_base, page_config

    service = ChannelService(config, settings)
    page = page_config(
        rx_api=settings.rx_api or http_base(settings.rx_url),
        tx_api=settings.tx_api,
        directions=DIRECTIONS,
        corrupt={"rho": 1.0, "sigma": MAX_CORRUPT_SIGMA},
    )
    return create_app(
        service,
        ChannelStats,
        title="hoplink channel",
        routers=[link_router, control, dashboard_router(page)],
        stats_interval=settings.stats_interval,
    )


def run(config: LinkConfig, settings: ChannelSettings) -> int:
    return serve(build_app(config, settings), settings)


__all__ = ["ChannelService", "ChannelStats", "Outbox", "build_app", "run", "startup_impairments"]
