"""The Rx core (receiver.core) driven directly by a Tx core, with no sockets (as the link and
the network use them): memories in step, cue checks, lookups, refreshes, digests, accounting."""

import numpy as np
import pytest

from receiver.core import ReceiverCore
from shared.accounting import Outcome
from shared.config import build_config
from shared.protocol.messages import Bye, Digest, Error, Hit, New, Refresh, RefreshRequest
from tests.synthetic import deliver, drifting_latents
from transmitter.core import TransmitterCore


def _cfg(**kw):
    return build_config({"threshold": 0.95, "capacity": 64, **kw}, read_env=False)


@pytest.mark.parametrize(
    "memory, mode, tools",
    [
        ("vq", "index", {}),
        ("hopfield", "index", {}),
        ("hopfield", "soft", {}),
        # A fitted quantizer range (and the tools whose symbols depend on it) on both ends.
        ("hopfield", "index", {"latent_range": 0.375, "bits_per_value": 4}),
        ("vq", "index", {"latent_range": 0.375, "entropy_coding": True, "delta": True}),
        # The codec's per-dimension grid, read from its card by each end.
        ("hopfield", "index", {"latent_grid": "per_dim", "bits_per_value": 4}),
        ("vq", "index", {"latent_grid": "per_dim", "entropy_coding": True, "delta": True}),
    ],
)
def test_memories_stay_identical_over_a_whole_clip(latents, memory, mode, tools):
    cfg = _cfg(memory=memory, transmission=mode, **tools)
    tx, rx = TransmitterCore(cfg), ReceiverCore(cfg)
    for seq, z in enumerate(latents):
        decision = tx.on_frame(seq, seq / 30, z)
        frames = deliver(tx, rx, decision.message)
        (final,) = [f for f in frames if f.seq == seq]
        assert final.outcome is Outcome.DECODED
        assert final.latent.tobytes() == decision.latent.tobytes()
        assert tx.memory.digest() == rx.digest
    assert 0 < tx.counters.hits < len(latents)  # both kinds of frame occurred


def _warm(cfg, latents):
    tx, rx = TransmitterCore(cfg), ReceiverCore(cfg)
    for seq, z in enumerate(latents):
        deliver(tx, rx, tx.on_frame(seq, 0.0, z).message)
    return tx, rx


def test_corrupted_prototype_is_caught_by_its_cue_and_repaired_by_refresh(latents):
    cfg = _cfg(memory="vq")
    tx, rx = _warm(cfg, latents[:100])
    z = latents[100]
    hit, recall = tx.memory.decide(z)
    assert hit
    slot = recall.refs[0]
    # Replace the Rx's copy with an unrelated unit vector: its cue cannot match.
    rng = np.random.default_rng(9)
    bogus = rng.standard_normal(64).astype(np.float32)
    rx.memory.prototypes[slot] = bogus / np.linalg.norm(bogus)
    rx.slot_cues[slot] = rx.hasher.cue(rx.memory.prototypes[slot])
    assert rx.digest != tx.memory.digest()
    decision = tx.on_frame(100, 0.0, z)
    step = rx.on_message(decision.message, 0.0)
    assert rx.counters.cue_failures == 1
    # The clip is seeded: no other prototype's cue is within tolerance, so lookup fails.
    (request,) = step.replies
    assert isinstance(request, RefreshRequest) and request.ref == slot
    assert step.frames[0].outcome is None  # provisional, concealing
    (refresh,) = tx.on_message(request)
    assert isinstance(refresh, Refresh)
    step = rx.on_message(refresh, 0.0)
    (final,) = step.frames
    assert final.outcome is Outcome.RECOVERED_REFRESH and final.seq == 100
    assert final.latent.tobytes() == decision.latent.tobytes()
    assert rx.digest == tx.memory.digest()


def test_desynchronized_id_map_is_recovered_by_lookup():
    latents = drifting_latents(n=60, views=6, hold=10, noise=0.0)
    cfg = _cfg(memory="vq", threshold=0.99)
    tx, rx = _warm(cfg, latents[:60])
    assert tx.memory.count == 6
    moved = rx.corrupt_id_map(1.0, np.random.default_rng(0))
    assert moved == 6
    decision = tx.on_frame(60, 0.0, latents[0])
    (frame,) = rx.on_message(decision.message, 0.0).frames
    assert frame.outcome is Outcome.RECOVERED_LOOKUP
    assert frame.latent.tobytes() == decision.latent.tobytes()
    assert rx.counters.cue_failures == 1 and rx.counters.lookups_ok == 1


def test_refresh_that_never_comes_conceals_the_frame(latents):
    cfg = _cfg(memory="vq")
    tx, rx = _warm(cfg, latents[:50])
    rx.memory.filled[:] = False  # the Rx lost everything
    decision = tx.on_frame(50, 1.0, latents[50])
    assert decision.hit
    step = rx.on_message(decision.message, now=1.0)
    assert isinstance(step.replies[0], RefreshRequest)
    assert rx.tick(now=1.5).frames == []  # still within the timeout
    (frame,) = rx.tick(now=2.5).frames
    assert frame.outcome is Outcome.CONCEALED and frame.seq == 50


