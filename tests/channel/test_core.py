"""The channel's sans-I/O impairment pipeline: seeded runs over thousands of messages."""

from __future__ import annotations

import math

import numpy as np
import pytest

import channel.impairments.base as impairments_base
from channel.core import DIRECTIONS, IMPAIRMENTS, ChannelCore, Delivery, ImpairmentError
from channel.impairments import PIPELINE_ORDER, impairment_schemas
from channel.impairments.loss import Attributes as LossAttributes
from channel.impairments.loss import Loss
from shared.coding.quantizer import dequantize, unpack_codes
from shared.config import build_config
from shared.protocol.messages import (
    Bye,
    Corrupt,
    Digest,
    Error,
    Hello,
    Hit,
    New,
    ProtocolError,
    Refresh,
    RefreshRequest,
    decode,
    encode,
)
from tests.synthetic import CONFIG, RX, TX, differing_bits, hits, news, send, within

SOFT = build_config(
    {"capacity": 200, "cue_bits": 20, "transmission": "soft", "top_k": 4, "weight_bits": 4},
    read_env=False,
)


def popcount(x: int) -> int:
    return bin(x).count("1")


# -- pass-through ----------------------------------------------------------------------------------


def test_no_impairments_forwards_every_message_unchanged_at_once():
    core = ChannelCore(CONFIG)
    messages = news(50) + hits(50) + [Hello(role="tx", config_digest="a", model_digest="b")]
    out = send(core, messages)
    assert [d.data for _, d in out] == [encode(m) for m in messages]
    assert all(d.at == pytest.approx(i * 1e-3) for i, d in out)
    stats = core.stats()[TX]
    assert stats["messages_in"] == stats["messages_out"] == 101
    assert stats["bytes_in"] == stats["bytes_out"] == sum(len(encode(m)) for m in messages)
    assert stats["types_in"] == {"new": 50, "hit": 50, "hello": 1}
    assert core.stats()[RX]["messages_in"] == 0
    assert core.impairments() == {TX: {}, RX: {}}
    assert core.poll(1.0) == []


def test_pass_through_counts_as_on_data_does_and_declines_while_an_impairment_acts():
    """The shell's hot path: with nothing to do it counts the message exactly as on_data would;
    once a direction has an impairment (or holds what a cleared one released) it declines and
    counts nothing, so the message goes through the pipeline instead."""
    messages = news(20) + hits(30) + [b"\xc1 not msgpack"]
    fast, slow = ChannelCore(CONFIG, hold=True), ChannelCore(CONFIG, hold=True)
    for i, m in enumerate(messages):
        data = m if isinstance(m, bytes) else encode(m)
        assert fast.pass_through(TX, data, i * 1e-3)
        slow.on_data(TX, data, i * 1e-3)
    assert fast.stats() == slow.stats()
    assert fast.stats()[TX]["types_in"] == {"new": 20, "hit": 30, "undecodable": 1}
    fast.set_impairment(TX, "delay", {"delay_ms": 50})
    before = fast.stats()[TX]["messages_in"]
    assert not fast.pass_through(TX, encode(hits(1)[0]), 1.0)
    assert fast.stats()[TX]["messages_in"] == before
    assert fast.pass_through(RX, encode(hits(1)[0]), 1.0)  # the other direction is untouched
    fast.on_data(TX, encode(hits(1)[0]), 1.0)  # held in the delay line
    fast.clear_impairment(TX, "delay")  # released: out at the next poll, before anything new
    assert not fast.pass_through(TX, encode(hits(1)[0]), 1.001)
    assert [d for _, d in fast.poll(1.001)]
    assert fast.pass_through(TX, encode(hits(1)[0]), 1.002)


def test_messages_are_not_decoded_unless_an_impairment_needs_it(monkeypatch):
    def forbidden(data):
        raise AssertionError("decoded")

    monkeypatch.setattr(impairments_base, "decode", forbidden)
    core = ChannelCore(CONFIG)
    send(core, news(20))
    core.set_impairment(TX, "loss", {"probability": 0.2})
    core.set_impairment(TX, "delay", {"delay_ms": 5, "jitter_ms": 1})
    core.set_impairment(TX, "rate", {"bits_per_second": 1e6})
    core.set_impairment(TX, "duplicate", {"probability": 0.2})
    core.set_impairment(TX, "reorder", {"probability": 0.2})
    assert send(core, news(200))


# -- bit errors ------------------------------------------------------------------------------------


def test_field_bit_errors_match_the_ber_and_every_flip_is_counted():
    core = ChannelCore(CONFIG, seed=3)
    ber, messages = 1e-3, news(3000)
    core.set_impairment(TX, "bit_errors", {"ber": ber})
    out = send(core, messages)
    assert len(out) == len(messages)  # field mode never breaks a frame
    flipped = touched = 0
    for i, delivery in out:
        sent, got = messages[i], decode(delivery.data)
        assert (got.seq, got.t, got.slot) == (sent.seq, sent.t, sent.slot)  # headers untouched
        bits = differing_bits(sent.latent, got.latent)
        flipped += bits
        touched += bits > 0
    counters = core.impairments()[TX]["bit_errors"]["counters"]
    assert counters["bits_flipped"] == flipped
    assert counters["messages_corrupted"] == touched
    nbits = len(messages) * CONFIG.latent_dim * CONFIG.bits_per_value
    assert within(flipped / nbits, ber, nbits)


