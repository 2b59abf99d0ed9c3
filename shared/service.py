"""Scaffolding shared by the three processes (rx, channel, tx): one way to be a hoplink service.

Every process is a thin I/O shell around a pure core (DESIGN "Processes, ports, configuration").
This module gives them, once:

- settings: one pydantic-settings class per process, read from ``HOPLINK_<NAME>`` environment
  variables and overridden by the ``--name`` flag of the same name (:func:`add_settings_arguments`,
  :func:`settings_from_args`), so docker-compose needs no code;
- :func:`create_app`: a FastAPI app whose ``lifespan`` starts and stops the shell
  (a :class:`Service`) and which serves ``GET /healthz``, ``GET /stats`` (JSON snapshot with a
  response model), ``GET /stats/stream`` (Server-Sent Events, one snapshot per interval) and
  ``GET /metrics`` (Prometheus text from a per-app registry holding the process's declared
  metrics, ``metrics=``: see :mod:`shared.metrics`),
  with CORS for GET from any origin (the dashboard's page reads every process's stats); a
  service whose numbers live in other processes (the channel's control plane, whose workers
  carry the links) brings them up to date before each read (its optional ``refresh``);
- :func:`serve`: uvicorn with permessage-deflate off (``compression=None`` on every websocket end
  of the project: frames are small msgpack maps, deflate costs CPU and hides the wire size).

The web stack is imported when an app is built, so the ``hoplink`` parser (which reads the
settings classes below) stays fast and the channel never pulls in torch through here.
"""

import argparse
import asyncio
import contextlib
import json
import logging
import math
import sys
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from websockets.asyncio.client import ClientConnection, connect

from shared.config import ConfigError, LinkConfig, add_config_arguments, config_from_args
from shared.protocol.handshake import LinkState
from shared.protocol.messages import DIGEST_EVERY, MAX_MESSAGE_BYTES
from shared.protocol.security import MAX_REQUEST_BYTES, BodySizeLimit, HostGuard

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI

log = logging.getLogger("hoplink.service")

# A websocket message may be larger than the protocol allows, so that an oversize message
# reaches shared.protocol.messages.decode and gets a counted, clear error instead of killing the
# link (1009).
WS_MAX_SIZE = 4 * MAX_MESSAGE_BYTES
# Data plane and control plane apart (DESIGN "Processes, ports"): the link websockets have ports
# of their own, served by the websockets library; REST, SSE, metrics and the dashboard by uvicorn.
CHANNEL_LINK_PORT = 9002
RX_LINK_PORT = 9003
LINK_PATH = "/link"
MIN_STATS_INTERVAL = 0.05  # seconds: the fastest any /stats/stream reader is fed
DEFAULT_STREAM_READERS = 16  # /stats/stream readers per process (ServiceSettings)
MAX_CHANNEL_WORKERS = 64


async def dial_link(url: str) -> ClientConnection:
    """Open a link websocket the way every dialing end does (the Tx, and the channel's Rx legs):
    no permessage-deflate (latents and cues do not compress), the oversize cap above, and short
    opening/closing handshakes."""
    return await connect(
        url, compression=None, max_size=WS_MAX_SIZE, open_timeout=5, close_timeout=2
    )


