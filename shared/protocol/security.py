"""Who may talk to a hoplink process, and how much: peer authentication, the control token,
request size caps.

Threat model. hoplink is an emulator that runs on loopback or inside a lab network. Its
protections keep *strangers* out and keep bad input cheap; they are not a secure channel:

* **Link peers** (``HOPLINK_SECRET`` / ``--secret`` on rx and tx). With a shared secret the
  HELLO exchange is mutually authenticated: the Tx's HELLO carries a fresh random nonce and
  HMAC-SHA256(secret, role, version, config digest, model digest, nonce); the Rx refuses a HELLO
  whose MAC is missing or wrong, or whose nonce it has seen before (replay), with close code
  4006 (``auth_failed``), and answers with its own nonce and a MAC that also binds the Tx's
  nonce, so the Tx knows the answer is fresh and comes from a holder of the secret. Every later
  message in both directions is sealed (:mod:`shared.protocol.seal`): a 32-bit counter and a
  64-bit truncated HMAC under a key derived from the secret and *both* nonces, so a forged,
  altered or replayed message is dropped and counted before it reaches a core, and a HELLO
  replayed to a restarted Rx (whose nonce memory is gone) cannot send anything that passes.
  What it does *not* do: encrypt (an observer reads every frame; run the link over a VPN or TLS
  for that). The channel needs no secret: it forwards sealed messages, and an impairment that
  rewrites one (bit errors, ID desync, prototype noise) makes its tag fail at the far end, where
  it is counted as forged; the channel's own CORRUPT events carry no seal and are refused on an
  authenticated link. Without a secret, nothing changes.
* **The channel's control API** (``PUT``/``DELETE``/``POST``: impairments and corruption events).
  With ``HOPLINK_CONTROL_TOKEN`` every state-changing request needs
  ``Authorization: Bearer <token>`` (401 otherwise). The channel refuses to start bound to a
  non-loopback address without a token. State-changing requests from another web origin are
  refused (403) whatever the token, so a web page cannot drive a local channel (CSRF). Reads
  (``GET``) stay open: stats are not secret in a lab.
* **Sizes.** A link message is capped by the decoder
  (:data:`shared.protocol.messages.MAX_MESSAGE_BYTES`, refused with a counted error) and by the
  websocket (:data:`shared.service.WS_MAX_SIZE`, closed with 1009); an HTTP request body by
  :class:`BodySizeLimit` (413). A flood of REFRESH_REQUEST is answered at most ``refresh_budget``
  times per DIGEST period by the Tx (:class:`transmitter.core.TransmitterCore`); the rest are
  counted as refused.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections import OrderedDict
from typing import Any

import msgpack
from starlette.requests import Request  # resolved at runtime: FastAPI reads the dependency

from shared.protocol.messages import Hello
from shared.protocol.seal import LinkAuth, session_keys

NONCE_BYTES = 16
MAX_NONCE_BYTES = 64
MAX_REQUEST_BYTES = 64 * 1024  # HTTP request bodies (impairment attributes are tiny)
_MAC_LABEL = "hoplink-hello-v1"


class AuthError(ValueError):
    """A HELLO that fails authentication; the message says why (safe to send back)."""


def _secret_bytes(secret: Any) -> bytes | None:
    """A secret given as str, bytes or pydantic SecretStr (None or empty: no secret)."""
    if secret is None:
        return None
    if hasattr(secret, "get_secret_value"):
        secret = secret.get_secret_value()
    data = secret.encode() if isinstance(secret, str) else bytes(secret)
    return data or None


def hello_mac(secret: Any, hello: Hello, peer_nonce: bytes = b"") -> bytes:
    """HMAC-SHA256 over the HELLO's role, version, digests and nonce (+ the peer's nonce)."""
    key = _secret_bytes(secret)
    if key is None:
        raise AuthError("no secret configured")
    fields = [
        _MAC_LABEL,
        hello.role,
        hello.version,
        hello.config_digest,
        hello.model_digest,
        hello.nonce,
        hello.stream,
        hello.next_seq,
        peer_nonce,
    ]
    return hmac.new(key, msgpack.packb(fields, use_bin_type=True), hashlib.sha256).digest()


def sign_hello(hello: Hello, secret: Any, peer_nonce: bytes = b"") -> Hello:
    """``hello`` with a fresh nonce and, when a secret is set, its MAC (unchanged otherwise)."""
    import dataclasses

    if _secret_bytes(secret) is None:
        return hello
    fresh = dataclasses.replace(hello, nonce=os.urandom(NONCE_BYTES), auth=b"")
    return dataclasses.replace(fresh, auth=hello_mac(secret, fresh, peer_nonce))


def verify_hello(hello: Hello, secret: Any, peer_nonce: bytes = b"") -> None:
    """Raise AuthError unless ``hello`` carries a valid MAC under ``secret`` (no-op without one)."""
    if _secret_bytes(secret) is None:
        return
    if not hello.auth:
        raise AuthError(
            f"hello from {hello.role!r} has no MAC: this link requires the shared secret"
        )
    if not NONCE_BYTES <= len(hello.nonce) <= MAX_NONCE_BYTES:
        raise AuthError(f"hello nonce of {len(hello.nonce)} bytes, expected {NONCE_BYTES}")
    if not hmac.compare_digest(hello.auth, hello_mac(secret, hello, peer_nonce)):
        raise AuthError(f"hello from {hello.role!r}: wrong MAC (another secret, or altered)")


def link_auth(secret: Any, role: str, tx_hello: Hello, rx_hello: Hello) -> LinkAuth | None:
    """``role``'s sealer and opener for the link these two HELLOs opened (None without a secret:
    messages then go unsealed)."""
    key = _secret_bytes(secret)
    if key is None:
        return None
    return LinkAuth(session_keys(key, tx_hello.nonce, rx_hello.nonce), role)


class NonceMemory:
    """The last ``size`` nonces seen, to refuse a replayed HELLO."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def check_and_remember(self, nonce: bytes) -> None:
        if nonce in self._seen:
            raise AuthError("replayed hello (its nonce was used before)")
        self._seen[nonce] = None
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)


