"""The channel process: a websocket proxy between Tx and Rx that impairs the link, plus REST.

Data plane and control plane apart (as in Toxiproxy): each Tx connects to the link port
(``--link-port``, ``ws://host:9002/link``), served by the websockets library
(:class:`shared.service.LinkServer`); the REST API, metrics and dashboard are on ``--port``. For
each Tx link the channel dials the Rx (``--rx-url``), and one
process carries up to ``--max-links`` links at once (beyond that a Tx is refused with 4004). Each
link has its own :class:`ChannelCore`, seeded with the channel's seed and the link's number, so
links draw independent, reproducible impairments from the same settings (the REST API edits those
settings for every link at once). Every message of both directions goes through the link's
:meth:`ChannelCore.on_data`, and each delivery is sent at its ``at`` (one :class:`Outbox` per
direction: a heap in (time, arrival) order and a sender task, so equal times keep their order).
Messages the core holds (the rate queue, the delay line, reorder) are released by a poll task
woken at :meth:`ChannelCore.next_poll_at`: the core runs in holding mode, so changing or clearing
``rate`` or ``delay`` reschedules what waits (nothing is stranded at a send time computed under
the old settings), and what it holds is bounded per direction in messages and bytes
(``--backlog-messages``, ``--backlog-bytes``; arrivals beyond are dropped and counted as
``overflow``). The outbox is bounded too (messages and bytes): beyond either the reader waits.
The handshake goes through the core too: HELLO, BYE, ERROR and CORRUPT are control plane
and pass untouched unless an impairment names them. ``/stats`` and ``/metrics`` sum the counters
over every link, ended ones included; ``open_links`` lists each open link's own.

When one side closes, what is still queued towards the other side is delivered (up to
``--flush-timeout``), then the other side is closed with the same code and reason, so a refusal
by the Rx (4001-4003) reaches the Tx as it was sent.

REST control API (Toxiproxy-like, :mod:`channel.control`): impairments as typed resources named
per direction, ``GET``/``POST /impairments/{direction}``, ``GET``/``PATCH``/``DELETE
/impairments/{direction}/{name}``, ``GET``/``DELETE /impairments``, ``GET /impairments/schemas``;
and ``POST /events/corrupt`` (one-shot corruption of the Rx memory), sent to every open link.
The channel also serves the live dashboard at ``/dashboard/``
(:mod:`channel.dashboard`; ``--rx-api``/``--tx-api`` tell the page where the other processes are).

``--workers N`` (N > 1) scales this out on one machine (:mod:`channel.app` starts either): the
process started is then the control plane of N worker processes that share the link port
(:mod:`channel.workers`); each worker is this module's service with ``worker_index`` set,
numbering its links apart from the others'.

This module must not import torch (checked by a test): the channel needs no codec.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from channel import metrics
from channel.control import REFUSED, WRITE, ErrorDetail
from channel.control import router as impairments_router
from channel.core import DIRECTIONS, MAX_CORRUPT_SIGMA, ChannelCore, Delivery, ImpairmentError
from channel.dashboard import dashboard_router, http_base, page_config
from shared.config import ConfigError, LinkConfig
from shared.protocol.handshake import CloseCode, LinkEvent, LinkState, LinkStateMachine
from shared.protocol.security import check_control_binding, require_control_token
from shared.service import (
    ChannelSettings,
    Health,
    LinkServer,
    RxSettings,
    create_app,
    dial_link,
    get_service,
    never_finished,
)

log = logging.getLogger("hoplink.channel")

Direction = Literal["tx_to_rx", "rx_to_tx"]
MAX_BACKLOG = 4096  # queued deliveries per direction before the reader waits (backpressure)
MAX_BACKLOG_BYTES = 64 * 2**20  # queued bytes per direction before the reader waits
_UNSENDABLE = {1005: (1000, ""), 1006: (1011, "peer connection lost")}  # RFC 6455 §7.4.1


class Outbox:
    """Sends one direction's deliveries of one link at their times, in (time, arrival) order.

    A delivery due at once with nothing queued before it goes out from the caller's task
    (:meth:`offer`): the common case, no impairment holding anything, then costs no heap and no
    task switch. The rest waits in the heap for the sender task (:meth:`run`)."""

    def __init__(self, send: Callable[[bytes], Awaitable[Any]]) -> None:
        self._send = send
        self._heap: list[tuple[float, int, bytes]] = []
        self._count = 0
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self.sent = 0
        self.failed = 0
        self.discarded = 0  # queued when a link ended and could not be flushed
        self.bytes = 0  # bytes queued
        self._in_flight = 0  # sends awaiting the socket (the sender task's, and offer's)

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def full(self) -> bool:
        return len(self._heap) >= MAX_BACKLOG or self.bytes >= MAX_BACKLOG_BYTES

    @property
    def idle(self) -> bool:
        """Nothing queued and no send in progress."""
        return not self._heap and not self._in_flight

    async def offer(self, delivery: Delivery, now: float) -> None:
        """Send ``delivery`` now if it is due and would be next anyway, else queue it."""
        if delivery.at <= now and self.idle:
            await self.send_now(delivery.data)
        else:
            self.push(delivery)

    def push(self, delivery: Delivery) -> None:
        self._count += 1
        heapq.heappush(self._heap, (delivery.at, self._count, delivery.data))
        self.bytes += len(delivery.data)
        if self._heap[0][1] == self._count:  # a new earliest: the sender may sleep too long
            self._wake.set()
        if self.full:
            self._space.clear()

    async def wait_space(self) -> None:
        await self._space.wait()

    def clear(self) -> None:
        self.discarded += len(self._heap)
        self._heap.clear()
        self.bytes = 0
        self._space.set()

    async def run(self) -> None:
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
            self.bytes -= len(data)
            if len(self._heap) < MAX_BACKLOG // 2 and self.bytes < MAX_BACKLOG_BYTES // 2:
                self._space.set()
            await self.send_now(data)

    async def send_now(self, data: bytes) -> None:
        """Send ``data`` at once (the caller knows nothing queued must go before it)."""
        self._in_flight += 1
        try:
            await self._send(data)
            self.sent += 1
        except Exception:  # the peer is gone; its reader reports the close
            self.failed += 1
        finally:
            self._in_flight -= 1


class _Link:
    """One Tx link and its Rx leg: its own impairment pipeline (a core seeded with the link's
    number), its own outboxes and poll task, its own state machine (streaming from the moment both
    legs are open, closed when one side closed). Links share nothing but the impairment
    settings."""

    def __init__(
        self,
        number: int,
        core: ChannelCore,
        tx: ServerConnection,
        rx: ClientConnection,
        machine: LinkStateMachine,
    ) -> None:
        self.number = number
        self.core = core
        self.tx, self.rx = tx, rx
        self.machine = machine
        self.outboxes = {"tx_to_rx": Outbox(rx.send), "rx_to_tx": Outbox(tx.send)}
        self._wake = asyncio.Event()
        self._next_poll: float | None = None

    async def run(self, flush_timeout: float) -> tuple[int, str, str]:
        """Carry both directions until one side closes, deliver what is queued towards the other
        (up to ``flush_timeout``), then close it alike. Returns (code, reason, closed by)."""
        tasks = [asyncio.create_task(outbox.run()) for outbox in self.outboxes.values()]
        tasks.append(asyncio.create_task(self._poll_loop()))
        from_tx = asyncio.create_task(self._pump(self.tx, "tx_to_rx"), name="channel-from-tx")
        from_rx = asyncio.create_task(self._pump(self.rx, "rx_to_tx"), name="channel-from-rx")
        try:
            done, _ = await asyncio.wait({from_tx, from_rx}, return_when=asyncio.FIRST_COMPLETED)
            first = done.pop()
            code, reason = first.result()
            closer, other = ("tx", "tx_to_rx") if first is from_tx else ("rx", "rx_to_tx")
            log.info("link %d: %s closed it (%d %s)", self.number, closer, code, reason)
            await self._flush(other, flush_timeout)
            sent_code, sent_reason = _UNSENDABLE.get(code, (code, reason))
            with contextlib.suppress(Exception):
                await (self.rx if closer == "tx" else self.tx).close(sent_code, sent_reason)
            return code, reason, closer
        finally:
            for task in (from_tx, from_rx, *tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await self.rx.close()
            self.machine.handle(LinkEvent.CLOSE)

    @property
    def state(self) -> LinkState:
        return self.machine.state

    def retire(self, now: float) -> None:
        """The link is over: what the core still holds and what is queued is discarded (and
        counted so: ``messages_in + duplicated == messages_out + dropped`` still holds)."""
        self.core.clear_all()
        for direction, delivery in self.core.poll(now):
            self.outboxes[direction].push(delivery)
        for outbox in self.outboxes.values():
            outbox.clear()

    # -- the data path ----------------------------------------------------------------------------

    async def _pump(self, source: ServerConnection | ClientConnection, direction: str):
        """Carry what ``source`` sends until it closes; returns its (code, reason)."""
        loop = asyncio.get_running_loop()
        forward = self._forward
        try:
            async for data in source:
                if isinstance(data, str):  # text is not our protocol: the far end rejects it
                    data = data.encode()
                await forward(direction, data, loop.time())
        except ConnectionClosed:
            pass
        close = source.protocol.close_rcvd
        if close is not None:
            return close.code, close.reason
        return 1006, ("transmitter" if direction == "tx_to_rx" else "receiver") + " connection lost"

    async def _forward(self, direction: str, data: bytes, now: float) -> None:
        outbox = self.outboxes[direction]
        if outbox.idle and self.core.pass_through(direction, data, now):
            await outbox.send_now(data)  # nothing impairs or waits: the bytes go as they came
            return
        deliveries = self.core.on_data(direction, data, now)
        if len(deliveries) == 1:
            await outbox.offer(deliveries[0], now)
        else:
            for delivery in deliveries:
                outbox.push(delivery)
        self.poke()
        if outbox.full:
            await outbox.wait_space()

    async def _flush(self, direction: str, timeout: float) -> None:
        """Deliver what is still queued or held towards the side that stays open."""
        outbox = self.outboxes[direction]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not outbox.idle or self.core.stats()[direction]["held"]:
                    await asyncio.sleep(0.005)

    # -- held deliveries --------------------------------------------------------------------------

    def poke(self, force: bool = False) -> None:
        """Wake the poll task if the core now holds something due before it would wake (or
        ``force``: an impairment was cleared and released what it held)."""
        due = self.core.next_poll_at()
        if force or (due is not None and (self._next_poll is None or due < self._next_poll)):
            self._wake.set()

    async def _poll_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = self.core.next_poll_at()
            now = loop.time()
            if due is not None and due <= now:
                for direction, delivery in self.core.poll(now):
                    self.outboxes[direction].push(delivery)
                continue
            self._next_poll = due
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if due is None else max(due - now, 0.0005)):
                    await self._wake.wait()
            self._next_poll = None

    # -- observation ------------------------------------------------------------------------------

    def counts(self) -> dict[str, Any]:
        """What this link did, in the shape the service sums over links."""
        stats = self.core.stats()
        events = stats.pop("events")
        outbox = {
            d: {
                "queued": len(o),
                "queued_bytes": o.bytes,
                "sent": o.sent,
                "send_failures": o.failed,
                "discarded": o.discarded,
            }
            for d, o in self.outboxes.items()
        }
        return {"directions": stats, "events": events, "outbox": outbox}


def add_counts(total: dict[str, Any], more: Mapping[str, Any]) -> dict[str, Any]:
    """Add the numbers of ``more`` into ``total`` key by key, recursing into mappings."""
    for key, value in more.items():
        if isinstance(value, Mapping):
            add_counts(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value
    return total


# --- stats models --------------------------------------------------------------------------------


class ChannelLinkStats(BaseModel):
    state: LinkState  # streaming while any link streams
    rx_url: str
    links: int  # links opened since start (Tx accepted and Rx reached)
    active: int  # links open now (including those dialing the Rx)
    max_links: int
    links_refused: int
    rx_connect_failures: int
    last_close_code: int | None
    last_close_reason: str | None
    last_closed_by: str | None  # "tx" | "rx"


class OutboxStats(BaseModel):
    queued: int
    queued_bytes: int = 0
    sent: int
    send_failures: int
    discarded: int


class LinkDirectionStats(BaseModel):
    messages_in: int
    messages_out: int
    dropped: int
    held: int
    queued: int
    overflow: int = 0  # arrivals dropped because the link's backlog was full
    held_bytes: int = 0


class OpenLinkStats(BaseModel):
    """One open link: its own counters (the service's totals sum them)."""

    number: int  # in opening order; seeds its impairments
    state: LinkState
    directions: dict[str, LinkDirectionStats]


class WorkerStats(BaseModel):
    """One worker process of a channel run with ``--workers N`` (channel/workers.py)."""

    index: int
    pid: int
    port: int  # its own REST port, on 127.0.0.1
    state: LinkState
    links: int  # links it opened since start
    active: int  # links open on it now


class ChannelStats(BaseModel):
    service: str = "channel"
    link: ChannelLinkStats
    directions: dict[str, dict[str, Any]]  # ChannelCore.stats() per direction, summed over links
    events: dict[str, int]  # one-shot events sent to the Rx
    impairments: dict[str, dict[str, Any]]  # the shared settings (GET /impairments)
    outbox: dict[str, OutboxStats]
    open_links: list[OpenLinkStats]
    workers: list[WorkerStats] = []  # with --workers N > 1 (empty: the links are this one's)


class CorruptEvent(BaseModel):
    """One-shot corruption of the Rx memory (the paper's robustness experiment)."""

    # strict: "0.5" or true are refused, not coerced into numbers
    rho: float = Field(0.0, strict=True, description="fraction of the Rx ID map to permute")
    sigma: float = Field(
        0.0, strict=True, description="std of the Gaussian noise added to Rx prototypes"
    )


class CorruptResult(BaseModel):
    sent: bool
    rho: float
    sigma: float
    bytes: int
    links: int  # one event per open link, each to its own Rx leg


# --- the shell -----------------------------------------------------------------------------------


class ChannelService:
    """The channel's I/O shell: the links, the control API's backend, the totals."""

    name = "channel"

    def __init__(
        self,
        config: LinkConfig,
        settings: ChannelSettings,
        finished: Callable[[], Awaitable[int]] = never_finished,
    ) -> None:
        try:  # beyond loopback, the control API must not be open to anyone
            check_control_binding(settings.host, settings.control_token)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.config = config
        self.settings = settings
        # The impairment settings every link runs (it carries no traffic): the REST API edits it
        # and each link's core follows; a new link starts from it.
        self.template = ChannelCore(config, seed=config.seed)
        for direction, name, attributes in startup_impairments(settings):
            try:
                self.template.set_impairment(direction, name, attributes)
            except ImpairmentError as exc:
                raise ConfigError(f"startup impairment: {exc}") from None
        self.open: dict[int, _Link] = {}
        self.dialing = 0  # Tx links accepted, Rx not reached yet (they count towards the cap)
        self.links = 0
        self.links_refused = 0
        self.rx_connect_failures = 0
        self.last_close: tuple[int, str, str] | None = None
        self.wait_finished = finished  # a worker stops when its control plane is gone
        self._ended = self._counts_of_none()  # what links that ended did
        self._ended_counters: dict[tuple[str, str], dict[str, int]] = {}  # by impairment set

    # -- lifespan ---------------------------------------------------------------------------------

    async def start(self) -> None:
        _allow_open_files(2 * self.settings.max_links + 64)  # a link holds two sockets

    async def stop(self) -> None:
        for link in list(self.open.values()):
            with contextlib.suppress(Exception):
                await link.rx.close(CloseCode.GOING_AWAY, "channel shutting down")
            with contextlib.suppress(Exception):
                await link.tx.close(CloseCode.GOING_AWAY, "channel shutting down")

    # -- the links --------------------------------------------------------------------------------

    @property
    def state(self) -> LinkState:
        """The channel's state, summed over its links' machines: streaming while any link
        streams, connecting while a Rx leg is dialed, idle otherwise."""
        if any(link.state is LinkState.STREAMING for link in self.open.values()):
            return LinkState.STREAMING
        return LinkState.CONNECTING if self.dialing else LinkState.IDLE

    async def serve_link(self, tx: ServerConnection) -> None:
        cap = self.settings.max_links
        if len(self.open) + self.dialing >= cap:
            self.links_refused += 1
            reason = f"the channel already serves {cap} links (--max-links {cap})"
            await tx.close(CloseCode.LINK_BUSY, reason)
            return
        machine = LinkStateMachine()
        machine.handle(LinkEvent.DIAL)  # this Tx's Rx leg
        self.dialing += 1
        try:
            rx = await dial_link(self.settings.rx_url)
        except Exception as exc:  # refused, timeout, bad URL: the Tx retries with backoff
            self.rx_connect_failures += 1
            log.warning("cannot reach the receiver at %s: %s", self.settings.rx_url, exc)
            machine.handle(LinkEvent.CLOSE)
            await tx.close(CloseCode.RX_UNREACHABLE, f"receiver unreachable: {exc}"[:123])
            return
        finally:
            self.dialing -= 1
        machine.handle(LinkEvent.BRIDGED)  # both legs open; the HELLOs pass through the core
        number = link_number(self.links, self.settings)
        self.links += 1
        link = self.open[number] = _Link(number, self._new_core(number), tx, rx, machine)
        try:
            self.last_close = await link.run(self.settings.flush_timeout)
        finally:
            del self.open[number]
            self._retire(link)

    def _new_core(self, number: int) -> ChannelCore:
        core = ChannelCore(
            self.config,
            seed=self.config.seed,
            link=number,
            hold=True,
            max_held=self.settings.backlog_messages,
            max_held_bytes=self.settings.backlog_bytes,
        )
        kinds = self.template.impairment_types()
        for direction, stages in self.template.impairment_attributes().items():
            for name, attributes in stages.items():
                core.set_impairment(direction, name, attributes, kind=kinds[direction][name])
        return core

    def _retire(self, link: _Link) -> None:
        """Keep what an ended link did in the totals."""
        for direction, stages in link.core.impairments().items():
            for name, state in stages.items():
                add_counts(
                    self._ended_counters.setdefault((direction, name), {}), state["counters"]
                )
        link.retire(asyncio.get_running_loop().time())
        add_counts(self._ended, link.counts())

    def _counts_of_none(self) -> dict[str, Any]:
        """Zero counters in the shape of :meth:`_Link.counts` (the template carries no traffic)."""
        stats = self.template.stats()
        events = stats.pop("events")
        zero = {"queued": 0, "queued_bytes": 0, "sent": 0, "send_failures": 0, "discarded": 0}
        return {
            "directions": stats,
            "events": events,
            "outbox": {d: dict(zero) for d in DIRECTIONS},
        }

    # -- control ----------------------------------------------------------------------------------

    def corrupt(self, event: CorruptEvent) -> CorruptResult:
        """One event per open link, each drawn from that link's own event stream."""
        links = [link for link in self.open.values() if link.state is LinkState.STREAMING]
        if not links:
            raise HTTPException(409, "no link: a corruption event needs a connected Tx and Rx")
        now = asyncio.get_running_loop().time()
        for link in links:
            try:
                data = link.core.corruption_event(event.rho, event.sigma)
            except ImpairmentError as exc:
                raise HTTPException(400, str(exc)) from None
            link.outboxes["tx_to_rx"].push(Delivery(data, now))
        return CorruptResult(
            sent=True, rho=event.rho, sigma=event.sigma, bytes=len(data), links=len(links)
        )

    def set_impairment(
        self, direction: str, name: str, attributes: Any, kind: str | None = None
    ) -> dict:
        try:
            self.template.set_impairment(direction, name, attributes, kind=kind)
        except ImpairmentError as exc:
            raise HTTPException(400, str(exc)) from None
        now = asyncio.get_running_loop().time()
        for link in self.open.values():  # what a link's core holds is rescheduled at once
            link.core.set_impairment(direction, name, attributes, now=now, kind=kind)
            link.poke(force=True)
        return self.impairments()[direction][name]

    def clear_impairment(self, direction: str, name: str) -> None:
        try:
            self.template.clear_impairment(direction, name)
        except ImpairmentError as exc:
            raise HTTPException(404, str(exc)) from None
        self._ended_counters.pop((direction, name), None)
        for link in self.open.values():
            link.core.clear_impairment(direction, name)
            link.poke(force=True)  # released messages go out at the next poll

    def clear_all(self) -> None:
        self.template.clear_all()
        self._ended_counters.clear()
        for link in self.open.values():
            link.core.clear_all()
            link.poke(force=True)

    def impairments(self) -> dict[str, dict[str, Any]]:
        """The shared settings; each impairment's counters summed over the links that ran
        under it since it was set."""
        out = self.template.impairments()
        for (direction, name), counters in self._ended_counters.items():
            add_counts(out[direction][name]["counters"], counters)
        for link in self.open.values():  # every link's core mirrors the template's impairments
            for direction, stages in link.core.impairments().items():
                for name, state in stages.items():
                    add_counts(out[direction][name]["counters"], state["counters"])
        return out

    # -- stats ------------------------------------------------------------------------------------

    def health(self) -> Health:
        return Health(service=self.name, link=self.state)

    def snapshot(self) -> ChannelStats:
        totals = add_counts({}, self._ended)
        open_links = []
        for number in sorted(self.open):
            link = self.open[number]
            counts = link.counts()
            add_counts(totals, counts)
            directions = {
                d: LinkDirectionStats(
                    messages_in=s["messages_in"],
                    messages_out=s["messages_out"],
                    dropped=s["dropped"],
                    held=s["held"],
                    queued=counts["outbox"][d]["queued"],
                    overflow=s["overflow"],
                    held_bytes=s["held_bytes"],
                )
                for d, s in counts["directions"].items()
            }
            open_links.append(OpenLinkStats(number=number, state=link.state, directions=directions))
        close = self.last_close
        return ChannelStats(
            link=ChannelLinkStats(
                state=self.state,
                rx_url=self.settings.rx_url,
                links=self.links,
                active=len(self.open) + self.dialing,
                max_links=self.settings.max_links,
                links_refused=self.links_refused,
                rx_connect_failures=self.rx_connect_failures,
                last_close_code=close[0] if close else None,
                last_close_reason=close[1] if close else None,
                last_closed_by=close[2] if close else None,
            ),
            directions=totals["directions"],
            events=totals["events"],
            impairments=self.impairments(),
            outbox={d: OutboxStats(**o) for d, o in totals["outbox"].items()},
            open_links=open_links,
        )


def link_number(opened: int, settings: ChannelSettings) -> int:
    """The number of the link opened after ``opened`` others: 0, 1, 2… in one process; I, I+N,
    I+2N… on worker I of N, so numbers stay unique over the workers, and since a link's number
    seeds its impairments, no two workers' links draw the same."""
    if settings.worker_index is None:
        return opened
    return settings.worker_index + opened * settings.workers


def _allow_open_files(needed: int) -> None:
    """Raise this process's soft limit of open files to ``needed`` (at most the hard limit)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


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

# POST needs the bearer token when one is set, and a same-origin caller. The impairments'
# routes are in channel/control.py.
control = APIRouter(tags=["events"], dependencies=[Depends(require_control_token)])


@control.post(
    "/events/corrupt",
    response_model=CorruptResult,
    dependencies=WRITE,
    responses={
        **REFUSED,
        400: {"model": ErrorDetail, "description": "rho or sigma out of range"},
        409: {"model": ErrorDetail, "description": "no link is streaming"},
    },
)
async def post_corrupt(request: Request, event: CorruptEvent) -> CorruptResult:
    """Send a one-shot CORRUPT to the Rx: permute a fraction ρ of its ID map, add noise σ."""
    return get_service(request).corrupt(event)


def build_app(
    config: LinkConfig,
    settings: ChannelSettings,
    finished: Callable[[], Awaitable[int]] = never_finished,
):
    """One channel process carrying the links: the whole channel, or one of its workers
    (``worker_index`` set: they share the link port). ``finished``: when it should stop by
    itself (a worker: when its control plane is gone)."""
    service = ChannelService(config, settings, finished)
    # The Tx's side; an Rx leg dialed for each.
    link = LinkServer(service.serve_link, settings, reuse_port=settings.worker_index is not None)
    return channel_app(service, settings, link=link)


def channel_app(
    service: ChannelService,
    settings: ChannelSettings,
    *,
    link: LinkServer | None = None,
    middleware: Iterable[Callable[..., Awaitable[Any]]] = (),
):
    """The app around a channel service (one process's, or the control plane of --workers N):
    the control API, the dashboard, /stats and /metrics."""
    page = page_config(
        rx_api=settings.rx_api
        or http_base(settings.rx_url, RxSettings.model_fields["port"].default),
        tx_api=settings.tx_api,
        directions=DIRECTIONS,
        corrupt={"rho": 1.0, "sigma": MAX_CORRUPT_SIGMA},
    )
    return create_app(
        service,
        ChannelStats,
        title="hoplink channel",
        routers=[impairments_router, control, dashboard_router(page)],
        stats_interval=settings.stats_interval,
        metrics=metrics.collectors(service.snapshot),  # channel/metrics.py
        link=link,
        middleware=middleware,
    )


__all__ = [
    "ChannelService",
    "ChannelStats",
    "Outbox",
    "WorkerStats",
    "build_app",
    "channel_app",
    "link_number",
    "startup_impairments",
]
