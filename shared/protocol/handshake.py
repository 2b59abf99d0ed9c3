"""The link's handshake and state machine (sans-I/O): close codes, the HELLO check, the table.

h11 style (STYLE.md): a link end is in one :class:`LinkState`; what happens to it is a small
:class:`LinkEvent`; :data:`TRANSITIONS`, written once below, says which event is legal in which
state and where it leads. :class:`LinkStateMachine` holds one end's state and applies the table;
an event the table does not allow raises :class:`IllegalTransition` (a
:class:`~shared.protocol.messages.ProtocolError`), is counted, and
:meth:`LinkStateMachine.close_for` gives the close code and reason to end the link with.

The three I/O shells drive it: the Tx dials, sends its HELLO, checks the Rx's and streams, and
retries or closes; the Rx accepts a link, checks the Tx's HELLO, streams, resyncs while a DIGEST
shows its memory differs from the Tx's, and hangs up to wait for the next link; the channel's
per-link state goes from dialing the Rx to bridging both legs (it carries the HELLOs, it does not
check them) to closed. No I/O, no clocks and no asyncio here.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum, StrEnum
from types import MappingProxyType

from shared.protocol.messages import PROTOCOL_VERSION, Hello, ProtocolError

# --- close codes ---------------------------------------------------------------------------------


class CloseCode(IntEnum):
    """Websocket close codes of the link (4000-4999 are ours, RFC 6455 §7.4.2)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    INTERNAL_ERROR = 1011
    PROTOCOL_ERROR = 4000  # first message not a HELLO, undecodable, or illegal in the state
    VERSION_MISMATCH = 4001
    CONFIG_MISMATCH = 4002
    MODEL_MISMATCH = 4003
    LINK_BUSY = 4004  # the Rx already serves a link, or the channel --max-links
    RX_UNREACHABLE = 4005  # the channel could not reach the Rx
    AUTH_FAILED = 4006  # HELLO without a valid MAC under the link's secret, or replayed
    HELLO_TIMEOUT = 4007  # no HELLO within the handshake deadline (transient: the Tx retries)
    SUPERSEDED = 4008  # a fresh authenticated HELLO of the same stream took the link slot over


# Reconnecting cannot fix these: the two ends disagree, so the Tx stops and says why.
FATAL_CLOSE_CODES = frozenset(
    {
        CloseCode.PROTOCOL_ERROR,
        CloseCode.VERSION_MISMATCH,
        CloseCode.CONFIG_MISMATCH,
        CloseCode.MODEL_MISMATCH,
        CloseCode.AUTH_FAILED,
    }
)

CLOSE_REASON_BYTES = 123  # a close frame's reason holds at most 123 bytes (RFC 6455 §5.5)


# --- the HELLO check -----------------------------------------------------------------------------


