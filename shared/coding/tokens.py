"""Token frames: one range-coded message per frame, a symbol per token (DESIGN "token grids").

A token link codes a frame's grid of tokens as one :class:`~shared.protocol.messages.Coded`
message. Per token the symbol is

* ``SKIP`` — the reference this position had in the previous frame (nothing else is sent);
* ``HIT`` — a reference to a prototype of the memory shared by all positions;
* ``NEW`` — the token's quantized latent, written to the next slot of the memory's ring.

**Payload, in coding order** (models adapt per segment, as in :mod:`shared.coding.entropy`):

1. at a segment's first frame (a *key frame*: no SKIP, the models at their priors) the grid's
   rows and columns, uniform over 1..256;
2. the kinds, grouped by context = the kind this position had in the previous frame (or KEY), one
   adaptive model per context — the decoder knows every context before it reads a kind;
3. the HIT references as classes LEFT (the reference of the token to the left), UP (above), NEAR
   (a reference the previous frame had within :data:`NEAR_RADIUS` positions: content moves) or
   ESC, adaptive; then each NEAR's place in that window (adaptive, nearest places first) and each
   ESC's reference uniform over the capacity;
4. with NEW tokens: the ring slot of the first one (uniform), then every code of every NEW token
   in raster order (adaptive over 2^b, one model);
5. integrity (cue bits K > 0): the **frame cue** — the XOR of the K-bit SimHash cues of the
   distinct prototypes the frame recalls — and a :data:`REGION_CUE_BITS`-bit **region cue** for
   each region of :data:`REGION` x :data:`REGION` tokens that holds a HIT (references changed
   there) plus one region per frame in rotation, so a prototype corrupted where nothing changes
   is localized within a rotation. No cue bits are paid per token.

The payload is the range coder's words, big-endian, trailing zero bytes implied; the bits
counted for a frame are its payload's bits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shared.coding.entropy import (
    AdaptiveModel,
    EntropyError,
    RangeDecoder,
    RangeEncoder,
    SegmentedCoder,
    Uniform,
    bytes_to_words,
    latent_prior,
    words_to_bytes,
)
from shared.config import LinkConfig

SKIP, HIT, NEW = 0, 1, 2
KEY = 6  # context of every position in a key frame (0-5: see TokenCoder.contexts)
LEFT, UP, NEAR, ESC = 0, 1, 2, 3
NEAR_RADIUS = 2  # a NEAR reference is one the previous frame had within this many positions


def _near_offsets(radius: int) -> np.ndarray:
    """(n, 2) window offsets, nearest first (the same place, then ring by ring)."""
    side = np.arange(-radius, radius + 1)
    offsets = np.array([(di, dj) for di in side for dj in side])
    order = np.lexsort(
        (offsets[:, 1], offsets[:, 0], np.abs(offsets).sum(1), np.abs(offsets).max(1))
    )
    return offsets[order]


NEAR_OFFSETS = _near_offsets(NEAR_RADIUS)
REGION = 8  # tokens per side of a cue region
REGION_CUE_BITS = 16
DIGEST_BLOCK = (
    64  # references per hash in a token link's DIGEST (a hash each would cost more than the frames)
)
MAX_GRID_SIDE = 256  # tokens per grid side a frame message can name
_CHUNK = 16  # uniform symbols of at most this many bits


@dataclass(eq=False)
class TokenSymbols:
    """A token frame as both ends see it after coding.

    ``refs`` is every position's reference after the frame (SKIP: the previous one, HIT: the one
    sent, NEW: the slot written); ``new_codes`` are the NEW tokens' codes in raster order.
    """

    kinds: np.ndarray  # (h, w) uint8: SKIP / HIT / NEW
    refs: np.ndarray  # (h, w) int64
    new_codes: np.ndarray  # (n_new, d) uint16
    base_slot: int  # slot of the first NEW token (the others follow it around the ring)
    frame_cue: int | None = None
    region_cues: dict[int, int] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """The frame as the single-latent counters see it: ``new`` if it wrote any token."""
        return "new" if len(self.new_codes) else "hit"

    @property
    def new_slots(self) -> np.ndarray:
        return self.refs[self.kinds == NEW]

    def counts(self) -> tuple[int, int, int]:
        """(SKIP, HIT, NEW) tokens."""
        c = np.bincount(self.kinds.ravel(), minlength=3)
        return int(c[SKIP]), int(c[HIT]), int(c[NEW])


def region_index(shape: tuple[int, int]) -> np.ndarray:
    """(h, w) the cue region of every position, numbered in raster order of regions."""
    h, w = shape
    cols = -(-w // REGION)
    return (np.arange(h)[:, None] // REGION) * cols + np.arange(w)[None, :] // REGION


def region_count(shape: tuple[int, int]) -> int:
    return (-(-shape[0] // REGION)) * (-(-shape[1] // REGION))


def cue_regions(seq: int, kinds: np.ndarray) -> list[int]:
    """The regions whose cue a frame carries: those holding a HIT, and one in rotation."""
    regions = region_index(kinds.shape)
    chosen = set(np.unique(regions[kinds == HIT]).tolist())
    chosen.add(seq % region_count(kinds.shape))
    return sorted(chosen)


def xor_cue(cues: np.ndarray, refs: np.ndarray) -> int:
    """XOR of ``cues[r]`` over the distinct references ``refs`` (a repeated prototype counts
    once, so one corrupted prototype shown twice cannot cancel itself)."""
    distinct = np.unique(refs)
    return int(np.bitwise_xor.reduce(cues[distinct])) if len(distinct) else 0


def frame_cues(
    seq: int, kinds: np.ndarray, refs: np.ndarray, cues: np.ndarray, cue_bits: int
) -> tuple[int | None, dict[int, int]]:
    """(frame cue, {region: region cue}) of a frame over ``cues`` (a cue per reference)."""
    recalled = kinds != NEW
    if cue_bits == 0 or not recalled.any():
        return None, {}
    regions = region_index(kinds.shape)
    mask = (1 << min(REGION_CUE_BITS, cue_bits)) - 1
    region_cues = {
        r: xor_cue(cues, refs[recalled & (regions == r)]) & mask for r in cue_regions(seq, kinds)
    }
    return xor_cue(cues, refs[recalled]), region_cues


@dataclass
class _Segment:
    number: int
    kind: list[AdaptiveModel]
    ref_class: AdaptiveModel
    near: AdaptiveModel
    latent: AdaptiveModel
    prev_kinds: np.ndarray | None = None  # None: the next frame is a key frame
    prev_refs: np.ndarray | None = None


class TokenCoder(SegmentedCoder):
    """The adaptive models and previous grid of one end of a token link, reset per segment."""

    def __init__(self, config: LinkConfig) -> None:
        self.config = config
        self.segment = self._fresh(-1)

    def _fresh(self, number: int) -> _Segment:
        cfg = self.config
        # by context (see contexts()): the previous kind, in a quiet then a changing neighbourhood
        quiet = [np.array([8, 2, 1]), np.array([2, 8, 2]), np.array([2, 2, 8])]
        changing = [np.array([4, 2, 1]), np.array([2, 8, 2]), np.array([2, 2, 8])]
        return _Segment(
            number=number,
            kind=[AdaptiveModel(p) for p in quiet + changing]
            + [AdaptiveModel(np.array([1, 8, 8]))],
            ref_class=AdaptiveModel(np.array([4, 4, 1, 2])),
            # nearer places first: the same place and the first ring weigh most
            near=AdaptiveModel(np.where(np.abs(NEAR_OFFSETS).max(1) <= 1, 4, 2)),
            latent=AdaptiveModel(
                latent_prior(cfg.bits_per_value, cfg.latent_dim, cfg.quantizer_grid())
            ),
        )

    @property
    def key_frame(self) -> bool:
        return self.segment.prev_kinds is None

    @property
    def prev_refs(self) -> np.ndarray | None:
        return self.segment.prev_refs

    def contexts(self, shape: tuple[int, int]) -> np.ndarray:
        """Every position's context for its kind, known to the decoder before the frame: the
        kind it had in the previous frame, plus 3 where a neighbour (8-connected) changed then
        (motion comes in patches); KEY in a key frame."""
        seg = self.segment
        prev = seg.prev_kinds
        if prev is None or prev.shape != shape:
            return np.full(shape, KEY, dtype=np.uint8)
        changed = np.pad(prev != SKIP, 1)
        h, w = shape
        around = np.zeros(shape, dtype=bool)
        for di in (0, 1, 2):
            for dj in (0, 1, 2):
                if di != 1 or dj != 1:
                    around |= changed[di : di + h, dj : dj + w]
        return (prev + 3 * around).astype(np.uint8)

    # -- coding ------------------------------------------------------------------------------------

    def encode(self, symbols: TokenSymbols) -> bytes:
        """The frame's payload; updates the models as the decoder will."""
        cfg, seg = self.config, self.segment
        kinds, refs = symbols.kinds, symbols.refs
        h, w = kinds.shape
        if not (1 <= h <= MAX_GRID_SIDE and 1 <= w <= MAX_GRID_SIDE):
            raise EntropyError(f"a token grid of {h}x{w} exceeds {MAX_GRID_SIDE} per side")
        enc = RangeEncoder()
        if self.key_frame:
            if (kinds == SKIP).any():
                raise EntropyError("a key frame cannot SKIP: there is no previous frame")
            enc.encode(np.array([h - 1, w - 1], dtype=np.int32), Uniform(MAX_GRID_SIDE))
        ctx = self.contexts(kinds.shape)
        for c, model in enumerate(seg.kind):
            sel = kinds[ctx == c]
            if len(sel):
                enc.encode(sel.astype(np.int32), model.model())
        classes, places, escapes = _ref_classes(
            kinds, refs, near_window(seg.prev_refs, kinds.shape)
        )
        if len(classes):
            enc.encode(classes, seg.ref_class.model())
        if len(places):
            enc.encode(places, seg.near.model())
        if len(escapes):
            enc.encode(escapes, Uniform(cfg.capacity))
        if len(symbols.new_codes):
            enc.encode(np.array([symbols.base_slot], dtype=np.int32), Uniform(cfg.capacity))
            enc.encode(symbols.new_codes.ravel().astype(np.int32), seg.latent.model())
        _encode_cues(enc, symbols, cfg.cue_bits)
        self._adapt(kinds, ctx, classes, places, symbols)
        return words_to_bytes(enc.get_compressed())

    def decode(self, payload: bytes, seq: int) -> TokenSymbols:
        """The frame coded in ``payload``; updates the models. Raises EntropyError."""
        try:
            return self._decode(payload, seq)
        except EntropyError:
            raise
        except Exception as exc:  # constriction rejects data invalid for a model
            raise EntropyError(f"token payload does not decode: {exc}") from None

    def _decode(self, payload: bytes, seq: int) -> TokenSymbols:
        cfg, seg = self.config, self.segment
        dec = RangeDecoder(bytes_to_words(payload))
        if self.key_frame:
            h, w = (int(v) + 1 for v in dec.decode(Uniform(MAX_GRID_SIDE), 2))
        else:
            h, w = seg.prev_kinds.shape
        ctx = self.contexts((h, w))
        kinds = np.empty((h, w), dtype=np.uint8)
        for c, model in enumerate(seg.kind):
            where = ctx == c
            n = int(where.sum())
            if n:
                kinds[where] = np.asarray(dec.decode(model.model(), n), dtype=np.uint8)
        if self.key_frame and (kinds == SKIP).any():
            raise EntropyError("a key frame holds a SKIP")
        n_hit, n_new = int((kinds == HIT).sum()), int((kinds == NEW).sum())
        classes = _decode_many(dec, seg.ref_class.model(), n_hit)
        places = _decode_many(dec, seg.near.model(), int((classes == NEAR).sum()))
        escapes = _decode_many(dec, Uniform(cfg.capacity), int((classes == ESC).sum()))
        refs = np.full((h, w), -1, dtype=np.int64)
        if seg.prev_refs is not None and seg.prev_refs.shape == (h, w):
            refs[kinds == SKIP] = seg.prev_refs[kinds == SKIP]
        base, codes = 0, np.zeros((0, cfg.latent_dim), dtype=np.uint16)
        if n_new:
            base = int(dec.decode(Uniform(cfg.capacity)))
            flat = np.asarray(dec.decode(seg.latent.model(), n_new * cfg.latent_dim))
            codes = flat.astype(np.uint16).reshape(n_new, cfg.latent_dim)
            refs[kinds == NEW] = (base + np.arange(n_new)) % cfg.capacity
        _resolve_hits(kinds, refs, classes, places, escapes, near_window(seg.prev_refs, (h, w)))
        symbols = TokenSymbols(kinds, refs, codes, base)
        _decode_cues(dec, symbols, seq, cfg.cue_bits)
        self._adapt(kinds, ctx, classes, places, symbols)
        return symbols

    def _adapt(self, kinds, ctx, classes, places, symbols: TokenSymbols) -> None:
        seg = self.segment
        for c, model in enumerate(seg.kind):
            sel = kinds[ctx == c]
            if len(sel):
                model.update(sel)
        if len(classes):
            seg.ref_class.update(classes)
        if len(places):
            seg.near.update(places)
        if len(symbols.new_codes):
            seg.latent.update(symbols.new_codes.ravel())
        seg.prev_kinds, seg.prev_refs = kinds.copy(), symbols.refs.copy()