def test_field_bit_errors_hit_refresh_latents_and_spare_messages_without_payload():
    core = ChannelCore(CONFIG, seed=17)
    core.set_impairment(RX, "bit_errors", {"ber": 0.01})
    latent = news(1)[0].latent
    refreshes = [Refresh(ref=i % 200, seq=i, latent=latent) for i in range(200)]
    others = [
        RefreshRequest(ref=1, seq=2),
        Digest(seq=1, count=1, digest="0" * 64, slot_hashes=b"abcd"),
    ]
    out = send(core, refreshes + others, direction=RX)
    got = [decode(d.data) for _, d in out]
    assert got[200:] == others
    assert all(g.ref == r.ref and g.seq == r.seq for g, r in zip(got, refreshes, strict=False))
    flipped = sum(differing_bits(latent, g.latent) for g in got[:200])
    assert flipped == core.impairments()[RX]["bit_errors"]["counters"]["bits_flipped"] > 0


def test_hit_bit_errors_stay_within_reference_cue_and_weight_widths():
    core = ChannelCore(SOFT, seed=1)
    core.set_impairment(TX, "bit_errors", {"ber": 0.05})
    messages = hits(2000, SOFT)
    out = send(core, messages)
    flipped = 0
    for i, delivery in out:
        sent, got = messages[i], decode(delivery.data)
        assert all(r < 1 << SOFT.index_bits for r in got.refs)  # index_bits = 8 for M = 200
        assert got.cue < 1 << SOFT.cue_bits
        assert all(w < 1 << SOFT.weight_bits for w in got.weights)
        assert (got.seq, got.t, len(got.refs), len(got.weights)) == (
            sent.seq,
            sent.t,
            len(sent.refs),
            len(sent.weights),
        )
        flipped += sum(popcount(a ^ b) for a, b in zip(sent.refs, got.refs, strict=True))
        flipped += popcount(sent.cue ^ got.cue)
        flipped += sum(popcount(a ^ b) for a, b in zip(sent.weights, got.weights, strict=True))
    assert core.impairments()[TX]["bit_errors"]["counters"]["bits_flipped"] == flipped
    nbits = len(messages) * (4 * SOFT.index_bits + SOFT.cue_bits + 4 * SOFT.weight_bits)
    assert within(flipped / nbits, 0.05, nbits)


def test_index_mode_hits_flip_only_reference_and_cue_bits():
    config = build_config({"capacity": 256, "cue_bits": 0, "cue_tolerance": 0}, read_env=False)
    core = ChannelCore(config)
    core.set_impairment(TX, "bit_errors", {"ber": 0.2})
    messages = hits(500, config)
    out = send(core, messages)
    flipped = sum(popcount(messages[i].refs[0] ^ decode(d.data).refs[0]) for i, d in out)
    assert all(decode(d.data).cue == 0 for _, d in out)
    assert core.impairments()[TX]["bit_errors"]["counters"]["bits_flipped"] == flipped > 0


def test_whole_frame_bit_errors_corrupt_the_raw_bytes():
    core = ChannelCore(CONFIG, seed=2)
    core.set_impairment(TX, "bit_errors", {"ber": 2e-3, "whole_frame": True})
    messages = news(1000)
    out = send(core, messages)
    assert len(out) == len(messages)  # corrupted, still forwarded
    raw = [encode(m) for m in messages]
    flipped = sum(differing_bits(raw[i], d.data) for i, d in out)
    counters = core.impairments()[TX]["bit_errors"]["counters"]
    assert counters["bits_flipped"] == flipped
    assert counters["messages_corrupted"] == sum(raw[i] != d.data for i, d in out)
    nbits = sum(8 * len(r) for r in raw)
    assert within(flipped / nbits, 2e-3, nbits)
    undecodable = 0
    for _, d in out:
        try:
            decode(d.data)
        except ProtocolError:
            undecodable += 1
    assert undecodable > 0


def test_field_aware_impairments_skip_undecodable_frames_others_still_forward_them():
    core = ChannelCore(CONFIG, seed=4)
    core.set_impairment(TX, "bit_errors", {"ber": 0.02, "whole_frame": True})
    core.set_impairment(TX, "id_desync", {"probability": 1.0, "types": ["new", "undecodable"]})
    core.set_impairment(TX, "delay", {"delay_ms": 10})
    out = send(core, news(300))
    assert len(out) == 300
    assert all(d.at == pytest.approx(i * 1e-3 + 0.01) for i, d in out)
    counters = core.impairments()[TX]["id_desync"]["counters"]
    assert counters["skipped"] > 0  # frames that no longer decode are left alone
    assert counters["desynced"] + counters["skipped"] == counters["matched"]
    [garbage] = core.on_data(TX, b"\xc1 not msgpack", 1.0)  # data plane: delayed like the rest
    assert garbage.at == pytest.approx(1.01)
    assert core.stats()[TX]["types_in"]["undecodable"] == 1


# -- loss ------------------------------------------------------------------------------------------


def loss_pattern(core, n):
    out = send(core, hits(n))
    arrived = np.zeros(n, dtype=bool)
    arrived[[i for i, _ in out]] = True
    return ~arrived


