"""Training of the learned codecs (:mod:`shared.codec.models`) from scratch, in bounded time.

Data are the real photographs that ship inside scikit-image's wheel (nothing is downloaded):
random-scale crops, resized to the frame size with an area filter, with flips, small rotations,
illumination/colour jitter and occasional blur. The rightmost eighth of every photograph is held
out: training crops never touch it, and :func:`holdout_frames` (the eval PSNR of the card) is cut
from it only.

Run ``python -m experiments.training --name ae64 --minutes 10`` to rebuild
``shared/codec/weights/ae64.pt`` and its card ``ae64.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from tqdm import tqdm

from shared.accounting import psnr_batch
from shared.codec.models import (
    CODECS,
    Codec,
    CodecError,
    CodecSpec,
    Decoder,
    Encoder,
    codec_card,
    codecs_dir,
    load_codec,
    save_codec,
)
from shared.codec.zoo import shipped_codecs_dir
from shared.coding.quantizer import fit_latent_grid, fit_latent_range

__all__ = [
    "CropSampler",
    "evaluate_psnr",
    "holdout_frames",
    "source_images",
    "hardware_description",
    "split_holdout",
    "training_parts",
    "train_codec",
    "training_session",
    "warm_start",
]

# Photos shipped in skimage's wheel, loaded through skimage.data (grayscale ones become RGB).
_SKIMAGE_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
    "camera",
    "grass",
    "gravel",
    "brick",
    "moon",
    "coins",
    "horse",
    "text",
    "page",
)
# Photos in skimage's data folder without a loader function.
_SKIMAGE_FILES = ("motorcycle_left.png", "motorcycle_right.png")
HOLDOUT_FRACTION = 1 / 8  # rightmost columns of every photo, never used for training crops
DEFAULT_MIN_ZOOM = 0.75  # smallest training crop side, in frame sizes


def source_images() -> dict[str, np.ndarray]:
    """The training photographs as uint8 RGB arrays (H, W, 3), by name."""
    import skimage.data

    images: dict[str, np.ndarray] = {}
    for name in _SKIMAGE_PHOTOS:
        images[name] = _to_rgb(getattr(skimage.data, name)())
    folder = Path(skimage.data.__file__).resolve().parent
    for fname in _SKIMAGE_FILES:
        with Image.open(folder / fname) as im:
            images[Path(fname).stem] = _to_rgb(np.asarray(im.convert("RGB")))
    return images


def _to_rgb(img: np.ndarray) -> np.ndarray:
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


def training_parts() -> list[np.ndarray]:
    """Every photo without its held-out strip: all that training (and fitting) may look at."""
    return [split_holdout(img)[0] for img in source_images().values()]


def split_holdout(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train part, held-out part): the held-out part is the rightmost eighth (>= 64 columns)."""
    w = img.shape[1]
    cut = w - max(int(round(w * HOLDOUT_FRACTION)), 64)
    return img[:, :cut], img[:, cut:]


