"""Entropy-coded link symbols: adaptive models that both ends update identically, range-coded.

The paper codes every symbol with a fixed length. In ``entropy_coding`` mode each frame becomes
one :class:`~shared.protocol.messages.Coded` message whose payload is the range-coded bitstream of
that frame's symbols (:class:`FrameSymbols`), and the bits counted for the frame are the payload's
bits.

**Coder.** ``constriction``'s range coder (``stream.queue.RangeEncoder``, 32-bit words, 24-bit
probability precision). Each frame is coded on its own, so the Rx decodes it as it
arrives. The sealed words are written big-endian and the shortest byte string that still decodes
to the same symbols is sent (trailing bytes are implied zero by the decoder: the termination
picks, among the last few byte-prefixes and their round-ups, the shortest one that a trial decode
confirms). A frame whose symbols are all the models' most probable ones can therefore cost zero
bytes — that is how a reference equal to the previous frame's costs a fraction of a bit on
average, while every frame still carries exactly the bits it is counted for.

**Symbols of a frame, in coding order** (``ctx`` = kind of the previous frame in the segment):

1. kind ∈ {HIT, DELTA, NEW} (DELTA only when ``delta`` is on) — adaptive, per ``ctx``;
2. HIT and DELTA: the reference (the DELTA's base) as its move-to-front rank among references
   used in this segment: rank class 0 = same as the previous frame's reference, class k ≥ 1 =
   ranks [2^(k-1), 2^k) with a uniform offset, class ESC = not used yet in the segment, followed
   by the reference coded uniformly over the capacity — class adaptive, per ``ctx``;
3. the K-bit SimHash cue, uniform — with ``coded_cue=on_change`` (default) **only when the
   reference is not the previous frame's** (rank ≠ 0): a reference the Rx has just used, or just
   written, needs no new verification, and every reference is verified again at least once per
   segment; with ``coded_cue=every_reference`` on every HIT and DELTA, as the paper does;
4. DELTA: the residual's bit width b′ (adaptive), its scale code (adaptive over
   :data:`shared.coding.residual.SCALE_LEVELS`), and the d residual codes (adaptive, one model
   per b′);
5. NEW: the d latent codes (adaptive over 2^b values, with a heavy-tailed prior around the centre);
6. DELTA and NEW: the slot, as a flag "the slot after the previous one written in this segment"
   (adaptive) or, failing that, uniformly over capacity + 1 (−1: not stored).

**Adaptation and reset.** Every model is a table of integer counts: after a frame, each coded
symbol's count grows by :data:`INCREMENT` (halved when the total passes :data:`COUNT_LIMIT`), and
probabilities are counts / total in float64 — integer state and exactly rounded divisions, so
both ends hold bit-identical tables. Before the first frame of every segment
(``seq // entropy_reset``) all models, the move-to-front list and the slot predictor return to
their priors. The reset is keyed to sequence numbers, not to any message, so a lost frame (or a
lost DIGEST) desynchronizes the Rx only until the next segment: the Rx decodes a segment's frames
in sequence order and conceals the rest of a segment once one of its frames is lost (or once a
frame of a later segment arrives before it: the Rx does not wait for a gap beyond its segment).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import constriction
import numpy as np

from shared.coding.quantizer import Grid, LatentGrid
from shared.coding.residual import SCALE_LEVELS
from shared.config import LinkConfig

# constriction's submodules are attributes of its extension module, not importable packages.
Categorical = constriction.stream.model.Categorical
Uniform = constriction.stream.model.Uniform
RangeEncoder = constriction.stream.queue.RangeEncoder
RangeDecoder = constriction.stream.queue.RangeDecoder

FrameKind = Literal["hit", "delta", "new"]

INCREMENT = 32  # count added per coded symbol
COUNT_LIMIT = 1 << 16  # counts halve when their total passes this
CUE_CHUNK_BITS = 16  # the cue is coded as uniform chunks of at most this many bits
TERMINATION_SEARCH_BYTES = 6  # byte-prefixes tried below the sealed length


class EntropyError(ValueError):
    """A payload that does not decode to a valid frame under the current models."""


@dataclass(frozen=True, eq=False)
class FrameSymbols:
    """What one frame says, before coding: the same content a HIT, DELTA or NEW message carries."""

    kind: FrameKind
    ref: int = -1  # HIT: the reference shown; DELTA: the base reference
    cue: int | None = None  # SimHash cue of the reference's prototype; None: not sent
    slot: int = -1  # DELTA/NEW: where both memories store the prototype (-1: not stored)
    delta_bits: int = 0  # DELTA: b′
    scale: int = 0  # DELTA: residual scale code
    codes: np.ndarray | None = None  # DELTA: residual codes; NEW: latent codes (uint16, (d,))

    def same_as(self, other: FrameSymbols) -> bool:
        fields = ("kind", "ref", "cue", "slot", "delta_bits", "scale")
        if any(getattr(self, f) != getattr(other, f) for f in fields):
            return False
        if self.codes is None or other.codes is None:
            return self.codes is None and other.codes is None
        return np.array_equal(self.codes, other.codes)


# --- adaptive models ------------------------------------------------------------------------------


class AdaptiveModel:
    """A categorical model over ``len(prior)`` symbols learnt from integer counts."""

    __slots__ = ("counts", "_model")

    def __init__(self, prior: np.ndarray) -> None:
        self.counts = np.array(prior, dtype=np.int64)
        if self.counts.ndim != 1 or len(self.counts) < 2 or (self.counts < 1).any():
            raise ValueError("a model needs at least two symbols with positive prior counts")
        self._model = None  # the constriction Categorical of the current counts

    @property
    def size(self) -> int:
        return len(self.counts)

    def model(self):
        if self._model is None:
            probabilities = self.counts / float(self.counts.sum())
            self._model = Categorical(probabilities, perfect=False)
        return self._model

    def bits(self, symbol: int) -> float:
        """Ideal code length −log2 p(symbol) under the current counts (diagnostics)."""
        return -math.log2(self.counts[symbol] / self.counts.sum())

    def update(self, symbols: np.ndarray) -> None:
        np.add.at(self.counts, np.asarray(symbols, dtype=np.int64), INCREMENT)
        while self.counts.sum() > COUNT_LIMIT:
            self.counts = (self.counts + 1) >> 1
        self._model = None


def peaked_prior(size: int, peak: int = 64) -> np.ndarray:
    """Counts for a symmetric alphabet centred on ``size // 2``: 1 + peak / 4^|k − centre|."""
    centre = size // 2
    k = np.abs(np.arange(size) - centre)
    return 1 + (peak >> np.minimum(2 * k, 62))


