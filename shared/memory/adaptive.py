"""Adaptive similarity (A-Hop, Wang et al. 2025): a learned similarity for Hopfield retrieval.

For a query q and a stored pattern ξ the *similarity footprint* is built per dimension: the
products q_j·ξ_j (and the negative squared differences −(q_j − ξ_j)²) are sorted in descending
order and cumulatively summed. Learned weights w combine each footprint into one score, and two
learned scalars mix the dot-product and distance scores:

    s(q, ξ) = a · w_dot · cumsum(sort↓(q ⊙ ξ)) / d  +  c · w_dist · cumsum(sort↓(−(q − ξ)²)) / d

With w_dot = d·e_d (only the full sum counts), a = 1 and c = 0 this is exactly the cosine of unit
vectors, which is where training starts. Weighting the footprint by rank lets the similarity
discount the few dimensions where a corrupted query (noise, masking, bias, coarse quantization)
disagrees most.

The weights are small (2·d + 2 numbers) and ship as JSON next to the codec weights;
training them is :mod:`experiments.train_adaptive`.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.codec.zoo import codecs_dir

WEIGHTS_DIR = codecs_dir()


class AdaptiveError(ValueError):
    """Adaptive-similarity weights that are missing or do not fit the latent dimension."""


@dataclass(frozen=True)
class AdaptiveSimilarity:
    w_dot: np.ndarray  # (d,) weights of the dot-product footprint
    w_dist: np.ndarray  # (d,) weights of the squared-distance footprint
    mix_dot: float
    mix_dist: float

    @property
    def dim(self) -> int:
        return len(self.w_dot)

    @classmethod
    def cosine(cls, dim: int) -> AdaptiveSimilarity:
        """The starting point: exactly the cosine of unit vectors."""
        w_dot = np.zeros(dim, dtype=np.float32)
        w_dot[-1] = dim
        return cls(w_dot, np.zeros(dim, dtype=np.float32), 1.0, 0.0)

    def scores(self, queries: np.ndarray, patterns: np.ndarray) -> np.ndarray:
        """Similarity of every query (B, d) to every pattern (M, d): (B, M)."""
        queries = np.asarray(queries, dtype=np.float32)
        d = queries.shape[1]
        products = queries[:, None, :] * patterns[None, :, :]
        footprint = np.cumsum(-np.sort(-products, axis=2), axis=2)
        score = self.mix_dot * (footprint @ self.w_dot) / d
        if self.mix_dist != 0.0:
            distances = -((queries[:, None, :] - patterns[None, :, :]) ** 2)
            footprint = np.cumsum(-np.sort(-distances, axis=2), axis=2)
            score = score + self.mix_dist * (footprint @ self.w_dist) / d
        return score.astype(np.float32)

    def to_json(self) -> dict:
        return {
            "w_dot": [float(v) for v in self.w_dot],
            "w_dist": [float(v) for v in self.w_dist],
            "mix_dot": self.mix_dot,
            "mix_dist": self.mix_dist,
        }

    @classmethod
    def from_json(cls, data: dict) -> AdaptiveSimilarity:
        return cls(
            np.asarray(data["w_dot"], dtype=np.float32),
            np.asarray(data["w_dist"], dtype=np.float32),
            float(data["mix_dot"]),
            float(data["mix_dist"]),
        )


def weights_path(dim: int) -> Path:
    return WEIGHTS_DIR / f"adaptive{dim}.json"


@functools.cache
def load_adaptive(dim: int) -> AdaptiveSimilarity:
    """The shipped weights for d = ``dim`` (cached: they do not change while a process runs)."""
    path = weights_path(dim)
    if not path.is_file():
        raise AdaptiveError(
            f"no adaptive-similarity weights for d={dim} at {path}; run `hoplink train-adaptive`"
        )
    similarity = AdaptiveSimilarity.from_json(json.loads(path.read_text())["weights"])
    if similarity.dim != dim:
        raise AdaptiveError(f"{path} holds weights for d={similarity.dim}, not d={dim}")
    return similarity
