"""Predictive (DELTA) latents and the rate-distortion-optimized decision."""

import numpy as np
import pytest

from receiver.core import ReceiverCore
from shared.accounting import Outcome, semantic_bits
from shared.coding import rdo, residual
from shared.coding.quantizer import normalize, quantize
from shared.coding.residual import SCALE_LEVELS, delta_bits
from shared.config import ConfigError, build_config
from shared.protocol.messages import Delta, Hit, New, decode, encode
from tests.synthetic import deliver, drifting_latents
from transmitter.core import TransmitterCore, fixed_message


def _cfg(**kw):
    return build_config({"threshold": 0.95, "capacity": 64, "memory": "vq", **kw}, read_env=False)


def test_scales_are_exact_and_cover_every_residual():
    scales = [residual.scale_value(c) for c in range(SCALE_LEVELS)]
    assert scales[0] == 2.0 and all(a > b for a, b in zip(scales, scales[1:], strict=False))
    assert all(np.float32(s) == s for s in scales)
    rng = np.random.default_rng(0)
    for peak in rng.uniform(1e-4, 2.0, size=200):
        code = residual.scale_code_for(peak)
        assert residual.scale_value(code) >= np.float32(peak)
        assert code == SCALE_LEVELS - 1 or residual.scale_value(code + 1) < np.float32(peak)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_delta_reconstruction_is_a_quantized_latent_closer_with_more_bits(bits):
    rng = np.random.default_rng(bits)
    base = normalize(rng.standard_normal(64))
    z = normalize(base + 0.2 * rng.standard_normal(64).astype(np.float32))
    scale, codes = residual.quantize_residual(z, base, bits)
    assert codes.max() <= 2 * residual.residual_levels(bits)
    stored, shown = residual.reconstruct_delta(base, scale, codes, bits, 8)
    again, shown_again = residual.reconstruct_delta(base.copy(), scale, codes.copy(), bits, 8)
    assert shown.tobytes() == shown_again.tobytes() and stored.tobytes() == again.tobytes()
    assert np.array_equal(stored, quantize(shown, 8))  # the prototype is a plain b-bit latent
    assert rdo.distortion(z, shown) < rdo.distortion(z, base)


def test_residual_gains_with_bits():
    rng = np.random.default_rng(5)
    base = normalize(rng.standard_normal(64))
    z = normalize(base + 0.15 * rng.standard_normal(64).astype(np.float32))
    d = [
        rdo.distortion(
            z, residual.reconstruct_delta(base, *residual.quantize_residual(z, base, b), b, 8)[1]
        )
        for b in (2, 3, 4)
    ]
    assert d[0] > d[1] > d[2]


@pytest.mark.parametrize("extra", [{}, {"decision": "rdo", "rdo_lambda": 2e-4}])
def test_delta_prototypes_are_bit_identical_on_both_ends(extra):
    cfg = _cfg(delta=True, **extra)
    latents = drifting_latents(n=150)
    tx, rx = TransmitterCore(cfg), ReceiverCore(cfg)
    for seq, z in enumerate(latents):
        decision = tx.on_frame(seq, 0.0, z)
        (frame,) = deliver(tx, rx, decision.message)
        assert frame.outcome is Outcome.DECODED
        assert frame.latent.tobytes() == decision.latent.tobytes()
        assert rx.digest == tx.memory.digest()
        if isinstance(decision.message, Delta):
            assert semantic_bits(decision.message, cfg) == delta_bits(cfg, decision.message.bits)
    assert tx.counters.deltas > 0 and rx.counters.deltas == tx.counters.deltas


def test_threshold_rule_sends_delta_only_when_it_reaches_tau():
    cfg = _cfg(delta=True, threshold=0.97)
    latents = drifting_latents(n=100)
    tx = TransmitterCore(cfg)
    for seq, z in enumerate(latents):
        decision = tx.on_frame(seq, 0.0, z)
        cos = float(np.dot(z, decision.latent))
        if isinstance(decision.message, Delta):
            assert cos >= 0.97
            assert semantic_bits(decision.message, cfg) < cfg.latent_dim * cfg.bits_per_value