def latent_prior(bits: int, dim: int, grid: Grid = 1.0, mass: int = 64) -> np.ndarray:
    """Integer, heavy-tailed (Cauchy-like) counts for b-bit codes of a unit-norm d-dim latent.

    A value of a unit-norm latent spreads about 1/√d around 0, i.e. s = 2^(b−1)/(R·√d) cells for
    quantizer range R (2^(b−1)·spread cells on a :class:`LatentGrid`); the count of code k is
    1 + mass·4s² / (4s² + (2k + 1 − 2^b)²) in integer arithmetic.
    """
    levels = 1 << bits
    if isinstance(grid, LatentGrid):
        s = max(1, int((levels >> 1) * grid.spread))
    else:
        s = max(1, int((levels >> 1) / (grid * max(1, math.isqrt(dim)))))
    offset = 2 * np.arange(levels, dtype=np.int64) + 1 - levels
    return 1 + (mass * 4 * s * s) // (4 * s * s + offset * offset)


# --- coding I/O: one walk over a frame's symbols serves both the encoder and the decoder ---------


class _Encoding:
    encoding = True

    def __init__(self) -> None:
        self.coder = RangeEncoder()
        self.trace: list[int] = []  # every coded symbol, in order (the decoder's path)

    def one(self, value: int, model) -> int:
        self.coder.encode(int(value), model)
        self.trace.append(int(value))
        return int(value)

    def many(self, values: np.ndarray, model) -> np.ndarray:
        values = np.asarray(values, dtype=np.int32)
        self.coder.encode(values, model)
        self.trace.extend(values.tolist())
        return values

    def payload(self) -> bytes:
        return words_to_bytes(self.coder.get_compressed())


