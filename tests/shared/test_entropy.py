"""Entropy-coded link symbols: lossless, byte-exact between the cores, adaptive, reset by seq."""

import numpy as np
import pytest

from receiver.core import ReceiverCore
from shared.accounting import Outcome, semantic_bits
from shared.coding.entropy import (
    AdaptiveModel,
    EntropyError,
    FrameSymbols,
    SymbolCoder,
    bytes_to_words,
    words_to_bytes,
)
from shared.config import build_config
from shared.protocol.messages import Coded, Error, decode, encode
from tests.synthetic import deliver, drifting_latents
from transmitter.core import TransmitterCore


def _cfg(**kw):
    values = {"threshold": 0.95, "capacity": 64, "memory": "vq", "entropy_coding": True, **kw}
    return build_config(values, read_env=False)


def _model_state(coder: SymbolCoder) -> list:
    seg = coder.segment
    models = [*seg.mode, *seg.rank, seg.slot_flag, seg.delta_choice, seg.scale, seg.latent]
    models += list(seg.residual.values())
    counts = [m.counts.tobytes() for m in models]
    return [seg.number, seg.prev_context, list(seg.recent), seg.next_slot, counts]


@pytest.mark.parametrize(
    "extra",
    [{}, {"delta": True}, {"decision": "rdo", "delta": True, "rdo_lambda": 2e-4}],
    ids=["tau", "tau+delta", "rdo+delta"],
)
def test_coded_clip_is_lossless_and_byte_exact_across_resets(extra):
    cfg = _cfg(entropy_reset=16, **extra)
    latents = drifting_latents(n=120)
    tx, rx = TransmitterCore(cfg), ReceiverCore(cfg)
    kinds = set()
    for seq, z in enumerate(latents):
        decision = tx.on_frame(seq, seq / 30, z)
        assert isinstance(decision.message, Coded)
        assert semantic_bits(decision.message, cfg) == 8 * len(decision.message.payload)
        kinds.add(decision.kind)
        (frame,) = deliver(tx, rx, decision.message, seq / 30)
        assert frame.outcome is Outcome.DECODED
        assert frame.latent.tobytes() == decision.latent.tobytes()
        # Both ends' models hold the same integers after every frame, resets included.
        assert _model_state(rx.coder) == _model_state(tx.coder)
        assert rx.digest == tx.memory.digest()
    assert tx.coder.segment.number == rx.coder.segment.number == (len(latents) - 1) // 16
    assert "hit" in kinds and len(kinds) >= 2


def test_models_reset_at_segment_boundaries_only():
    cfg = _cfg(entropy_reset=10)
    coder = SymbolCoder(cfg)
    fresh = _model_state(coder)
    assert coder.begin(0)
    hit = FrameSymbols("hit", ref=3, cue=123)
    coder.commit(coder.encode(hit))
    assert not coder.begin(9)  # same segment: models keep what they learnt
    assert _model_state(coder) != _model_state(SymbolCoder(cfg))
    assert coder.begin(10)  # a new segment starts from the priors again
    state = _model_state(coder)
    assert state[1:] == fresh[1:] and state[0] == 1


def test_repeated_reference_costs_a_fraction_of_a_bit():
    cfg = _cfg(entropy_reset=1 << 16)
    coder = SymbolCoder(cfg)
    coder.begin(0)
    bits = []
    for seq in range(200):
        coder.begin(seq)
        encoded = coder.encode(FrameSymbols("hit", ref=5, cue=0xDEADBEEF))
        coder.commit(encoded)
        bits.append(encoded.bits)
    assert bits[0] >= cfg.cue_bits  # the first use of a reference carries its cue
    warm = np.mean(bits[20:])
    assert warm < 0.2  # vs ⌈log2 M⌉ + K = 6 + 32 fixed-length bits per reference
    assert warm < cfg.index_bits / 30


def test_payload_round_trip_through_words():
    rng = np.random.default_rng(1)
    for _ in range(50):
        words = rng.integers(0, 2**32, size=int(rng.integers(0, 5)), dtype=np.uint64)
        words = words.astype(np.uint32)
        payload = words_to_bytes(words)
        back = bytes_to_words(payload)
        assert np.array_equal(back[: len(words)], words)
        assert not payload.endswith(b"\0")


def test_adaptive_model_counts_are_integer_and_deterministic():
    a, b = AdaptiveModel(np.array([1, 2, 3])), AdaptiveModel(np.array([1, 2, 3]))
    for symbols in ([0], [2, 2], [1] * 5000):
        a.update(np.array(symbols))
        b.update(np.array(symbols))
    assert a.counts.dtype == np.int64 and a.counts.sum() <= 1 << 16
    assert a.counts.tobytes() == b.counts.tobytes()
    assert a.bits(1) < a.bits(0)