def mean_run(lost: np.ndarray) -> float:
    runs, current = [], 0
    for x in lost:
        if x:
            current += 1
        elif current:
            runs.append(current)
            current = 0
    if current:
        runs.append(current)
    return float(np.mean(runs))


def test_independent_loss_rate_and_counter():
    core = ChannelCore(CONFIG, seed=5)
    core.set_impairment(TX, "loss", {"probability": 0.1})
    lost = loss_pattern(core, 10_000)
    assert core.impairments()[TX]["loss"]["counters"]["dropped"] == lost.sum()
    assert within(lost.mean(), 0.1, lost.size)


def test_gilbert_elliott_losses_come_in_bursts():
    attributes = {
        "model": "gilbert_elliott",
        "p_good_to_bad": 0.02,
        "p_bad_to_good": 0.2,
        "loss_in_good": 0.0,
        "loss_in_bad": 1.0,
    }
    core = ChannelCore(CONFIG, seed=6)
    core.set_impairment(TX, "loss", attributes)
    bursty = loss_pattern(core, 20_000)
    expected = Loss.stationary_loss(LossAttributes(**attributes))
    assert expected == pytest.approx(0.02 / 0.22)
    assert abs(bursty.mean() - expected) < 0.03  # bursts: a wider error than a binomial's
    counters = core.impairments()[TX]["loss"]["counters"]
    assert counters["dropped"] == bursty.sum() == counters["bad_state"]  # loss_in_bad = 1

    independent = ChannelCore(CONFIG, seed=6)
    independent.set_impairment(TX, "loss", {"probability": float(bursty.mean())})
    scattered = loss_pattern(independent, 20_000)
    assert mean_run(bursty) > 3 * mean_run(scattered)
    assert mean_run(bursty) == pytest.approx(1 / 0.2, rel=0.25)


# -- delay, rate -----------------------------------------------------------------------------------


def test_delay_with_uniform_jitter_stays_in_its_bounds():
    core = ChannelCore(CONFIG)
    core.set_impairment(TX, "delay", {"delay_ms": 50, "jitter_ms": 10})
    out = send(core, hits(3000))
    delays = np.array([d.at - i * 1e-3 for i, d in out])
    assert delays.min() >= 0.040 - 1e-9 and delays.max() <= 0.060 + 1e-9
    assert delays.mean() == pytest.approx(0.050, abs=0.001)
    assert delays.std() == pytest.approx(0.010 / math.sqrt(3), rel=0.1)
    order = [i for i, _ in sorted(out, key=lambda x: x[1].at)]
    assert order != sorted(order)  # independent jitter reorders (as netem)


def test_normal_jitter_is_clipped_so_nothing_leaves_before_it_arrived():
    core = ChannelCore(CONFIG)
    core.set_impairment(TX, "delay", {"delay_ms": 5, "jitter_ms": 10, "distribution": "normal"})
    out = send(core, hits(2000))
    delays = np.array([d.at - i * 1e-3 for i, d in out])
    assert delays.min() >= -1e-12
    assert np.mean(delays < 1e-12) == pytest.approx(0.3085, abs=0.05)  # P(N(5, 10) < 0)
    assert delays.std() > 0.005


def test_delay_preserve_order_never_reorders():
    core = ChannelCore(CONFIG)
    core.set_impairment(TX, "delay", {"delay_ms": 20, "jitter_ms": 15, "preserve_order": True})
    out = send(core, hits(1000))
    ats = [d.at for _, d in out]
    assert ats == sorted(ats)
    assert all(d.at - i * 1e-3 >= 0.005 - 1e-9 for i, d in out)


def test_rate_limit_spaces_departures_by_transmission_time():
    rate = 100_000.0
    core = ChannelCore(CONFIG)
    core.set_impairment(TX, "rate", {"bits_per_second": rate})
    messages = news(50)
    sizes = np.array([len(encode(m)) for m in messages])
    assert len(set(sizes)) > 1  # slots < 128 take one byte less
    out = send(core, messages, dt=0.0)  # a burst: all arrive at t = 0
    ats = np.array([d.at for _, d in out])
    assert ats[0] == pytest.approx(sizes[0] * 8 / rate)
    assert np.diff(ats) == pytest.approx(sizes[1:] * 8 / rate)
    assert core.impairments()[TX]["rate"]["counters"]["queued"] == 49

    idle = ChannelCore(CONFIG)
    idle.set_impairment(TX, "rate", {"bits_per_second": rate, "overhead_bytes": 10})
    out = send(idle, messages, dt=1.0)  # slower than the link: no queueing
    assert all(d.at == pytest.approx(i + (sizes[i] + 10) * 8 / rate) for i, d in out)


def test_rate_queue_limit_drops_what_does_not_fit():
    core = ChannelCore(CONFIG)
    messages = news(100)
    size = len(encode(messages[0]))
    core.set_impairment(TX, "rate", {"bits_per_second": 8 * size * 100, "queue_bytes": 3 * size})
    out = send(core, messages, dt=0.0)
    # the first is sent at once; the next two wait (3 sizes of backlog); the rest are dropped
    assert [i for i, _ in out] == [0, 1, 2]
    assert core.impairments()[TX]["rate"]["counters"]["dropped"] == 97
    later = core.on_data(TX, encode(messages[0]), 1.0)  # the queue drained meanwhile
    assert len(later) == 1


