"""``hoplink channel --workers N``: N channel processes behind one link port, one control plane.

The process started with ``--workers N`` (N > 1) carries no link itself: it is the control plane.
It starts N workers (``python -m channel.workers``), each the one-process channel of
:mod:`channel.server` with ``worker_index`` set, and serves REST, metrics and the dashboard on
``--port`` as one process does.

- **Links.** Every worker serves the same ``--link-port`` with SO_REUSEPORT: the kernel spreads
  the Tx links over them (by a hash of the connection's addresses, so not always evenly). Worker
  I of N numbers its links I, I+N, I+2N… (:func:`channel.server.link_number`): a link's number
  seeds its impairments, so each worker draws its own, and the numbers stay unique in
  ``open_links``. ``--max-links`` holds per worker.
- **Settings.** A worker reads the control plane's validated settings and link configuration as
  one JSON line on its stdin (secrets go down a pipe, not on a command line), with its index and a
  private REST port on 127.0.0.1.
- **Changes.** A change under ``/impairments`` or ``/events`` is validated and applied by the
  control plane first (its template core, as one process does: a refusal reaches no worker),
  then sent as the same request to every worker (:meth:`ControlPlane.replicate`). One at a time,
  so the workers apply them in one order; a worker that does not answer as the control plane did
  gets the change a 502 naming it, so the workers never silently disagree. ``POST
  /events/corrupt`` answers with ``links`` summed over the workers.
- **Reads.** ``/healthz``, ``/stats``, ``/metrics``, ``/stats/stream`` and ``GET /impairments``
  fetch every worker's ``/stats`` first and sum them (:func:`sum_snapshots`); ``workers`` lists
  each worker's pid, REST port and links.
- **Lifetime.** The control plane answers ``/healthz`` once every worker does; it stops them when
  it stops, and stops (status 1) when one of them exits. A worker stops when its stdin ends, which
  happens when the control plane dies too (even by SIGKILL): no worker outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import socket
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import SecretStr

from channel.core import ImpairmentError
from channel.server import (
    ChannelLinkStats,
    ChannelService,
    ChannelStats,
    CorruptEvent,
    CorruptResult,
    OutboxStats,
    WorkerStats,
    add_counts,
    build_app,
    channel_app,
)
from shared.config import LinkConfig, build_config
from shared.protocol.handshake import LinkState
from shared.protocol.security import STATE_CHANGING
from shared.service import ChannelSettings, serve

log = logging.getLogger("hoplink.channel")

LOOPBACK = "127.0.0.1"  # the workers' REST ports: only the control plane talks to them
REPLICATED = ("/impairments", "/events/")  # what a change under these paths is made on
ANSWER_TIMEOUT = 5.0  # seconds a worker has to answer one request
START_TIMEOUT = 120.0  # seconds for every worker to answer /healthz (N imports on few cores)
STOP_TIMEOUT = 5.0  # seconds a worker has to close its links before it is killed
NO_LINK = "no link: a corruption event needs a connected Tx and Rx"


class WorkerError(RuntimeError):
    """A worker did not start, did not answer, or answered otherwise than the control plane."""


# --- the pure part: summing the workers' answers -------------------------------------------------


def summed_state(states: Sequence[LinkState]) -> LinkState:
    """The channel's state over its workers', as one process's over its links: streaming while
    any streams, connecting while any dials its Rx, idle otherwise."""
    for state in (LinkState.STREAMING, LinkState.CONNECTING):
        if state in states:
            return state
    return LinkState.IDLE


def sum_impairments(
    impairments: dict[str, dict[str, Any]], parts: Sequence[ChannelStats]
) -> dict[str, dict[str, Any]]:
    """``impairments`` as the control plane set them, each one's counters summed over the
    workers' (their attributes are the same: they are not added up)."""
    out = copy.deepcopy(impairments)
    for part in parts:
        for direction, stages in part.impairments.items():
            for name, state in stages.items():
                if name in out.get(direction, {}):
                    add_counts(out[direction][name]["counters"], state["counters"])
    return out


LINK_COUNTS = ("links", "active", "max_links", "links_refused", "rx_connect_failures")


