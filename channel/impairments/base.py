"""The one small interface every impairment implements (Toxiproxy's toxic, for messages).

An impairment sees one message in flight (:class:`InFlight`) and returns what continues down the
pipeline: ``[]`` (dropped or held back), ``[item]`` (possibly changed or later), or several items
(duplicated, or held messages released). Randomness is the ``rng`` the pipeline passes in — one
generator per (direction, impairment) — never global state, and time is the item's ``at`` or the
``now`` given to :meth:`Impairment.poll`; no impairment reads a clock.

Every impairment shares three attributes (see :class:`ImpairmentAttributes`):

* ``toxicity`` — probability that the impairment applies to a given message (as in Toxiproxy);
* ``types`` — message types it applies to; by default every *data-plane* type;
* ``seq_range`` — inclusive ``[lo, hi]`` of sequence numbers it applies to.

Control plane: ``hello``, ``bye``, ``error`` and ``corrupt`` messages are only delayed and
rate-limited (transport impairments), never lost or corrupted unless an impairment names them
explicitly in ``types``; a broken handshake or a lost BYE would test the
transport, not the semantic link. A frame whose ``type`` cannot even be read is typed
``"undecodable"`` and is data plane: loss, rate, delay, duplicate and reorder still act on it,
while field-aware impairments (field-mode bit errors, ID desync, prototype noise) skip any
message that does not fully decode.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.config import LinkConfig
from shared.protocol.messages import (
    MESSAGE_TYPES,
    Message,
    ProtocolError,
    decode,
    encode,
    peek_type,
)
from shared.protocol.seal import split_sealed

UNDECODABLE = "undecodable"
CONTROL_TYPES = frozenset({"hello", "bye", "error", "corrupt"})
SELECTABLE_TYPES = frozenset(MESSAGE_TYPES) | {UNDECODABLE}


class ImpairmentError(ValueError):
    """An unknown impairment or direction, or an invalid attribute; the message names it."""


def classify(data: bytes) -> tuple[str, Message | None]:
    """(type, decoded message or None). The type is the frame's ``"type"`` key when readable —
    a message whose other fields are corrupted still has its type — else ``"undecodable"``."""
    kind = peek_type(data)
    if kind is not None:
        return kind, None
    message, seal = decode_in_flight(data)
    if message is None:
        return UNDECODABLE, None
    return message.TYPE, None if seal else message  # InFlight reads a seal when it decodes


def decode_in_flight(data: bytes) -> tuple[Message | None, bytes]:
    """The message in ``data`` (None if it does not decode) and the seal that follows it on an
    authenticated link (b"" when unsealed). The channel holds no key: it reads and may rewrite
    the message, and keeps the seal as it came, so a rewritten message fails its tag at the far
    end (counted there as forged), as an altered message must."""
    try:
        return decode(data), b""
    except ProtocolError:
        parts = split_sealed(data)
        if parts is None:
            return None, b""
    body = parts[0]
    try:
        return decode(body), data[len(body) :]
    except ProtocolError:
        return None, b""


class InFlight:
    """One message moving through the pipeline: raw bytes, send time, type, decoded form (lazy)."""

    __slots__ = ("data", "at", "type", "_message", "_decoded", "_seal")

    def __init__(self, data: bytes, at: float, kind: str, message: Message | None = None) -> None:
        self.data = data
        self.at = at  # absolute time at which it would leave the channel
        self.type = kind
        self._message = message
        self._decoded = message is not None
        self._seal = b""  # an authenticated link's seal, kept as it came (decode_in_flight)

    @classmethod
    def arriving(cls, data: bytes, at: float) -> InFlight:
        kind, message = classify(data)
        return cls(data, at, kind, message)

    @property
    def message(self) -> Message | None:
        """The decoded message (decoded once, on first use), or None if it does not decode."""
        if not self._decoded:
            self._decoded = True
            self._message, self._seal = decode_in_flight(self.data)
        return self._message

    @property
    def seq(self) -> int | None:
        return getattr(self.message, "seq", None)

    def set_message(self, message: Message) -> None:
        """Replace the content by a changed message (re-encoded at once, its seal kept)."""
        self.message  # noqa: B018 - reads the seal of the original bytes first
        self.data = encode(message) + self._seal
        self.type = message.TYPE
        self._message = message
        self._decoded = True

    def set_data(self, data: bytes) -> None:
        """Replace the raw bytes (e.g. whole-frame corruption); the decoded form is dropped."""
        self.data = data
        self.type, self._message = classify(data)
        self._decoded = self._message is not None

    def copy(self) -> InFlight:
        twin = InFlight(self.data, self.at, self.type, self._message)
        twin._decoded = self._decoded
        twin._seal = self._seal
        return twin

    def __repr__(self) -> str:
        return f"InFlight({self.type}, {len(self.data)} B, at={self.at:.6f})"


def _scalar_kind(annotation: Any) -> type | None:
    """bool, int or float for a field of that type (optional or not); None for any other."""
    import types
    import typing

    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = kinds[0] if len(kinds) == 1 else None
    return annotation if annotation in (bool, int, float) else None


class ImpairmentAttributes(BaseModel):
    """Attributes every impairment accepts; each impairment's ``Attributes`` extends these."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    toxicity: float = Field(
        1.0, ge=0.0, le=1.0, description="probability that the impairment applies to a message"
    )
    types: tuple[str, ...] | None = Field(
        None,
        description="message types it applies to (e.g. ['new']); None: its default — every "
        "data-plane type (hello, bye, error and corrupt are control plane, untouched unless "
        f"named here); '{UNDECODABLE}' selects frames whose type cannot be read",
    )
    seq_range: tuple[int, int] | None = Field(
        None, description="inclusive [lo, hi] of sequence numbers it applies to; None: all"
    )

    @model_validator(mode="before")
    @classmethod
    def _no_coercion(cls, values: Any) -> Any:
        """Numbers must come as numbers and flags as booleans: "0.5", true for a number, or
        "yes" for a flag are refused (422/400 naming the field), never coerced."""
        if not isinstance(values, Mapping):
            return values
        for name, value in values.items():
            field = cls.model_fields.get(name)
            kind = _scalar_kind(field.annotation) if field is not None else None
            if kind is None or value is None:
                continue
            if kind is bool and not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}")
            if kind is not bool and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
        return values

    @field_validator("types", mode="before")
    @classmethod
    def _one_type(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("types")
    @classmethod
    def _known_types(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for kind in value or ():
            if kind not in SELECTABLE_TYPES:
                raise ValueError(
                    f"unknown message type {kind!r}; known: {sorted(SELECTABLE_TYPES)}"
                )
        return value

    @field_validator("seq_range")
    @classmethod
    def _ordered(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not 0 <= value[0] <= value[1]:
            raise ValueError(f"seq_range must satisfy 0 <= lo <= hi, got {list(value)}")
        return value


class Impairment(ABC):
    """Base of every impairment: selection (types, seq_range), toxicity, counters, state.

    Subclasses set ``name``, ``Attributes`` and ``COUNTERS`` and implement :meth:`apply`, which
    is only called for messages the impairment applies to. ``DEFAULT_TYPES`` narrows the types
    it acts on when ``types`` is not set (e.g. memory-write impairments: ``{"new"}``).
    """

    name: ClassVar[str]
    Attributes: ClassVar[type[ImpairmentAttributes]] = ImpairmentAttributes
    DEFAULT_TYPES: ClassVar[frozenset[str] | None] = None
    COUNTERS: ClassVar[tuple[str, ...]] = ()
    # Transport impairments (delay, rate) act on control messages too: a real link delays a BYE
    # as the frames before it, so it cannot overtake them.
    transport: ClassVar[bool] = False
    # Holding mode (set by the core): a queueing impairment (rate, delay) keeps what is not due
    # yet and releases it from :meth:`poll`, so a change of its attributes reschedules what it
    # holds (:meth:`reschedule`) and a clear releases it at once; otherwise it only sets the
    # message's send time and passes it on.
    hold: bool = False

    def __init__(self, attributes: ImpairmentAttributes, config: LinkConfig) -> None:
        self.config = config
        self.counters: dict[str, int] = dict.fromkeys(("matched", *self.COUNTERS), 0)
        self.configure(attributes)

    def configure(self, attributes: ImpairmentAttributes) -> None:
        """Take (new) validated attributes; counters and internal state are kept."""
        self.attributes = attributes
        if attributes.types is not None:
            self._types: frozenset[str] | None = frozenset(attributes.types)
        else:
            self._types = self.DEFAULT_TYPES
        self._seq_range = attributes.seq_range

    @classmethod
    def validate(cls, attributes: Mapping[str, Any], where: str) -> ImpairmentAttributes:
        """Validated attributes, or an ImpairmentError naming ``where`` and the attribute."""
        if not isinstance(attributes, Mapping):
            raise ImpairmentError(f"{where}: attributes must be an object, got {attributes!r}")
        try:
            return cls.Attributes.model_validate(dict(attributes))
        except ValidationError as exc:
            parts = []
            for err in exc.errors():
                field = ".".join(str(p) for p in err["loc"]) or "attributes"
                parts.append(f"attribute {field!r}: {err['msg']} (got {err.get('input')!r})")
            raise ImpairmentError(f"{where}: " + "; ".join(parts)) from None

    def selects(self, item: InFlight) -> bool:
        types = self._types
        if types is None:
            if item.type in CONTROL_TYPES and not self.transport:
                return False
        elif item.type not in types:
            return False
        if self._seq_range is not None:
            seq = item.seq
            return seq is not None and self._seq_range[0] <= seq <= self._seq_range[1]
        return True

    def process(self, item: InFlight, rng: np.random.Generator) -> list[InFlight]:
        """Selection and toxicity, then :meth:`apply`; what is not selected only passes by."""
        toxicity = self.attributes.toxicity
        if (
            toxicity <= 0.0
            or not self.selects(item)
            or (toxicity < 1.0 and rng.random() >= toxicity)
        ):
            return self.passing(item)
        self.counters["matched"] += 1
        return self.apply(item, rng)

    @abstractmethod
    def apply(self, item: InFlight, rng: np.random.Generator) -> list[InFlight]:
        """Impair one selected message; may change ``item`` in place."""

    def passing(self, item: InFlight) -> list[InFlight]:
        """A message this impairment does not act on goes by (reorder counts it as overtaking)."""
        return [item]

    def poll(self, now: float) -> list[InFlight]:
        """Held messages that are due at ``now``."""
        return []

    def next_due(self) -> float | None:
        """When :meth:`poll` will next release something (None: nothing held)."""
        return None

    def held(self) -> int:
        """How many messages it holds now."""
        return 0

    def held_bytes(self) -> int:
        """How many bytes (of message data) it holds now."""
        return 0

    def flush(self, now: float) -> list[InFlight]:
        """Release everything held (the impairment is being removed)."""
        return []

    def reschedule(self, now: float) -> None:
        """Its attributes changed at ``now``: recompute when what it holds is due."""
        return None

    def state(self) -> dict[str, Any]:
        """Attributes and counters, for the REST API and the dashboard."""
        return {**self.attributes.model_dump(mode="json"), "counters": dict(self.counters)}


def name_hash(name: str) -> int:
    """A stable 64-bit hash of a name (Python's ``hash`` of a str changes between processes)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


def flip_bits(data: bytes, positions: np.ndarray | list[int]) -> bytes:
    """``data`` with the given distinct bit positions flipped (bit 0 = MSB of byte 0)."""
    if len(positions) <= 16:  # the usual case at low BER: a Python loop beats numpy's overhead
        buffer = bytearray(data)
        for p in positions:
            buffer[p >> 3] ^= 0x80 >> (p & 7)
        return bytes(buffer)
    array = np.frombuffer(data, dtype=np.uint8).copy()
    where = np.asarray(positions, dtype=np.int64)
    np.bitwise_xor.at(array, where >> 3, (0x80 >> (where & 7)).astype(np.uint8))
    return array.tobytes()


def bit_positions(rng: np.random.Generator, nbits: int, count: int) -> list[int]:
    """``count`` distinct positions in ``range(nbits)``, uniformly at random (sorted)."""
    if count * count <= nbits:  # few flips: draw one at a time, redrawing repeats
        chosen: set[int] = set()
        while len(chosen) < count:
            chosen.add(int(rng.integers(nbits)))
        return sorted(chosen)
    return sorted(rng.choice(nbits, size=count, replace=False).tolist())
