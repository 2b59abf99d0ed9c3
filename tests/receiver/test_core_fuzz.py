"""Fuzzing the Rx core (receiver.core): any message sequence, a plausible stream with faults,
sequence numbers that jump; every frame settles exactly once.

Every input is either handled or refused with the module's own named error. Strategies and case
counts are in tests/fuzzing.py; run deeper with ``HYPOTHESIS_PROFILE=long``.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from receiver.core import ReceiverCore, RxStep
from shared.accounting import Outcome
from shared.coding.quantizer import pack_codes
from shared.protocol.messages import MAX_SEQ, Bye, Hit, Message, New, decode, encode
from tests.fuzzing import CONFIGS, FUZZ, examples, messages


def _check_frames(step: RxStep, settled: dict[int, Outcome]) -> None:
    assert isinstance(step, RxStep)
    for frame in step.frames:
        if frame.latent is not None:
            assert np.all(np.isfinite(frame.latent)), frame
        if frame.outcome is None:
            continue
        assert frame.seq not in settled, f"frame {frame.seq} settled twice"
        settled[frame.seq] = frame.outcome


def _run_rx(config, sequence: list[tuple[Message, float, bool]]) -> None:
    rx = ReceiverCore(config, refresh_timeout=0.5, reorder_window=8, max_seq_jump=64)
    settled: dict[int, Outcome] = {}
    now = 0.0
    for message, dt, tick in sequence:
        now += dt
        step = rx.on_message(message, now)  # must never raise
        _check_frames(step, settled)
        for reply in step.replies:
            decode(encode(reply))  # replies are valid messages
        if tick:
            _check_frames(rx.tick(now), settled)
    last = max(rx._highest, rx._floor - 1)
    _check_frames(rx.on_message(Bye(last_seq=last), now + 10), settled)
    c = rx.counters
    by_outcome = {o: sum(1 for v in settled.values() if v is o) for o in Outcome}
    for outcome, n in by_outcome.items():
        assert getattr(c, outcome.value) == n
    # Every frame up to the end is settled exactly once (or skipped by a counted late join).
    counted = sum(1 for s in settled if 0 <= s <= last)
    assert counted + c.frames_skipped == last + 1
    assert not rx._pending


@settings(max_examples=examples(600), **FUZZ)
@given(st.data(), st.sampled_from(sorted(CONFIGS)))
def test_rx_core_handles_any_message_sequence(data, name: str) -> None:
    config = CONFIGS[name]
    step = st.tuples(messages(config), st.floats(0.0, 0.4), st.booleans())
    _run_rx(config, data.draw(st.lists(step, max_size=40)))


@settings(max_examples=examples(400), **FUZZ)
@given(st.data())
def test_rx_core_handles_a_plausible_stream_with_faults(data) -> None:
    """Mostly well-formed frames near the stream's position, some bad ones: the paths that
    random messages rarely reach (cue checks, lookups, refresh waits, digests)."""
    config = CONFIGS["index"]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    stored = 0
    sequence = []
    for seq in range(data.draw(st.integers(1, 60))):
        r = rng.random()
        if r < 0.3 or stored == 0:
            codes = rng.integers(0, 256, config.latent_dim).astype(np.uint16)
            slot = int(rng.integers(-1, config.capacity + 1)) if rng.random() < 0.1 else stored
            stored = min(stored + 1, config.capacity - 1)
            message: Message = New(seq=seq, t=seq / 30, slot=slot, latent=pack_codes(codes, 8))
        elif r < 0.9:
            ref = int(rng.integers(0, stored + 1))
            message = Hit(seq=seq, t=seq / 30, refs=(ref,), cue=int(rng.integers(0, 2**16)))
        else:
            message = data.draw(messages(config))
        if rng.random() < 0.1:
            continue  # lost
        sequence.append((message, float(rng.random() * 0.2), bool(rng.random() < 0.3)))
    if len(sequence) > 3 and rng.random() < 0.3:
        sequence[1], sequence[2] = sequence[2], sequence[1]  # reordered
    _run_rx(config, sequence)


def test_a_corrupted_sequence_number_cannot_stall_the_stream() -> None:
    """One frame whose seq jumped far ahead (a bit error in the header, or a hostile peer) is
    refused and counted; the frames that follow are still decoded, and one message never
    declares more than max_seq_jump frames lost (no hang on seq = 2^53)."""
    config = CONFIGS["index"]
    rx = ReceiverCore(config)
    latent = pack_codes(np.full(config.latent_dim, 7, dtype=np.uint16), 8)
    settled: dict[int, Outcome] = {}
    for seq in range(5):
        _check_frames(rx.on_message(New(seq=seq, t=0.0, slot=seq, latent=latent), 0.0), settled)
    step = rx.on_message(Hit(seq=MAX_SEQ, t=0.0, refs=(0,), cue=0), 0.0)
    assert step.replies and "ahead of the stream" in step.replies[0].reason
    assert rx.counters.seq_jumps_refused == 1 and rx.counters.errors == 1
    for seq in range(5, 10):
        _check_frames(rx.on_message(New(seq=seq, t=0.0, slot=seq, latent=latent), 0.0), settled)
    assert [settled[s] for s in range(10)] == [Outcome.DECODED] * 10
    # A BYE claiming a far end is bounded too.
    step = rx.on_message(Bye(last_seq=MAX_SEQ), 0.0)
    assert rx.counters.lost == rx.max_seq_jump
    assert "ahead of the stream" in step.replies[-1].reason


def test_a_confirmed_long_jump_keeps_the_accounting_whole() -> None:
    config = CONFIGS["index"]
    latent = pack_codes(np.full(config.latent_dim, 7, dtype=np.uint16), 8)
    frames = [New(seq=s, t=0.0, slot=s % 8, latent=latent) for s in (0, 1, 2, 4, 10_000, 10_001)]
    _run_rx(config, [(m, 0.01, False) for m in frames])  # counted + skipped == every frame


def test_a_restarted_receiver_joins_a_long_stream() -> None:
    """A fresh core whose first frames are far into a stream (the Rx restarted) accepts them
    once a second frame confirms the position; older frames are counted, not looped over."""
    config = CONFIGS["index"]
    rx = ReceiverCore(config, max_seq_jump=100)
    latent = pack_codes(np.full(config.latent_dim, 7, dtype=np.uint16), 8)
    first = rx.on_message(New(seq=100_000, t=0.0, slot=0, latent=latent), 0.0)
    assert first.replies  # refused until confirmed
    second = rx.on_message(New(seq=100_001, t=0.0, slot=1, latent=latent), 0.0)
    assert [f.outcome for f in second.frames if f.seq == 100_001] == [Outcome.DECODED]
    c = rx.counters
    assert c.frames_skipped == 100_001 - 100 and c.lost <= 100
