"""Algorithm 1 of the paper: train encoder, decoder and τ for reasoning capacity.

``hoplink train --objective capacity`` maximizes ``C − λ·(D − D₀)`` on short synthetic clips
(a camera panning, zooming and changing light over a training photo), where for each clip

* the memory holds the latents of the clip's earlier frames (the first frame is a NEW),
* a frame's hit indicator is relaxed to ``h = σ(α·(cos(z, T_β(z)) − τ))`` (eq. 1, soft),
* bits per frame are ``h·(⌈log2 M⌉ + K) + (1 − h)·d·b`` (eq. 3), η = hit rate × d·b / bits and
  ``C = κ·log2(1 + η)`` (eq. 5),
* distortion D is the expected MSE of what the Rx shows: the nearest prototype decoded on a hit,
  the frame's own latent decoded on a miss,

and ``D₀`` is the starting codec's own distortion on the same kind of clips, allowed to grow by
``--distortion-slack-db``. Encoder/decoder steps and τ steps alternate; λ follows dual ascent,
``λ ← max(0, λ + η_λ·(D − D₀)/D₀)``, so the constraint binds when capacity would cost quality.
The result is a second codec (``ae64cap``) whose card records the learned τ.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from experiments.training import (
    evaluate_psnr,
    hardware_description,
    holdout_frames,
    training_parts,
    training_session,
    warm_start,
)
from shared.codec.models import CODECS, Codec, CodecError, Decoder, Encoder, save_codec

__all__ = ["ClipSampler", "capacity_terms", "train_capacity"]


class ClipSampler:
    """Seeded short clips (T frames) of a virtual camera over training photos: a pan of up to
    3 % of the window per frame, a zoom of up to ±1 % per frame and a light ramp of ±20 %."""

    def __init__(self, photos: list[np.ndarray], size: int, frames: int, seed: int) -> None:
        self.photos = [Image.fromarray(p) for p in photos]
        self.size, self.frames = size, frames
        self.rng = np.random.default_rng(seed)

    def clip(self) -> np.ndarray:
        rng, size, n = self.rng, self.size, self.frames
        im = self.photos[rng.integers(len(self.photos))]
        w, h = im.size
        max_side = min(w, h) / 1.3  # room for the pan and the zoom
        side = math.exp(rng.uniform(math.log(min(max_side, 0.75 * size)), math.log(max_side)))
        velocity = rng.uniform(-0.03, 0.03, size=2) * side
        zoom = math.exp(rng.uniform(-0.01, 0.01))
        gains = np.linspace(1.0, rng.uniform(0.8, 1.2), n, dtype=np.float32)
        cx, cy = rng.uniform(side / 2, w - side / 2), rng.uniform(side / 2, h - side / 2)
        out = np.empty((n, size, size, 3), dtype=np.uint8)
        for t in range(n):
            s = min(side * zoom**t, min(w, h))
            x = float(np.clip(cx + velocity[0] * t, s / 2, w - s / 2))
            y = float(np.clip(cy + velocity[1] * t, s / 2, h - s / 2))
            box = (x - s / 2, y - s / 2, x + s / 2, y + s / 2)
            frame = np.asarray(im.resize((size, size), Image.Resampling.BOX, box=box), np.float32)
            out[t] = np.clip(np.rint(frame * gains[t]), 0, 255).astype(np.uint8)
        return out

    def batch(self, clips: int) -> np.ndarray:
        """uint8 (clips, T, S, S, 3)."""
        return np.stack([self.clip() for _ in range(clips)])


def capacity_terms(
    z: torch.Tensor,
    decoded_new: torch.Tensor,
    decode: Callable[[torch.Tensor], torch.Tensor],
    frames: torch.Tensor,
    tau: torch.Tensor,
    *,
    beta: float,
    alpha: float,
    hit_bits: float,
    new_bits: float,
) -> dict[str, torch.Tensor]:
    """Soft link terms of a batch of clips: latents z (B, T, d), frames (B, T, C, S, S).

    Frame t of a clip queries a memory of frames 0..t−1 (eq. 4 with one update step); frame 0 is
    always a NEW. Returns the mean hit probability, bits/frame, η, C (κ = 1) and distortion D.
    """
    b, t, d = z.shape
    sims = torch.einsum("bqd,bkd->bqk", z, z)  # cos between frames: unit-norm latents
    causal = torch.ones(t, t, dtype=torch.bool, device=z.device).tril(-1)  # keys before query
    scores = (beta * sims).masked_fill(~causal, float("-inf"))[:, 1:]  # (B, T-1, T)
    recalled = F.normalize(torch.softmax(scores, dim=-1) @ z, dim=-1)
    similarity = (z[:, 1:] * recalled).sum(-1)
    hit = torch.sigmoid(alpha * (similarity - tau))  # (B, T-1)
    nearest = sims[:, 1:].masked_fill(~causal[1:], float("-inf")).argmax(-1)  # (B, T-1)
    prototypes = torch.gather(z, 1, nearest.unsqueeze(-1).expand(-1, -1, d))
    shown_hit = decode(prototypes.reshape(-1, d)).view(b, t - 1, *frames.shape[2:])
    err_new = (decoded_new - frames).pow(2).flatten(2).mean(-1)  # (B, T)
    err_hit = (shown_hit - frames[:, 1:]).pow(2).flatten(2).mean(-1)
    distortion = torch.cat([err_new[:, :1], hit * err_hit + (1 - hit) * err_new[:, 1:]], 1)
    hits = torch.cat([torch.zeros_like(hit[:, :1]), hit], 1)
    bits = hits * hit_bits + (1 - hits) * new_bits
    hit_rate, mean_bits = hits.mean(), bits.mean()
    eta = hit_rate * new_bits / mean_bits
    return {
        "hit_rate": hit_rate,
        "bits": mean_bits,
        "eta": eta,
        "capacity": torch.log2(1 + eta),
        "distortion": distortion.mean(),
    }


def train_capacity(
    name: str = "ae64cap",
    init: str = "ae64",
    minutes: float = 6.0,
    seed: int = 0,
    device: str = "cpu",
    out_dir: Path | None = None,
    progress: bool = True,
    *,
    steps: int | None = None,
    clips: int = 8,
    clip_frames: int = 8,
    lr: float = 1e-4,
    tau_lr: float = 2e-3,
    lambda_lr: float = 0.05,
    tau_start: float = 0.98,
    alpha: float = 200.0,
    beta: float = 20.0,
    bits_per_value: int = 8,
    capacity: int = 256,
    cue_bits: int = 32,
    distortion_slack_db: float = 0.5,
    threads: int | None = None,
) -> dict:
    """Fine-tune codec ``init`` with Algorithm 1 and save it as codec ``name`` (+ its card)."""
    if name not in CODECS:
        raise CodecError(f"unknown codec {name!r}; register it in shared.codec.models.CODECS first")
    spec = CODECS[name]
    if CODECS[init].latent_dim != spec.latent_dim or CODECS[init].frame_size != spec.frame_size:
        raise CodecError(f"codec {name!r} must have the shape of its starting codec {init!r}")
    t_start = time.perf_counter()
    with training_session(device, out_dir, threads, seed) as (dev, out_dir):
        encoder, decoder = Encoder(spec).to(dev), Decoder(spec).to(dev)
        warm_start(encoder, decoder, init)
        sampler = ClipSampler(training_parts(), spec.frame_size, clip_frames, seed)
        hit_bits = math.ceil(math.log2(capacity)) + cue_bits
        new_bits = spec.latent_dim * bits_per_value
        terms = dict(beta=beta, alpha=alpha, hit_bits=hit_bits, new_bits=new_bits)

        def run(batch: np.ndarray, tau: torch.Tensor, networks: bool = True) -> dict:
            """The soft link terms; with ``networks=False`` only τ carries a gradient."""
            x = torch.from_numpy(batch).to(dev).permute(0, 1, 4, 2, 3).float() / 255.0
            with torch.set_grad_enabled(networks):
                z = encoder(x.flatten(0, 1))
                decoded = decoder(z).view_as(x)

            def decode(v: torch.Tensor) -> torch.Tensor:
                with torch.set_grad_enabled(networks):
                    return decoder(v)

            return capacity_terms(z.view(*x.shape[:2], -1), decoded, decode, x, tau, **terms)

        tau = torch.tensor(tau_start, device=dev, requires_grad=True)
        with torch.no_grad():  # D₀: the starting codec's distortion, plus the slack
            probe = sampler.batch(4 * clips)
            start = run(probe, tau, networks=False)
            d0 = float(start["distortion"]) * 10 ** (distortion_slack_db / 10)
        opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=lr)
        opt_tau = torch.optim.Adam([tau], lr=tau_lr)
        lam = 1.0
        history = _optimize(
            run, sampler, clips, tau, opt, opt_tau, d0, lam, lambda_lr, minutes, steps,
            progress, name,
        )  # fmt: skip

        weights = save_codec(spec, encoder, decoder, out_dir / f"{name}.pt")
        codec = Codec(spec, weights)
        with torch.no_grad():
            end = run(probe, tau, networks=False)
        command = (
            f"hoplink train --objective capacity --codec {name} --init {init} "
            f"--minutes {minutes:g} --seed {seed}"
            + (f" --steps {steps}" if steps is not None else "")
        )
        card = {
            "name": name,
            "latent_dim": spec.latent_dim,
            "frame_size": spec.frame_size,
            "channels": spec.channels,
            "architecture": spec.to_dict(),
            "params": sum(p.numel() for p in [*encoder.parameters(), *decoder.parameters()]),
            "weights_file": weights.name,
            "weights_bytes": weights.stat().st_size,
            "weights_dtype": "float16",
            "sha256": codec.digest,
            "command": command,
            "objective": "capacity (Algorithm 1: max C − λ(D − D₀), hit relaxed by a sigmoid)",
            "init": init,
            "seed": seed,
            "steps": history["steps"],
            "clips_per_batch": clips,
            "clip_frames": clip_frames,
            "alpha": alpha,
            "beta": beta,
            "hit_bits": hit_bits,
            "new_bits": new_bits,
            "distortion_slack_db": distortion_slack_db,
            "learned_threshold": round(tau.item(), 5),
            "final_lambda": round(history["lambda"], 4),
            "probe_start": {k: round(float(v), 5) for k, v in start.items()},
            "probe_end": {k: round(float(v), 5) for k, v in end.items()},
            "device": dev.type,
            "hardware": hardware_description(dev),
            "wall_time_s": round(history["seconds"], 1),
            "total_time_s": round(time.perf_counter() - t_start, 1),
            "eval_psnr_db": round(evaluate_psnr(codec, holdout_frames(512, spec.frame_size)), 3),
            "created_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        (out_dir / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
        if progress:
            print(
                f"{name}: {history['steps']} steps, τ {card['learned_threshold']}, λ "
                f"{card['final_lambda']}, probe hit rate {card['probe_start']['hit_rate']:.3f} → "
                f"{card['probe_end']['hit_rate']:.3f}, distortion "
                f"{card['probe_start']['distortion']:.5f} → {card['probe_end']['distortion']:.5f}"
            )
        return card


def _optimize(run, sampler, clips, tau, opt, opt_tau, d0, lam, lambda_lr, minutes, steps,
              progress, name) -> dict:  # fmt: skip
    """Alternate encoder/decoder and τ steps on fresh clips; dual ascent on λ after each."""
    budget = minutes * 60.0
    bar = tqdm(total=steps, desc=f"train {name} (capacity)", disable=not progress, unit="step")
    t0 = time.perf_counter()
    step = 0
    while (time.perf_counter() - t0 < budget) if steps is None else step < steps:
        batch = sampler.batch(clips)
        out = run(batch, tau.detach())  # encoder/decoder step, τ fixed
        loss = -out["capacity"] + lam * (out["distortion"] - d0) / d0
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tau_terms = run(batch, tau, networks=False)  # τ step, networks fixed
        tau_loss = -tau_terms["capacity"] + lam * (tau_terms["distortion"] - d0) / d0
        opt_tau.zero_grad(set_to_none=True)
        tau_loss.backward()
        opt_tau.step()
        with torch.no_grad():
            tau.clamp_(0.5, 0.9999)
        # Dual ascent: λ grows while the distortion constraint is violated, shrinks otherwise.
        lam = max(0.0, lam + lambda_lr * float(tau_terms["distortion"].detach() - d0) / d0)
        step += 1
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(
                hit=f"{out['hit_rate'].item():.3f}", C=f"{out['capacity'].item():.3f}",
                D=f"{out['distortion'].item() / d0:.3f}·D0", tau=f"{tau.item():.4f}",
                lam=f"{lam:.2f}",
            )  # fmt: skip
    bar.close()
    return {"steps": step, "lambda": lam, "seconds": time.perf_counter() - t0}