def near_window(prev_refs: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray | None:
    """(h, w, len(NEAR_OFFSETS)) the previous frame's references around every position, nearest
    first (-1 beyond the grid); None without a previous frame of this shape."""
    if prev_refs is None or prev_refs.shape != shape:
        return None
    r = NEAR_RADIUS
    padded = np.pad(prev_refs, r, constant_values=-1)
    h, w = shape
    return np.stack(
        [padded[r + di : r + di + h, r + dj : r + dj + w] for di, dj in NEAR_OFFSETS], -1
    )


def _ref_classes(
    kinds: np.ndarray, refs: np.ndarray, window: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(class per HIT token in raster order, the NEAR places, the ESC references) — the
    encoder's side. A reference is coded by the first class that names it."""
    left = np.full(refs.shape, -1, dtype=np.int64)
    left[:, 1:] = refs[:, :-1]
    up = np.full(refs.shape, -1, dtype=np.int64)
    up[1:] = refs[:-1]
    hit = kinds == HIT
    r = refs[hit]
    classes = np.where(r == left[hit], LEFT, np.where(r == up[hit], UP, ESC)).astype(np.int32)
    places = np.zeros(0, dtype=np.int32)
    if window is not None:
        match = window[hit] == r[:, None]
        near = (classes == ESC) & match.any(1)
        classes[near] = NEAR
        places = match[near].argmax(1).astype(np.int32)  # the nearest place holding it
    return classes, places, r[classes == ESC].astype(np.int32)


def _resolve_hits(kinds, refs, classes, places, escapes, window) -> None:
    """Fill the HIT references in raster order (LEFT and UP read resolved neighbours)."""
    esc, near = iter(escapes.tolist()), iter(places.tolist())
    h, w = kinds.shape
    for (i, j), c in zip(np.argwhere(kinds == HIT).tolist(), classes.tolist(), strict=True):
        if c == NEAR:
            ref = -1 if window is None else int(window[i, j, next(near)])
            if ref < 0:
                raise EntropyError("a NEAR reference with no previous frame there")
            refs[i, j] = ref
        elif c == LEFT:
            if j == 0:
                raise EntropyError("a LEFT reference in the first column")
            refs[i, j] = refs[i, j - 1]
        elif c == UP:
            if i == 0:
                raise EntropyError("an UP reference in the first row")
            refs[i, j] = refs[i - 1, j]
        else:
            refs[i, j] = next(esc)
    if (refs < 0).any():
        raise EntropyError("a token's reference is unknown (SKIP with no previous frame)")


def _decode_many(dec, model, count: int) -> np.ndarray:
    if count == 0:
        return np.zeros(0, dtype=np.int32)
    return np.asarray(dec.decode(model, count), dtype=np.int32)


def _encode_cues(enc, symbols: TokenSymbols, cue_bits: int) -> None:
    if symbols.frame_cue is None:
        return
    _encode_uniform(enc, symbols.frame_cue, cue_bits)
    for region in sorted(symbols.region_cues):
        _encode_uniform(enc, symbols.region_cues[region], min(REGION_CUE_BITS, cue_bits))


def _decode_cues(dec, symbols: TokenSymbols, seq: int, cue_bits: int) -> None:
    if cue_bits == 0 or not (symbols.kinds != NEW).any():
        return
    symbols.frame_cue = _decode_uniform(dec, cue_bits)
    width = min(REGION_CUE_BITS, cue_bits)
    symbols.region_cues = {r: _decode_uniform(dec, width) for r in cue_regions(seq, symbols.kinds)}


def _encode_uniform(enc, value: int, bits: int) -> None:
    while bits > 0:
        take = min(bits, _CHUNK)
        bits -= take
        enc.encode(
            np.array([(value >> bits) & ((1 << take) - 1)], dtype=np.int32), Uniform(1 << take)
        )


def _decode_uniform(dec, bits: int) -> int:
    value = 0
    while bits > 0:
        take = min(bits, _CHUNK)
        bits -= take
        value = (value << take) | int(dec.decode(Uniform(1 << take)))
    return value