class LinkServer:
    """The data plane of a process that is dialed (the Rx, the channel): the link websocket on
    its own port (``--link-port``), served by the websockets library's asyncio server, so that no
    ASGI layer sits on the hot path. Same options as :func:`dial_link`; a request for another
    path gets 404, one whose Host or Origin is not allowed gets 403 (the guard of the REST
    port), and ``--http-header-timeout`` bounds the opening handshake (slowloris). ``reuse_port``
    lets several processes share the port (SO_REUSEPORT: the kernel spreads the links)."""

    def __init__(
        self,
        handler: Callable[[Any], Awaitable[None]],
        settings: "ServiceSettings",
        *,
        reuse_port: bool = False,
    ) -> None:
        self._handler = handler
        self._settings = settings
        self._reuse_port = reuse_port
        self._guard = HostGuard(None, settings.allowed_hosts)
        self._server: Any = None
        self.port: int | None = None
        self.refused = 0  # opening handshakes turned away (path, Host or Origin)

    async def start(self) -> None:
        from websockets.asyncio.server import serve

        host, port = self._settings.host, getattr(self._settings, "link_port", 0)
        try:
            self._server = await serve(
                self._handler,
                host,
                port,
                compression=None,
                max_size=WS_MAX_SIZE,
                open_timeout=self._settings.http_header_timeout,
                close_timeout=2,
                process_request=self._check,
                reuse_port=self._reuse_port,
            )
        except OSError as exc:
            raise ConfigError(f"cannot serve the link on {host}:{port}: {exc}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("link on ws://%s:%d%s", host, self.port, LINK_PATH)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _check(self, connection: Any, request: Any) -> Any:
        if request.path.partition("?")[0] != LINK_PATH:
            self.refused += 1
            return connection.respond(404, f"the link is at {LINK_PATH}\n")
        why = self._guard.why_refused_names(
            request.headers.get("Host", ""), request.headers.get("Origin")
        )
        if why is not None:
            self.refused += 1
            return connection.respond(403, why + "\n")
        return None


class FrameLog:
    """``--frame-log FILE``: one JSON line per frame, appended and flushed as written, for the
    latency benchmark (every process stamps ``time.monotonic()``, one clock per machine)."""

    def __init__(self, path: str | None) -> None:
        self._file = open(path, "a", buffering=1) if path else None  # noqa: SIM115

    def __bool__(self) -> bool:
        """Whether a file is open: callers skip building a line (and reading clocks) if not."""
        return self._file is not None

    def write(self, **fields: Any) -> None:
        if self._file is not None:
            self._file.write(json.dumps(fields) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


# --- settings ------------------------------------------------------------------------------------


class ServiceSettings(BaseSettings):
    """What every process needs to serve: where to bind, how loud to log, how often to stream."""

    model_config = SettingsConfigDict(env_prefix="HOPLINK_", extra="ignore", frozen=True)

    host: str = Field("127.0.0.1", description="address to bind (0.0.0.0 inside containers)")
    port: int = Field(0, ge=0, le=65535, description="TCP port of the REST API (and websocket)")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="log level (info: where it listens and dials, links opened and closed)"
    )
    stats_interval: float = Field(
        0.5,
        ge=MIN_STATS_INTERVAL,
        le=60,
        description="seconds between two /stats/stream events (every reader's rate)",
    )
    stats_stream_readers: int = Field(
        DEFAULT_STREAM_READERS,
        ge=1,
        le=1024,
        description="/stats/stream readers served at once; more are answered 503",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="host names HTTP requests and websockets may name in Host and Origin "
        "besides loopback addresses (DNS-rebinding guard), e.g. the compose services' names; "
        "'*': any",
    )
    http_header_timeout: float = Field(
        10.0,
        gt=0,
        le=600,
        description="seconds a connection may take to send its request headers (slowloris)",
    )
    secret: SecretStr | None = Field(
        None,
        description="shared secret of the link (rx and tx): HELLOs carry an HMAC "
        "(shared/protocol/security.py); prefer the HOPLINK_SECRET env var to the flag",
    )


class RxSettings(ServiceSettings):
    port: int = Field(8003, ge=0, le=65535, description="TCP port of the REST API and dashboard")
    link_port: int = Field(
        RX_LINK_PORT, ge=0, le=65535, description="TCP port of the link websocket (ws://…/link)"
    )
    reference: str | None = Field(
        None,
        description="ground truth for PSNR/SSIM: a scenario name or a video path, regenerated "
        "locally (out of band, never link bits); unset: no quality figures",
    )
    frames: int | None = Field(None, ge=1, description="frames of the reference clip")
    tick_interval: float = Field(
        0.05, gt=0, le=5, description="seconds between two receiver ticks (refresh timeouts)"
    )
    refresh_timeout: float = Field(
        1.0, gt=0, le=60, description="seconds a frame may wait for its refresh before concealment"
    )
    hello_timeout: float = Field(10.0, gt=0, description="seconds to wait for the first HELLO")
    preauth_max: int = Field(
        8,
        ge=1,
        le=1024,
        description="sockets that may await their HELLO at once (the link slot is taken only "
        "after a valid HELLO); more are refused with 4004 and counted as preauth_full",
    )
    bye_wait: float = Field(
        0.5,
        ge=0,
        le=60,
        description="seconds a BYE waits for frames it overtook before the "
        "missing ones are counted lost",
    )
    frame_log: str | None = Field(
        None,
        description="append one JSON line per decoded frame (seq, outcome, time.monotonic() "
        "when its pixels were ready) to this file, for latency benchmarks",
    )
    record: str | None = Field(
        None,
        description="write every frame the Rx showed to this video file (H.264 MP4, at the "
        "frames' own size; out of band, never link bits)",
    )


class TxSettings(ServiceSettings):
    port: int = Field(8001, ge=0, le=65535, description="TCP port of the REST API")
    url: str = Field(
        f"ws://127.0.0.1:{CHANNEL_LINK_PORT}/link",
        description="websocket of the link: the channel's link port (default) or the Rx's",
    )
    scenario: str = Field("low_motion", description="scenario name or video file to stream")
    frames: int | None = Field(None, ge=1, description="frames to stream (default: the source's)")
    fps: float = Field(30.0, ge=0, le=10_000, description="frames per second (0: unpaced)")
    loop: bool = Field(False, description="restart the source at its end (sequence numbers go on)")
    preload: bool = Field(
        False,
        description="read the whole source into memory before streaming (a camera's frames are "
        "ready when it delivers them; unpaced, this times the link, not the scenario renderer)",
    )
    digest_every: int = Field(
        DIGEST_EVERY, ge=0, description="send a DIGEST every N frames (0: only at end)"
    )
    linger: bool = Field(False, description="keep serving the REST API after the stream ends")
    hello_timeout: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="seconds to wait for the Rx's HELLO (raise it above the channel's round trip "
        "under a long delay); a timeout is not fatal: the Tx retries with backoff",
    )
    backoff_initial: float = Field(0.2, gt=0, le=60, description="first reconnect delay, seconds")
    backoff_max: float = Field(5.0, gt=0, le=600, description="cap of the reconnect delay")
    bye_grace: float = Field(
        0.5, ge=0, le=30, description="seconds to keep answering refresh requests after BYE"
    )
    frame_log: str | None = Field(
        None,
        description="append one JSON line per frame sent (seq, kind, time.monotonic() when the "
        "frame reached the encoder, left it, and was sent), for latency benchmarks",
    )


