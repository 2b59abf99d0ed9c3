"""Token frames: the coder both ends run, and the cues that verify a frame."""

import numpy as np
import pytest

from shared.coding.entropy import EntropyError
from shared.coding.tokens import (
    HIT,
    NEW,
    SKIP,
    TokenCoder,
    TokenSymbols,
    cue_regions,
    frame_cues,
    region_index,
    xor_cue,
)
from shared.config import build_config

CFG = build_config(
    {"latent_dim": 16, "bits_per_value": 4, "capacity": 512, "cue_bits": 32}, read_env=False
)


def _frames(n: int, shape=(5, 7), seed: int = 0):
    """Symbols of n frames as a Tx would make them: a key frame of NEW/HIT, then SKIP-heavy."""
    rng = np.random.default_rng(seed)
    h, w = shape
    cues = rng.integers(0, 1 << 32, CFG.capacity, dtype=np.uint64)
    ring, prev = 0, None
    out = []
    for seq in range(n):
        choice = rng.random((h, w))
        kinds = np.where(choice < 0.3, NEW, np.where(choice < 0.5, HIT, SKIP)).astype(np.uint8)
        if prev is None:
            kinds[kinds == SKIP] = HIT
        refs = rng.integers(0, 40, (h, w)).astype(np.int64)
        refs[:, 1::2] = refs[:, ::2][:, : refs[:, 1::2].shape[1]]  # LEFT predictions happen
        if prev is not None:
            refs[kinds == SKIP] = prev[kinds == SKIP]
        n_new = int((kinds == NEW).sum())
        refs[kinds == NEW] = (ring + np.arange(n_new)) % CFG.capacity
        codes = rng.integers(0, 16, (n_new, 16)).astype(np.uint16)
        frame_cue, region_cues = frame_cues(seq, kinds, refs, cues, CFG.cue_bits)
        out.append(TokenSymbols(kinds, refs, codes, ring, frame_cue, region_cues))
        ring = (ring + n_new) % CFG.capacity
        prev = refs
    return out


def test_decoder_recovers_every_symbol_of_a_segment():
    tx, rx = TokenCoder(CFG), TokenCoder(CFG)
    for seq, symbols in enumerate(_frames(12)):
        tx.begin(seq)
        payload = tx.encode(symbols)
        rx.begin(seq)
        got = rx.decode(payload, seq)
        np.testing.assert_array_equal(got.kinds, symbols.kinds)
        np.testing.assert_array_equal(got.refs, symbols.refs)
        np.testing.assert_array_equal(got.new_codes, symbols.new_codes)
        assert got.base_slot == symbols.base_slot or not len(symbols.new_codes)
        assert got.frame_cue == symbols.frame_cue
        assert got.region_cues == symbols.region_cues


def test_an_unchanged_frame_costs_a_fraction_of_a_changed_one():
    coder = TokenCoder(CFG)
    (key,) = _frames(1, shape=(16, 16))
    coder.begin(0)
    key_bits = 8 * len(coder.encode(key))
    kinds = np.full(key.kinds.shape, SKIP, dtype=np.uint8)
    still = TokenSymbols(kinds, key.refs.copy(), np.zeros((0, 16), np.uint16), 0)
    costs = []
    for seq in range(1, 6):
        coder.begin(seq)
        costs.append(8 * len(coder.encode(still)))
    assert costs[-1] < key_bits / 20  # 256 SKIPs, adapted: a few bits in all
    assert costs[-1] <= costs[0]


def test_a_key_frame_cannot_skip():
    coder = TokenCoder(CFG)
    (key,) = _frames(1)
    key.kinds[0, 0] = SKIP
    coder.begin(0)
    with pytest.raises(EntropyError, match="key frame"):
        coder.encode(key)


def test_garbage_payloads_decode_or_raise_the_coders_own_error():
    rng = np.random.default_rng(5)
    outcomes = set()
    for n in range(40):
        coder = TokenCoder(CFG)
        coder.begin(0)
        try:
            got = coder.decode(rng.integers(0, 256, n % 13).astype(np.uint8).tobytes(), 0)
        except EntropyError:
            outcomes.add("refused")
            continue
        assert got.kinds.shape == got.refs.shape and (got.refs >= 0).all()
        outcomes.add("decoded")
    assert outcomes  # every payload ended in one of the two, none in another exception


def test_region_cues_cover_changed_regions_and_one_in_rotation():
    kinds = np.full((16, 24), SKIP, dtype=np.uint8)
    kinds[9, 17] = HIT  # region (1, 2) of a 2 x 3 region grid
    regions = region_index(kinds.shape)
    assert regions[9, 17] == 5
    assert cue_regions(seq=0, kinds=kinds) == [0, 5]
    assert cue_regions(seq=7, kinds=kinds) == [1, 5]  # 7 % 6 regions


def test_xor_cue_counts_a_repeated_prototype_once():
    cues = np.array([0b1010, 0b0110, 0b0001], dtype=np.uint64)
    assert xor_cue(cues, np.array([0, 0, 1])) == 0b1010 ^ 0b0110
    assert xor_cue(cues, np.array([2, 2])) == 0b0001
    assert xor_cue(cues, np.array([], dtype=np.int64)) == 0


def test_moved_references_are_coded_as_near_places_and_cost_less_than_escapes():
    """Content that moves keeps its prototypes: a HIT naming a reference the previous frame had
    a place or two away is coded by that place, far cheaper than ⌈log2 M⌉ bits once the models
    have adapted; every frame decodes."""
    h, w = 8, 10
    key_refs = np.arange(h * w, dtype=np.int64).reshape(h, w) * 3  # distinct, no LEFT/UP runs
    hits, none = np.full((h, w), HIT, np.uint8), np.zeros((0, 16), np.uint16)
    costs = {}
    for name in ("moving", "fresh"):
        tx, rx = TokenCoder(CFG), TokenCoder(CFG)
        refs, bits = key_refs, 0
        for seq in range(8):
            if seq:
                if name == "moving":  # down 1 and right 2; what enters is new distinct refs
                    refs = np.roll(refs, (1, 2), axis=(0, 1))
                    refs[0] = (np.arange(w) * 3 + 1 + 40 * seq) % CFG.capacity
                    refs[:, :2] = (np.arange(h)[:, None] * 3 + 2 + 40 * seq) % CFG.capacity
                else:  # every reference one the previous frame had nowhere
                    refs = (key_refs + seq) % CFG.capacity
            symbols = TokenSymbols(hits, refs.copy(), none, 0)
            tx.begin(seq)
            payload = tx.encode(symbols)
            rx.begin(seq)
            np.testing.assert_array_equal(rx.decode(payload, seq).refs, symbols.refs)
            bits += 8 * len(payload) if seq >= 4 else 0  # adapted frames
        costs[name] = bits
    assert costs["moving"] < costs["fresh"] / 2