# -- duplicate, reorder ----------------------------------------------------------------------------


def test_duplicates_arrive_twice_and_are_counted():
    core = ChannelCore(CONFIG, seed=8)
    core.set_impairment(TX, "duplicate", {"probability": 0.3, "extra_delay_ms": 2})
    out = send(core, hits(4000))
    copies = np.bincount([i for i, _ in out], minlength=4000)
    duplicated = core.impairments()[TX]["duplicate"]["counters"]["duplicated"]
    assert set(copies) == {1, 2}
    assert (copies == 2).sum() == duplicated == len(out) - 4000
    assert within(duplicated / 4000, 0.3, 4000)
    by_index: dict[int, list[Delivery]] = {}
    for i, d in out:
        by_index.setdefault(i, []).append(d)
    for pair in (v for v in by_index.values() if len(v) == 2):
        assert pair[0].data == pair[1].data
        assert pair[1].at - pair[0].at == pytest.approx(0.002)


def delivered_order(out):
    return [i for i, _ in sorted(out, key=lambda x: x[1].at)]  # stable: ties keep emission order


def overtaken(order):
    """Indices delivered after some later-sent message."""
    result, highest = set(), -1
    for i in order:
        if i < highest:
            result.add(i)
        highest = max(highest, i)
    return result


def test_reorder_by_count_releases_after_k_later_messages():
    core = ChannelCore(CONFIG, seed=9)
    core.set_impairment(TX, "reorder", {"probability": 0.1, "after_messages": 2, "hold_ms": 1000})
    out = send(core, hits(3000))
    out += [(None, d) for _, d in core.poll(10.0)]  # the last ones wait for their timeout
    seqs = [decode(d.data).seq for _, d in out]
    assert sorted(seqs) == list(range(3000))  # nothing lost, nothing duplicated
    counters = core.impairments()[TX]["reorder"]["counters"]
    order = [decode(d.data).seq for d in sorted((d for _, d in out), key=lambda d: d.at)]
    assert len(overtaken(order)) == counters["reordered"]
    assert (
        counters["released_after_messages"] + counters["released_on_timeout"]
        == (counters["reordered"])
    )
    assert within(counters["reordered"] / 3000, 0.1, 3000)
    late = overtaken(order)
    checked = 0
    for s in sorted(late):  # a message held alone leaves right after its second successor
        if s + 3 < 3000 and {s - 1, s + 1, s + 2}.isdisjoint(late):
            assert order.index(s) == order.index(s + 2) + 1
            checked += 1
    assert checked > 100


def test_reorder_by_time_lets_successors_overtake():
    core = ChannelCore(CONFIG, seed=10)
    core.set_impairment(TX, "reorder", {"probability": 0.05, "hold_ms": 5})
    out = send(core, hits(3000))  # one message per ms: five successors overtake each
    assert len(out) == 3000
    counters = core.impairments()[TX]["reorder"]["counters"]
    assert len(overtaken(delivered_order(out))) == counters["reordered"] > 100
    held = [d.at - i * 1e-3 for i, d in out if d.at - i * 1e-3 > 1e-9]
    assert held == pytest.approx([0.005] * len(held))


def test_reorder_timeout_releases_through_poll():
    core = ChannelCore(CONFIG)
    core.set_impairment(TX, "reorder", {"probability": 1.0, "after_messages": 3, "hold_ms": 50})
    assert core.on_data(TX, encode(hits(1)[0]), 0.0) == []
    assert core.stats()[TX]["held"] == 1
    assert core.next_poll_at() == pytest.approx(0.05)
    assert core.poll(0.049) == []
    [(direction, delivery)] = core.poll(0.06)
    assert direction == TX and delivery.at == pytest.approx(0.06)
    assert core.next_poll_at() is None
    assert core.stats()[TX]["messages_out"] == 1


# -- memory-write faults ---------------------------------------------------------------------------


def test_id_desync_moves_the_slot_to_another_valid_slot():
    core = ChannelCore(CONFIG, seed=11)
    core.set_impairment(TX, "id_desync", {"probability": 0.3})
    messages = news(3000)
    messages[5] = New(seq=5, t=0.1, slot=-1, latent=messages[5].latent)  # stores nothing
    mixed = messages + hits(200, first=3000)
    out = send(core, mixed)
    changed = 0
    for i, d in out:
        sent, got = mixed[i], decode(d.data)
        if isinstance(sent, Hit):
            assert got == sent
            continue
        assert got.latent == sent.latent and got.seq == sent.seq
        assert 0 <= got.slot < CONFIG.capacity or got.slot == sent.slot == -1
        changed += got.slot != sent.slot
    counters = core.impairments()[TX]["id_desync"]["counters"]
    assert counters["desynced"] == changed
    assert within(changed / 3000, 0.3, 3000)
    assert decode(out[5][1].data).slot == -1