class ChannelSettings(ServiceSettings):
    port: int = Field(8002, ge=0, le=65535, description="TCP port of the REST API and dashboard")
    link_port: int = Field(
        CHANNEL_LINK_PORT,
        ge=0,
        le=65535,
        description="TCP port of the Tx's link websocket (ws://…/link)",
    )
    rx_url: str = Field(
        f"ws://127.0.0.1:{RX_LINK_PORT}/link", description="link websocket of the Rx"
    )
    impair: list[str] = Field(
        default_factory=list,
        description="impairment at startup as DIRECTION.NAME.ATTR=VALUE (repeatable), e.g. "
        "tx_to_rx.loss.p=0.01; env HOPLINK_IMPAIR takes a JSON list",
    )
    channel_impairments: dict[str, dict[str, dict[str, Any]]] = Field(
        default_factory=dict,
        description='impairments at startup as JSON {"tx_to_rx": {"loss": {"p": 0.01}}}',
    )
    flush_timeout: float = Field(
        2.0, ge=0, le=60, description="seconds to deliver queued messages after a side closes"
    )
    max_links: int = Field(
        1024, ge=1, le=65536, description="concurrent Tx links served; more are refused (4004)"
    )
    backlog_messages: int = Field(
        4096,
        ge=1,
        le=1_000_000,
        description="messages a link's impairments may hold per direction (rate queue, delay "
        "line); arrivals beyond it are dropped and counted (overflow)",
    )
    backlog_bytes: int = Field(
        64 * 2**20,
        ge=1,
        le=2**40,
        description="bytes a link's impairments may hold per direction; arrivals beyond it are "
        "dropped and counted (overflow)",
    )
    rx_api: str | None = Field(
        None,
        description="the Rx's REST base URL as a browser reaches it, for the dashboard "
        "(default: --rx-url's host on the Rx's default REST port 8003)",
    )
    tx_api: str | None = Field(
        None, description="the Tx's REST base URL as a browser reaches it, for the dashboard"
    )
    control_token: SecretStr | None = Field(
        None,
        description="bearer token required by PUT/DELETE/POST of the control API; mandatory "
        "when --host is not loopback (HOPLINK_CONTROL_TOKEN)",
    )
    workers: int = Field(
        1,
        ge=1,
        le=MAX_CHANNEL_WORKERS,
        description="processes carrying the links behind the one --link-port (SO_REUSEPORT: the "
        "kernel spreads the Tx links over them), each with its own seeded impairments and "
        "--max-links; with N > 1 this process is their control plane: it serves REST, metrics "
        "and the dashboard on --port, applies every change to all of them and sums their /stats",
    )
    worker_index: int | None = Field(
        None,
        ge=0,
        lt=MAX_CHANNEL_WORKERS,
        description="set by the control plane on the workers it starts: this process is worker "
        "I of --workers N, shares --link-port and numbers its links I, I+N, I+2N… (a link's "
        "number seeds its impairments, so no two workers' links draw the same)",
    )

    @model_validator(mode="after")
    def _one_link_port(self) -> "ChannelSettings":
        if self.worker_index is not None and self.worker_index >= self.workers:
            raise ValueError(f"worker_index {self.worker_index} of {self.workers} workers")
        if self.workers > 1 and self.link_port == 0:
            raise ValueError("--workers N > 1 needs a fixed --link-port (the workers share it)")
        return self

    @property
    def control_plane(self) -> bool:
        """Whether this process starts the workers and carries no link itself."""
        return self.workers > 1 and self.worker_index is None