class _Decoding:
    encoding = False

    def __init__(self, payload: bytes) -> None:
        self.coder = RangeDecoder(bytes_to_words(payload))
        self.trace: list[int] = []

    def one(self, value: object, model) -> int:
        symbol = int(self.coder.decode(model))
        self.trace.append(symbol)
        return symbol

    def many(self, count: int, model) -> np.ndarray:
        symbols = np.asarray(self.coder.decode(model, count), dtype=np.int32)
        self.trace.extend(symbols.tolist())
        return symbols


def words_to_bytes(words: np.ndarray) -> bytes:
    """Sealed range-coder words as big-endian bytes, trailing zero bytes dropped (implied)."""
    return np.asarray(words, dtype=">u4").tobytes().rstrip(b"\0")


def bytes_to_words(payload: bytes) -> np.ndarray:
    """Inverse of :func:`words_to_bytes`: pad with the implied zeros to whole 32-bit words."""
    padded = payload + b"\0" * (-len(payload) % 4)
    return np.frombuffer(padded, dtype=">u4").astype(np.uint32)


@dataclass
class Encoded:
    """A frame coded against the current models; :meth:`SymbolCoder.commit` adopts it."""

    payload: bytes
    symbols: FrameSymbols  # as the Rx will decode it (cue None where it is not sent)
    updates: list[tuple[AdaptiveModel, np.ndarray]]

    @property
    def bits(self) -> int:
        return 8 * len(self.payload)


# --- the coder state of one end ------------------------------------------------------------------

_START = 0  # context of a segment's first frame


@dataclass
class _Segment:
    """Everything that adapts within a segment; rebuilt from priors at every reset."""

    number: int
    prev_context: int = _START
    recent: list[int] = field(default_factory=list)  # move-to-front: recent[0] = last reference
    next_slot: int | None = None
    mode: list[AdaptiveModel] = field(default_factory=list)
    rank: list[AdaptiveModel] = field(default_factory=list)
    slot_flag: AdaptiveModel | None = None
    delta_choice: AdaptiveModel | None = None
    scale: AdaptiveModel | None = None
    residual: dict[int, AdaptiveModel] = field(default_factory=dict)
    latent: AdaptiveModel | None = None


class SegmentedCoder:
    """Adaptive models that return to their priors at every segment (``seq // entropy_reset``):
    keyed to sequence numbers, so a loss desynchronizes an Rx only until the next segment."""

    config: LinkConfig
    segment: object  # a subclass's segment state, with a ``number``

    def segment_of(self, seq: int) -> int:
        return seq // self.config.entropy_reset

    def begin(self, seq: int) -> bool:
        """Call before coding frame ``seq``; resets the models at a segment boundary (→ True)."""
        number = self.segment_of(seq)
        if number == self.segment.number:
            return False
        self.segment = self._fresh(number)
        return True

    def _fresh(self, number: int):
        raise NotImplementedError