@pytest.mark.parametrize("grid", ["uniform", "per_dim"])
def test_prototype_noise_keeps_a_valid_latent_whose_cosine_drops_with_sigma(grid):
    config = CONFIG.replace(latent_grid=grid)
    messages = news(400)
    bits, dim, cells = config.bits_per_value, config.latent_dim, config.quantizer_grid()
    means = []
    for sigma in (0.01, 0.05, 0.2, 1.0):
        core = ChannelCore(config)
        core.set_impairment(TX, "prototype_noise", {"probability": 1.0, "sigma": sigma})
        out = send(core, messages + hits(10, first=400))
        cosines = []
        for i, d in out:
            got = decode(d.data)
            if i >= 400:
                assert isinstance(got, Hit)  # hits untouched by default
                continue
            assert got.slot == messages[i].slot and len(got.latent) == len(messages[i].latent)
            a = dequantize(unpack_codes(messages[i].latent, bits, dim), bits, cells)
            b = dequantize(unpack_codes(got.latent, bits, dim), bits, cells)
            assert np.linalg.norm(b) == pytest.approx(1.0, abs=1e-5)
            cosines.append(float(a @ b))
        assert core.impairments()[TX]["prototype_noise"]["counters"]["noised"] == 400
        means.append(np.mean(cosines))
    assert means == sorted(means, reverse=True)
    assert means[0] > 0.99 and means[-1] < 0.3


# -- selectors, toxicity, control plane ------------------------------------------------------------


def test_type_selector_never_touches_other_messages():
    core = ChannelCore(CONFIG, seed=12)
    core.set_impairment(TX, "bit_errors", {"ber": 0.05, "types": ["hit"]})
    core.set_impairment(TX, "loss", {"probability": 0.5, "types": "new"})  # one name is a list
    messages = news(500) + hits(500, first=500)
    out = send(core, messages)
    assert sorted(i for i, _ in out if i >= 500) == list(range(500, 1000))  # no hit lost
    for i, d in out:
        if i < 500:
            assert d.data == encode(messages[i])  # no new corrupted
    assert core.impairments()[TX]["bit_errors"]["counters"]["matched"] == 500
    assert core.impairments()[TX]["loss"]["counters"]["dropped"] == 500 - sum(
        i < 500 for i, _ in out
    )


def test_seq_range_selector_applies_only_inside_the_range():
    core = ChannelCore(CONFIG)
    core.set_impairment(TX, "loss", {"probability": 1.0, "seq_range": [100, 199]})
    messages = hits(300) + [Hello(role="tx", config_digest="a", model_digest="b")]
    out = send(core, messages)
    assert [i for i, _ in out] == [*range(100), *range(200, 301)]


def test_control_plane_passes_unless_selected():
    control = [
        Hello(role="tx", config_digest="a", model_digest="b"),
        Error(code="bad", reason="x"),
        Bye(last_seq=3),
    ]
    data_plane = [
        RefreshRequest(ref=1, seq=2),
        Refresh(ref=1, seq=2, latent=news(1)[0].latent),
        Digest(seq=1, count=0, digest="0" * 64),
    ]
    core = ChannelCore(CONFIG)
    core.set_impairment(RX, "loss", {"probability": 1.0})
    out = send(core, control + data_plane, direction=RX)
    assert [i for i, _ in out] == [0, 1, 2]
    core.set_impairment(RX, "loss", {"types": ["hello"]})  # update: merged, p stays 1
    assert [i for i, _ in send(core, control, direction=RX)] == [1, 2]


def test_toxicity_zero_does_nothing_and_toxicity_half_applies_to_half():
    extreme = {
        "rate": {"bits_per_second": 1.0},
        "loss": {"probability": 1.0},
        "bit_errors": {"ber": 0.5},
        "id_desync": {"probability": 1.0},
        "prototype_noise": {"probability": 1.0, "sigma": 1.0},
        "duplicate": {"probability": 1.0},
        "delay": {"delay_ms": 1000},
        "reorder": {"probability": 1.0, "after_messages": 2},
    }
    core = ChannelCore(CONFIG)
    for name, attributes in extreme.items():
        core.set_impairment(TX, name, {**attributes, "toxicity": 0.0})
    messages = news(200) + hits(200)
    out = send(core, messages)
    assert [(i, d.data, d.at) for i, d in out] == [
        (i, encode(m), pytest.approx(i * 1e-3)) for i, m in enumerate(messages)
    ]
    assert all(s["counters"]["matched"] == 0 for s in core.impairments()[TX].values())

    half = ChannelCore(CONFIG, seed=13)
    half.set_impairment(TX, "loss", {"probability": 1.0, "toxicity": 0.5})
    lost = loss_pattern(half, 4000)
    assert within(lost.mean(), 0.5, 4000)
    assert half.impairments()[TX]["loss"]["counters"]["matched"] == lost.sum()


# -- independence, reproducibility -----------------------------------------------------------------


def test_directions_are_independent():
    core = ChannelCore(CONFIG)
    for name, attributes in {
        "loss": {"probability": 0.5},
        "bit_errors": {"ber": 0.1},
        "delay": {"delay_ms": 100},
        "reorder": {"probability": 0.5, "after_messages": 1},
    }.items():
        core.set_impairment(TX, name, attributes)
    requests = [RefreshRequest(ref=i % 200, seq=i) for i in range(300)]
    out = send(core, requests, direction=RX)
    assert [(i, d.data) for i, d in out] == [(i, encode(m)) for i, m in enumerate(requests)]
    assert core.impairments()[RX] == {}

    # the same impairment on rx_to_tx draws the same with or without tx_to_rx traffic
    def rx_losses(with_tx: bool):
        c = ChannelCore(CONFIG, seed=21)
        c.set_impairment(RX, "loss", {"probability": 0.3})
        c.set_impairment(TX, "loss", {"probability": 0.3})
        kept = []
        for i, request in enumerate(requests):
            if with_tx:
                c.on_data(TX, encode(hits(1, first=i)[0]), i * 1e-3)
            kept += [i for _ in c.on_data(RX, encode(request), i * 1e-3)]
        return kept

    assert rx_losses(True) == rx_losses(False)