S = TypeVar("S", bound=ServiceSettings)


def add_settings_arguments(parser: argparse.ArgumentParser, cls: type[ServiceSettings]) -> None:
    """One ``--flag`` per settings field; defaults stay None so env vars and defaults apply."""
    group = parser.add_argument_group(
        f"service settings (also HOPLINK_<NAME> env vars; {cls.__name__})"
    )
    for name, field in cls.model_fields.items():
        flag = "--" + name.replace("_", "-")
        kind = _plain_type(field.annotation)
        default = field.get_default(call_default_factory=True)
        kwargs: dict[str, Any] = {
            "dest": name,
            "default": None,
            "help": f"{field.description} (default {default!r})",
        }
        if get_origin(kind) is Literal:
            kwargs["choices"] = get_args(kind)
        elif kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(kind) is list:
            kwargs["action"] = "append"
        elif get_origin(kind) is dict:
            kwargs["type"] = json.loads
        elif kind in (int, float):
            kwargs["type"] = kind
        group.add_argument(flag, **kwargs)


def settings_from_args(cls: type[S], args: argparse.Namespace) -> S:
    """Validate flags over environment variables into ``cls``; ConfigError names the field."""
    values = {n: getattr(args, n) for n in cls.model_fields if getattr(args, n, None) is not None}
    try:
        return cls(**values)
    except ValidationError as exc:
        parts = [
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']} "
            f"(got {err.get('input')!r})"
            for err in exc.errors()
        ]
        raise ConfigError(f"invalid {cls.__name__}: " + "; ".join(parts)) from None