class CropSampler:
    """Random augmented ``size`` x ``size`` crops of a set of RGB photos (seeded, no global RNG).

    Each crop: pick a photo uniformly, a square side log-uniform in [min_zoom * size, photo
    side] (a crop of side ``k * size`` is shrunk k times, as a camera frame of a scene is),
    optionally a small rotation (p = 0.25, |angle| <= 10 deg), area-filter resize to ``size``,
    horizontal (p = 0.5) / vertical (p = 0.1) flips, occasional Gaussian blur (p = 0.15), then
    illumination gain in [0.5, 1.4], per-channel gain in [0.9, 1.1] and saturation in [0.6, 1.3].
    With ``augment=False`` only the crop position and scale are random.
    """

    def __init__(
        self,
        photos: list[np.ndarray],
        size: int,
        seed: int,
        augment: bool = True,
        min_zoom: float = DEFAULT_MIN_ZOOM,
    ):
        if min_zoom <= 0:
            raise ValueError(f"min_zoom must be > 0, got {min_zoom}")
        self.photos = [Image.fromarray(p) for p in photos]
        self.size = size
        self.augment = augment
        self.min_zoom = min_zoom
        self.rng = np.random.default_rng(seed)

    def crop(self) -> np.ndarray:
        rng, size = self.rng, self.size
        im = self.photos[rng.integers(len(self.photos))]
        w, h = im.size
        max_side = min(w, h)
        min_side = min(max_side, int(self.min_zoom * size))
        side = math.exp(rng.uniform(math.log(min_side), math.log(max_side)))
        angle = rng.uniform(-10, 10) if self.augment and rng.random() < 0.25 else 0.0
        # A rotated square needs a larger region around it; shrink the crop until it fits.
        grow = abs(math.cos(math.radians(angle))) + abs(math.sin(math.radians(angle)))
        side = min(side, max_side / grow)
        region = min(side * grow, max_side)
        x0 = rng.uniform(0, w - region)
        y0 = rng.uniform(0, h - region)
        out = max(size, int(math.ceil(size * grow)))
        resample = Image.Resampling.BOX if region >= out else Image.Resampling.BILINEAR
        patch = im.resize((out, out), resample, box=(x0, y0, x0 + region, y0 + region))
        if angle:
            patch = patch.rotate(angle, Image.Resampling.BICUBIC)
        if out != size:
            m = (out - size) // 2
            patch = patch.crop((m, m, m + size, m + size))
        if self.augment and rng.random() < 0.15:
            patch = patch.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.5)))
        a = np.asarray(patch)
        if self.augment:
            if rng.random() < 0.5:
                a = a[:, ::-1]
            if rng.random() < 0.1:
                a = a[::-1]
            a = self._jitter(a)
        return np.ascontiguousarray(a)

    def _jitter(self, a: np.ndarray) -> np.ndarray:
        rng = self.rng
        x = a.astype(np.float32)
        luma = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        sat = rng.uniform(0.6, 1.3)
        x = luma[..., None] + sat * (x - luma[..., None])
        x *= rng.uniform(0.5, 1.4) * rng.uniform(0.9, 1.1, size=3).astype(np.float32)
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)

    def batch(self, n: int) -> np.ndarray:
        """n crops as uint8 (n, size, size, 3)."""
        out = np.empty((n, self.size, self.size, 3), dtype=np.uint8)
        for i in range(n):
            out[i] = self.crop()
        return out


def holdout_frames(n: int = 256, size: int = 64, seed: int = 12345) -> np.ndarray:
    """n uint8 crops (n, size, size, 3) from the held-out strips only (no colour augmentation)."""
    held = [split_holdout(img)[1] for img in source_images().values()]
    return CropSampler(held, size, seed, augment=False).batch(n)


