"""The adaptive (A-Hop) memory (shared.memory.adaptive): its similarity and its decisions."""

import numpy as np
import pytest

from experiments.link import simulate
from shared.coding.quantizer import normalize, quantize
from shared.config import build_config
from shared.memory.adaptive import AdaptiveSimilarity, load_adaptive
from shared.memory.store import Memory, hopfield_retrieve
from tests.synthetic import drifting_latents


def _footprint_score(sim: AdaptiveSimilarity, q: np.ndarray, p: np.ndarray) -> float:
    """Reference computation, one pattern at a time with plain Python lists."""
    d = len(q)
    prods = sorted((float(a) * float(b) for a, b in zip(q, p, strict=True)), reverse=True)
    dists = sorted((-((float(a) - float(b)) ** 2) for a, b in zip(q, p, strict=True)), reverse=True)
    cum_p = np.cumsum(prods)
    cum_d = np.cumsum(dists)
    return (sim.mix_dot * float(cum_p @ sim.w_dot) + sim.mix_dist * float(cum_d @ sim.w_dist)) / d


def test_untrained_similarity_is_the_cosine():
    rng = np.random.default_rng(0)
    q, p = normalize(rng.standard_normal((5, 64))), normalize(rng.standard_normal((7, 64)))
    np.testing.assert_allclose(AdaptiveSimilarity.cosine(64).scores(q, p), q @ p.T, atol=1e-5)


def test_shipped_scores_match_the_footprint_definition():
    sim = load_adaptive(64)
    rng = np.random.default_rng(1)
    q, p = normalize(rng.standard_normal((3, 64))), normalize(rng.standard_normal((4, 64)))
    got = sim.scores(q, p)
    for i in range(3):
        for j in range(4):
            assert got[i, j] == pytest.approx(_footprint_score(sim, q[i], p[j]), abs=1e-4)


def test_adaptive_memory_decides_like_the_reference_and_both_ends_agree():
    cfg = build_config({"memory": "adaptive", "threshold": 0.95, "capacity": 64}, read_env=False)
    latents = drifting_latents()
    mem = Memory(cfg)
    sim = load_adaptive(64)
    for z in latents[:80]:
        hit, recall = mem.decide(z)
        if mem.count:
            patterns = mem.prototypes[: mem.count]
            found = hopfield_retrieve(z[None], patterns, cfg.beta, similarity=sim.scores)
            assert recall.refs == (int(found.top_slots[0, 0]),)
            assert recall.similarity == pytest.approx(float(found.state[0] @ z), abs=1e-6)
        if not hit:
            mem.store(mem.slot_for_new(), quantize(z, 8))
    result = simulate(latents, cfg)
    assert result.digests_agree and result.silent_wrong == 0
    assert 0 < result.summary.hit_rate < 1
