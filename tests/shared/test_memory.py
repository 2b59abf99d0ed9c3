import math

import numpy as np
import pytest

from shared.coding.quantizer import normalize, quantize
from shared.config import build_config
from shared.memory.store import Memory, MemoryAccessError, hopfield_retrieve


def _filled(cfg, n, seed=0):
    rng = np.random.default_rng(seed)
    mem = Memory(cfg)
    for _ in range(n):
        mem.store(mem.slot_for_new(), quantize(normalize(rng.standard_normal(cfg.latent_dim)), 8))
    return mem


def _brute_force_hopfield(z, patterns, beta):
    sims = [sum(float(a) * float(b) for a, b in zip(p, z, strict=True)) for p in patterns]
    top = max(sims)
    weights = [math.exp(beta * (s - top)) for s in sims]
    total = sum(weights)
    state = [
        sum(w / total * float(p[k]) for w, p in zip(weights, patterns, strict=True))
        for k in range(len(z))
    ]
    norm = math.sqrt(sum(v * v for v in state))
    return sum(v / norm * float(q) for v, q in zip(state, z, strict=True))


@pytest.mark.parametrize("kind", ["vq", "hopfield"])
def test_hit_decisions_agree_with_brute_force(kind):
    cfg = build_config(
        {"memory": kind, "threshold": 0.8, "beta": 8.0, "capacity": 40, "latent_dim": 16},
        read_env=False,
    )
    mem = _filled(cfg, 30)
    patterns = mem.prototypes[:30].astype(np.float64)
    rng = np.random.default_rng(5)
    decided = 0
    for i in range(300):
        # Queries near stored patterns, at varying distance, so both outcomes occur.
        z = normalize(patterns[i % 30] + rng.uniform(0.05, 0.6) * rng.standard_normal(16))
        if kind == "vq":
            reference = max(float(p @ z) for p in patterns)
        else:
            reference = _brute_force_hopfield(z, patterns, cfg.beta)
        if abs(reference - cfg.threshold) < 1e-5:
            continue  # float32 vs float64 may legitimately disagree exactly at τ
        hit, recall = mem.decide(z)
        assert hit == (reference >= cfg.threshold)
        assert recall.similarity == pytest.approx(reference, abs=1e-5)
        decided += hit
    assert 30 < decided < 270  # both hits and misses were exercised


def test_large_beta_recovers_hard_nearest_neighbour():
    rng = np.random.default_rng(0)
    patterns = normalize(rng.standard_normal((20, 32)))
    queries = normalize(patterns[:5] + 0.2 * rng.standard_normal((5, 32)))
    found = hopfield_retrieve(queries, patterns, beta=1e3)
    np.testing.assert_allclose(found.state, patterns[:5], atol=1e-4)
    assert (found.top_slots[:, 0] == np.arange(5)).all()
    np.testing.assert_allclose(found.top_weights[:, 0], 1.0, atol=1e-4)


def test_iterated_updates_converge_to_a_fixed_point():
    rng = np.random.default_rng(1)
    patterns = normalize(rng.standard_normal((10, 32)))
    q = normalize(patterns[0] + 0.4 * rng.standard_normal(32))[None]
    once = hopfield_retrieve(q, patterns, beta=16.0, steps=1).state
    many = hopfield_retrieve(q, patterns, beta=16.0, steps=50, eps=1e-7).state
    again = hopfield_retrieve(many, patterns, beta=16.0, steps=1).state
    np.testing.assert_allclose(again, many, atol=1e-5)
    # Iterating pulls the query into the stored pattern's basin.
    assert float(many[0] @ patterns[0]) > max(0.99, float(once[0] @ patterns[0]))


def test_low_beta_iterations_fall_into_a_metastable_mixture():
    rng = np.random.default_rng(1)
    patterns = normalize(rng.standard_normal((10, 32)))
    q = normalize(patterns[0] + 0.4 * rng.standard_normal(32))[None]
    found = hopfield_retrieve(q, patterns, beta=1.0, steps=100, eps=1e-7)
    # At high temperature the fixed point is a blend near no single prototype (HEN's caveat).
    assert float((found.state @ patterns.T).max()) < 0.7
    assert found.top_weights.max() < 0.2


