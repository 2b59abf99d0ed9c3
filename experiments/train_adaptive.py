"""Training the adaptive memory's similarity (A-Hop) on (memory, variant) pairs; ``hoplink
train-adaptive`` writes the weights that :mod:`shared.memory.adaptive` loads."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from experiments.training import CropSampler, holdout_frames, source_images
from shared.coding.quantizer import dequantize, normalize, quantize
from shared.memory.adaptive import WEIGHTS_DIR, AdaptiveSimilarity

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
