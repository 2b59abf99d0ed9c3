import math

import numpy as np

from shared.coding.quantizer import normalize
from shared.memory.cues import CueHasher, false_accept_probability, hamming, lookup


def test_cue_is_deterministic_per_seed():
    z = normalize(np.random.default_rng(0).standard_normal(64))
    assert CueHasher(64, 32, seed=3).cue(z) == CueHasher(64, 32, seed=3).cue(z)
    assert CueHasher(64, 32, seed=3).cue(z) != CueHasher(64, 32, seed=4).cue(z)
    assert 0 <= CueHasher(64, 64, 0).cue(z) < 2**64


def test_hamming_distance_grows_with_the_angle_as_theta_over_pi():
    rng = np.random.default_rng(1)
    hasher = CueHasher(64, 64, seed=0)
    for sigma in (0.05, 0.2, 0.5):
        dists, expected = [], []
        for _ in range(400):
            z = normalize(rng.standard_normal(64))
            noisy = normalize(z + sigma * rng.standard_normal(64) / 8)
            dists.append(hamming(hasher.cue(z), hasher.cue(noisy)))
            expected.append(64 * math.acos(min(1.0, float(z @ noisy))) / math.pi)
        # SimHash: each bit flips with probability θ/π.
        assert abs(np.mean(dists) - np.mean(expected)) < 0.1 * np.mean(expected) + 0.3


def test_unrelated_latents_differ_in_about_half_the_bits():
    rng = np.random.default_rng(2)
    hasher = CueHasher(64, 32, seed=0)
    z = normalize(rng.standard_normal((1000, 64)))
    cues = hasher.cues(z)
    d = [hamming(int(cues[i]), int(cues[i + 1])) for i in range(0, 999)]
    assert 15 < np.mean(d) < 17


def test_lookup_finds_the_nearest_within_tolerance():
    rng = np.random.default_rng(3)
    hasher = CueHasher(64, 32, seed=0)
    protos = normalize(rng.standard_normal((50, 64)))
    cues = hasher.cues(protos)
    for slot in (0, 17, 49):
        assert lookup(cues, int(cues[slot]), tolerance=3) == slot
        flipped = int(cues[slot]) ^ 0b101  # two bits off
        assert lookup(cues, flipped, tolerance=3) == slot
        assert lookup(cues, flipped, tolerance=1) is None


def test_lookup_refuses_ties():
    cues = np.array([0b0000, 0b0011], dtype=np.uint64)
    assert lookup(cues, 0b0001, tolerance=2) is None


def test_false_accept_probability():
    assert false_accept_probability(32, 0) == 2.0**-32
    assert math.isclose(false_accept_probability(8, 8), 1.0)
    assert math.isclose(false_accept_probability(4, 1), 5 / 16)
