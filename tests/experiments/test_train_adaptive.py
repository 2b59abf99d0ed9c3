"""Training the adaptive similarity (experiments.train_adaptive): its loss, its corruptions, and
what the shipped weights gain over the cosine under them."""

import numpy as np
import pytest

from experiments.train_adaptive import corrupt, retrieval_accuracy, train_adaptive
from shared.coding.quantizer import normalize
from shared.memory.adaptive import AdaptiveSimilarity, load_adaptive
from tests.synthetic import drifting_latents


def test_shipped_similarity_tolerates_masking_and_bias_better_than_cosine(codec):
    from experiments.training import holdout_frames

    memory = codec.encode(holdout_frames(128, 64, seed=99))
    cosine = AdaptiveSimilarity.cosine(64).scores
    adaptive = load_adaptive(64).scores
    for kind, strength in (("mask", 0.4), ("bias", 0.1), ("quantize", 2)):
        base = retrieval_accuracy(cosine, memory, kind, strength, seed=3)
        learned = retrieval_accuracy(adaptive, memory, kind, strength, seed=3)
        assert learned > base + 0.05, (kind, base, learned)


def test_training_lowers_the_loss():
    latents = drifting_latents(n=400, views=40, hold=10, noise=0.05)
    _, losses = train_adaptive(latents, steps=60, memory_size=32, batch=16, seed=0)
    assert np.mean(losses[-15:]) < np.mean(losses[:15])


def test_corruptions_keep_unit_norm():
    rng = np.random.default_rng(2)
    z = normalize(rng.standard_normal((10, 64)))
    for kind, s in (("noise", 0.1), ("mask", 0.3), ("bias", 0.1), ("quantize", 3)):
        out = corrupt(z, kind, s, rng)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(z, "smudge", 1.0, rng)