def sum_snapshots(
    parts: Sequence[ChannelStats],
    impairments: dict[str, dict[str, Any]],
    workers: list[WorkerStats],
) -> ChannelStats:
    """One channel's stats from its workers' (at least one): every count summed, the open links
    listed together (their numbers are unique), ``impairments`` as :func:`sum_impairments` makes
    them. The last close is the last worker's that saw one (closes on different workers are not
    ordered)."""
    link = {key: sum(getattr(p.link, key) for p in parts) for key in LINK_COUNTS}
    closed = [p.link for p in parts if p.link.last_close_code is not None]
    last = closed[-1] if closed else parts[0].link
    outbox = _summed({d: o.model_dump() for d, o in p.outbox.items()} for p in parts)
    return ChannelStats(
        link=ChannelLinkStats(
            **link,
            state=summed_state([p.link.state for p in parts]),
            rx_url=parts[0].link.rx_url,
            last_close_code=last.last_close_code,
            last_close_reason=last.last_close_reason,
            last_closed_by=last.last_closed_by,
        ),
        directions=_summed(p.directions for p in parts),
        events=_summed(p.events for p in parts),
        impairments=sum_impairments(impairments, parts),
        outbox={d: OutboxStats(**o) for d, o in outbox.items()},
        open_links=sorted((o for p in parts for o in p.open_links), key=lambda o: o.number),
        workers=workers,
    )


def _summed(counts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for one in counts:
        add_counts(total, one)
    return total


@dataclass(frozen=True)
class Reply:
    """A worker's answer to a change the control plane made (``status`` None: no answer)."""

    worker: str
    status: int | None
    body: bytes = b""

    def why(self) -> str:
        text = self.body.decode(errors="replace")[:300]
        if self.status is None:
            return f"{self.worker} did not answer: {text}"
        return f"{self.worker} answered {self.status}: {text}"


def disagreement(status: int, replies: Sequence[Reply]) -> str | None:
    """What the workers that did not answer ``status`` (the control plane's) said; None if all
    agreed."""
    odd = [reply.why() for reply in replies if reply.status != status]
    return "; ".join(odd) or None


def summed_corruption(replies: Sequence[Reply]) -> tuple[int, dict[str, Any]]:
    """(status, body) of ``POST /events/corrupt`` from the workers' answers: each sent one event
    per streaming link (409: it had none), so ``links`` is their sum; 409 if no worker had a
    link; 502 naming the workers that failed otherwise."""
    failed = [reply for reply in replies if reply.status not in (200, 409)]
    if failed:
        return 502, {"detail": "; ".join(reply.why() for reply in failed)}
    sent = [CorruptResult.model_validate_json(r.body) for r in replies if r.status == 200]
    if not sent:
        return 409, {"detail": NO_LINK}
    links = sum(result.links for result in sent)
    return 200, sent[0].model_copy(update={"links": links}).model_dump()


# --- the shell: the workers and the control plane ------------------------------------------------


@dataclass
class Worker:
    index: int
    port: int  # its REST port on 127.0.0.1
    process: asyncio.subprocess.Process

    @property
    def name(self) -> str:
        return f"worker {self.index} (pid {self.process.pid}, port {self.port})"


def worker_spec(config: LinkConfig, settings: ChannelSettings, index: int, port: int) -> bytes:
    """The line a worker reads on its stdin: the control plane's settings (secrets included)
    and link configuration, with the worker's index and REST port."""
    values = {
        name: value.get_secret_value() if isinstance(value, SecretStr) else value
        for name, value in settings.model_dump().items()
    }
    values.update(worker_index=index, port=port)
    spec = {"settings": values, "config": config.model_dump(mode="json")}
    return json.dumps(spec).encode() + b"\n"


async def http(
    port: int, method: str, target: str, body: bytes = b"", headers: Sequence[str] = ()
) -> tuple[int, bytes]:
    """(status, body) of one request to a worker's REST port (the runtime has no HTTP client).
    HTTP/1.0 keeps it short: the worker answers with a whole body and closes."""
    lines = [f"{method} {target} HTTP/1.0", f"Host: {LOOPBACK}:{port}", *headers]
    lines.append(f"Content-Length: {len(body)}")
    async with asyncio.timeout(ANSWER_TIMEOUT):
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        try:
            writer.write("\r\n".join(lines).encode() + b"\r\n\r\n" + body)
            answer = await reader.read()
        finally:
            writer.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), payload  # HTTP/1.1 200 OK


