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

The weights are small (2·d + 2 numbers) and ship as JSON next to the codec weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.quantizer import dequantize, normalize, quantize

WEIGHTS_DIR = Path(__file__).resolve().parent / "codecs"


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


def load_adaptive(dim: int) -> AdaptiveSimilarity:
    path = weights_path(dim)
    if not path.is_file():
        raise AdaptiveError(
            f"no adaptive-similarity weights for d={dim} at {path}; run `hoplink train-adaptive`"
        )
    similarity = AdaptiveSimilarity.from_json(json.loads(path.read_text())["weights"])
    if similarity.dim != dim:
        raise AdaptiveError(f"{path} holds weights for d={similarity.dim}, not d={dim}")
    return similarity


# --- the variants this link really sees --------------------------------------------------------


def corrupt(
    latents: np.ndarray, kind: str, strength: float, rng: np.random.Generator
) -> np.ndarray:
    """Variants of unit latents: ``noise`` (Rx prototype noise σ), ``mask`` (a fraction of the
    dimensions zeroed), ``bias`` (a constant offset), ``quantize`` (``strength`` bits)."""
    x = np.asarray(latents, dtype=np.float32)
    n, d = x.shape
    if kind == "noise":
        out = x + strength * rng.standard_normal((n, d)).astype(np.float32)
    elif kind == "mask":
        keep = rng.random((n, d)) >= strength
        out = x * keep
    elif kind == "bias":
        out = x + strength * np.sign(rng.standard_normal((n, 1))).astype(np.float32)
    elif kind == "quantize":
        out = dequantize(quantize(x, int(strength)), int(strength))
    else:
        raise ValueError(f"unknown corruption {kind!r}")
    return normalize(out)


VARIANTS: tuple[tuple[str, float, float], ...] = (
    # kind, lowest and highest strength drawn in training
    ("noise", 0.0, 0.2),
    ("mask", 0.05, 0.4),
    ("bias", 0.0, 0.15),
    ("quantize", 2, 4),
)


def train_adaptive(
    latents: np.ndarray,
    *,
    steps: int = 400,
    memory_size: int = 64,
    batch: int = 32,
    seed: int = 0,
    lr: float = 0.02,
) -> tuple[AdaptiveSimilarity, list[float]]:
    """Fit the footprint weights with cross-entropy on (prototype, variant) pairs.

    Each step draws a memory of ``memory_size`` latents, corrupts ``batch`` of them with the
    variants above, and asks the softmax over similarities to name the original.
    """
    import torch

    rng = np.random.default_rng([seed, 0xA40])
    torch.manual_seed(seed)
    d = latents.shape[1]
    start = AdaptiveSimilarity.cosine(d)
    w_dot = torch.tensor(start.w_dot, requires_grad=True)
    # Distance footprint starts as plain squared distance, switched off by its mixing weight.
    w_dist = torch.tensor(start.w_dot, requires_grad=True)
    mix = torch.tensor([1.0, 0.0], requires_grad=True)
    log_scale = torch.tensor(np.log(20.0), dtype=torch.float32, requires_grad=True)
    optimizer = torch.optim.Adam([w_dot, w_dist, mix, log_scale], lr=lr)
    losses = []
    for _ in range(steps):
        memory = latents[rng.choice(len(latents), memory_size, replace=False)]
        targets = rng.choice(memory_size, batch)
        kind, lo, hi = VARIANTS[rng.integers(len(VARIANTS))]
        strength = rng.integers(lo, hi + 1) if kind == "quantize" else rng.uniform(lo, hi)
        queries = torch.from_numpy(corrupt(memory[targets], kind, strength, rng))
        patterns = torch.from_numpy(memory)
        products = queries[:, None, :] * patterns[None, :, :]
        fp_dot = torch.cumsum(torch.sort(products, dim=2, descending=True).values, dim=2)
        dist = -((queries[:, None, :] - patterns[None, :, :]) ** 2)
        fp_dist = torch.cumsum(torch.sort(dist, dim=2, descending=True).values, dim=2)
        scores = (mix[0] * (fp_dot @ w_dot) + mix[1] * (fp_dist @ w_dist)) / d
        loss = torch.nn.functional.cross_entropy(
            log_scale.exp() * scores, torch.from_numpy(targets)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    trained = AdaptiveSimilarity(
        w_dot.detach().numpy().astype(np.float32),
        w_dist.detach().numpy().astype(np.float32),
        mix[0].item(),
        mix[1].item(),
    )
    return trained, losses


def retrieval_accuracy(
    scores_fn, memory: np.ndarray, kind: str, strength: float, seed: int = 0, n: int = 512
) -> float:
    """Fraction of corrupted queries whose best-scoring pattern is their own original."""
    rng = np.random.default_rng([seed, 0xACC])
    targets = rng.choice(len(memory), n)
    queries = corrupt(memory[targets], kind, strength, rng)
    return float(np.mean(np.argmax(scores_fn(queries, memory), axis=1) == targets))


# --- the shipped weights ---------------------------------------------------------------------

EVALUATION = (("noise", 0.05), ("noise", 0.1), ("mask", 0.2), ("mask", 0.4), ("bias", 0.1),
              ("bias", 0.2), ("quantize", 2), ("quantize", 3))  # fmt: skip


def train_and_save(codec, *, steps: int = 1500, seed: int = 0, out_dir: Path | None = None) -> dict:
    """Train on latents of augmented photo crops, evaluate on held-out crops, write the card."""
    import time

    from shared.training import CropSampler, holdout_frames, source_images

    started = time.perf_counter()
    crops = CropSampler(list(source_images().values()), codec.frame_size, seed=seed + 7)
    similarity, losses = train_adaptive(codec.encode(crops.batch(1500)), steps=steps, seed=seed)
    held_out = codec.encode(holdout_frames(512, codec.frame_size, seed=99))[:128]
    cosine = AdaptiveSimilarity.cosine(codec.latent_dim)
    evaluation = [
        {
            "variant": kind,
            "strength": strength,
            "cosine_accuracy": retrieval_accuracy(cosine.scores, held_out, kind, strength),
            "adaptive_accuracy": retrieval_accuracy(similarity.scores, held_out, kind, strength),
        }
        for kind, strength in EVALUATION
    ]
    card = {
        "name": f"adaptive{codec.latent_dim}",
        "codec": codec.name,
        "command": f"hoplink train-adaptive --steps {steps} --seed {seed}",
        "steps": steps,
        "seed": seed,
        "final_loss": float(np.mean(losses[-50:])),
        "wall_time_s": round(time.perf_counter() - started, 1),
        "evaluation": evaluation,
        "evaluation_memory": "128 latents of held-out photo crops; 512 corrupted queries each",
        "weights": similarity.to_json(),
    }
    path = (Path(out_dir) if out_dir else WEIGHTS_DIR) / f"adaptive{codec.latent_dim}.json"
    path.write_text(json.dumps(card, indent=1) + "\n")
    return card