def test_changing_one_impairment_does_not_change_anothers_draws():
    def lost(extra):
        core = ChannelCore(CONFIG, seed=14)
        core.set_impairment(TX, "loss", {"probability": 0.2})
        for name, attributes in extra.items():
            core.set_impairment(TX, name, attributes)
        return [i for i, _ in send(core, hits(2000))]

    plain = lost({})
    assert plain == lost({"delay": {"delay_ms": 10, "jitter_ms": 5}})
    assert plain == lost({"bit_errors": {"ber": 0.01}, "prototype_noise": {"probability": 0.5}})


def run_everything(seed: int):
    core = ChannelCore(SOFT, seed=seed)
    for name, attributes in {
        "rate": {"bits_per_second": 2e6},
        "loss": {"model": "gilbert_elliott"},
        "bit_errors": {"ber": 1e-3},
        "id_desync": {"probability": 0.1},
        "prototype_noise": {"probability": 0.1},
        "duplicate": {"probability": 0.05},
        "delay": {"delay_ms": 10, "jitter_ms": 3},
        "reorder": {"probability": 0.05, "after_messages": 2},
    }.items():
        core.set_impairment(TX, name, attributes)
    out = send(
        core, [m for pair in zip(news(500, SOFT), hits(500, SOFT), strict=True) for m in pair]
    )
    return [(i, d.data, d.at) for i, d in out] + [(d.data, d.at) for _, d in core.poll(99.0)]


def test_same_seed_same_outputs():
    assert run_everything(7) == run_everything(7)
    assert run_everything(7) != run_everything(8)


# -- control API, errors, events, stats ------------------------------------------------------------


def test_errors_name_the_bad_direction_impairment_or_attribute():
    core = ChannelCore(CONFIG)
    cases = [
        (lambda: core.set_impairment("sideways", "loss", {}), "sideways"),
        (lambda: core.set_impairment(TX, "gremlins", {}), "gremlins"),
        (lambda: core.set_impairment(TX, "bit_errors", {"ber": 2.0}), "ber"),
        (lambda: core.set_impairment(TX, "loss", {"probabilty": 0.1}), "probabilty"),
        (lambda: core.set_impairment(TX, "delay", {"delay_ms": -1}), "delay_ms"),
        (lambda: core.set_impairment(TX, "delay", {"delay_ms": math.nan}), "delay_ms"),
        (lambda: core.set_impairment(TX, "loss", {"types": ["nope"]}), "nope"),
        (lambda: core.set_impairment(TX, "loss", {"seq_range": [5, 1]}), "seq_range"),
        (lambda: core.set_impairment(TX, "loss", {"toxicity": 1.5}), "toxicity"),
        (lambda: core.set_impairment(TX, "loss", [("probability", 1)]), "attributes"),
        (lambda: core.clear_impairment("up", "loss"), "up"),
        (lambda: core.clear_impairment(TX, "gremlins"), "gremlins"),
        (lambda: core.on_data("down", b"", 0.0), "down"),
        (lambda: core.corruption_event(rho=1.5), "rho"),
        (lambda: core.corruption_event(sigma=-1.0), "sigma"),
    ]
    for call, name in cases:
        with pytest.raises(ImpairmentError, match=name):
            call()
    assert issubclass(ImpairmentError, ValueError)
    core.set_impairment(TX, "loss", {"probability": 0.5})
    with pytest.raises(ImpairmentError, match="probability"):
        core.set_impairment(TX, "loss", {"probability": 7})
    assert core.impairments()[TX]["loss"]["probability"] == 0.5  # a failed update changes nothing


def test_corruption_event_encodes_a_corrupt_message_and_is_counted():
    core = ChannelCore(CONFIG, seed=15)
    first = decode(core.corruption_event(rho=0.25))
    second = decode(core.corruption_event(sigma=0.3))
    assert isinstance(first, Corrupt) and (first.rho, first.sigma) == (0.25, 0.0)
    assert (second.rho, second.sigma) == (0.0, 0.3)
    assert first.seed != second.seed
    assert core.stats()["events"] == {"corrupt": 2, "id_desync": 1, "prototype_noise": 1}
    again = ChannelCore(CONFIG, seed=15)
    assert decode(again.corruption_event(rho=0.25)).seed == first.seed