def service_main(
    command: str,
    cls: type[S],
    run: Callable[[LinkConfig, S], int],
    argv: Sequence[str] | None = None,
) -> int:
    """``python -m receiver`` (and the Tx's and channel's): parse the process's own flags, then
    ``run(config, settings)``; a bad flag or variable exits 2 with a message naming it."""
    parser = argparse.ArgumentParser(prog=f"hoplink {command}")
    add_settings_arguments(parser, cls)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(config_from_args(args), settings_from_args(cls, args))
    except ConfigError as exc:
        print(f"hoplink {command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _plain_type(annotation: Any) -> Any:
    """``X | None`` -> ``X``, so an optional int still parses as an int."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def finite(x: float | None) -> float | None:
    """JSON has no NaN: undefined figures (no frame yet) are reported as null."""
    return None if x is None or not math.isfinite(x) else float(x)


# --- the app -------------------------------------------------------------------------------------


class Service(Protocol):
    """A process's I/O shell as the app sees it: started and stopped by the lifespan."""

    name: str  # "rx" | "tx" | "channel": prefix of the metrics

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def wait_finished(self) -> int:
        """Return an exit status when the process should stop on its own (never, for servers)."""
        ...

    def health(self) -> "Health": ...

    def snapshot(self) -> BaseModel: ...

    # Optional: ``async def refresh(self) -> None``, awaited before every read (see create_app).


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    service: str
    link: LinkState


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats and other non-JSON leaves turned into strings."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def create_app(
    service: Service,
    stats_model: type[BaseModel],
    *,
    title: str,
    routers: Iterable["APIRouter"] = (),
    stats_interval: float = 0.5,
    metrics: Iterable[Any] = (),
    link: LinkServer | None = None,
    middleware: Iterable[Callable[..., Awaitable[Any]]] = (),
) -> "FastAPI":
    """A FastAPI app around ``service``: lifespan start/stop plus the common endpoints.

    The service object is built (and validated: codec, config) before serving, so bad settings
    fail with a clear message instead of an app-startup traceback; its tasks and sockets are
    created in the lifespan and reached by routes through ``get_service``. ``metrics`` are the
    process's collectors (declared families and histograms, :mod:`shared.metrics`), registered
    in the app's own registry. ``link``: the process's data plane, started after the service
    and stopped after it (its port is open before the REST port answers). ``middleware``: HTTP
    middleware functions (``async (request, call_next)``), inside the body limit and CORS.

    A service with an ``async refresh()`` has it awaited before every GET it answers (the
    common reads, the routers' GETs, each /stats/stream event): its numbers are then as current
    as the read.
    """
    collectors = tuple(metrics)  # (the route below is named metrics)
    refresh = getattr(service, "refresh", None)
    from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import JSONResponse, PlainTextResponse
    from fastapi.sse import EventSourceResponse, ServerSentEvent
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    @contextlib.asynccontextmanager
    async def lifespan(app: "FastAPI") -> AsyncIterator[None]:
        registry = CollectorRegistry(auto_describe=False)
        for collector in collectors:  # the process's declared metrics (shared/metrics.py)
            registry.register(collector)
        app.state.service = service
        app.state.registry = registry
        app.state.exit_code = 0
        await service.start()
        if link is not None:
            try:
                await link.start()
            except ConfigError as exc:
                log.error("%s", exc)
                await service.stop()
                raise
        app.state.link = link
        watcher = asyncio.create_task(_exit_when_finished(app, service))
        try:
            yield
        finally:
            watcher.cancel()
            await service.stop()
            if link is not None:
                await link.stop()

    app = FastAPI(title=title, lifespan=lifespan)
    for function in middleware:  # added first: the body limit and CORS wrap them
        app.middleware("http")(function)

    async def fresh(request: Request) -> None:
        if refresh is not None and request.method == "GET":
            await refresh()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default answer echoes the input, which may hold NaN/inf (valid for Python's
        # JSON parser, not for its encoder): a 500 instead of the 422 the client earned.
        return JSONResponse(status_code=422, content={"detail": json_safe(exc.errors())})

    # The dashboard (served by the channel) reads every process's stats from the browser:
    # read-only endpoints answer GET from any origin; nothing that changes state is cross-origin.
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET"])
    app.add_middleware(BodySizeLimit, max_bytes=MAX_REQUEST_BYTES)  # shared/protocol/security.py
    common = APIRouter(tags=["service"], dependencies=[Depends(fresh)])

    @common.get("/healthz", response_model=Health)
    async def healthz(request: Request) -> Health:
        return get_service(request).health()

    @common.get("/stats", response_model=stats_model)
    async def stats(request: Request) -> BaseModel:
        return get_service(request).snapshot()

    # Bounded streams: at most ``stats_stream_readers`` readers, each fed every interval (at
    # most every MIN_STATS_INTERVAL), all sharing one snapshot per interval, so the cost of the
    # stats does not grow with the readers.
    interval = max(stats_interval, MIN_STATS_INTERVAL)
    streams = {"readers": 0, "refused": 0, "at": -math.inf, "json": ""}
    app.state.stats_streams = streams

    def stream_limit(request: Request) -> int:
        settings = getattr(get_service(request), "settings", None)
        return getattr(settings, "stats_stream_readers", DEFAULT_STREAM_READERS)

    def stream_slot(request: Request) -> None:
        limit = stream_limit(request)
        if streams["readers"] >= limit:
            streams["refused"] += 1
            raise HTTPException(503, f"{limit} stats streams are open already; poll /stats")

    async def shared_snapshot(svc: Service) -> str:
        now = asyncio.get_running_loop().time()
        if now - streams["at"] >= interval / 2:
            if refresh is not None:
                await refresh()
            streams["at"], streams["json"] = now, svc.snapshot().model_dump_json()
        return streams["json"]

    @common.get(
        "/stats/stream",
        response_class=EventSourceResponse,
        dependencies=[Depends(stream_slot)],
        responses={503: {"description": "too many stats streams open"}},
    )
    async def stats_stream(request: Request) -> AsyncIterator[ServerSentEvent]:
        """One ``stats`` event (the /stats JSON) every ``stats_interval`` seconds."""
        svc = get_service(request)
        if streams["readers"] >= stream_limit(request):  # others started since the check
            streams["refused"] += 1
            return
        streams["readers"] += 1
        try:
            while not await request.is_disconnected():
                yield ServerSentEvent(raw_data=await shared_snapshot(svc), event="stats")
                await asyncio.sleep(interval)
        finally:
            streams["readers"] -= 1

    @common.get("/metrics", response_class=PlainTextResponse)
    async def metrics(request: Request) -> PlainTextResponse:
        body = generate_latest(request.app.state.registry)
        return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)

    app.include_router(common)
    for router in routers:
        app.include_router(router, dependencies=[Depends(fresh)])
    return app


