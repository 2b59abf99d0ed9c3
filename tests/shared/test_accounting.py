"""shared.accounting: bits per message (eq. 3), the LinkLedger, summary figures (eq. 5), PSNR."""

import numpy as np
import pytest

from shared.accounting import (
    PSNR_CAP_DB,
    LinkLedger,
    Outcome,
    psnr_batch,
    semantic_bits,
    summarize,
)
from shared.config import build_config
from shared.protocol.messages import Hit, New, Refresh, RefreshRequest
from tests.synthetic import drifting_latents
from transmitter.core import TransmitterCore


def _cfg(**kw):
    return build_config({"threshold": 0.95, "capacity": 64, **kw}, read_env=False)


def test_bits_follow_equation_3_for_a_known_sequence():
    cfg = _cfg(capacity=100, cue_bits=16, cue_tolerance=2)
    tx = TransmitterCore(cfg)
    z = drifting_latents(n=3, views=1, noise=0.0)  # the same latent three times
    kinds = [tx.on_frame(i, 0.0, z[i]).message for i in range(3)]
    assert [type(m) for m in kinds] == [New, Hit, Hit]
    bits = [semantic_bits(m, cfg) for m in kinds]
    assert bits == [64 * 8, 7 + 16, 7 + 16]  # d·b, then ⌈log2 100⌉ + K
    soft = _cfg(transmission="soft", top_k=2, weight_bits=4, cue_bits=16, cue_tolerance=2)
    hit = Hit(seq=0, t=0.0, refs=(1, 2), cue=0, weights=(15, 3))
    assert semantic_bits(hit, soft) == 2 * (6 + 4) + 16


def test_summary_figures_follow_equation_5():
    from shared.accounting import FrameRecord

    cfg = _cfg()
    records = [
        FrameRecord(
            i, hit=i % 4 != 0, bits=512 if i % 4 == 0 else 40, wire_bytes=0, outcome=Outcome.DECODED
        )
        for i in range(8)
    ]
    s = summarize(records, cfg)
    assert s.hit_rate == 0.75
    assert s.bits_per_frame == (2 * 512 + 6 * 40) / 8
    assert s.compression_ratio == pytest.approx(512 / s.bits_per_frame)
    assert s.efficiency == pytest.approx(0.75 * s.compression_ratio)
    assert s.capacity == pytest.approx(np.log2(1 + s.efficiency))


def test_psnr_helpers() -> None:
    a = np.full((2, 4, 4, 3), 100, dtype=np.uint8)
    b = a.copy()
    b[1] += 1  # MSE 1 -> 48.13 dB
    np.testing.assert_allclose(psnr_batch(a, b), [PSNR_CAP_DB, 10 * np.log10(255.0**2)])


# --- the ledger ----------------------------------------------------------------------------------

CONFIG = build_config({"capacity": 256, "cue_bits": 32}, read_env=False)  # ⌈log2 M⌉ = 8, d·b = 512
NEW_BITS, HIT_BITS, REFRESH_BITS, REQUEST_BITS = 512, 8 + 32, 8 + 512, 8


def _new(seq: int) -> New:
    return New(seq=seq, t=seq / 30, slot=seq, latent=bytes(64))


def _hit(seq: int) -> Hit:
    return Hit(seq=seq, t=seq / 30, refs=(0,), cue=0)


def test_a_known_stream_sums_by_hand():
    ledger = LinkLedger(CONFIG)
    ledger.frame(0, _new(0), hit=False, wire_bytes=80)
    ledger.frame(1, _hit(1), hit=True, wire_bytes=20)
    ledger.frame(2, _hit(2), hit=True, wire_bytes=20)
    ledger.traffic(RefreshRequest(ref=0, seq=2))
    ledger.traffic(Refresh(ref=0, seq=2, latent=bytes(64)))
    for seq, outcome in enumerate([Outcome.DECODED, Outcome.DECODED, Outcome.RECOVERED_REFRESH]):
        ledger.settle(seq, outcome)
    records = ledger.ordered(4)  # frame 3 was never sent: lost
    summary = ledger.summary(records)
    assert [r.outcome for r in records][-1] is Outcome.LOST
    assert ledger.frame_bits == NEW_BITS + 2 * HIT_BITS
    assert summary.bits_per_frame == (NEW_BITS + 2 * HIT_BITS + REFRESH_BITS) / 4
    assert summary.feedback_bits_per_frame == REQUEST_BITS / 4
    assert summary.wire_bytes_per_frame == (80 + 20 + 20) / 4
    assert (summary.hits, summary.refreshes, summary.hit_rate) == (2, 1, 0.5)
    assert summary.outcomes == {
        "decoded": 2, "recovered_lookup": 0, "recovered_refresh": 1, "concealed": 0, "lost": 1
    }  # fmt: skip


def test_a_frame_settles_once():
    ledger = LinkLedger(CONFIG)
    ledger.frame(0, _hit(0), hit=True, wire_bytes=20)
    assert ledger.settle(0, Outcome.DECODED).outcome is Outcome.DECODED
    assert ledger.settle(0, Outcome.CONCEALED) is None
    assert ledger.records[0].outcome is Outcome.DECODED and ledger.settled_twice == 1


@pytest.mark.parametrize("retain", ["unsettled", "none"])
def test_long_running_owners_keep_only_what_they_need(retain):
    ledger = LinkLedger(CONFIG, retain=retain)
    for seq in range(100):
        ledger.frame(seq, _new(seq), hit=False, wire_bytes=80)
        if retain == "unsettled":
            assert ledger.settle(seq, Outcome.DECODED).bits == NEW_BITS
    assert ledger.records == {} and ledger.frames == 100 and ledger.frame_bits == 100 * NEW_BITS


def test_the_rx_learns_a_coded_frames_kind_when_it_decodes_it():
    ledger = LinkLedger(CONFIG, retain="unsettled")
    ledger.frame(5, _new(5), hit=False, wire_bytes=80)
    ledger.mark_hits([5, 6])  # 6: not (or no longer) in the ledger, ignored
    assert ledger.settle(5, Outcome.DECODED).hit
    assert ledger.settle(6, Outcome.LOST).bits == 0  # a frame no message described