def test_set_updates_merge_and_clear_keeps_totals():
    core = ChannelCore(CONFIG)
    state = core.set_impairment(TX, "loss", {"probability": 1.0})
    assert state["probability"] == 1.0 and state["counters"]["dropped"] == 0
    assert state["toxicity"] == 1.0 and state["types"] is None
    send(core, hits(10))
    state = core.set_impairment(TX, "loss", {"toxicity": 0.0})
    assert state["probability"] == 1.0 and state["counters"]["dropped"] == 10
    core.set_impairment(TX, "delay", {"delay_ms": 1})
    core.set_impairment(TX, "rate", {"bits_per_second": 1e9})
    assert list(core.impairments()[TX]) == ["rate", "loss", "delay"]  # pipeline order
    assert list(PIPELINE_ORDER) == list(IMPAIRMENTS)
    core.clear_impairment(TX, "loss")
    core.clear_impairment(TX, "loss")  # clearing what is not set is a no-op
    assert "loss" not in core.impairments()[TX]
    assert core.stats()[TX]["impairments"]["loss"]["dropped"] == 10
    core.set_impairment(TX, "loss", {"probability": 1.0})
    send(core, hits(5))
    assert core.stats()[TX]["impairments"]["loss"]["dropped"] == 15
    core.clear_all()
    assert core.impairments() == {TX: {}, RX: {}}
    assert core.stats()[TX]["dropped"] == 15
    assert set(impairment_schemas()) == set(IMPAIRMENTS)


def test_clearing_reorder_releases_what_it_held():
    core = ChannelCore(CONFIG)
    core.set_impairment(TX, "reorder", {"probability": 1.0, "after_messages": 5, "hold_ms": 1e5})
    assert send(core, hits(3)) == []
    core.clear_impairment(TX, "reorder")
    released = core.poll(1.0)
    assert [decode(d.data).seq for _, d in released] == [0, 1, 2]
    assert all(direction == TX and d.at >= 1.0 for direction, d in released)
    assert core.stats()[TX]["messages_out"] == 3 and core.stats()[TX]["held"] == 0


def test_stats_add_up():
    core = ChannelCore(CONFIG, seed=16)
    messages = news(1500)
    size = len(encode(messages[0]))
    core.set_impairment(TX, "rate", {"bits_per_second": 8 * size * 500, "queue_bytes": 5 * size})
    core.set_impairment(TX, "loss", {"probability": 0.1})
    core.set_impairment(TX, "duplicate", {"probability": 0.2})
    core.set_impairment(TX, "reorder", {"probability": 0.1, "after_messages": 3, "hold_ms": 1e4})
    core.set_impairment(RX, "loss", {"probability": 0.3})
    out = send(core, messages, dt=1e-3)  # twice the link's rate: the queue overflows
    send(core, [RefreshRequest(ref=1, seq=i) for i in range(500)], direction=RX)
    for direction in DIRECTIONS:
        s = core.stats()[direction]
        assert s["messages_in"] + s["duplicated"] == s["messages_out"] + s["dropped"] + s["held"]
    s = core.stats()[TX]
    assert s["impairments"]["rate"]["dropped"] > 0 and s["held"] > 0
    assert s["dropped"] == s["impairments"]["rate"]["dropped"] + s["impairments"]["loss"]["dropped"]
    assert s["messages_out"] == len(out)
    assert s["bytes_out"] == sum(len(d.data) for _, d in out)
    assert s["types_in"] == {"new": 1500} and s["types_out"] == {"new": len(out)}
    core.poll(1e6)
    s = core.stats()[TX]
    assert s["held"] == 0
    assert s["messages_in"] + s["duplicated"] == s["messages_out"] + s["dropped"]


# -- holding mode: what waits is rescheduled, never stranded; the backlog is bounded ---------------


def drain(core, until: float, now: float = 0.0) -> list[tuple[str, Delivery]]:
    """Poll a holding core at each time it asks for, from ``now`` up to ``until`` (bounded in
    count)."""
    out = []
    for _ in range(100_000):
        due = core.next_poll_at()
        if due is None or due > until:
            return out
        now = max(due, now)
        out += core.poll(now)
    raise AssertionError("the core never stopped asking to be polled")


def test_clearing_a_slow_rate_releases_its_whole_queue_at_once():
    core = ChannelCore(CONFIG, hold=True)
    core.set_impairment(TX, "rate", {"bits_per_second": 1.0})  # 1 bit/s: hours per message
    messages = news(50)
    assert len(send(core, messages)) == 0  # all queued inside the core
    assert core.stats()[TX]["held"] == 50 and core.next_poll_at() > 600
    core.clear_impairment(TX, "rate")
    released = drain(core, 1.0, now=1.0)
    assert [d.data for _, d in released] == [encode(m) for m in messages]  # in order
    assert all(d.at == pytest.approx(1.0) for _, d in released)
    s = core.stats()[TX]
    assert s["held"] == 0 and s["held_bytes"] == 0 and s["messages_out"] == 50
    assert s["messages_in"] + s["duplicated"] == s["messages_out"] + s["dropped"] + s["held"]


def test_changing_the_rate_reschedules_what_is_queued():
    core = ChannelCore(CONFIG, hold=True)
    core.set_impairment(TX, "rate", {"bits_per_second": 1.0})
    messages = news(20)
    send(core, messages, dt=0.0)
    size = len(encode(messages[0]))
    fast = 8 * size * 100.0  # 100 messages per second
    core.set_impairment(TX, "rate", {"bits_per_second": fast}, now=2.0)
    assert core.next_poll_at() < 2.0 + 1.0  # no longer hours away
    out = drain(core, 10.0)
    assert [d.data for _, d in out] == [encode(m) for m in messages]
    ats = np.array([d.at for _, d in out])
    sizes = np.array([len(encode(m)) for m in messages])
    assert ats[0] < 2.0 + 8 * sizes[0] / fast + 1e-9  # the first had sent 2 of its bits already
    assert np.diff(ats) == pytest.approx(8 * sizes[1:] / fast)  # the rest at the new rate
    assert core.stats()[TX]["held"] == 0