def _brute_force(tx, seq, z, lam):
    """Every candidate coded against the Tx's current state; the min of D + λ·R by hand."""
    cfg = tx.config
    if tx.coder is not None:
        tx.coder.begin(seq)
    recall = tx.memory.recall(z)
    slot = tx.memory.slot_for_new()
    last = tx.coder.last_ref if tx.coder is not None else -1
    cands = rdo.candidates(
        z, tx.memory, recall, cfg, -1 if slot is None else slot, last, tx.hasher.cue
    )
    best, best_cost = None, np.inf
    for cand in cands:
        if tx.coder is not None:
            payload = tx.coder.encode(cand.symbols).payload
            rate = 8 * len(payload)
        else:
            payload = encode(fixed_message(cand.symbols, seq, 0.0, cfg))
            rate = semantic_bits(decode(payload), cfg)
        d = 1.0 - float(np.dot(z.astype(np.float64), cand.latent.astype(np.float64)))
        if d + lam * rate < best_cost - 1e-15:
            best, best_cost = (payload, cand), d + lam * rate
    return best


@pytest.mark.parametrize("coded", [False, True], ids=["fixed", "coded"])
@pytest.mark.parametrize("lam", [1e-5, 1e-4, 1e-3])
def test_rdo_choice_equals_brute_force(coded, lam):
    cfg = _cfg(decision="rdo", rdo_lambda=lam, delta=True, entropy_coding=coded)
    latents = drifting_latents(n=80, noise=0.02)
    tx = TransmitterCore(cfg)
    kinds = set()
    for seq, z in enumerate(latents):
        payload, cand = _brute_force(tx, seq, z, lam)
        decision = tx.on_frame(seq, 0.0, z)
        kinds.add(decision.kind)
        assert decision.kind == cand.kind
        assert decision.latent.tobytes() == cand.latent.tobytes()
        if coded:
            assert decision.message.payload == payload
        else:
            assert encode(decision.message) == payload
    assert len(kinds) >= 2


def test_lagrangian_choice_is_the_argmin():
    rng = np.random.default_rng(3)
    for _ in range(100):
        n = int(rng.integers(1, 7))
        cands = [rdo.Candidate(None, None, None, float(d)) for d in rng.uniform(0, 0.1, n)]
        rates = rng.integers(0, 600, n).astype(float)
        lam = float(10 ** rng.uniform(-6, -2))
        costs = [c.distortion + lam * r for c, r in zip(cands, rates, strict=True)]
        assert costs[rdo.lagrangian_choice(cands, rates, lam)] == min(costs)


def test_paper_configs_send_only_paper_messages(latents):
    tx = TransmitterCore(_cfg())
    for seq, z in enumerate(latents[:60]):
        decision = tx.on_frame(seq, 0.0, z)
        assert type(decision.message) in (Hit, New) and decision.kind is None
    assert tx.coder is None


def test_link_tool_configuration_is_validated():
    with pytest.raises(ConfigError, match="index"):
        build_config({"delta": True, "transmission": "soft"}, read_env=False)
    with pytest.raises(ConfigError, match="delta_bits"):
        build_config({"delta": True, "delta_bits": "2,9"}, read_env=False)
    a = build_config({"delta_bits": "4, 2,3"}, read_env=False)
    assert a.delta_bits == "2,3,4" and a.digest() == build_config(read_env=False).digest()
    assert build_config({"decision": "rdo"}, read_env=False).digest() != a.digest()


def test_delta_with_a_bad_base_cue_waits_for_a_refresh_of_its_slot():
    cfg = _cfg(delta=True, threshold=0.97)
    latents = drifting_latents(n=120)
    tx, rx = TransmitterCore(cfg), ReceiverCore(cfg)
    for seq, z in enumerate(latents):
        decision = tx.on_frame(seq, 0.0, z)
        if isinstance(decision.message, Delta) and seq > 20:
            base = decision.message.ref
            rx.memory.prototypes[base] = normalize(rx.memory.prototypes[base][::-1].copy())
            rx.slot_cues[base] = rx.hasher.cue(rx.memory.prototypes[base])
            step = rx.on_message(decode(encode(decision.message)), 0.0)
            if step.frames[0].outcome is Outcome.RECOVERED_LOOKUP:
                continue  # pragma: no cover (a near-duplicate answered the lookup)
            assert step.frames[0].outcome is None
            (request,) = step.replies
            assert request.ref == decision.message.slot
            (refresh,) = tx.on_message(request)
            (final,) = rx.on_message(refresh, 0.0).frames
            assert final.outcome is Outcome.RECOVERED_REFRESH
            assert final.latent.tobytes() == decision.latent.tobytes()
            return
        deliver(tx, rx, decision.message)
    pytest.fail("no DELTA was sent")  # pragma: no cover
