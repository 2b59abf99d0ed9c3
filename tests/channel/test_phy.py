"""The ``phy`` impairment and its closed forms: BER vs Monte Carlo, FEC, fading, airtime,
selectors aimed at one message type, the REST API."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fastapi.testclient import TestClient

from channel.core import ChannelCore, ImpairmentError
from channel.impairments import IMPAIRMENTS, PIPELINE_ORDER, impairment_schemas
from channel.impairments import phy as phy_module
from channel.impairments.phy import (
    bit_error_probability,
    coded_bits,
    frame_symbols,
    latent_kappa,
    message_error_probability,
    q_function,
    residual_bit_error_probability,
    simulate_ber,
)
from channel.server import build_app
from shared.protocol.messages import Digest, Hit, New, Refresh, decode, encode
from shared.service import ChannelSettings
from tests.synthetic import CONFIG, TX, differing_bits, hits, news, send, within

LATENT_BITS = CONFIG.latent_dim * CONFIG.bits_per_value  # 512


def db(x: float) -> float:
    return 10.0 ** (x / 10.0)


def flips_per_message(messages: list[New], out) -> np.ndarray:
    """Payload bits flipped in each delivered NEW (indexed like ``messages``)."""
    counts = np.zeros(len(messages), dtype=np.int64)
    for i, delivery in out:
        counts[i] = differing_bits(messages[i].latent, decode(delivery.data).latent)
    return counts


def phy_counters(core: ChannelCore, direction: str = TX) -> dict:
    return core.impairments()[direction]["phy"]["counters"]


# -- closed forms vs Monte Carlo -------------------------------------------------------------------


@pytest.mark.parametrize(("ebn0_db", "bits"), [(0, 200_000), (4, 400_000), (7, 1_000_000)])
def test_bpsk_awgn_matches_q_of_sqrt_2ebn0(ebn0_db, bits):
    expected = q_function(math.sqrt(2 * db(ebn0_db)))
    assert bit_error_probability(ebn0_db, "bpsk") == pytest.approx(expected, rel=1e-12)
    assert within(simulate_ber(ebn0_db, "bpsk", bits=bits, seed=ebn0_db), expected, bits)


def test_qpsk_is_bpsk_per_bit_and_snr_modes_convert():
    for x in (0.0, 3.0, 6.0, 9.0):
        assert bit_error_probability(x, "qpsk") == pytest.approx(bit_error_probability(x, "bpsk"))
        # Es/N0 = log2(M)·Eb/N0: QPSK at Es/N0 = x + 3.01 dB is BPSK at Eb/N0 = x
        esn0 = x + 10 * math.log10(2)
        assert bit_error_probability(esn0, "qpsk", snr_mode="esn0") == pytest.approx(
            bit_error_probability(x, "bpsk")
        )
    bits = 400_000
    assert within(
        simulate_ber(4, "qpsk", bits=bits, seed=3), bit_error_probability(4, "bpsk"), bits
    )


@pytest.mark.parametrize(("modulation", "ebn0_db"), [("16qam", 7), ("16qam", 10), ("64qam", 10)])
def test_qam_approximation_within_15_percent_and_exact_gray_ber_within_sampling(
    modulation, ebn0_db
):
    bits = 600_000
    measured = simulate_ber(ebn0_db, modulation, bits=bits, seed=ebn0_db)
    approximate = bit_error_probability(ebn0_db, modulation)
    exact = bit_error_probability(ebn0_db, modulation, ber_formula="exact")
    assert measured == pytest.approx(approximate, rel=0.15)
    assert within(measured, exact, bits)


def test_exact_16qam_is_the_textbook_three_term_formula():
    for x in (0.0, 5.0, 10.0):
        arg = math.sqrt(0.8 * db(x))
        textbook = 0.75 * q_function(arg) + 0.5 * q_function(3 * arg) - 0.25 * q_function(5 * arg)
        assert bit_error_probability(x, "16qam", ber_formula="exact") == pytest.approx(textbook)


@pytest.mark.parametrize("ebn0_db", [0, 10, 20])
def test_rayleigh_average_bpsk_closed_form_matches_simulation(ebn0_db):
    gamma = db(ebn0_db)
    closed = 0.5 * (1 - math.sqrt(gamma / (1 + gamma)))
    assert bit_error_probability(ebn0_db, "bpsk", "rayleigh") == pytest.approx(closed)
    bits = 400_000  # fading per symbol: independent errors, binomial sampling error
    assert within(simulate_ber(ebn0_db, "bpsk", "rayleigh", bits=bits, seed=1), closed, bits)


def test_rayleigh_numerical_average_agrees_with_closed_forms_and_16qam_simulation():
    for modulation in ("bpsk", "16qam", "64qam"):
        for x in (0.0, 10.0, 30.0):
            gamma = phy_module.coded_ebn0(x, modulation)
            p = phy_module._coded_ber_array(gamma * phy_module._T2, modulation, "approximate")
            numerical = phy_module._fading_average(p)
            assert numerical == pytest.approx(
                bit_error_probability(x, modulation, "rayleigh"), rel=1e-6
            )
    bits = 400_000
    exact = bit_error_probability(15, "16qam", "rayleigh", ber_formula="exact")
    assert within(simulate_ber(15, "16qam", "rayleigh", bits=bits, seed=2), exact, bits)


# -- FEC -------------------------------------------------------------------------------------------


def test_residual_formulas():
    for p in (1e-4, 1e-2, 0.1, 0.3):
        assert residual_bit_error_probability(p, "repetition3") == pytest.approx(
            3 * p**2 - 2 * p**3
        )
        hamming = residual_bit_error_probability(p, "hamming74")
        assert (hamming < p) == (p <= 0.1)  # the code hurts once p is large
        # a block fails when two or more of its seven bits are wrong; it then decodes to
        # another codeword, whose four information bits differ in one to four places
        block = 1 - (1 - p) ** 7 - 7 * p * (1 - p) ** 6
        assert block / 4 <= hamming <= block
    assert residual_bit_error_probability(1e-4, "hamming74") == pytest.approx(9e-8, rel=1e-3)


@pytest.mark.parametrize("fec", ["repetition3", "hamming74"])
def test_fec_residual_matches_monte_carlo_and_beats_no_code(fec):
    bits = 1_200_000
    expected = bit_error_probability(4, "bpsk", fec=fec)
    assert expected < bit_error_probability(4, "bpsk") / 5
    measured = simulate_ber(4, "bpsk", fec=fec, bits=bits, seed=5)
    # a failing Hamming block wrongs up to 3 bits at once: allow for the clustering
    assert within(measured, expected, bits, sds=4.5 * math.sqrt(3))
    # Rayleigh, one fade per codeword (blocks aligned with the codewords): numerical average
    fading = bit_error_probability(10, "qpsk", "rayleigh", fec=fec)
    assert fading < bit_error_probability(10, "qpsk", "rayleigh")
    coherence = 42 if fec == "repetition3" else 14
    measured = simulate_ber(
        10, "qpsk", "rayleigh", fec=fec, bits=600_000, coherence_symbols=coherence
    )
    assert measured == pytest.approx(fading, rel=0.12)


def test_per_information_bit_snr_charges_the_code_its_redundancy():
    # at equal energy per information bit a hard-decided repetition code loses (documented)
    uncoded = bit_error_probability(7, "bpsk")
    coded = bit_error_probability(7, "bpsk", fec="repetition3", snr_mode="ebn0_info")
    assert coded > uncoded
    bits = 600_000
    measured = simulate_ber(7, "bpsk", fec="repetition3", snr_mode="ebn0_info", bits=bits)
    assert within(measured, coded, bits)


def test_fec_overhead_shows_in_coded_bits_symbols_and_airtime():
    messages = news(200)
    frames = [8 * len(encode(m)) for m in messages]
    figures = {}
    for fec in ("none", "repetition3", "hamming74"):
        core = ChannelCore(CONFIG)
        core.set_impairment(
            TX, "phy", {"snr_db": 60, "modulation": "16qam", "fec": fec, "symbol_rate": 2e5}
        )
        out = send(core, messages)
        assert [d.data for _, d in out] == [encode(m) for m in messages]  # 60 dB: no errors
        c = phy_counters(core)
        symbols = [frame_symbols(f, LATENT_BITS, "16qam", fec) for f in frames]
        coded = sum(coded_bits(f - LATENT_BITS, fec) + coded_bits(LATENT_BITS, fec) for f in frames)
        assert c["frame_bits"] == sum(frames)
        assert c["payload_bits"] == 200 * LATENT_BITS
        assert c["coded_bits"] == coded
        assert c["symbols"] == sum(symbols)
        assert c["airtime_s"] == pytest.approx(sum(symbols) / 2e5)
        link = core.impairments()[TX]["phy"]["link"]
        assert link["last_airtime_s"] == pytest.approx(symbols[-1] / 2e5)
        assert link["payload_spectral_efficiency"] == pytest.approx(
            200 * LATENT_BITS / sum(symbols)
        )
        # κ of the raw latent link: the same figure for one NEW frame (headers differ by a byte)
        assert latent_kappa(CONFIG, "16qam", fec) == pytest.approx(
            link["payload_spectral_efficiency"], rel=0.02
        )
        figures[fec] = c["coded_bits"], c["airtime_s"], link["spectral_efficiency"]
    assert figures["none"][0] == sum(frames)
    assert figures["repetition3"][0] == 3 * sum(frames)
    assert figures["hamming74"][0] == pytest.approx(7 / 4 * sum(frames), rel=0.01)
    assert figures["none"][1] < figures["hamming74"][1] < figures["repetition3"][1]
    assert figures["none"][2] == pytest.approx(4.0)  # bits/s/Hz of 16-QAM at Nyquist
    assert figures["repetition3"][2] == pytest.approx(4.0 / 3)


# -- the impairment on a stream of NEW messages ----------------------------------------------------


@pytest.mark.parametrize(
    "attributes",
    [
        {"snr_db": 6, "modulation": "qpsk"},
        {"snr_db": 9, "modulation": "16qam"},
        {"snr_db": 12, "modulation": "64qam", "snr_mode": "esn0"},
        {"snr_db": 1, "modulation": "bpsk", "fec": "repetition3"},
    ],
)
def test_awgn_flip_rate_matches_bit_error_probability_and_every_flip_is_counted(attributes):
    messages = news(2000)
    core = ChannelCore(CONFIG, seed=11)
    core.set_impairment(TX, "phy", attributes)
    out = send(core, messages)
    assert len(out) == len(messages)
    counts = flips_per_message(messages, out)
    expected = bit_error_probability(
        attributes["snr_db"],
        attributes["modulation"],
        fec=attributes.get("fec", "none"),
        snr_mode=attributes.get("snr_mode", "ebn0"),
    )
    nbits = len(messages) * LATENT_BITS
    assert within(counts.sum() / nbits, expected, nbits)
    c = phy_counters(core)
    assert c["bits_flipped"] == counts.sum() > 0
    assert c["messages_corrupted"] == np.count_nonzero(counts)
    assert c["matched"] == len(messages)
    assert core.impairments()[TX]["phy"]["link"]["bit_error_probability"] == pytest.approx(expected)
    corrupted = np.count_nonzero(counts) / len(messages)
    assert within(corrupted, 1 - (1 - expected) ** LATENT_BITS, len(messages))


def test_hamming_failures_come_in_groups_of_a_block_at_the_residual_rate():
    messages = news(2000)
    core = ChannelCore(CONFIG, seed=3)
    core.set_impairment(TX, "phy", {"snr_db": 3, "modulation": "bpsk", "fec": "hamming74"})
    out = send(core, messages)
    counts = flips_per_message(messages, out)
    expected = bit_error_probability(3, "bpsk", fec="hamming74")
    nbits = len(messages) * LATENT_BITS
    assert within(counts.sum() / nbits, expected, nbits, sds=4.5 * math.sqrt(3))
    assert phy_counters(core)["bits_flipped"] == counts.sum()
    # the chance that a NEW arrives intact follows the block-error closed form
    intact = np.count_nonzero(counts == 0) / len(messages)
    corrupted = message_error_probability(LATENT_BITS, 3, "bpsk", fec="hamming74")
    assert within(1 - intact, corrupted, len(messages))
    # errors sit within 4-bit groups: flipped bits of one message share blocks
    grouped = 0
    for i, delivery in out:
        diff = np.frombuffer(messages[i].latent, np.uint8) ^ np.frombuffer(
            decode(delivery.data).latent, np.uint8
        )
        bits = np.flatnonzero(np.unpackbits(diff))
        grouped += len(bits) - len(np.unique(bits // 4))
    assert grouped > 0.2 * counts.sum()


def test_rayleigh_errors_are_burstier_than_binomial_and_fades_are_counted():
    messages = news(3000)
    core = ChannelCore(CONFIG, seed=5)
    core.set_impairment(TX, "phy", {"snr_db": 10, "modulation": "qpsk", "channel": "rayleigh"})
    out = send(core, messages)
    counts = flips_per_message(messages, out)
    average = bit_error_probability(10, "qpsk", "rayleigh")
    rate = counts.sum() / (len(messages) * LATENT_BITS)
    assert rate == pytest.approx(average, rel=0.15)  # fades are drawn per message: loose
    binomial_variance = LATENT_BITS * rate * (1 - rate)
    assert counts.var() > 20 * binomial_variance
    # corruption of a NEW: the fading average, far below 1 − (1 − BER)^N
    corrupted = np.count_nonzero(counts) / len(messages)
    expected = message_error_probability(LATENT_BITS, 10, "qpsk", "rayleigh")
    assert within(corrupted, expected, len(messages))
    assert expected < 0.5 < 1 - (1 - average) ** LATENT_BITS
    c = phy_counters(core)
    assert c["bits_flipped"] == counts.sum()
    assert c["fade_blocks"] == len(messages)
    assert within(c["deep_fade_blocks"] / len(messages), 1 - math.exp(-0.1), len(messages))


def test_coherence_messages_holds_the_fade_over_k_messages():
    messages = news(1000)
    core = ChannelCore(CONFIG, seed=2)
    core.set_impairment(
        TX,
        "phy",
        {"snr_db": 8, "modulation": "16qam", "channel": "rayleigh", "coherence_messages": 10},
    )
    counts = flips_per_message(messages, send(core, messages))
    assert phy_counters(core)["fade_blocks"] == 100
    # the same fade for ten messages: errors per block of ten vary far more than within one
    per_block = counts.reshape(100, 10)
    within_block = per_block.var(axis=1).mean()
    between_blocks = per_block.mean(axis=1).var()
    assert between_blocks > 30 * within_block / 10


def test_coherence_symbols_runs_the_fading_over_the_symbol_stream():
    messages = news(500)
    core = ChannelCore(CONFIG, seed=4)
    core.set_impairment(
        TX,
        "phy",
        {"snr_db": 10, "modulation": "qpsk", "channel": "rayleigh", "coherence_symbols": 100},
    )
    counts = flips_per_message(messages, send(core, messages))
    c = phy_counters(core)
    assert c["fade_blocks"] == math.ceil(c["symbols"] / 100)
    assert c["bits_flipped"] == counts.sum()
    rate = counts.sum() / (len(messages) * LATENT_BITS)
    assert rate == pytest.approx(bit_error_probability(10, "qpsk", "rayleigh"), rel=0.25)
    assert counts.var() > 5 * LATENT_BITS * rate * (1 - rate)


def test_whole_frame_mode_and_undecodable_frames():
    messages = news(300)
    core = ChannelCore(CONFIG, seed=6)
    core.set_impairment(TX, "phy", {"snr_db": 2, "modulation": "bpsk", "whole_frame": True})
    out = send(core, messages + [b"\xc1not msgpack"])
    flipped = sum(differing_bits(encode(messages[i]), d.data) for i, d in out if i < 300)
    c = phy_counters(core)
    assert c["bits_flipped"] >= flipped > 0  # the garbage frame takes errors too
    assert c["payload_bits"] == 300 * LATENT_BITS
    assert c["skipped_undecodable"] == 0
    # field mode: a frame that is not msgpack has no payload fields; a NEW that does not
    # unpack is skipped (counted); both still take airtime
    field = ChannelCore(CONFIG, seed=6)
    field.set_impairment(TX, "phy", {"snr_db": 2})
    truncated = encode(messages[0])[:-5]
    out = send(field, [b"\xc1not msgpack", truncated, truncated])
    assert [d.data for _, d in out] == [b"\xc1not msgpack", truncated, truncated]
    c = phy_counters(field)
    assert c["skipped_undecodable"] == 2 and c["matched"] == 3 and c["bits_flipped"] == 0
    assert c["symbols"] == sum(frame_symbols(8 * len(d.data), 0, "qpsk") for _, d in out)


def test_airtime_delay_serializes_messages_on_one_transmitter():
    messages = news(10)
    core = ChannelCore(CONFIG)
    core.set_impairment(TX, "phy", {"snr_db": 60, "symbol_rate": 1e5, "add_airtime_delay": True})
    out = send(core, messages, dt=0.0)  # all offered at t = 0
    airtimes = [frame_symbols(8 * len(encode(m)), LATENT_BITS, "qpsk") / 1e5 for m in messages]
    assert [d.at for _, d in out] == pytest.approx(np.cumsum(airtimes).tolist())
    later = send(core, messages[:1], start=1.0)
    assert later[0][1].at == pytest.approx(1.0 + airtimes[0])  # an idle link: no queueing
    plain = ChannelCore(CONFIG)
    plain.set_impairment(TX, "phy", {"snr_db": 60, "symbol_rate": 1e5})
    assert all(d.at == 0.0 for _, d in send(plain, messages, dt=0.0))


def test_same_seed_same_result():
    messages = news(300) + hits(100)
    attributes = {
        "snr_db": 6,
        "modulation": "16qam",
        "channel": "rayleigh",
        "coherence_symbols": 50,
        "fec": "hamming74",
    }

    def run(seed):
        core = ChannelCore(CONFIG, seed=seed)
        core.set_impairment(TX, "phy", attributes)
        return [d.data for _, d in send(core, messages)], phy_counters(core)

    assert run(7) == run(7)
    assert run(7)[0] != run(8)[0]


# -- protocol-aware: aimed at one message type -----------------------------------------------------


def mixed_stream(n: int) -> list:
    """n each of NEW, HIT, REFRESH and DIGEST, interleaved, with distinct sequence numbers."""
    new, hit = news(n, first=0), hits(n, first=n)
    latent = news(1, seed=9)[0].latent
    refresh = [Refresh(ref=i % CONFIG.capacity, seq=2 * n + i, latent=latent) for i in range(n)]
    digest = [
        Digest(seq=3 * n + i, count=1, digest="0" * 64, slot_hashes=b"abcd") for i in range(n)
    ]
    return [m for group in zip(new, hit, refresh, digest, strict=True) for m in group]


@pytest.mark.parametrize(
    ("name", "attributes"),
    [
        ("phy", {"snr_db": 0, "modulation": "64qam", "channel": "rayleigh"}),
        ("phy", {"snr_db": 0, "modulation": "bpsk", "whole_frame": True}),
        ("loss", {"probability": 0.5}),
    ],
)
def test_impairment_aimed_at_new_never_touches_other_types(name, attributes):
    messages = mixed_stream(1000)
    core = ChannelCore(CONFIG, seed=1)
    core.set_impairment(TX, name, {**attributes, "types": ["new"]})
    out = send(core, messages)
    touched_news = 0
    delivered = {i for i, _ in out}
    for i, delivery in out:
        if isinstance(messages[i], New):
            touched_news += delivery.data != encode(messages[i])
        else:
            assert delivery.data == encode(messages[i])
    others = [i for i, m in enumerate(messages) if not isinstance(m, New)]
    assert set(others) <= delivered  # none of them lost either
    assert core.impairments()[TX][name]["counters"]["matched"] == 1000
    lost_news = len(messages) - len(out)
    assert touched_news + lost_news > 400  # and the NEWs were hit hard
    if name == "phy":
        assert phy_counters(core)["symbols"] > 0
        assert phy_counters(core)["payload_bits"] == 1000 * LATENT_BITS


def test_seq_range_limits_an_impairment_aimed_at_new():
    messages = mixed_stream(1000)
    core = ChannelCore(CONFIG, seed=2)
    core.set_impairment(
        TX, "phy", {"snr_db": -5, "modulation": "bpsk", "types": ["new"], "seq_range": [100, 299]}
    )
    out = send(core, messages)
    for i, delivery in out:
        m = messages[i]
        inside = isinstance(m, New) and 100 <= m.seq <= 299
        assert (delivery.data != encode(m)) == inside  # −5 dB: every message in range is hit
    assert phy_counters(core)["matched"] == 200
    assert phy_counters(core)["messages_corrupted"] == 200


def test_hits_take_errors_in_their_reference_and_cue_fields_only():
    messages = hits(1000)
    core = ChannelCore(CONFIG, seed=3)
    core.set_impairment(TX, "phy", {"snr_db": 2, "modulation": "qpsk", "types": ["hit"]})
    out = send(core, messages)
    flipped = 0
    for i, delivery in out:
        got, sent = decode(delivery.data), messages[i]
        assert isinstance(got, Hit) and (got.seq, got.t) == (sent.seq, sent.t)
        assert all(0 <= r < 1 << CONFIG.index_bits for r in got.refs)
        assert 0 <= got.cue < 1 << CONFIG.cue_bits
        flipped += sum(bin(a ^ b).count("1") for a, b in zip(got.refs, sent.refs, strict=True))
        flipped += bin(got.cue ^ sent.cue).count("1")
    assert phy_counters(core)["bits_flipped"] == flipped > 0


# -- registry, schema, REST ------------------------------------------------------------------------


def test_phy_is_registered_between_loss_and_bit_errors_with_a_described_schema():
    assert IMPAIRMENTS["phy"] is phy_module.Phy
    assert PIPELINE_ORDER.index("loss") < PIPELINE_ORDER.index("phy")
    assert PIPELINE_ORDER.index("phy") < PIPELINE_ORDER.index("bit_errors")
    schema = impairment_schemas()["phy"]
    assert schema["title"] == "phy"
    for field, spec in schema["properties"].items():
        assert spec.get("description"), field
    assert set(schema["properties"]["modulation"]["enum"]) == {"bpsk", "qpsk", "16qam", "64qam"}
    assert set(schema["properties"]["fec"]["enum"]) == {"none", "repetition3", "hamming74"}


def test_bad_attributes_and_arguments_are_named():
    core = ChannelCore(CONFIG)
    with pytest.raises(ImpairmentError, match="modulation"):
        core.set_impairment(TX, "phy", {"modulation": "8psk"})
    with pytest.raises(ImpairmentError, match="symbol_rate"):
        core.set_impairment(TX, "phy", {"symbol_rate": 0})
    with pytest.raises(ImpairmentError, match="coherence_symbols"):
        core.set_impairment(TX, "phy", {"coherence_symbols": 0})
    with pytest.raises(ValueError, match="modulation"):
        bit_error_probability(5, "8psk")
    with pytest.raises(ValueError, match="fec"):
        bit_error_probability(5, "bpsk", fec="turbo")
    with pytest.raises(ValueError, match="channel"):
        bit_error_probability(5, "bpsk", "rician")


def test_rest_api_sets_phy_through_the_registry():
    app = build_app(CONFIG, ChannelSettings(impair=[], channel_impairments={}, link_port=0))
    with TestClient(app) as client:
        attributes = {"snr_db": 7, "modulation": "16qam", "channel": "rayleigh", "types": ["new"]}
        response = client.post(
            "/impairments/tx_to_rx", json={"type": "phy", "attributes": attributes}
        )
        assert response.status_code == 201, response.text
        view = response.json()
        assert view["name"] == "phy" and view["type"] == "phy"
        state = view["attributes"]
        assert state["modulation"] == "16qam" and state["types"] == ["new"]
        assert view["counters"]["symbols"] == 0
        assert view["derived"]["link"]["bit_error_probability"] == pytest.approx(
            bit_error_probability(7, "16qam", "rayleigh")
        )
        patch = {"attributes": {"fec": "hamming74"}}
        merged = client.patch("/impairments/tx_to_rx/phy", json=patch).json()["attributes"]
        assert merged["modulation"] == "16qam" and merged["fec"] == "hamming74"
        bad = client.patch("/impairments/tx_to_rx/phy", json={"attributes": {"channel": "rician"}})
        assert bad.status_code == 422 and "channel" in bad.text
        assert [v["name"] for v in client.get("/impairments/tx_to_rx").json()] == ["phy"]


def test_kappa_is_the_latent_bits_per_symbol_of_one_new_frame_by_hand():
    frame = 8 * len(encode(New(seq=0, t=0.0, slot=0, latent=bytes(64))))
    assert frame == 840  # premise: the msgpack NEW frame of a 64-byte latent
    assert latent_kappa(CONFIG, "qpsk") == 512 / 420  # ⌈840 / 2⌉ QPSK symbols
    # Hamming(7,4) codes the header (328 bits: 82 blocks) and the payload (128 blocks) apart:
    # 7·(82 + 128) = 1470 coded bits in ⌈1470 / 4⌉ = 368 16-QAM symbols.
    assert latent_kappa(CONFIG, "16qam", "hamming74") == 512 / 368
    assert latent_kappa(CONFIG, "bpsk", "repetition3") == 512 / (3 * 840)