@pytest.mark.parametrize("policy", ["fifo", "lru", "freeze"])
def test_growth_and_eviction_policies(policy):
    cfg = build_config({"capacity": 4, "eviction": policy}, read_env=False)
    mem = _filled(cfg, 4)
    assert mem.count == 4
    mem.touch((0,))  # slot 0 recently used: lru must spare it
    slot = mem.slot_for_new()
    assert slot == {"fifo": 0, "lru": 1, "freeze": None}[policy]


def test_two_copies_with_the_same_writes_have_the_same_digest():
    cfg = build_config(read_env=False)
    a, b = _filled(cfg, 10, seed=3), _filled(cfg, 10, seed=3)
    assert a.digest() == b.digest()
    b.prototypes[4, 0] += 1e-7
    assert a.digest() != b.digest()
    diff = np.flatnonzero(a.slot_hashes() != b.slot_hashes())
    assert diff.tolist() == [4]


def test_soft_recall_blends_the_top_k_with_quantized_weights():
    cfg = build_config(
        {"transmission": "soft", "top_k": 3, "beta": 5.0, "weight_bits": 4}, read_env=False
    )
    mem = _filled(cfg, 8)
    z = normalize(mem.prototypes[0] + mem.prototypes[1])
    recall = mem.recall(z)
    assert 1 <= len(recall.refs) <= 3 and set(recall.refs) >= {0, 1}
    assert len(recall.weight_codes) == len(recall.refs)
    np.testing.assert_array_equal(recall.latent, mem.reconstruct(recall.refs, recall.weight_codes))
    assert recall.similarity == pytest.approx(float(recall.latent @ z), abs=1e-6)


def test_bad_references_are_named():
    mem = _filled(build_config({"capacity": 8}, read_env=False), 3)
    with pytest.raises(MemoryAccessError, match="holds no prototype"):
        mem.reconstruct((5,))
    with pytest.raises(MemoryAccessError, match="out of range"):
        mem.reconstruct((9,))
    with pytest.raises(MemoryAccessError, match="capacity"):
        mem.store(8, np.zeros(64, dtype=np.uint16))


def test_metastable_mixtures_count_as_misses():
    base = {"threshold": 0.5, "beta": 1.0, "hopfield_steps": 50, "capacity": 8, "latent_dim": 16}
    plain = build_config(base, read_env=False)
    hen = build_config({**base, "metastable_threshold": 0.9}, read_env=False)
    mem_plain, mem_hen = _filled(plain, 8), _filled(hen, 8)
    z = normalize(mem_plain.prototypes[:3].sum(axis=0))  # between three stored patterns
    hit_plain, recall = mem_plain.decide(z)
    nearest = float(
        np.max(
            mem_plain.prototypes[:8]
            @ hopfield_retrieve(z[None], mem_plain.prototypes[:8], 1.0, 50).state[0]
        )
    )
    assert nearest < 0.9  # the fixed point is a mixture (reference computation)
    assert hit_plain and not recall.metastable  # plain Hopfield accepts the blend
    hit_hen, recall_hen = mem_hen.decide(z)
    assert recall_hen.metastable and not hit_hen
    # A query at a stored pattern converges to it: not meta-stable, still a hit.
    hen_sharp = build_config({**base, "beta": 30.0, "metastable_threshold": 0.9}, read_env=False)
    mem = _filled(hen_sharp, 8)
    hit, r = mem.decide(mem.prototypes[2])
    assert hit and not r.metastable


def test_blocked_pass_equals_the_direct_softmax(monkeypatch):
    import shared.memory.store as memory

    monkeypatch.setattr(memory, "BLOCK_ROWS", 7)  # many blocks, one partial
    rng = np.random.default_rng(4)
    patterns = normalize(rng.standard_normal((50, 16)))
    queries = normalize(rng.standard_normal((3, 16)))
    found = hopfield_retrieve(queries, patterns, beta=9.0, top_k=4)
    logits = 9.0 * (queries.astype(np.float64) @ patterns.T)
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights /= weights.sum(axis=1, keepdims=True)
    direct = weights @ patterns
    direct /= np.linalg.norm(direct, axis=1, keepdims=True)
    np.testing.assert_allclose(found.state, direct, atol=1e-5)
    order = np.argsort(-weights, axis=1)[:, :4]
    np.testing.assert_array_equal(found.top_slots, order)
    np.testing.assert_allclose(found.top_weights, np.take_along_axis(weights, order, 1), atol=1e-6)
