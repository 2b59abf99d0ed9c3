"""Training a token codec (:mod:`shared.codec.tokens`) on the bundled photos.

The same photos and held-out strips as the single-latent codecs (:mod:`experiments.training`):
random augmented crops of skimage's photos, never a frame of the videos the link is evaluated
on. The tokens pass through a quantization proxy while training (uniform noise of about one
4-bit step on every component, then renormalized), so the decoder tolerates what a NEW token's
quantizer and a memory recall at cos >= tau do to a token. Time-boxed like the other trainers:
the learning rate follows a cosine keyed to the elapsed fraction of the budget; ``--device cuda``
trains on a GPU where one is present.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from experiments.training import (
    CropSampler,
    hardware_description,
    quantizer_fit,
    source_images,
    split_holdout,
    training_parts,
    training_session,
)
from shared.accounting import psnr_batch
from shared.codec.tokens import (
    TOKEN_CODECS,
    TokenCodec,
    TokenDecoder,
    TokenEncoder,
    save_token_codec,
)

__all__ = ["train_token_codec"]

CROP = 128  # px: training crop side (a multiple of every token codec's stride)
QUANT_NOISE = 0.04  # half a 4-bit step of a token component's typical range
# The link a token codec is used with unless a flag says otherwise (LinkConfig reads the card):
# 4-bit NEW tokens on the fitted per-dimension grid, and a memory that holds several frames.
LINK_DEFAULTS = {
    "latent_dim": None,  # the codec's d
    "bits_per_value": 4,
    "latent_grid": "per_dim",
    "capacity": 8192,
    "threshold": 0.9,
}


def _token_noise(tokens: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """The quantization proxy: uniform noise on every component, renormalized."""
    noise = torch.rand(tokens.shape, generator=gen, device=tokens.device) * 2 - 1
    return F.normalize(tokens + QUANT_NOISE * noise, dim=1)


def holdout_psnr(codec: TokenCodec, n: int = 64, seed: int = 12345) -> float:
    """Mean PSNR on ``n`` crops of the photos' held-out strips (never seen in training)."""
    held = [split_holdout(img)[1] for img in source_images().values()]
    crops = CropSampler(held, CROP // 2, seed, augment=False).batch(n)
    recon = np.stack([codec.decode(codec.encode(c)) for c in crops])
    return float(psnr_batch(crops, recon).mean())


def train_token_codec(
    name: str = "tok8d16",
    minutes: float = 20.0,
    seed: int = 0,
    device: str = "cpu",
    out_dir: Path | None = None,
    progress: bool = True,
    *,
    batch_size: int = 16,
    lr: float = 2e-3,
    threads: int | None = None,
    steps: int | None = None,
    init: Path | None = None,
) -> dict:
    """Train token codec ``name`` for ``minutes`` (or exactly ``steps``); write weights and card.

    ``init`` names weights of the same spec to continue from (a longer run in several parts).
    """
    spec = TOKEN_CODECS.get(name)
    if spec is None:
        raise ValueError(f"unknown token codec {name!r}; known: {sorted(TOKEN_CODECS)}")
    with training_session(device, out_dir, threads, seed) as (dev, out_dir):
        sampler = CropSampler(training_parts(), CROP, seed)
        gen = torch.Generator(device=dev).manual_seed(seed)
        encoder, decoder = TokenEncoder(spec).to(dev), TokenDecoder(spec).to(dev)
        if init is not None:
            start = TokenCodec(spec, Path(init))
            encoder.load_state_dict(start.encoder.state_dict())
            decoder.load_state_dict(start.decoder.state_dict())
        params = [*encoder.parameters(), *decoder.parameters()]
        opt = torch.optim.Adam(params, lr=lr)
        budget_s = minutes * 60.0
        t0 = time.perf_counter()
        step, ema = 0, None
        bar = tqdm(total=steps or round(budget_s), desc=f"train {name}", disable=not progress)
        while True:
            frac = step / steps if steps else (time.perf_counter() - t0) / budget_s
            if frac >= 1.0:
                break
            warm = min(1.0, frac / 0.03)
            for group in opt.param_groups:
                group["lr"] = lr * warm * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * frac)))
            x = torch.from_numpy(sampler.batch(batch_size)).to(dev)
            x = x.permute(0, 3, 1, 2).float().div_(255.0)
            tokens = encoder(x)
            # Half the batches see clean tokens, so the plain codec is trained too.
            if step % 2:
                tokens = _token_noise(tokens, gen)
            loss = F.mse_loss(decoder(tokens), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % 10 == 0:
                mse = loss.item()
                ema = mse if ema is None else 0.9 * ema + 0.1 * mse
                bar.set_postfix(step=step, psnr=f"{-10 * math.log10(ema):.2f}")
                bar.n = step if steps else round(min(time.perf_counter() - t0, budget_s))
                bar.refresh()
        wall = time.perf_counter() - t0
        bar.close()
        weights = save_token_codec(spec, encoder, decoder, out_dir / f"{name}.pt")
        codec = TokenCodec(spec, weights)
        fit_crops = CropSampler(training_parts(), CROP, seed + 1, augment=False).batch(64)
        fit_tokens = np.concatenate(
            [codec.encode(c).reshape(-1, spec.latent_dim) for c in fit_crops]
        )
        card = {
            "name": name,
            "kind": "tokens",
            "latent_dim": spec.latent_dim,
            "stride": spec.stride,
            "architecture": spec.to_dict(),
            "params": sum(p.numel() for p in params),
            "weights_file": weights.name,
            "weights_bytes": weights.stat().st_size,
            "weights_dtype": "float16",
            "sha256": codec.digest,
            "command": (
                f"hoplink train --codec {name} --minutes {minutes:g} --seed {seed} "
                f"--device {dev.type}"
                + (f" --steps {steps}" if steps else "")
                + (f" --init {init}" if init else "")
            ),
            "seed": seed,
            "init": str(init) if init else None,
            "steps": step,
            "batch_size": batch_size,
            "crop": CROP,
            "lr": lr,
            "loss": "mse; tokens with uniform noise +-{QUANT_NOISE} on every other batch",
            "device": dev.type,
            "hardware": hardware_description(dev),
            "wall_time_s": round(wall, 1),
            "eval_psnr_db": round(holdout_psnr(codec), 3),
            "eval_frames": "64 crops (64x64) of the held-out rightmost 1/8 of each photo",
            **quantizer_fit(fit_tokens),
            "link_defaults": {**LINK_DEFAULTS, "latent_dim": spec.latent_dim},
            "data": "skimage.data photos (see experiments/training.py), augmented crops",
            "created_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        card["loss"] = card["loss"].replace("{QUANT_NOISE}", f"{QUANT_NOISE:g}")
        (out_dir / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
        if progress:
            print(f"{name}: {step} steps in {wall:.0f} s, held-out PSNR {card['eval_psnr_db']} dB")
        return card
