"""The link's messages: small frozen types with one msgpack codec.

On the wire each message is one msgpack map in one binary websocket frame; ``"type"`` names the
message and the other keys are its fields. :func:`decode` validates every field's type and range
and raises :class:`ProtocolError` naming the message and field at fault.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack

PROTOCOL_VERSION = 1
DIGEST_EVERY = 30  # frames between the Tx's DIGESTs, unless a link or experiment sets its own
MAX_MESSAGE_BYTES = 256 * 1024
MAX_SEQ = 2**53  # sequence numbers stay exact in every JSON consumer of the stats


class ProtocolError(ValueError):
    """A message that cannot be decoded or is invalid; ``reason`` is safe to send back."""


@dataclass(frozen=True)
class Message:
    TYPE: ClassVar[str] = ""


@dataclass(frozen=True)
class Hello(Message):
    """First message on a link: both ends must run the same protocol, config and model."""

    TYPE: ClassVar[str] = "hello"
    role: str  # "tx" | "rx" | "channel"
    config_digest: str
    model_digest: str
    version: int = PROTOCOL_VERSION
    auth: bytes = b""  # HMAC over the digests when the link has a shared secret
    nonce: bytes = b""  # fresh per HELLO when authenticated (shared/protocol/security.py)
    stream: str = ""  # the Tx's stream id (one per Tx process): another id starts a new session
    next_seq: int = 0  # the Tx's next frame: a restarted Rx cannot know the frames before it


@dataclass(frozen=True)
class Hit(Message):
    """A frame recalled from memory: references (+ soft weights) and the SimHash cue."""

    TYPE: ClassVar[str] = "hit"
    seq: int
    t: float  # frame time in seconds
    refs: tuple[int, ...]
    cue: int
    weights: tuple[int, ...] = ()


@dataclass(frozen=True)
class New(Message):
    """A miss: the quantized latent, packed; ``slot`` is where both memories store it (-1: none)."""

    TYPE: ClassVar[str] = "new"
    seq: int
    t: float
    slot: int
    latent: bytes


@dataclass(frozen=True)
class Delta(Message):
    """A miss sent predictively (shared/coding/rdo.py): the residual to reference ``ref``'s
    prototype, b′ = ``bits`` per value, packed; both memories store the reconstruction at
    ``slot``."""

    TYPE: ClassVar[str] = "delta"
    seq: int
    t: float
    slot: int
    ref: int
    cue: int  # SimHash cue of the base prototype, verified like a HIT's
    bits: int
    scale: int
    residual: bytes


@dataclass(frozen=True)
class Coded(Message):
    """A frame's symbols (HIT, DELTA or NEW), range-coded with adaptive models
    (shared/coding/entropy.py); the payload is the frame's whole bitstream."""

    TYPE: ClassVar[str] = "coded"
    seq: int
    t: float
    payload: bytes


@dataclass(frozen=True)
class RefreshRequest(Message):
    """Rx→Tx: the Rx's copy of a reference is suspect; ``seq`` is the frame waiting for it."""

    TYPE: ClassVar[str] = "refresh_request"
    ref: int
    seq: int
    reason: str = ""


@dataclass(frozen=True)
class Refresh(Message):
    """Tx→Rx: the true prototype of a reference, as quantizer codes."""

    TYPE: ClassVar[str] = "refresh"
    ref: int
    seq: int
    latent: bytes


@dataclass(frozen=True)
class Digest(Message):
    """Tx→Rx: the memory's digest after frame ``seq``, with per-reference hashes."""

    TYPE: ClassVar[str] = "digest"
    seq: int
    count: int
    digest: str
    slot_hashes: bytes = b""  # count × uint32, little endian


@dataclass(frozen=True)
class Corrupt(Message):
    """Channel→Rx, one-shot fault event: permute a fraction ρ of the Rx ID map and/or add
    Gaussian noise σ to the Rx prototypes (the paper's memory-corruption experiment)."""

    TYPE: ClassVar[str] = "corrupt"
    rho: float
    sigma: float
    seed: int


@dataclass(frozen=True)
class Error(Message):
    TYPE: ClassVar[str] = "error"
    code: str
    reason: str


@dataclass(frozen=True)
class Bye(Message):
    """End of stream: ``last_seq`` lets the Rx count frames that never arrived as lost."""

    TYPE: ClassVar[str] = "bye"
    last_seq: int
    reason: str = ""


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Hit,
        New,
        Delta,
        Coded,
        RefreshRequest,
        Refresh,
        Digest,
        Corrupt,
        Error,
        Bye,
    )
}
# The messages that carry one frame each (the Rx settles every one of them to an Outcome).
FRAME_MESSAGES: tuple[type[Message], ...] = (Hit, New, Delta, Coded)