def test_changing_or_clearing_the_delay_moves_what_it_holds():
    core = ChannelCore(CONFIG, hold=True)
    core.set_impairment(TX, "delay", {"delay_ms": 10_000})
    send(core, hits(10))  # arrive at 0, 1, ..., 9 ms
    assert core.next_poll_at() == pytest.approx(10.0)
    core.set_impairment(TX, "delay", {"delay_ms": 100}, now=0.05)
    out = drain(core, 1.0, now=0.05)
    assert [decode(d.data).seq for _, d in out] == list(range(10))
    assert [d.at for _, d in out] == pytest.approx([i * 1e-3 + 0.1 for i in range(10)])

    core.set_impairment(TX, "delay", {"delay_ms": 600_000})
    send(core, hits(5), start=2.0)
    core.clear_impairment(TX, "delay")
    out = drain(core, 3.0, now=2.5)
    assert len(out) == 5 and core.stats()[TX]["held"] == 0


def test_holding_mode_sends_what_the_eager_mode_sends_when_nothing_changes():
    impairments = {
        "rate": {"bits_per_second": 2e6},
        "loss": {"probability": 0.05},
        "duplicate": {"probability": 0.05},
        "delay": {"delay_ms": 10, "jitter_ms": 3},
    }
    messages = [encode(m) for m in news(300) + hits(300)]

    def run(hold: bool) -> list[tuple[bytes, float]]:
        core = ChannelCore(CONFIG, seed=3, hold=hold)
        for name, attributes in impairments.items():
            core.set_impairment(TX, name, attributes)
        out = []
        for i, data in enumerate(messages):
            now = i * 1e-4  # faster than the rate: the queue builds up
            out += [(d.data, d.at) for _, d in drain(core, now, now=(i - 1) * 1e-4)]
            out += [(d.data, d.at) for d in core.on_data(TX, data, now)]
        out += [(d.data, d.at) for _, d in drain(core, 1e3)]
        return sorted(out, key=lambda x: (x[1], x[0]))

    eager, held = run(False), run(True)
    assert [d for d, _ in held] == [d for d, _ in eager]
    assert [at for _, at in held] == pytest.approx([at for _, at in eager])


def test_the_backlog_is_bounded_in_messages_and_bytes_and_drops_are_counted():
    core = ChannelCore(CONFIG, hold=True, max_held=10)
    core.set_impairment(TX, "rate", {"bits_per_second": 1.0})
    assert send(core, news(100)) == []
    s = core.stats()[TX]
    assert s["held"] == 10 and s["overflow"] == 90 and s["dropped"] == 90
    assert s["messages_in"] + s["duplicated"] == s["messages_out"] + s["dropped"] + s["held"]

    big = encode(New(seq=0, t=0.0, slot=0, latent=b"\0" * 100_000))
    core = ChannelCore(CONFIG, hold=True, max_held_bytes=350_000)
    core.set_impairment(TX, "delay", {"delay_ms": 5000})
    for i in range(10):
        assert core.on_data(TX, big, i * 1e-3) == []
    s = core.stats()[TX]
    assert s["held"] == 3 and s["held_bytes"] == 3 * len(big) and s["overflow"] == 7
    core.clear_all()
    assert len(drain(core, 1.0, now=0.5)) == 3
    s = core.stats()[TX]
    assert s["held"] == 0 and s["held_bytes"] == 0
    assert s["messages_in"] == s["messages_out"] + s["dropped"]


# -- an authenticated link: the channel holds no key -----------------------------------------------


@pytest.mark.parametrize(
    ("name", "attributes"),
    [
        ("bit_errors", {"ber": 1e-2}),
        ("id_desync", {"probability": 0.5}),
        ("prototype_noise", {"sigma": 0.5}),
        ("bit_errors", {"ber": 1e-3, "whole_frame": True}),
    ],
)
def test_impairments_act_on_sealed_messages_and_what_they_alter_fails_its_tag(name, attributes):
    """Field-aware impairments still read a sealed message (its seal kept as it came), so every
    message they rewrite fails authentication at the far end and every other one opens."""
    from shared.protocol.seal import LinkAuth, MessageAuthError, session_keys

    keys = session_keys(b"secret", b"t" * 16, b"r" * 16)
    tx, rx = LinkAuth(keys, "tx"), LinkAuth(keys, "rx")
    messages = news(400)
    sealed = [tx.seal(encode(m)) for m in messages]
    core = ChannelCore(CONFIG, seed=3)
    core.set_impairment(TX, name, attributes)
    out = send(core, sealed)
    altered = opened = 0
    for i, delivery in out:
        try:
            body = rx.open(delivery.data)
        except MessageAuthError as exc:
            # A whole-frame flip may hit the seal's own header: then it reads as unsealed.
            assert exc.kind == "forged" or attributes.get("whole_frame")
            assert delivery.data != sealed[i]
            altered += 1
            continue
        assert decode(body) == messages[i] and delivery.data == sealed[i]
        opened += 1
    assert altered > 0 and opened > 0 and altered + opened == len(out) == 400
    counters = core.impairments()[TX][name]["counters"]
    changed = counters.get("desynced", counters.get("noised", counters.get("corrupted")))
    assert changed is None or changed == altered