def evaluate_psnr(codec: Codec, frames: np.ndarray) -> float:
    """Mean PSNR (dB) of ``decode(encode(frames))`` against uint8 ``frames`` (N, S, S, 3)."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    return float(psnr_batch(frames, codec.decode(codec.encode(frames))).mean())


@dataclass
class _Bank:
    """Augmented crops kept in memory as uint8 (N, S, S, C); a fraction is redrawn each epoch."""

    sampler: CropSampler
    data: torch.Tensor

    @classmethod
    def build(cls, sampler: CropSampler, n: int, device: torch.device) -> _Bank:
        return cls(sampler, torch.from_numpy(sampler.batch(n)).to(device))

    def refresh(self, fraction: float, gen: torch.Generator) -> None:
        k = int(len(self.data) * fraction)
        if k == 0:
            return
        idx = torch.randperm(len(self.data), generator=gen)[:k]
        new = torch.from_numpy(self.sampler.batch(k))
        self.data[idx.to(self.data.device)] = new.to(self.data.device)

    def frames(self, idx: torch.Tensor) -> torch.Tensor:
        """Crops ``idx`` as float (B, C, S, S) in [0, 1], channels-last in memory (no copy)."""
        return self.data[idx].permute(0, 3, 1, 2).float().div_(255.0)


def warm_start(encoder: Encoder, decoder: Decoder, init: str) -> None:
    """Start from shipped codec ``init``: copy every tensor of the same name, and for tensors
    whose shape differs (a larger latent's linear layers) the overlapping block, leaving the
    rest of the fresh initialization; the extra latent dimensions start near zero.
    """
    path = codecs_dir() / f"{init}.pt"
    if not path.is_file():  # a folder of trained weights need not hold the shipped ones
        path = shipped_codecs_dir() / f"{init}.pt"
    blob = torch.load(path, map_location="cpu", weights_only=True)
    source = blob["state_dict"]
    with torch.no_grad():
        for prefix, module in (("encoder.", encoder), ("decoder.", decoder)):
            for key, target in module.state_dict().items():
                value = source.get(prefix + key)
                if value is None or value.dim() != target.dim():
                    continue
                if value.shape != target.shape:
                    target.mul_(0.01)
                overlap = zip(value.shape, target.shape, strict=True)
                block = tuple(slice(0, min(a, b)) for a, b in overlap)
                target[block] = value[block].to(target.device)
        # The decoder scales its input by sqrt(d); keep the copied columns' effect unchanged.
        old_dim, new_dim = blob["spec"]["latent_dim"], decoder.expand.in_features
        if old_dim != new_dim:
            decoder.expand.weight[:, :old_dim] *= (old_dim / new_dim) ** 0.5


def hardware_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} (CPU), {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def train_codec(
    name: str = "ae64",
    minutes: float = 10.0,
    seed: int = 0,
    device: str = "cpu",
    out_dir: Path | None = None,
    progress: bool = True,
    *,
    spec: CodecSpec | None = None,
    steps: int | None = None,
    batch_size: int = 32,
    lr: float = 1.5e-3,
    bank_size: int = 32768,
    bank_refresh: float = 0.2,
    threads: int | None = None,
    eval_frames: int = 512,
    init: str | None = None,
    min_zoom: float = DEFAULT_MIN_ZOOM,
) -> dict:
    """Train codec ``name`` from scratch for ``minutes`` of wall-clock time; write its card.

    The learning rate warms up over the first 3 % and then follows a cosine decay keyed to the
    elapsed fraction of the time budget (or of ``steps`` when given, which makes a run
    reproducible step for step), so the run always ends annealed. Writes ``<name>.pt`` (spec +
    float32 state_dict) and ``<name>.json`` (the card) into ``out_dir`` (default: the shipped
    :func:`~shared.codec.zoo.codecs_dir`). ``spec`` overrides the registry entry (for
    experiments; its name then names the files). ``steps`` replaces the time budget by a step count.
    ``threads`` sets torch's CPU threads for the run (default: leave them as they are).
    ``init`` names a shipped codec to start from (:func:`warm_start`) instead of random weights.
    ``min_zoom`` is the smallest crop side in frame sizes (see :class:`CropSampler`).
    """
    if spec is None:
        if name not in CODECS:
            raise CodecError(f"unknown codec {name!r}; known codecs: {sorted(CODECS)}")
        spec = CODECS[name]
    if not (minutes > 0 and (steps is None or steps >= 1)):
        raise ValueError(f"need minutes > 0 and steps >= 1, got minutes={minutes}, steps={steps}")
    with training_session(device, out_dir, threads, seed) as (dev, out_dir):
        return _train(
            spec, minutes=minutes, seed=seed, dev=dev, out_dir=out_dir, progress=progress,
            steps=steps, batch_size=batch_size, lr=lr, bank_size=bank_size,
            bank_refresh=bank_refresh, eval_frames=eval_frames, init=init, min_zoom=min_zoom,
        )  # fmt: skip


@contextlib.contextmanager
def training_session(
    device: str, out_dir: Path | None, threads: int | None, seed: int
) -> Iterator[tuple[torch.device, Path]]:
    """(device, output folder) for one training run: the device checked, the folder made,
    torch's CPU threads set to ``threads`` and its global RNG seeded, both restored after (weight
    init draws from the global RNG; the caller's state is left as it was)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise CodecError("device 'cuda' requested but CUDA is not available")
    dev = torch.device(device)
    out_dir = Path(out_dir) if out_dir is not None else codecs_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    prev_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            torch.manual_seed(seed)
            yield dev, out_dir
    finally:
        torch.set_num_threads(prev_threads)


def _train(
    spec: CodecSpec,
    *,
    minutes: float,
    seed: int,
    dev: torch.device,
    out_dir: Path,
    progress: bool,
    steps: int | None,
    batch_size: int,
    lr: float,
    bank_size: int,
    bank_refresh: float,
    eval_frames: int,
    init: str | None,
    min_zoom: float,
) -> dict:
    t_start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    sampler = CropSampler(training_parts(), spec.frame_size, seed, min_zoom=min_zoom)
    bank_size = max(bank_size, batch_size)
    bank = _Bank.build(sampler, bank_size, dev)

    # Channels-last convolutions are ~20 % faster on CPU (oneDNN), for training and inference.
    cl = torch.channels_last
    encoder = Encoder(spec).to(dev, memory_format=cl)
    decoder = Decoder(spec).to(dev, memory_format=cl)
    if init is not None:
        warm_start(encoder, decoder, init)
    params = [*encoder.parameters(), *decoder.parameters()]
    n_params = sum(p.numel() for p in params)
    opt = torch.optim.Adam(params, lr=lr)
    warmup = 0.03

    def lr_at(frac: float) -> float:
        if frac < warmup:
            return lr * (0.1 + 0.9 * frac / warmup)
        f = (frac - warmup) / (1 - warmup)
        return lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(f, 1.0))))

    budget_s = minutes * 60.0
    by_time = steps is None
    bar = tqdm(
        total=round(budget_s, 1) if by_time else steps,
        unit="s" if by_time else "step",
        desc=f"train {spec.name}",
        disable=not progress,
        dynamic_ncols=True,
        bar_format=(
            "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s{postfix}" if by_time else None
        ),
    )
    t0 = time.perf_counter()
    step = 0
    ema_mse = None
    loss_sum = torch.zeros((), device=dev)
    perm = torch.randperm(bank_size, generator=gen)
    pos = 0
    while True:
        elapsed = time.perf_counter() - t0
        frac = elapsed / budget_s if by_time else step / steps
        if frac >= 1.0:
            break
        if pos + batch_size > bank_size:  # one pass over the bank: redraw part of it, reshuffle
            bank.refresh(bank_refresh, gen)
            perm = torch.randperm(bank_size, generator=gen)
            pos = 0
        idx = perm[pos : pos + batch_size].to(dev)
        pos += batch_size
        x = bank.frames(idx)
        for group in opt.param_groups:
            group["lr"] = lr_at(frac)
        loss = F.mse_loss(decoder(encoder(x)), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        loss_sum += loss.detach()
        if step % 10 == 0:  # read the loss only now and then (a device sync on GPUs)
            mse = loss_sum.item() / 10
            loss_sum.zero_()
            ema_mse = mse if ema_mse is None else 0.8 * ema_mse + 0.2 * mse
            bar.set_postfix(
                step=step, psnr=f"{-10 * math.log10(ema_mse):.2f}", lr=f"{lr_at(frac):.1e}"
            )
            if by_time:
                bar.n = round(min(time.perf_counter() - t0, budget_s), 1)
                bar.refresh()
        if not by_time:
            bar.update(1)
    train_wall = time.perf_counter() - t0
    bar.close()

    weights = save_codec(spec, encoder, decoder, out_dir / f"{spec.name}.pt")

    codec = Codec(spec, weights)
    n_train_eval = min(1024, bank_size)
    train_idx = torch.randperm(bank_size, generator=gen)[:n_train_eval]
    train_frames = bank.data[train_idx.to(dev)].cpu().numpy()
    train_psnr = evaluate_psnr(codec, train_frames)
    # The quantizer's range and grid are fitted on training crops only, like the weights.
    train_latents = codec.encode(train_frames)
    eval_psnr = evaluate_psnr(codec, holdout_frames(eval_frames, spec.frame_size))
    command = (
        f"python -m experiments.training --name {spec.name} --minutes {minutes:g} --seed {seed} "
        f"--device {dev.type} --batch-size {batch_size} --lr {lr:g} --bank-size {bank_size}"
        + (f" --steps {steps}" if steps is not None else "")
        + (f" --init {init}" if init is not None else "")
        + (f" --min-zoom {min_zoom:g}" if min_zoom != DEFAULT_MIN_ZOOM else "")
        + f" --threads {torch.get_num_threads()}"
    )
    card = {
        "name": spec.name,
        "latent_dim": spec.latent_dim,
        "frame_size": spec.frame_size,
        "channels": spec.channels,
        "architecture": spec.to_dict(),
        "params": n_params,
        "weights_file": weights.name,
        "weights_bytes": weights.stat().st_size,
        "weights_dtype": "float16",
        "sha256": codec.digest,
        "command": command,
        "seed": seed,
        "init": init,
        "steps": step,
        "batch_size": batch_size,
        "lr": lr,
        "loss": "mse",
        "bank_size": bank_size,
        "min_zoom": min_zoom,
        "device": dev.type,
        "hardware": hardware_description(dev),
        "wall_time_s": round(train_wall, 1),
        "total_time_s": round(time.perf_counter() - t_start, 1),
        "train_psnr_db": round(train_psnr, 3),
        "eval_psnr_db": round(eval_psnr, 3),
        **quantizer_fit(train_latents),
        "eval_frames": f"{eval_frames} crops of the held-out rightmost 1/8 of each photo",
        "data": "skimage.data photos: " + ", ".join([*_SKIMAGE_PHOTOS, *_SKIMAGE_FILES]),
        "created_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    (out_dir / f"{spec.name}.json").write_text(json.dumps(card, indent=2) + "\n")
    if progress:
        print(
            f"{spec.name}: {step} steps in {train_wall:.0f} s, train PSNR {train_psnr:.2f} dB, "
            f"held-out PSNR {eval_psnr:.2f} dB -> {weights}"
        )
    return card


def quantizer_fit(latents: np.ndarray) -> dict:
    """The card's quantizer entries, fitted to a codec's latents on training crops."""
    return {
        "fitted_latent_range": fit_latent_range(latents),
        "latent_grid": fit_latent_grid(latents).to_dict(),
    }


def refit_quantizer(name: str, seed: int = 0, n: int = 1024, out_dir: Path | None = None) -> dict:
    """Fit codec ``name``'s quantizer range and grid again (on ``n`` augmented training crops,
    as training does) and write them into its card, leaving the weights alone."""

    folder = Path(out_dir) if out_dir is not None else codecs_dir()
    codec = load_codec(name, folder)
    crops = CropSampler(training_parts(), codec.frame_size, seed).batch(n)
    card = {**codec_card(name, folder), **quantizer_fit(codec.encode(crops))}
    (folder / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train a hoplink codec from scratch.")
    p.add_argument("--name", default="ae64", choices=sorted(CODECS))
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument("--steps", type=int, default=None, help="train exactly this many steps")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--bank-size", type=int, default=32768)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--init", default=None, help="start from this shipped codec's weights")
    p.add_argument(
        "--min-zoom",
        type=float,
        default=DEFAULT_MIN_ZOOM,
        help="smallest training crop side, in frame sizes (default %(default)s)",
    )
    p.add_argument(
        "--refit-quantizer",
        action="store_true",
        help="do not train: fit the shipped codec's quantizer range and grid again, into its card",
    )
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    if a.refit_quantizer:
        card = refit_quantizer(a.name, a.seed, out_dir=a.out_dir)
        print(f"{a.name}: fitted_latent_range {card['fitted_latent_range']}, latent_grid written")
        return
    card = train_codec(
        a.name, a.minutes, a.seed, a.device, a.out_dir, not a.quiet, steps=a.steps,
        batch_size=a.batch_size, lr=a.lr, bank_size=a.bank_size, threads=a.threads, init=a.init,
        min_zoom=a.min_zoom,
    )  # fmt: skip
    print(json.dumps(card, indent=2))


if __name__ == "__main__":
    main()