def encode(message: Message) -> bytes:
    payload: dict[str, Any] = {"type": message.TYPE}
    for f in dataclasses.fields(message):
        value = getattr(message, f.name)
        payload[f.name] = list(value) if isinstance(value, tuple) else value
    return msgpack.packb(payload, use_bin_type=True)


def ws_frame_bytes(payload: int, masked: bool) -> int:
    """Bytes on the wire of one unfragmented websocket frame with ``payload`` bytes (RFC 6455
    §5.2): a 2-byte header, +2 length bytes from 126 bytes, +8 from 65536, +4 mask bytes on
    client-to-server frames. TCP/IP headers are not counted (they depend on segmentation)."""
    header = 2 if payload < 126 else 4 if payload < 65536 else 10
    return payload + header + (4 if masked else 0)


# encode writes "type" first: fixmap, fixstr "type", fixstr <name>, ...
_TYPE_PREFIXES = {
    b"\xa4type" + bytes([0xA0 + len(name)]) + name.encode(): name for name in MESSAGE_TYPES
}


def peek_type(data: bytes) -> str | None:
    """The message type read from the frame's leading ``"type"`` key, without decoding the rest;
    None when the frame does not start that way (then only :func:`decode` can tell)."""
    if len(data) > 7 and 0x80 <= data[0] <= 0x8F:
        length = data[6] - 0xA0
        if 0 <= length < 32:
            return _TYPE_PREFIXES.get(data[1 : 7 + length])
    return None


def decode(data: bytes) -> Message:
    """Parse and validate one message; raises ProtocolError with a precise reason."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        payload = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad bytes
        raise ProtocolError(f"malformed msgpack: {exc}") from None
    if not isinstance(payload, dict):
        raise ProtocolError(f"message is a {type(payload).__name__}, expected a map")
    kind = payload.get("type")
    cls = MESSAGE_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {kind!r}")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in payload:
            if f.default is dataclasses.MISSING:
                raise ProtocolError(f"{kind}: missing field {f.name!r}")
            continue
        values[f.name] = _check(kind, f, payload[f.name])
    unknown = set(payload) - {"type"} - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ProtocolError(f"{kind}: unknown fields {sorted(unknown)}")
    return cls(**values)


def _check(kind: str, f: dataclasses.Field, value: Any) -> Any:
    expected = f.type
    where = f"{kind}.{f.name}"
    if expected == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ProtocolError(f"{where} must be an integer, got {type(value).__name__}")
        low = (
            0 if f.name in ("cue", "count", "version", "seed", "bits", "scale", "next_seq") else -1
        )
        if not low <= value <= (2**64 - 1 if f.name == "cue" else MAX_SEQ):
            raise ProtocolError(f"{where} = {value} is out of range")
        return value
    if expected == "float":
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ProtocolError(f"{where} must be a number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise ProtocolError(f"{where} must be finite, got {value}")
        return float(value)
    if expected == "str":
        if not isinstance(value, str) or len(value) > 1024:
            raise ProtocolError(f"{where} must be a string of at most 1024 characters")
        return value
    if expected == "bytes":
        if not isinstance(value, bytes):
            raise ProtocolError(f"{where} must be binary, got {type(value).__name__}")
        return value
    if expected == "tuple[int, ...]":
        if not isinstance(value, list) or len(value) > 64:
            raise ProtocolError(f"{where} must be a list of at most 64 integers")
        if not all(type(v) is int and 0 <= v < 2**32 for v in value):
            raise ProtocolError(f"{where} must hold non-negative 32-bit integers")
        return tuple(value)
    raise ProtocolError(f"{where}: unsupported field type {expected}")  # pragma: no cover


__all__ = [
    "PROTOCOL_VERSION",
    "MAX_MESSAGE_BYTES",
    "Message",
    "Hello",
    "Hit",
    "New",
    "Delta",
    "Coded",
    "FRAME_MESSAGES",
    "RefreshRequest",
    "Refresh",
    "Digest",
    "Corrupt",
    "Error",
    "Bye",
    "MESSAGE_TYPES",
    "peek_type",
    "ws_frame_bytes",
    "ProtocolError",
    "encode",
    "decode",
]
