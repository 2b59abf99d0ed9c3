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