def test_lost_frame_conceals_the_rest_of_its_segment_only():
    cfg = _cfg(entropy_reset=20)
    latents = drifting_latents(n=100)
    tx, rx = TransmitterCore(cfg), ReceiverCore(cfg, reorder_window=4)
    messages = [tx.on_frame(seq, 0.0, z).message for seq, z in enumerate(latents)]
    outcomes = {}
    for message in messages:
        if message.seq == 25:
            continue  # lost on the channel
        for frame in deliver(tx, rx, message):
            if frame.outcome is not None:
                outcomes[frame.seq] = frame.outcome
        if message.seq % 20 == 19:
            deliver(tx, rx, tx.digest())
    for frame in rx.finish(99).frames:
        outcomes[frame.seq] = frame.outcome
    assert sorted(outcomes) == list(range(100))  # every frame accounted for once
    assert outcomes[25] is Outcome.LOST
    assert all(outcomes[s] is Outcome.CONCEALED for s in range(26, 40))
    assert rx.counters.coded_desynced == 14
    later = [outcomes[s] for s in range(40, 100)]
    assert all(o is not Outcome.CONCEALED and o is not Outcome.LOST for o in later)
    assert rx.digest == tx.memory.digest()  # the DIGEST repaired the missed writes


def test_a_lost_frame_holds_back_no_frame_of_a_later_segment():
    """A gap waits for its frame only until a frame of a later segment arrives (the Tx has reset
    its models since): the next segment decodes on arrival, not a reorder window later, and the
    lost frame, should it still come, is concealed and settled once."""
    cfg = _cfg(entropy_reset=20)
    latents = drifting_latents(n=100)
    tx, rx = TransmitterCore(cfg), ReceiverCore(cfg, reorder_window=64)
    messages = [tx.on_frame(seq, 0.0, z).message for seq, z in enumerate(latents)]
    settled_when: dict[int, int] = {}  # frame -> the frame whose delivery settled it
    outcomes = {}

    def note(frames, at):
        for frame in frames:
            if frame.outcome is not None:
                assert frame.seq not in outcomes, f"frame {frame.seq} settled twice"
                outcomes[frame.seq] = frame.outcome
                settled_when[frame.seq] = at

    for message in messages:
        if message.seq == 25:
            continue  # held on the channel: it comes after frame 45
        note(deliver(tx, rx, message), message.seq)
        if message.seq == 45:
            note(deliver(tx, rx, messages[25]), 45)
        if message.seq % 20 == 19:
            deliver(tx, rx, tx.digest())
    note(rx.finish(99).frames, 99)
    assert sorted(outcomes) == list(range(100))
    assert outcomes[25] is Outcome.CONCEALED  # came after its segment was given up
    assert all(outcomes[s] is Outcome.CONCEALED for s in range(26, 40))
    assert all(settled_when[s] == 40 for s in range(26, 41))  # not at frame 25 + 64
    assert all(settled_when[s] == s for s in range(41, 100))
    later = [outcomes[s] for s in range(40, 100)]
    assert all(o is not Outcome.CONCEALED and o is not Outcome.LOST for o in later)
    assert rx.counters.lost == 0 and rx.counters.coded_desynced == 15
    assert rx.digest == tx.memory.digest()


def test_out_of_order_coded_frames_wait_for_their_predecessor():
    cfg = _cfg()
    latents = drifting_latents(n=10)
    tx, rx = TransmitterCore(cfg), ReceiverCore(cfg)
    messages = [tx.on_frame(seq, 0.0, z).message for seq, z in enumerate(latents)]
    messages[3], messages[4] = messages[4], messages[3]
    settled = []
    for message in messages:
        settled += [f.seq for f in deliver(tx, rx, message) if f.outcome is not None]
    assert settled == list(range(10))
    assert rx.counters.decoded == 10


def test_corrupted_payload_is_an_error_not_a_crash():
    cfg = _cfg()
    latents = drifting_latents(n=5)
    tx, rx = TransmitterCore(cfg), ReceiverCore(cfg)
    first = tx.on_frame(0, 0.0, latents[0]).message  # a NEW: a long payload
    bad = Coded(seq=0, t=0.0, payload=first.payload[:3])
    step = rx.on_message(decode(encode(bad)), 0.0)
    assert step.frames[0].outcome in (Outcome.CONCEALED, Outcome.DECODED)
    if step.frames[0].outcome is Outcome.CONCEALED:
        assert rx.counters.errors == 1 and isinstance(step.replies[0], Error)
    rng = np.random.default_rng(0)
    failures = 0
    for _ in range(200):  # random payloads: a valid frame or an EntropyError, nothing else
        coder = SymbolCoder(cfg)
        coder.begin(0)
        try:
            coder.decode(
                rng.integers(0, 256, size=int(rng.integers(0, 12))).astype(np.uint8).tobytes()
            )
        except EntropyError:
            failures += 1
    assert failures > 0


def test_coded_message_on_a_fixed_length_link_is_refused():
    rx = ReceiverCore(build_config({"capacity": 64}, read_env=False))
    step = rx.on_message(Coded(seq=0, t=0.0, payload=b""), 0.0)
    assert isinstance(step.replies[0], Error) and "not entropy-coded" in step.replies[0].reason


def test_cue_with_every_reference_when_asked():
    cfg = _cfg(coded_cue="every_reference", entropy_reset=1 << 16)
    coder = SymbolCoder(cfg)
    bits = []
    for seq in range(40):
        coder.begin(seq)
        encoded = coder.encode(FrameSymbols("hit", ref=5, cue=0xDEADBEEF))
        coder.commit(encoded)
        assert encoded.symbols.cue == 0xDEADBEEF
        bits.append(encoded.bits)
    assert min(bits) >= cfg.cue_bits  # K uniform bits cannot be compressed