class SymbolCoder(SegmentedCoder):
    """The adaptive models of one end of a link (Tx encodes, Rx decodes) and their resets."""

    def __init__(self, config: LinkConfig) -> None:
        self.config = config
        self.kinds: tuple[FrameKind, ...] = (
            ("hit", "delta", "new") if config.delta else ("hit", "new")
        )
        self.delta_set = config.delta_bit_set if config.delta else ()
        self.rank_classes = config.index_bits + 2  # 0 (same), 1..index_bits, ESC
        self.esc = self.rank_classes - 1
        self.segment = self._fresh(-1)

    def _fresh(self, number: int) -> _Segment:
        cfg = self.config
        contexts = 1 + len(self.kinds)
        mode_prior = np.array([4 if k == "hit" else 2 for k in self.kinds])
        rank_prior = np.ones(self.rank_classes, dtype=np.int64)
        rank_prior[0], rank_prior[self.esc] = 8, 2
        return _Segment(
            number=number,
            mode=[AdaptiveModel(mode_prior) for _ in range(contexts)],
            rank=[AdaptiveModel(rank_prior) for _ in range(contexts)],
            slot_flag=AdaptiveModel(np.array([2, 8])),
            delta_choice=AdaptiveModel(np.ones(max(2, len(self.delta_set)), dtype=np.int64)),
            scale=AdaptiveModel(np.ones(SCALE_LEVELS, dtype=np.int64)),
            residual={b: AdaptiveModel(peaked_prior((1 << b) - 1)) for b in self.delta_set},
            latent=AdaptiveModel(
                latent_prior(cfg.bits_per_value, cfg.latent_dim, cfg.quantizer_grid())
            ),
        )

    @property
    def last_ref(self) -> int:
        """The previous frame's reference in this segment (−1 at a segment's start)."""
        return self.segment.recent[0] if self.segment.recent else -1

    def cue_needed(self, ref: int) -> bool:
        cfg = self.config
        if cfg.cue_bits == 0:
            return False
        return cfg.coded_cue == "every_reference" or ref != self.last_ref

    # -- coding ----------------------------------------------------------------------------------

    def encode(self, symbols: FrameSymbols) -> Encoded:
        """Code a frame against the current models without adopting it (a trial, for RDO)."""
        io = _Encoding()
        coded, updates = self._walk(io, symbols)
        return Encoded(self._terminate(io.payload(), io.trace), coded, updates)

    def commit(self, encoded: Encoded) -> None:
        """Adopt a coded frame: update the models exactly as the decoder will."""
        self._apply(encoded.symbols, encoded.updates)

    def decode(self, payload: bytes) -> FrameSymbols:
        """Decode the next frame of the segment and update the models; raises EntropyError."""
        symbols, updates = self._try_decode(payload)
        if symbols is None:
            raise EntropyError(f"payload of {len(payload)} bytes does not decode to a frame")
        self._apply(symbols, updates)
        return symbols

    def _try_decode(self, payload: bytes, trace: list[int] | None = None):
        io = _Decoding(payload)
        try:
            symbols, updates = self._walk(io, None)
        except EntropyError:
            return None, None
        except Exception:  # constriction rejects data that is invalid for a model
            return None, None
        if trace is not None and io.trace != trace:
            return None, None
        return symbols, updates

    def _terminate(self, sealed: bytes, trace: list[int]) -> bytes:
        """The shortest payload near ``sealed`` whose trial decode takes exactly the encoder's
        path ``trace`` (the same symbols under the same models, hence the same updates)."""
        for length in range(max(0, len(sealed) - TERMINATION_SEARCH_BYTES), len(sealed)):
            prefix = sealed[:length]
            candidates = [prefix]
            if length:
                value = int.from_bytes(prefix, "big") + 1
                if value < 1 << (8 * length):
                    candidates.append(value.to_bytes(length, "big"))
            for candidate in candidates:
                candidate = candidate.rstrip(b"\0")
                decoded, _ = self._try_decode(candidate, trace)
                if decoded is not None:
                    return candidate
        return sealed

    def _walk(self, io, frame: FrameSymbols | None):
        """Code (``io.encoding``) or decode one frame's symbols; returns the frame as decoded and
        the model updates it implies, without changing any state."""
        seg = self.segment
        updates: list[tuple[AdaptiveModel, np.ndarray]] = []

        def one(model: AdaptiveModel, value: int | None) -> int:
            symbol = io.one(value, model.model())
            if not 0 <= symbol < model.size:
                raise EntropyError(f"symbol {symbol} outside a model of {model.size}")
            updates.append((model, np.array([symbol])))
            return symbol

        ctx = seg.prev_context
        kind_index = one(seg.mode[ctx], self.kinds.index(frame.kind) if frame else None)
        kind = self.kinds[kind_index]
        ref, cue, slot, dbits, scale, codes = -1, None, -1, 0, 0, None
        if kind in ("hit", "delta"):
            ref = self._walk_ref(io, one, seg.rank[ctx], frame.ref if frame else None)
            if self.cue_needed(ref):
                cue = self._walk_cue(io, frame.cue if frame else None)
        if kind == "delta":
            choice = self.delta_set.index(frame.delta_bits) if frame else None
            dbits = self.delta_set[one(seg.delta_choice, choice)]
            scale = one(seg.scale, frame.scale if frame else None)
            codes = self._walk_codes(io, updates, seg.residual[dbits], frame)
        elif kind == "new":
            codes = self._walk_codes(io, updates, seg.latent, frame)
        if kind in ("delta", "new"):
            slot = self._walk_slot(io, one, frame.slot if frame else None)
        symbols = FrameSymbols(kind, ref, cue, slot, dbits, scale, codes)
        return symbols, updates

    def _walk_ref(self, io, one, model: AdaptiveModel, ref: int | None) -> int:
        recent = self.segment.recent
        capacity = self.config.capacity
        if io.encoding:
            if not 0 <= ref < capacity:
                raise EntropyError(f"reference {ref} outside capacity {capacity}")
            rank = recent.index(ref) if ref in recent else -1
            cls = self.esc if rank < 0 else (0 if rank == 0 else rank.bit_length())
        cls = one(model, cls if io.encoding else None)
        if cls == self.esc:
            return io.one(ref, Uniform(capacity)) if capacity > 1 else 0
        if cls == 0:
            rank = 0
        else:
            base = 1 << (cls - 1)
            offset = io.one(rank - base if io.encoding else None, Uniform(base)) if base > 1 else 0
            rank = base + offset
        if rank >= len(recent):
            raise EntropyError(f"reference rank {rank} beyond the {len(recent)} used")
        return recent[rank]

    def _walk_cue(self, io, cue: int | None) -> int:
        bits = self.config.cue_bits
        value, shift = 0, 0
        while shift < bits:
            width = min(CUE_CHUNK_BITS, bits - shift)
            part = (cue >> shift) & ((1 << width) - 1) if io.encoding else None
            value |= io.one(part, Uniform(1 << width)) << shift
            shift += width
        return value

    def _walk_codes(self, io, updates, model: AdaptiveModel, frame: FrameSymbols | None):
        dim = self.config.latent_dim
        if io.encoding:
            codes = np.asarray(frame.codes)
            if codes.shape != (dim,) or int(codes.max()) >= model.size:
                raise EntropyError(f"codes of shape {codes.shape} do not fit {model.size} levels")
            symbols = io.many(codes, model.model())
        else:
            symbols = io.many(dim, model.model())
        updates.append((model, symbols))
        return symbols.astype(np.uint16)

    def _walk_slot(self, io, one, slot: int | None) -> int:
        predicted = self.segment.next_slot
        capacity = self.config.capacity
        if predicted is not None:
            hit = one(self.segment.slot_flag, int(slot == predicted) if io.encoding else None)
            if hit:
                return predicted
        return io.one(slot + 1 if io.encoding else None, Uniform(capacity + 1)) - 1

    def _apply(self, symbols: FrameSymbols, updates) -> None:
        for model, values in updates:
            model.update(values)
        seg = self.segment
        if symbols.kind in ("hit", "delta"):
            _to_front(seg.recent, symbols.ref)
        if symbols.kind in ("delta", "new") and symbols.slot >= 0:
            _to_front(seg.recent, symbols.slot)
            seg.next_slot = (symbols.slot + 1) % self.config.capacity
        seg.prev_context = 1 + self.kinds.index(symbols.kind)


def _to_front(recent: list[int], ref: int) -> None:
    if ref in recent:
        recent.remove(ref)
    recent.insert(0, ref)