class HandshakeError(Exception):
    """A HELLO that cannot open the link; ``code`` and ``reason`` go into the close frame."""

    def __init__(self, code: CloseCode, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason[:CLOSE_REASON_BYTES]
        self.detail = detail or reason  # full text for the ERROR message and the log

    @property
    def error_code(self) -> str:
        return self.code.name.lower()


def check_hello(hello: Hello, role: str, config_digest: str, model_digest: str) -> None:
    """Raise HandshakeError unless ``hello`` comes from a ``role`` end running our protocol
    version, link configuration and codec weights."""
    if hello.version != PROTOCOL_VERSION:
        raise HandshakeError(
            CloseCode.VERSION_MISMATCH,
            f"protocol version mismatch: peer {hello.version}, ours {PROTOCOL_VERSION}",
        )
    if hello.role != role:
        raise HandshakeError(
            CloseCode.PROTOCOL_ERROR, f"hello from role {hello.role!r}, expected {role!r}"
        )
    if hello.config_digest != config_digest:
        raise HandshakeError(
            CloseCode.CONFIG_MISMATCH,
            f"config digest mismatch: peer {hello.config_digest[:16]} ours {config_digest[:16]}",
            f"config digest mismatch: peer {hello.config_digest}, ours {config_digest}; "
            "both ends must run the same link configuration (compare `hoplink sim --json`)",
        )
    if hello.model_digest != model_digest:
        raise HandshakeError(
            CloseCode.MODEL_MISMATCH,
            f"model digest mismatch: peer {hello.model_digest[:16]} ours {model_digest[:16]}",
            f"model digest mismatch: peer {hello.model_digest}, ours {model_digest}; "
            "both ends must load the same codec weights",
        )


# --- states, events, the table -------------------------------------------------------------------


class LinkState(StrEnum):
    """Explicit states of a link end; stats and health report the value."""

    IDLE = "idle"  # no link yet: the Tx before its first dial, the Rx between links
    CONNECTING = "connecting"  # dialing (the Tx; the channel's Rx leg), or backing off
    HANDSHAKING = "handshaking"  # HELLOs in flight
    STREAMING = "streaming"
    RESYNCING = "resyncing"  # streaming, but the last DIGEST shows the memories disagree
    CLOSED = "closed"  # finished (Tx after BYE), refused for good, or a channel link ended


class LinkEvent(StrEnum):
    """What can happen to a link end (the shells report these; the table decides)."""

    DIAL = "dial"  # a dialing end starts dialing
    ACCEPT = "accept"  # a serving end accepted a websocket and awaits the HELLO
    HELLO_SENT = "hello_sent"  # a dialing end's HELLO went out
    HELLO_RECEIVED = "hello_received"  # the peer's HELLO arrived (legal only while handshaking)
    HELLO_ACCEPTED = "hello_accepted"  # the peer's HELLO passed the checks: the link streams
    BRIDGED = "bridged"  # a proxy reached the far end; it carries the HELLOs without checking
    DIVERGED = "diverged"  # a DIGEST shows our memory differs from the Tx's
    CONVERGED = "converged"  # the memories agree again (a later DIGEST, or refreshes)
    BYE = "bye"  # the stream ended with BYE
    RETRY = "retry"  # the dial failed or the link was lost: back off and dial again
    HANG_UP = "hang_up"  # a serving end's link ended (or was refused): wait for the next one
    CLOSE = "close"  # the link ended for good (a fatal refusal; a channel link whose side closed)


_S, _E = LinkState, LinkEvent

# state -> {event -> next state}; an event missing from its state's row is illegal there.
TRANSITIONS: Mapping[LinkState, Mapping[LinkEvent, LinkState]] = MappingProxyType(
    {
        _S.IDLE: {
            _E.DIAL: _S.CONNECTING,
            _E.ACCEPT: _S.HANDSHAKING,
        },
        _S.CONNECTING: {
            _E.HELLO_SENT: _S.HANDSHAKING,
            _E.BRIDGED: _S.STREAMING,
            _E.RETRY: _S.CONNECTING,
            _E.CLOSE: _S.CLOSED,
        },
        _S.HANDSHAKING: {
            _E.HELLO_RECEIVED: _S.HANDSHAKING,
            _E.HELLO_ACCEPTED: _S.STREAMING,
            _E.RETRY: _S.CONNECTING,
            _E.HANG_UP: _S.IDLE,
            _E.CLOSE: _S.CLOSED,
        },
        _S.STREAMING: {
            _E.DIVERGED: _S.RESYNCING,
            _E.CONVERGED: _S.STREAMING,
            _E.BYE: _S.CLOSED,
            _E.RETRY: _S.CONNECTING,
            _E.HANG_UP: _S.IDLE,
            _E.CLOSE: _S.CLOSED,
        },
        _S.RESYNCING: {
            _E.DIVERGED: _S.RESYNCING,
            _E.CONVERGED: _S.STREAMING,
            _E.BYE: _S.CLOSED,
            _E.RETRY: _S.CONNECTING,
            _E.HANG_UP: _S.IDLE,
            _E.CLOSE: _S.CLOSED,
        },
        _S.CLOSED: {},
    }
)


class IllegalTransition(ProtocolError):
    """``event`` is not allowed in ``state`` (see :data:`TRANSITIONS`); the state is unchanged."""

    def __init__(self, state: LinkState, event: LinkEvent) -> None:
        self.state, self.event = state, event
        super().__init__(f"link event {event.value!r} is illegal in state {state.value!r}")


class LinkStateMachine:
    """One link end's state, moved only by :meth:`handle` along :data:`TRANSITIONS`."""

    def __init__(self, state: LinkState = LinkState.IDLE) -> None:
        self.state = state
        self.illegal = 0  # events refused as illegal in their state

    def can(self, event: LinkEvent) -> bool:
        """Whether ``event`` is legal in the current state."""
        return event in TRANSITIONS[self.state]

    def handle(self, event: LinkEvent) -> LinkState:
        """Apply ``event``; returns the new state. Raises (and counts) IllegalTransition."""
        following = TRANSITIONS[self.state].get(event)
        if following is None:
            self.illegal += 1
            raise IllegalTransition(self.state, event)
        self.state = following
        return following

    @staticmethod
    def close_for(error: IllegalTransition) -> tuple[CloseCode, str]:
        """The close code and reason to end a link with after ``error``."""
        reason = f"illegal {error.event.value} in state {error.state.value}"
        return CloseCode.PROTOCOL_ERROR, reason[:CLOSE_REASON_BYTES]

    def __repr__(self) -> str:
        return f"LinkStateMachine({self.state.value!r}, illegal={self.illegal})"


__all__ = [
    "FATAL_CLOSE_CODES",
    "TRANSITIONS",
    "CloseCode",
    "HandshakeError",
    "IllegalTransition",
    "LinkEvent",
    "LinkState",
    "LinkStateMachine",
    "check_hello",
]