class ControlPlane(ChannelService):
    """The channel of ``--workers N``: a :class:`ChannelService` that carries no link. Its
    template validates every change as one process does; its workers carry the links."""

    def __init__(self, config: LinkConfig, settings: ChannelSettings) -> None:
        super().__init__(config, settings, finished=self._a_worker_exited)
        self.workers: list[Worker] = []
        self._latest: list[ChannelStats] = []  # each worker's /stats, in worker order
        self._fetched_at = float("-inf")  # when the round of fetches behind _latest started
        self._reading = asyncio.Lock()
        self._writing = asyncio.Lock()

    # -- lifespan ---------------------------------------------------------------------------------

    async def start(self) -> None:
        settings = self.settings
        try:
            for index in range(settings.workers):
                port = _free_port()
                process = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "channel.workers", stdin=asyncio.subprocess.PIPE
                )  # same process group: a Ctrl-C reaches the workers too
                self.workers.append(Worker(index, port, process))
                # The pipe stays open: its end tells the worker that the control plane is gone.
                process.stdin.write(worker_spec(self.config, settings, index, port))
                await process.stdin.drain()
            await asyncio.gather(*(self._until_healthy(worker) for worker in self.workers))
            await self.refresh()
        except BaseException as exc:
            log.error("the channel's workers did not start: %s", exc)
            await self.stop()
            raise
        log.info(
            "%d workers carry the links on ws://%s:%d/link: %s",
            len(self.workers),
            settings.host,
            settings.link_port,
            ", ".join(worker.name for worker in self.workers),
        )

    async def _until_healthy(self, worker: Worker) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while (await self._call(worker, "GET", "/healthz")).status != 200:
            if worker.process.returncode is not None:
                raise WorkerError(f"{worker.name} exited with status {worker.process.returncode}")
            if loop.time() > deadline:
                raise WorkerError(f"{worker.name} did not answer /healthz in {START_TIMEOUT:g} s")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """SIGTERM to every worker (each closes its links as one process does), SIGKILL to
        those still running after STOP_TIMEOUT."""
        running = [w.process for w in self.workers if w.process.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):  # it has just exited
                process.terminate()
        for process in running:
            try:
                async with asyncio.timeout(STOP_TIMEOUT):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()

    async def _a_worker_exited(self) -> int:
        """Wait for a worker to exit by itself; the channel then stops rather than serve on
        with a part of its links' capacity and settings out of its reach."""
        waits = {asyncio.ensure_future(w.process.wait()): w for w in self.workers}
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        worker = waits[done.pop()]
        log.error("%s exited with status %s: stopping", worker.name, worker.process.returncode)
        return 1

    # -- talking to the workers -------------------------------------------------------------------

    async def _call(
        self, worker: Worker, method: str, target: str, body: bytes = b"", headers: Any = ()
    ) -> Reply:
        token = self.settings.control_token
        if token is not None:
            headers = (*headers, f"Authorization: Bearer {token.get_secret_value()}")
        try:
            status, payload = await http(worker.port, method, target, body, headers)
        except (OSError, TimeoutError, ValueError, IndexError) as exc:  # down, slow, garbled
            return Reply(worker.name, None, repr(exc).encode())
        return Reply(worker.name, status, payload)

    async def _each(
        self, method: str, target: str, body: bytes = b"", headers: Any = ()
    ) -> list[Reply]:
        return list(
            await asyncio.gather(
                *(self._call(worker, method, target, body, headers) for worker in self.workers)
            )
        )

    async def replicate(self, request: Request, call_next: Any) -> Response:
        """Middleware: a change the control plane made (validated on its template) is then made
        on every worker; one that a worker does not answer alike gets 502 naming it."""
        path = request.url.path
        if request.method not in STATE_CHANGING or not path.startswith(REPLICATED):
            return await call_next(request)
        async with self._writing:  # one change at a time: every worker applies them in order
            body = await request.body()
            answer = await call_next(request)
            if answer.status_code >= 400:  # refused here as one process would: no worker asked
                return answer
            target = path + (f"?{request.url.query}" if request.url.query else "")
            kind = request.headers.get("content-type")
            headers = (f"Content-Type: {kind}",) if kind else ()
            replies = await self._each(request.method, target, body, headers)
        if path == "/events/corrupt":
            status, content = summed_corruption(replies)
            return JSONResponse(content, status_code=status)
        odd = disagreement(answer.status_code, replies)
        if odd is not None:
            log.error("a change the workers did not all make: %s %s: %s", request.method, path, odd)
            return JSONResponse({"detail": f"the workers disagree: {odd}"}, status_code=502)
        return answer

    async def refresh(self) -> None:
        """Fetch every worker's /stats. A read that arrives while a round is under way waits for
        the next one, which serves every read waiting: what a read sees was fetched after it
        came."""
        loop = asyncio.get_running_loop()
        came = loop.time()
        async with self._reading:
            if self._fetched_at >= came:
                return
            started = loop.time()
            replies = await self._each("GET", "/stats")
            failed = disagreement(200, replies)
            if failed is not None:
                raise HTTPException(502, f"cannot read the workers' stats: {failed}")
            self._latest = [ChannelStats.model_validate_json(reply.body) for reply in replies]
            self._fetched_at = started

    # -- what the control plane reports: its settings, the workers' numbers -----------------------

    @property
    def state(self) -> LinkState:
        return summed_state([part.link.state for part in self._latest])

    def impairments(self) -> dict[str, dict[str, Any]]:
        return sum_impairments(super().impairments(), self._latest)

    def corrupt(self, event: CorruptEvent) -> CorruptResult:
        """Check ρ and σ as one process does (400); the workers send the events (replicate)."""
        try:  # the template's event goes nowhere: it only checks the values
            self.template.corruption_event(event.rho, event.sigma)
        except ImpairmentError as exc:
            raise HTTPException(400, str(exc)) from None
        return CorruptResult(sent=False, rho=event.rho, sigma=event.sigma, bytes=0, links=0)

    def snapshot(self) -> ChannelStats:
        workers = [
            WorkerStats(
                index=worker.index,
                pid=worker.process.pid,
                port=worker.port,
                state=part.link.state,
                links=part.link.links,
                active=part.link.active,
            )
            for worker, part in zip(self.workers, self._latest, strict=True)
        ]
        return sum_snapshots(self._latest, super().impairments(), workers)