def test_every_frame_is_accounted_for_under_loss_reorder_and_duplicates(latents):
    cfg = _cfg()
    tx, rx = TransmitterCore(cfg), ReceiverCore(cfg, reorder_window=8)
    messages = [tx.on_frame(seq, 0.0, z).message for seq, z in enumerate(latents[:100])]
    rng = np.random.default_rng(4)
    dropped = {int(s) for s in rng.choice(100, 10, replace=False)}
    delivered = [m for m in messages if m.seq not in dropped]
    delivered[20], delivered[21] = delivered[21], delivered[20]  # a swap within the window
    delivered.insert(40, delivered[39])  # a duplicate
    outcomes = {}
    for m in delivered:
        step = rx.on_message(m, 0.0)
        for reply in step.replies:
            for answer in tx.on_message(reply):
                step.frames += rx.on_message(answer, 0.0).frames
        outcomes.update({f.seq: f.outcome for f in step.frames if f.outcome is not None})
    outcomes.update(
        {
            f.seq: f.outcome
            for f in rx.on_message(Bye(last_seq=99), 0.0).frames
            if f.outcome is not None
        }
    )
    assert sorted(outcomes) == list(range(100))
    assert {s for s, o in outcomes.items() if o is Outcome.LOST} == dropped
    assert rx.counters.duplicates == 1
    c = rx.counters
    assert c.decoded + c.recovered_lookup + c.recovered_refresh + c.concealed + c.lost == 100


def test_digest_exchange_repairs_a_diverged_memory(latents):
    cfg = _cfg()
    tx, rx = _warm(cfg, latents[:100])
    rx.corrupt_prototypes(0.3, np.random.default_rng(1))
    assert rx.digest != tx.memory.digest()
    frames = deliver(tx, rx, tx.digest())
    assert frames == []
    assert rx.digest == tx.memory.digest()
    assert rx.counters.digest_mismatches == 1


def test_rx_rejects_bad_content_with_a_counted_error():
    cfg = _cfg(capacity=8)
    rx = ReceiverCore(cfg)
    step = rx.on_message(New(seq=0, t=0.0, slot=99, latent=b"\x00" * 64), 0.0)
    assert isinstance(step.replies[0], Error) and "slot 99" in step.replies[0].reason
    step = rx.on_message(New(seq=1, t=0.0, slot=0, latent=b"\x00" * 3), 0.0)
    assert "expected 64" in step.replies[0].reason
    step = rx.on_message(Digest(seq=0, count=2, digest="x", slot_hashes=b""), 0.0)
    assert isinstance(step.replies[0], Error)
    assert rx.counters.errors == 3
    assert rx.counters.concealed == 2  # the two bad frames are accounted, not dropped silently


def test_a_refresh_completing_a_hit_whose_other_reference_was_dropped_conceals_it():
    """Soft mode: HIT 3 waits for refs 5 and 6; REFRESH 5 arrives; a DIGEST with count 3 drops
    slots 3 and up; REFRESH 6 completes the wait. Frame 3 is concealed, nothing escapes."""
    cfg = build_config(
        {"capacity": 64, "transmission": "soft", "top_k": 4, "weight_bits": 4}, read_env=False
    )
    rx = ReceiverCore(cfg)
    rng = np.random.default_rng(0)

    def packed() -> bytes:
        return _pack(cfg, rng.standard_normal(cfg.latent_dim).astype(np.float32))

    outcomes = {}
    for seq in range(3):
        step = rx.on_message(New(seq=seq, t=0.0, slot=seq, latent=packed()), 0.0)
        outcomes.update({f.seq: f.outcome for f in step.frames})
    hit = Hit(seq=3, t=0.1, refs=(5, 6), cue=(1 << cfg.cue_bits) - 1, weights=(1, 1))
    step = rx.on_message(hit, 0.0)
    assert {r.ref for r in step.replies if isinstance(r, RefreshRequest)} == {5, 6}
    rx.on_message(Refresh(ref=5, seq=3, latent=packed()), 0.0)
    rx.on_message(Digest(seq=3, count=3, digest="0" * 64, slot_hashes=b"\0" * 12), 0.0)
    step = rx.on_message(Refresh(ref=6, seq=3, latent=packed()), 0.0)  # used to raise
    outcomes.update({f.seq: f.outcome for f in step.frames if f.outcome is not None})
    assert outcomes[3] is Outcome.CONCEALED
    assert rx.counters.concealed == 1 and rx.counters.decoded == 3


def _pack(cfg, z: np.ndarray) -> bytes:
    from shared.coding.quantizer import pack_codes, quantize

    z = z / np.linalg.norm(z)
    return pack_codes(quantize(z, cfg.bits_per_value, cfg.quantizer_grid()), cfg.bits_per_value)


@pytest.mark.parametrize("tools", [{}, {"entropy_coding": True}])
def test_joining_a_stream_under_way_counts_earlier_frames_before_restart_not_lost(latents, tools):
    """A restarted Rx told (by the Tx's HELLO) that the stream is at frame 40: frames 0-39 are
    ``before_restart``, nothing is counted lost, and the outcomes add up to what was sent."""
    cfg = _cfg(memory="vq", **tools)
    tx = TransmitterCore(cfg)
    for seq, z in enumerate(latents[:40]):  # went to the Rx that died
        tx.on_frame(seq, seq / 30, z)
    rx = ReceiverCore(cfg)
    rx.start_at(40)
    outcomes: dict[int, Outcome] = {}
    for seq, z in enumerate(latents[40:80], start=40):
        for frame in deliver(tx, rx, tx.on_frame(seq, seq / 30, z).message):
            if frame.outcome is not None:
                outcomes[frame.seq] = frame.outcome
    for frame in rx.on_message(tx.bye(), 10.0).frames:
        outcomes[frame.seq] = frame.outcome
    c = rx.counters
    assert sorted(outcomes) == list(range(40, 80))
    assert c.before_restart == 40 and c.lost == 0 and c.duplicates == 0
    assert c.seq_jumps_refused == 0 and c.frames_skipped == 0
    assert c.before_restart + len(outcomes) == tx.counters.frames == 80
    with pytest.raises(Exception, match="has started"):
        rx.start_at(90)