# --- the control API -----------------------------------------------------------------------------

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; False for 0.0.0.0, :: and any other address."""
    host = host.strip().strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_control_binding(host: str, token: Any) -> None:
    """Refuse (ValueError naming the fix) a control API bound beyond loopback without a token."""
    if not is_loopback(host) and _secret_bytes(token) is None:
        raise ValueError(
            f"the channel's control API would listen on {host!r} without a token: set "
            "HOPLINK_CONTROL_TOKEN (clients send 'Authorization: Bearer <token>'), or bind to "
            "127.0.0.1"
        )


STATE_CHANGING = frozenset({"POST", "PUT", "DELETE", "PATCH"})


def require_control_token(request: Request) -> None:
    """FastAPI dependency of the control routes: state-changing requests need the bearer token
    (when one is configured) and must not come from another web origin."""
    from fastapi import HTTPException

    if request.method not in STATE_CHANGING:
        return
    origin = request.headers.get("origin")
    if origin is not None and not _same_origin(origin, request):
        raise HTTPException(403, f"cross-origin request from {origin} refused")
    service = getattr(request.app.state, "service", None)
    token = _secret_bytes(getattr(getattr(service, "settings", None), "control_token", None))
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
        raise HTTPException(
            401,
            "the control API needs 'Authorization: Bearer <HOPLINK_CONTROL_TOKEN>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _same_origin(origin: str, request: Request) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(origin)
    host = request.headers.get("host", "")
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


class BodySizeLimit:
    """ASGI middleware: HTTP request bodies over ``max_bytes`` get 413 before the app reads them
    (by Content-Length, or while streaming when it is absent)."""

    def __init__(self, app: Any, max_bytes: int = MAX_REQUEST_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = True
                if too_big:
                    await self._refuse(send)
                    return
        received = 0
        refused = False

        async def limited_receive() -> dict:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            if refused:
                await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        await _send_json_error(send, 413, f"request body exceeds {self.max_bytes} bytes")


async def _send_json_error(send: Any, status: int, detail: str) -> None:
    """An ASGI response ``{"detail": ...}`` with ``status``, as FastAPI answers its errors."""
    body = b'{"detail":%s}' % _json_string(detail)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class HostGuard:
    """ASGI middleware against DNS rebinding and foreign web pages: an HTTP request or websocket
    whose ``Host`` names neither a loopback address nor an allowed host gets 403 (a websocket is
    closed with 1008 before it opens), and so does one whose ``Origin`` (sent by browsers) names
    another host. ``allowed``: extra host names (``--allowed-hosts``, e.g. the compose services'
    names); ``*`` allows any host. ``refused`` counts what it turned away."""

    def __init__(self, app: Any, allowed: Any = ()) -> None:
        self.app = app
        self.allowed = frozenset(h.strip().lower().strip("[]") for h in allowed if h.strip())
        self.refused = 0

    def allows(self, host: str | None) -> bool:
        return host is not None and (
            "*" in self.allowed or host in self.allowed or is_loopback(host)
        )

    def why_refused(self, headers: Any) -> str | None:
        """The reason to refuse a request with these ASGI (name, value) byte headers, or None."""
        values = {name: value for name, value in headers if name in (b"host", b"origin")}
        origin = values.get(b"origin")
        return self.why_refused_names(
            values.get(b"host", b"").decode("latin-1"),
            None if origin is None else origin.decode("latin-1"),
        )

    def why_refused_names(self, host: str, origin: str | None) -> str | None:
        """The reason to refuse a request naming ``host`` (and ``origin``), or None."""
        from urllib.parse import urlsplit

        if not self.allows(_host_name(host)):
            return f"host {host!r} is not allowed (loopback or --allowed-hosts)"
        if origin is not None:
            try:
                parts = urlsplit(origin)
                allowed = parts.scheme in ("http", "https") and self.allows(parts.hostname)
            except ValueError:  # not a URL at all (an unclosed "[", a bad port)
                allowed = False
            if not allowed:
                return f"origin {origin!r} is not allowed"
        return None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        why = self.why_refused(scope.get("headers", ()))
        if why is None:
            await self.app(scope, receive, send)
            return
        self.refused += 1
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": why[:123]})
            return
        await _send_json_error(send, 403, why)


def _host_name(host: str) -> str | None:
    """The name in a ``Host`` header (``[::1]:8003`` → ``::1``); None when it has none."""
    from urllib.parse import urlsplit

    try:
        name = urlsplit("//" + host).hostname
    except ValueError:
        return None
    return name or None


def _json_string(text: str) -> bytes:
    import json

    return json.dumps(text).encode()


__all__ = [
    "MAX_REQUEST_BYTES",
    "AuthError",
    "BodySizeLimit",
    "HostGuard",
    "NonceMemory",
    "check_control_binding",
    "hello_mac",
    "is_loopback",
    "link_auth",
    "require_control_token",
    "sign_hello",
    "verify_hello",
]