def control_plane_app(config: LinkConfig, settings: ChannelSettings):
    """The app of the control plane (``--workers N > 1``): the channel's, with no link port of
    its own and every change made on the workers too."""
    plane = ControlPlane(config, settings)
    return channel_app(plane, settings, middleware=[plane.replicate])


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it; a race with others is unlikely)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


# --- a worker ------------------------------------------------------------------------------------


async def control_plane_gone() -> int:
    """A worker's ``finished``: wait until its stdin ends. The control plane closes it when it
    stops, and the kernel does when it dies, even by SIGKILL."""
    loop = asyncio.get_running_loop()
    gone = loop.create_future()

    class Lifeline(asyncio.Protocol):
        def connection_lost(self, exc: Exception | None) -> None:
            if not gone.done():
                gone.set_result(None)

    transport, _ = await loop.connect_read_pipe(Lifeline, sys.stdin)
    try:
        await gone
    finally:
        transport.close()
    log.info("the control plane is gone: stopping")
    return 0


def worker_main() -> int:
    """``python -m channel.workers``, started by the control plane: one worker, configured by
    the line on its stdin (:func:`worker_spec`), its REST port on loopback only."""
    spec = json.loads(sys.stdin.readline())
    settings = ChannelSettings(**spec["settings"])
    config = build_config(spec["config"], read_env=False)
    logging.basicConfig(  # before serve()'s: the worker's lines say which worker
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(name)s[{settings.worker_index}] %(levelname)s %(message)s",
    )
    app = build_app(config, settings, finished=control_plane_gone)
    return serve(app, settings.model_copy(update={"host": LOOPBACK}))


if __name__ == "__main__":
    sys.exit(worker_main())


__all__ = [
    "ControlPlane",
    "control_plane_app",
    "Reply",
    "WorkerError",
    "disagreement",
    "sum_impairments",
    "sum_snapshots",
    "summed_corruption",
    "summed_state",
    "worker_spec",
]