def get_service(connection: Any) -> Any:
    """The app's service, from an HTTP request or a websocket (set by the lifespan)."""
    return connection.app.state.service


async def _exit_when_finished(app: "FastAPI", service: Service) -> None:
    code = await service.wait_finished()
    app.state.exit_code = code
    server = getattr(app.state, "server", None)
    if server is not None:
        server.should_exit = True


def serve(app: "FastAPI", settings: ServiceSettings) -> int:
    """Run ``app`` under uvicorn until SIGINT/SIGTERM or until the service finishes."""
    import uvicorn

    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    # On a socket (not for in-process test clients): Host/Origin must name loopback or an
    # allowed host, so a web page cannot reach a local process by DNS rebinding.
    guarded = HostGuard(app, settings.allowed_hosts)
    config = uvicorn.Config(
        guarded,
        host=settings.host,
        port=settings.port,
        http=_header_deadline_protocol(settings.http_header_timeout),
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        ws_max_size=WS_MAX_SIZE,
        log_level=settings.log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=1,  # SSE streams never end by themselves
    )
    server = uvicorn.Server(config)
    app.state.server = server
    server.run()
    if not server.started:
        return 1
    return int(getattr(app.state, "exit_code", 0))


def _header_deadline_protocol(timeout: float) -> type:
    """uvicorn's h11 protocol with a deadline on a connection's first request headers: uvicorn
    times out idle keep-alive connections, not a client that never finishes its headers
    (slowloris), which would hold a socket forever."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderDeadline(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._header_deadline = self.loop.call_later(timeout, self._headers_too_slow)

        def handle_events(self) -> None:
            super().handle_events()
            if self._header_deadline is not None and self.conn.their_state is not h11.IDLE:
                self._header_deadline.cancel()  # the headers are in (or an upgrade began)
                self._header_deadline = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
            super().connection_lost(exc)

        def _headers_too_slow(self) -> None:
            self._header_deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                log.info("closed a connection that sent no complete headers in %g s", timeout)
                self.transport.close()

    return HeaderDeadline


async def never_finished() -> int:
    """``wait_finished`` of a server that runs until it is stopped."""
    await asyncio.Event().wait()
    return 0  # pragma: no cover
