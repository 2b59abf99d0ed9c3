"""Token links measured: the codec alone, the link's RD curve, and H.264 on the same frames.

Every figure is in link bits per frame (:mod:`shared.accounting`) on frames at their working
size; H.264 (libx264, one GOP, :mod:`experiments.realcodecs`) codes exactly the same frames.

* **codec alone**: the link at τ = 1, where every token is NEW — the codec's picture at b bits per
  value, with everything a link carries (range-coded codes, DIGEST, HELLO, BYE);
* **token link**: a sweep of τ, the RD curve read against H.264's by BD-rate (negative: cheaper);
* **fixed-length symbols**: the same decisions priced as the paper prices them (2 bits of kind
  per token, ⌈log2 M⌉ per HIT, d·b per NEW, no cues: a lower bound), to show what entropy
  coding saves.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from experiments.bdrate import bd_rate
from experiments.clips import EncodedClip, encoded_clip
from experiments.link import simulate
from experiments.realcodecs import CodecPoint, bits_at_psnr, h264_points
from shared.accounting import psnr_batch
from shared.config import LinkConfig

TAUS: tuple[float, ...] = (1.0, 0.97, 0.95, 0.93, 0.9, 0.85, 0.8)
KIND_BITS = 2  # a fixed-length token symbol: SKIP, HIT or NEW


@dataclass
class TokenPoint:
    tau: float
    link_bits_per_frame: float
    fixed_bits_per_frame: float  # the same decisions in fixed-length symbols
    psnr: float
    skip: float  # fraction of tokens
    hit: float
    new: float
    concealed: int
    silent_wrong: int


@dataclass
class TokenClipResult:
    source: str
    size: tuple[int, int]  # frame (H, W) px
    grid: tuple[int, int]  # tokens (h, w)
    frames: int
    codec_psnr: float  # decode(encode(frame)), no quantization, no link
    points: list[TokenPoint]
    h264: list[dict]  # realcodecs.CodecPoint as dicts
    bd_rate_vs_h264: float  # percent, link bits; NaN when the curves do not overlap
    bd_overlap: tuple[float, float]
    default_point: TokenPoint  # the link at the configuration's own τ
    h264_bits_at_default: float
    h264_in_range: bool

    def to_dict(self) -> dict:
        return asdict(self)


def point(clip: EncodedClip, config: LinkConfig) -> TokenPoint:
    """One run of the token link on ``clip`` at ``config``."""
    result = simulate(clip.latents, config, frames=clip.frames, decoder=clip.decoder)
    s, tx = result.summary, result.tx
    n, tokens = s.frames, max(1, tx.tokens_skip + tx.tokens_hit + tx.tokens_new)
    fixed = (
        KIND_BITS * tokens
        + config.index_bits * tx.tokens_hit
        + config.latent_dim * config.bits_per_value * tx.tokens_new
    )
    other = result.link_bits - sum(r.bits for r in result.records)  # DIGEST, HELLO, refreshes…
    return TokenPoint(
        tau=config.threshold,
        link_bits_per_frame=s.link_bits_per_frame,
        fixed_bits_per_frame=(fixed + other) / n,
        psnr=s.psnr,
        skip=tx.tokens_skip / tokens,
        hit=tx.tokens_hit / tokens,
        new=tx.tokens_new / tokens,
        concealed=s.outcomes.get("concealed", 0),
        silent_wrong=result.silent_wrong,
    )


def evaluate_clip(
    config: LinkConfig, source: str, n_frames: int | None, taus: Sequence[float] = TAUS
) -> TokenClipResult:
    clip = encoded_clip(config, source, n_frames)
    codec = clip.codec
    recon = np.stack([codec.decode(z) for z in clip.latents])
    codec_psnr = float(psnr_batch(clip.frames, recon).mean())
    points = [point(clip, config.replace(threshold=tau)) for tau in taus]
    default = point(clip, config)
    h264 = h264_points(clip.frames)
    bd = bd_rate(
        [p.bits_per_frame for p in h264],
        [p.psnr for p in h264],
        [p.link_bits_per_frame for p in points],
        [p.psnr for p in points],
    )
    at_default = bits_at_psnr(h264, default.psnr)
    return TokenClipResult(
        source=source,
        size=tuple(clip.frames.shape[1:3]),
        grid=tuple(clip.latents.shape[1:3]),
        frames=len(clip.frames),
        codec_psnr=codec_psnr,
        points=points,
        h264=[asdict(p) for p in h264],
        bd_rate_vs_h264=bd.percent,
        bd_overlap=bd.overlap,
        default_point=default,
        h264_bits_at_default=float(at_default),
        h264_in_range=at_default.in_range,
    )


def render(results: Sequence[TokenClipResult], config: LinkConfig) -> str:
    """A terminal report (fits 120 columns)."""
    lines = [
        f"token link, codec {config.codec}: d={config.latent_dim}, b={config.bits_per_value}, "
        f"M={config.capacity}, memory={config.memory}, default τ={config.threshold}; all rates "
        "in link bits/frame; H.264 = libx264, one GOP, the same frames",
        "",
        f"{'source':<12} {'size':>9} {'tokens':>7} {'codec dB':>8} {'all-NEW dB':>10} "
        f"{'all-NEW b/f':>11} {'H.264 b/f@':>10} {'link dB':>7} {'link b/f':>9} "
        f"{'fixed b/f':>9} {'H.264 b/f':>9} {'×H.264':>6} {'BD vs H.264':>11}",
    ]
    for r in results:
        new, d = r.points[0], r.default_point
        h264_new = bits_at_psnr([_point(p) for p in r.h264], new.psnr)
        ratio = d.link_bits_per_frame / r.h264_bits_at_default
        bd = f"{r.bd_rate_vs_h264:+.1f} %" if math.isfinite(r.bd_rate_vs_h264) else "n/a"
        lines.append(
            f"{r.source[:12]:<12} {r.size[1]:>4}x{r.size[0]:<4} {r.grid[0] * r.grid[1]:>7} "
            f"{r.codec_psnr:>8.2f} {new.psnr:>10.2f} {new.link_bits_per_frame:>11.0f} "
            f"{h264_new.describe(0):>10} {d.psnr:>7.2f} {d.link_bits_per_frame:>9.0f} "
            f"{d.fixed_bits_per_frame:>9.0f} "
            f"{r.h264_bits_at_default:>9.0f}{'' if r.h264_in_range else '*'} {ratio:>6.1f} {bd:>11}"
        )
    if results:
        mean = np.mean
        lines.append(
            f"{'mean':<12} {'':>9} {'':>7} {mean([r.codec_psnr for r in results]):>8.2f} "
            f"{mean([r.points[0].psnr for r in results]):>10.2f} "
            f"{mean([r.points[0].link_bits_per_frame for r in results]):>11.0f}"
        )
    lines += [
        "",
        "codec dB: decode(encode(frame)), no quantization; all-NEW: the link at τ=1 (every token "
        "NEW, b-bit codes range-coded); H.264 b/f@: H.264's bits at the all-NEW PSNR; link: the "
        "default τ; fixed: the same decisions in fixed-length symbols; ×H.264: link bits over "
        "H.264's at equal PSNR (* = outside H.264's PSNR range); BD over the τ sweep "
        f"{', '.join(f'{t:g}' for t in TAUS)}.",
    ]
    return "\n".join(lines)


def _point(d: dict) -> CodecPoint:
    return CodecPoint(**d)


def token_eval(
    config: LinkConfig, sources: dict[str, str], n_frames: int | None, progress: bool = True
) -> list[TokenClipResult]:
    results = []
    for i, (label, source) in enumerate(sources.items(), 1):
        if progress:
            print(f"[{i}/{len(sources)}] {label}: τ sweep and H.264 …", file=sys.stderr)
        result = evaluate_clip(config, source, n_frames)
        result.source = label
        results.append(result)
    return results
