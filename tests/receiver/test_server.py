"""The Rx shell's session (receiver.server.RxSession) driven in-process, with no sockets."""

from __future__ import annotations

import numpy as np

from receiver.server import RxSession
from shared.accounting import Outcome, semantic_bits
from shared.config import build_config
from shared.protocol.messages import Error, Refresh, RefreshRequest
from tests.synthetic import drifting_latents
from transmitter.core import TransmitterCore


def test_timeline_puts_refresh_bits_on_the_frame_they_repaired() -> None:
    """A REFRESH's bits (eq. 3) appear on the timeline entry of the frame it repaired."""
    cfg = build_config({"threshold": 0.95, "capacity": 64, "memory": "vq"}, read_env=False)
    latents = drifting_latents()
    tx, session = TransmitterCore(cfg), RxSession(cfg, 1, refresh_timeout=1.0)

    def feed(message) -> list:
        step = session.on_message(message, 100, 0.0)
        session.settle(step)
        return step.replies

    for seq, z in enumerate(latents[:100]):
        assert not feed(tx.on_frame(seq, 0.0, z).message)
    z = latents[100]
    hit, recall = tx.memory.decide(z)
    assert hit
    slot = recall.refs[0]
    rx = session.core  # break the Rx's copy of the prototype the next HIT refers to
    bogus = np.random.default_rng(9).standard_normal(64).astype(np.float32)
    rx.memory.prototypes[slot] = bogus / np.linalg.norm(bogus)
    rx.slot_cues[slot] = rx.hasher.cue(rx.memory.prototypes[slot])
    (request,) = feed(tx.on_frame(100, 0.0, z).message)
    assert isinstance(request, RefreshRequest)  # seeded: no near-duplicate answers the lookup
    (refresh,) = tx.on_message(request)
    assert isinstance(refresh, Refresh)
    feed(refresh)
    record, refresh_bits = session.timeline[-1]
    assert record.seq == 100 and record.outcome is Outcome.RECOVERED_REFRESH
    assert refresh_bits == semantic_bits(refresh, cfg) > 0
    assert all(bits == 0 for _, bits in list(session.timeline)[:-1])


def test_a_core_failure_is_caught_counted_and_its_frame_concealed(monkeypatch) -> None:
    """No exception of the core escapes the session's per-message handling: it is counted,
    answered with an ERROR, and the frame is accounted (concealed), the stream goes on."""
    cfg = build_config({"threshold": 0.95, "capacity": 64, "memory": "vq"}, read_env=False)
    latents = drifting_latents()
    tx, session = TransmitterCore(cfg), RxSession(cfg, 1, refresh_timeout=1.0)
    messages = [tx.on_frame(seq, seq / 30, z).message for seq, z in enumerate(latents[:40])]
    broken = session.core._settle
    raised = []

    def fails_on_frame_7(seq, *args):
        if seq == 7 and not raised:
            raised.append(seq)
            raise RuntimeError("a bug")
        return broken(seq, *args)

    monkeypatch.setattr(session.core, "_settle", fails_on_frame_7)
    replies = []
    for message in messages[:8]:
        step = session.on_message(message, 100, 0.0)
        replies += step.replies
        session.settle(step)
    monkeypatch.setattr(session.core, "_settle", broken)
    for message in messages[8:]:
        session.settle(session.on_message(message, 100, 0.0))
    assert [r.code for r in replies if isinstance(r, Error)] == ["internal_error"]
    assert session.traffic.core_failures == 1
    assert session.core.counters.internal_errors == 1
    outcomes = {r.seq: r.outcome for r in session.settled}
    assert sorted(outcomes) == list(range(40))
    assert outcomes[7] is Outcome.CONCEALED


def test_a_coded_frame_waiting_for_an_earlier_one_is_counted_on_arrival() -> None:
    """Entropy-coded frames decode in sequence order: frames behind a late one wait. What they
    cost is counted when they arrive (it travelled), and once the late frame comes every record
    has its own bits: none is mistaken for a frame no message described."""
    cfg = build_config(
        {"threshold": 0.95, "capacity": 64, "memory": "vq", "entropy_coding": True},
        read_env=False,
    )
    latents = drifting_latents()
    tx, session = TransmitterCore(cfg), RxSession(cfg, 1, refresh_timeout=1.0)
    messages = [tx.on_frame(seq, 0.0, z).message for seq, z in enumerate(latents[:12])]
    late = messages.pop(5)  # arrives after frames 6..11
    settled = []
    for message in [*messages, late]:
        step = session.on_message(message, 100, 0.0)
        settled += [record for record, _ in session.settle(step)]
        if message is messages[-1]:
            assert session.ledger.frames == 11  # 6..11 counted while they wait for 5
    assert session.ledger.frames == 12
    expected = {m.seq: semantic_bits(m, cfg) for m in [*messages, late]}
    timeline = {record.seq: record for record, _ in session.timeline}
    assert sorted(timeline) == list(range(12))
    assert all(timeline[seq].bits == expected[seq] for seq in range(12))
    assert session.ledger.frame_bits == sum(expected.values()) > 0
    # a coded hit may cost no bits at all (its range-coded payload is empty); it is still a
    # frame that was shown, not a lost one
    assert all(record.outcome is not Outcome.LOST for record in timeline.values())
