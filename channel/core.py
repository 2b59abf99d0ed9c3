"""The channel's sans-I/O core: the per-direction impairment pipeline.

The websocket shell feeds every message it receives to :meth:`ChannelCore.on_data` with the
current time and sends each returned :class:`Delivery` at its ``at``; it calls
:meth:`ChannelCore.poll` now and then (at the latest by :meth:`ChannelCore.next_poll_at`) for
messages the pipeline held. The core reads no clock and opens no socket, and it never imports
torch.

Each direction has its own impairments, applied in the fixed order documented in
:mod:`channel.impairments`, each with its own random generator
``np.random.default_rng([seed, name_hash(name), direction_index])``, so setting, changing or
clearing one impairment never changes another's draws, and one seed reproduces a run. A channel
process carrying several links gives each its own core with a ``link`` number, appended to every
key (link 0 keeps the keys above), so links draw independent streams. A message with no
impairment set on its direction is forwarded at once, without being decoded.

``hold=True`` (the network channel): the queueing impairments (rate, delay) keep what is not due
yet inside the core and release it from :meth:`ChannelCore.poll`, so changing their attributes
reschedules what they hold and clearing them releases it at once — nothing is stranded at a send
time computed under settings that no longer apply. What the core holds per direction is bounded
(``max_held`` messages, ``max_held_bytes`` bytes): a message arriving over either bound is dropped
and counted (``overflow``, part of ``dropped``). ``hold=False`` (the in-process link, unit tests)
returns every delivery at once with its send time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from channel.impairments import IMPAIRMENTS, PIPELINE_ORDER, Impairment
from channel.impairments.base import (
    ImpairmentError,
    InFlight,
    classify,
    name_hash,
)
from shared.config import LinkConfig
from shared.protocol.messages import Corrupt, encode, peek_type

DIRECTIONS = ("tx_to_rx", "rx_to_tx")
MAX_CORRUPT_SIGMA = 10.0  # the largest σ the receiver accepts in a corruption event
MAX_HELD = 4096  # messages the core holds per direction before it drops arrivals
MAX_HELD_BYTES = 64 * 2**20  # bytes the core holds per direction before it drops arrivals


@dataclass(frozen=True, slots=True)
class Delivery:
    data: bytes  # the bytes to forward (one websocket binary message)
    at: float  # absolute time (same clock as ``now``) at which to send it


@dataclass
class _Stage:
    name: str  # unique per direction; by default the impairment's type
    kind: str  # the impairment's type (a key of IMPAIRMENTS): its place in the pipeline
    impairment: Impairment
    rng: np.random.Generator


@dataclass
class _Direction:
    index: int
    stages: list[_Stage] = field(default_factory=list)
    messages_in: int = 0
    messages_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    types_in: dict[str, int] = field(default_factory=dict)
    types_out: dict[str, int] = field(default_factory=dict)
    retired: dict[str, dict[str, int]] = field(default_factory=dict)  # counters of cleared ones
    retired_kinds: dict[str, str] = field(default_factory=dict)  # their types, by name
    overflow: int = 0  # arrivals dropped because the backlog was full (messages or bytes)
    released: list[InFlight] = field(default_factory=list)  # flushed on clear, out at next poll

    def find(self, name: str) -> _Stage | None:
        for stage in self.stages:
            if stage.name == name:
                return stage
        return None


class ChannelCore:
    """Impairs the messages of both directions of one link; see the module docstring."""

    def __init__(
        self,
        config: LinkConfig,
        seed: int = 0,
        link: int = 0,
        *,
        hold: bool = False,
        max_held: int = MAX_HELD,
        max_held_bytes: int = MAX_HELD_BYTES,
    ) -> None:
        if seed < 0 or link < 0:
            raise ValueError(f"seed and link must be non-negative, got {seed}, {link}")
        if max_held < 1 or max_held_bytes < 1:
            raise ValueError(f"backlog bounds must be positive, got {max_held}, {max_held_bytes}")
        self.config = config
        self.seed = seed
        self.hold = hold
        self.max_held = max_held
        self.max_held_bytes = max_held_bytes
        self._now = -math.inf  # the latest time given to on_data/poll (reschedules use it)
        self._link_key = [link] if link else []  # link 0: the single-link streams
        self._directions = {name: _Direction(i) for i, name in enumerate(DIRECTIONS)}
        self._rngs: dict[tuple[str, str], np.random.Generator] = {}
        self._event_rng = np.random.default_rng(
            [seed, name_hash("corruption_event"), len(DIRECTIONS), *self._link_key]
        )
        self._events = {"corrupt": 0, "id_desync": 0, "prototype_noise": 0}

    # -- the data path ---------------------------------------------------------------------------

    def pass_through(self, direction: str, data: bytes, now: float) -> bool:
        """The hot path: when no impairment acts on ``direction`` and it holds nothing, count
        ``data`` as carried untouched and return True (the caller sends it as it is, with no
        Delivery and no pipeline); else return False and count nothing (use :meth:`on_data`)."""
        d = self._directions[direction]
        if d.stages or d.released:
            return False
        self._now = max(self._now, now)
        size = len(data)
        d.messages_in += 1
        d.messages_out += 1
        d.bytes_in += size
        d.bytes_out += size
        kind = peek_type(data) or classify(data)[0]
        d.types_in[kind] = d.types_in.get(kind, 0) + 1
        d.types_out[kind] = d.types_out.get(kind, 0) + 1
        return True

    def on_data(self, direction: str, data: bytes, now: float) -> list[Delivery]:
        """One incoming message → zero (lost or held), one, or more (duplicated, or held ones
        released) deliveries, each with its send time (never before ``now``)."""
        d = self._direction(direction)
        self._now = max(self._now, now)
        d.messages_in += 1
        d.bytes_in += len(data)
        kind, message = classify(data)
        d.types_in[kind] = d.types_in.get(kind, 0) + 1
        if not d.stages:
            d.messages_out += 1
            d.bytes_out += len(data)
            d.types_out[kind] = d.types_out.get(kind, 0) + 1
            return [Delivery(data, now)]
        if self._held(d) >= self.max_held or self._held_bytes(d) + len(data) > self.max_held_bytes:
            d.overflow += 1  # the backlog is full: bounded in messages and in bytes
            return []
        items = self._run(d, [InFlight(data, now, kind, message)], 0)
        return [Delivery(item.data, at) for item, at in self._leave(d, items, now)]

    def poll(self, now: float) -> list[tuple[str, Delivery]]:
        """Held messages due at ``now`` (and those released by clearing an impairment)."""
        out: list[tuple[str, Delivery]] = []
        self._now = max(self._now, now)
        for name, d in self._directions.items():
            items, d.released = d.released, []
            for i, stage in enumerate(d.stages):
                due = stage.impairment.poll(now)
                if due:
                    items.extend(self._run(d, due, i + 1))
            out.extend((name, Delivery(item.data, at)) for item, at in self._leave(d, items, now))
        return out

    def next_poll_at(self) -> float | None:
        """The earliest time :meth:`poll` has something to release (None: nothing held);
        ``-inf`` when something is already waiting."""
        due = None  # called for every message: no temporary lists
        for d in self._directions.values():
            if d.released:
                return -math.inf
            for stage in d.stages:
                t = stage.impairment.next_due()
                if t is not None and (due is None or t < due):
                    due = t
        return due

    def _run(self, d: _Direction, items: list[InFlight], start: int) -> list[InFlight]:
        for stage in d.stages[start:]:
            if not items:
                break
            impairment, rng = stage.impairment, stage.rng
            if len(items) == 1:
                items = impairment.process(items[0], rng)
            else:
                items = [out for item in items for out in impairment.process(item, rng)]
        return items

    @staticmethod
    def _leave(d: _Direction, items: list[InFlight], now: float) -> list[tuple[InFlight, float]]:
        out = []
        for item in items:
            d.messages_out += 1
            d.bytes_out += len(item.data)
            d.types_out[item.type] = d.types_out.get(item.type, 0) + 1
            out.append((item, max(item.at, now)))
        return out

    # -- control (REST API) ----------------------------------------------------------------------

    def set_impairment(
        self,
        direction: str,
        name: str,
        attributes: Mapping[str, Any],
        now: float | None = None,
        *,
        kind: str | None = None,
    ) -> dict:
        """Add an impairment, or update one (the given attributes are merged into its current
        ones; its counters and state are kept; what it holds is rescheduled at ``now``, by
        default the latest time the core was given). Returns its state.

        ``name`` is unique per direction; ``kind`` is the impairment's type (default: the name,
        so ``set_impairment(d, "loss", …)`` sets the loss). Several impairments of one type run
        in the order they were added, at their type's place in the pipeline; each draws from
        its own stream, keyed by its name."""
        d = self._direction(direction)
        stage = d.find(name)
        if kind is None:
            kind = name if stage is None else stage.kind
        cls = self._class(kind)
        kind = cls.name
        where = f"{direction}/{name}"
        if not isinstance(attributes, Mapping):
            raise ImpairmentError(f"{where}: attributes must be an object, got {attributes!r}")
        if stage is not None and stage.kind != kind:
            raise ImpairmentError(f"{where} is a {stage.kind} impairment, not a {kind}")
        if stage is not None:
            merged = {**stage.impairment.attributes.model_dump(), **attributes}
            stage.impairment.configure(cls.validate(merged, where))
            if now is not None:
                self._now = max(self._now, now)
            stage.impairment.reschedule(self._now)
            return stage.impairment.state()
        impairment = cls(cls.validate(attributes, where), self.config)
        impairment.hold = self.hold
        key = (direction, name)
        if key not in self._rngs:  # kept for the core's life: re-adding continues the stream
            entropy = [self.seed, name_hash(name), d.index, *self._link_key]
            self._rngs[key] = np.random.default_rng(entropy)
        d.stages.append(_Stage(name, kind, impairment, self._rngs[key]))
        d.stages.sort(key=lambda s: PIPELINE_ORDER.index(s.kind))  # stable: added order kept
        return impairment.state()

    def clear_impairment(self, direction: str, name: str) -> None:
        """Remove an impairment (no-op if it is not set). Its counters stay in :meth:`stats`;
        messages it held go on through the rest of the pipeline and out at the next poll."""
        d = self._direction(direction)
        stage = d.find(name)
        if stage is None:
            if name not in d.retired:
                self._class(name)  # neither set, nor ever set, nor a type: a named error
            return
        position = d.stages.index(stage)
        d.stages.remove(stage)
        d.retired_kinds[name] = stage.kind
        retired = d.retired.setdefault(name, {})
        for key, value in stage.impairment.counters.items():
            retired[key] = retired.get(key, 0) + value
        held = stage.impairment.flush(-math.inf)
        if held:
            d.released.extend(self._run(d, held, position))

    def clear_all(self) -> None:
        for direction, d in self._directions.items():
            for stage in list(d.stages):
                self.clear_impairment(direction, stage.name)

    def impairments(self) -> dict:
        """``{direction: {name: {attributes..., "counters": {...}}}}`` in pipeline order."""
        return {
            name: {s.name: s.impairment.state() for s in d.stages}
            for name, d in self._directions.items()
        }

    def impairment_types(self) -> dict[str, dict[str, str]]:
        """``{direction: {name: type}}`` of the impairments set, in pipeline order."""
        return {name: {s.name: s.kind for s in d.stages} for name, d in self._directions.items()}

    def impairment_attributes(self) -> dict:
        """``{direction: {name: attributes}}``: what another core needs to copy this pipeline
        (:meth:`impairments` also carries counters and derived state that are not settable)."""
        return {
            name: {s.name: s.impairment.attributes.model_dump() for s in d.stages}
            for name, d in self._directions.items()
        }

    # -- one-shot events -------------------------------------------------------------------------

    def corruption_event(self, rho: float = 0.0, sigma: float = 0.0) -> bytes:
        """An encoded :class:`~shared.protocol.messages.Corrupt` for the shell to send to the Rx:
        permute a fraction ``rho`` of its ID map and/or add noise ``sigma`` to its prototypes."""
        for label, value, high in (("rho", rho, 1.0), ("sigma", sigma, MAX_CORRUPT_SIGMA)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ImpairmentError(f"corruption event: {label} must be a number, got {value!r}")
            if not (math.isfinite(value) and 0.0 <= value <= high):
                raise ImpairmentError(
                    f"corruption event: {label} must be in [0, {high}], got {value}"
                )
        seed = int(self._event_rng.integers(0, 2**53))
        self._events["corrupt"] += 1
        self._events["id_desync"] += int(rho > 0)
        self._events["prototype_noise"] += int(sigma > 0)
        return encode(Corrupt(rho=float(rho), sigma=float(sigma), seed=seed))

    # -- observation -----------------------------------------------------------------------------

    def stats(self) -> dict:
        """Per direction: messages and bytes in/out, per-type counts, totals of every
        impairment's counters (cleared ones included), messages dropped (by impairments, and
        ``overflow`` of a full backlog) / duplicated / held (and ``held_bytes``)
        (``messages_in + duplicated == messages_out + dropped + held``); and events sent."""
        out: dict[str, Any] = {}
        for name, d in self._directions.items():
            totals = {k: dict(v) for k, v in d.retired.items()}
            kinds = {**d.retired_kinds, **{s.name: s.kind for s in d.stages}}
            for stage in d.stages:
                merged = totals.setdefault(stage.name, {})
                for key, value in stage.impairment.counters.items():
                    merged[key] = merged.get(key, 0) + value
            out[name] = {
                "messages_in": d.messages_in,
                "messages_out": d.messages_out,
                "bytes_in": d.bytes_in,
                "bytes_out": d.bytes_out,
                "dropped": d.overflow + sum(c.get("dropped", 0) for c in totals.values()),
                "overflow": d.overflow,
                "duplicated": sum(c.get("duplicated", 0) for c in totals.values()),
                "held": self._held(d),
                "held_bytes": self._held_bytes(d),
                "types_in": dict(d.types_in),
                "types_out": dict(d.types_out),
                "impairments": {
                    k: totals[k]
                    for k in sorted(totals, key=lambda k: PIPELINE_ORDER.index(kinds[k]))
                },
            }
        out["events"] = dict(self._events)
        return out

    # -- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def _held(d: _Direction) -> int:
        return len(d.released) + sum(s.impairment.held() for s in d.stages)

    @staticmethod
    def _held_bytes(d: _Direction) -> int:
        released = sum(len(item.data) for item in d.released)
        return released + sum(s.impairment.held_bytes() for s in d.stages)

    def _direction(self, direction: str) -> _Direction:
        try:
            return self._directions[direction]
        except (KeyError, TypeError):
            raise ImpairmentError(
                f"unknown direction {direction!r}; expected one of {list(DIRECTIONS)}"
            ) from None

    @staticmethod
    def _class(name: str) -> type[Impairment]:
        try:
            return IMPAIRMENTS[name]
        except (KeyError, TypeError):
            raise ImpairmentError(
                f"unknown impairment {name!r}; known: {list(IMPAIRMENTS)}"
            ) from None


__all__ = [
    "DIRECTIONS",
    "IMPAIRMENTS",
    "ChannelCore",
    "Delivery",
    "ImpairmentError",
]
