"""``hoplink codec-eval``: what each shipped codec's pictures are worth, beside three baselines.

For every codec, quantizer width b and source (the eight scenarios, or video files), the frames
go through ``encode → quantize(b) → dequantize → decode`` exactly as the link's NEW path does,
and the reconstruction's PSNR/SSIM are set beside

* the best **thumbnail** that fits the same bits (a ``side × side`` RGB thumbnail with ``q`` bits
  per value, box-filtered down and bicubic up; ``side²·3·q ≤ d·b``, the ``(side, q)`` with the
  best mean PSNR over all sources is chosen once, so it is a fixed codec, not an oracle),
* the linear **PCA** transform coder with the codec's d and b (:class:`PcaCodec`), and
* **H.264** (libx264, one I-frame per clip, :mod:`experiments.realcodecs`): its bits/frame at the
  codec's PSNR on the same clip (interpolated between CRFs; ``≤``/``≥`` when outside them).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from experiments.realcodecs import bits_at_psnr, h264_points
from experiments.table import TABLE_GROUPS, calibrate, prepare_clips, run_group
from experiments.tables import render_table
from experiments.training import CropSampler, training_parts
from shared.accounting import psnr_batch, ssim
from shared.codec.cache import DecodeCache
from shared.codec.models import CODECS, CodecError, codecs_dir, load_codec
from shared.codec.zoo import card_grid, codec_card, codec_kind
from shared.coding.quantizer import (
    Grid,
    LatentGrid,
    cell_centres,
    dequantize,
    fit_latent_grid,
    fit_latent_range,
    quantize,
)
from shared.config import build_config
from shared.scenarios import SCENARIOS, ScenarioError, expand_sources, load_clip

# shared.accounting, PIL and the scenarios load in the functions: `hoplink --help` stays instant.

__all__ = [
    "EvalRow",
    "codec_roundtrip",
    "evaluate",
    "fit_latent_grid",
    "fit_latent_range",
    "h264_anchor",
    "link_comparison",
    "link_variants",
    "thumbnail",
    "thumbnail_choice",
]

# Real camera videos that Debian packages ship (`apt-get install python3-imageio
# forensics-samples-files`): footage no codec here was trained on. `--sources real` picks them.
THUMBNAIL_SIDES = (2, 3, 4, 5, 6, 8, 10, 12, 16)


def codec_roundtrip(codec, frames: np.ndarray, bits: int, grid: Grid = 1.0):
    """Frames as the Rx shows them after a NEW at ``bits`` per value: uint8 (N, S, S, 3)."""
    latents = codec.encode(frames)
    return codec.decode(dequantize(quantize(latents, bits, grid), bits, grid))


@dataclass(frozen=True, eq=False)
class PcaCodec:
    """The linear baseline at equal bits: the top ``d`` principal components of training crops,
    their coefficients on a per-dimension grid fitted like a codec's, b bits each, so a frame
    costs d·b bits like a NEW. What a learned codec adds over it is what its non-linearity buys."""

    mean: np.ndarray  # (S·S·3,) float32
    basis: np.ndarray  # (d, S·S·3), orthonormal rows
    grid: LatentGrid  # of the coefficients

    def roundtrip(self, frames: np.ndarray, bits: int) -> np.ndarray:
        x = frames.reshape(len(frames), -1).astype(np.float32) - self.mean
        codes = quantize(x @ self.basis.T, bits, self.grid)
        shown = cell_centres(codes, bits, self.grid) @ self.basis + self.mean
        return np.clip(np.rint(shown), 0, 255).astype(np.uint8).reshape(frames.shape)


@functools.cache
def pca_codec(size: int, dim: int, seed: int = 0) -> PcaCodec:
    """:class:`PcaCodec` of ``dim`` components for ``size``² frames, fitted on augmented
    training crops (never the held-out strips, never a clip), as the learned codecs are."""

    n = max(2048, 8 * dim)
    x = CropSampler(training_parts(), size, seed).batch(n).reshape(n, -1).astype(np.float32)
    mean = x.mean(axis=0)
    x -= mean
    basis = np.linalg.svd(x, full_matrices=False)[2][:dim]
    return PcaCodec(mean, basis, fit_latent_grid(x @ basis.T))


def thumbnail(frames: np.ndarray, side: int, bits: int) -> np.ndarray:
    """``side × side`` thumbnails with ``bits`` per value (uniform, mid-rise), scaled back up."""
    from PIL import Image

    n, size = frames.shape[0], frames.shape[1]
    levels = 1 << bits
    out = np.empty_like(frames)
    for i in range(n):
        small = np.asarray(
            Image.fromarray(frames[i]).resize((side, side), Image.Resampling.BOX), np.float32
        )
        cells = np.clip(np.floor(small * (levels / 256.0)), 0, levels - 1)
        small = np.rint((cells + 0.5) * (256.0 / levels) - 0.5).clip(0, 255).astype(np.uint8)
        up = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
        out[i] = np.asarray(up)
    return out


def thumbnail_choice(clips: Sequence[np.ndarray], budget_bits: int) -> tuple[int, int]:
    """The ``(side, q)`` within ``side²·3·q ≤ budget_bits`` with the best mean PSNR over clips."""

    best, best_psnr = None, -math.inf
    for side in THUMBNAIL_SIDES:
        q = min(8, budget_bits // (3 * side * side))
        if q < 1:
            continue
        mean = float(np.mean([psnr_batch(c, thumbnail(c, side, q)).mean() for c in clips]))
        if mean > best_psnr:
            best, best_psnr = (side, q), mean
    if best is None:
        raise ValueError(f"no thumbnail fits in {budget_bits} bits")
    return best


@dataclass(frozen=True)
class EvalRow:
    codec: str
    latent_dim: int
    frame_size: int
    bits_per_value: int
    latent_range: float  # R of the uniform grid (1.0 on a per_dim grid)
    latent_grid: str  # "uniform" or "per_dim"
    source: str
    bits_per_frame: int
    psnr: float
    ssim: float
    thumbnail: str  # "side×side×q"
    thumbnail_psnr: float
    pca_psnr: float  # PcaCodec with the codec's d at the same b
    h264_bits_at_psnr: str  # BitsAtPsnr.describe(): "123.4", or "≤…*"/"≥…*" out of range

    def to_dict(self) -> dict:
        return asdict(self)


def _mean_ssim(a: np.ndarray, b: np.ndarray, stride: int) -> float:

    return float(np.mean([ssim(a[i], b[i]) for i in range(0, len(a), stride)]))


def evaluate(
    codec,
    clips: dict[str, np.ndarray],
    bits_list: Sequence[int],
    grid: Grid = 1.0,
    h264: dict | None = None,
    ssim_stride: int = 4,
) -> list[EvalRow]:
    """One row per (b, source) for ``codec`` on ``clips`` (name → uint8 frames at its size).

    ``h264`` maps a source to its H.264 points (:func:`h264_anchor`); None leaves that column out.
    """

    rows = []
    per_dim = isinstance(grid, LatentGrid)
    pca = pca_codec(codec.frame_size, codec.latent_dim)
    for bits in bits_list:
        budget = codec.latent_dim * bits
        side, q = thumbnail_choice(list(clips.values()), budget)
        for name, frames in clips.items():
            shown = codec_roundtrip(codec, frames, bits, grid)
            p = float(psnr_batch(frames, shown).mean())
            thumb = thumbnail(frames, side, q)
            rows.append(
                EvalRow(
                    codec=codec.name,
                    latent_dim=codec.latent_dim,
                    frame_size=codec.frame_size,
                    bits_per_value=bits,
                    latent_range=1.0 if per_dim else grid,
                    latent_grid="per_dim" if per_dim else "uniform",
                    source=name,
                    bits_per_frame=budget,
                    psnr=p,
                    ssim=_mean_ssim(frames, shown, ssim_stride),
                    thumbnail=f"{side}×{side}×{q}",
                    thumbnail_psnr=float(psnr_batch(frames, thumb).mean()),
                    pca_psnr=float(psnr_batch(frames, pca.roundtrip(frames, bits)).mean()),
                    h264_bits_at_psnr=bits_at_psnr(h264[name], p).describe() if h264 else "–",
                )
            )
    return rows


def h264_anchor(clips: dict[str, np.ndarray]) -> dict:
    """H.264's RD points (one per CRF) for every clip: the anchor :func:`evaluate` reads."""

    return {name: h264_points(frames) for name, frames in clips.items()}


@dataclass(frozen=True)
class LinkVariant:
    """One way to run the link: a codec and the configuration (b, quantizer grid) it runs with."""

    label: str
    codec: object  # shared.codec.models.Codec
    config: object  # shared.config.LinkConfig naming that codec


@dataclass(frozen=True)
class LinkRow:
    """One variant on the link over one group of clips, at the common target PSNR."""

    variant: str
    group: str
    target_psnr: float
    threshold: float
    bits_per_frame: float
    hit_rate: float
    psnr: float
    ssim: float


def link_variants(codecs: Sequence, base, pairs: Sequence[tuple[int, str]]) -> list:
    """Each codec at each (b, grid kind) of ``pairs``, as a :class:`LinkVariant` on ``base``."""
    variants = []
    for codec in codecs:
        for bits, kind in pairs:
            (grid,) = _grids(codec, [kind])
            per_dim = isinstance(grid, LatentGrid)
            config = base.replace(
                codec=codec.name,
                latent_dim=codec.latent_dim,
                bits_per_value=bits,
                latent_range=1.0 if per_dim else grid,
                latent_grid="per_dim" if per_dim else "uniform",
            )
            shape = "per-dim" if per_dim else f"R={grid:g}"
            variants.append(LinkVariant(f"{codec.name} b={bits} {shape}", codec, config))
    return variants


def link_comparison(
    variants: Sequence[LinkVariant], n_frames: int, seed: int, psnr_drop: float = 0.5, on_step=None
) -> list[LinkRow]:
    """Variants side by side on the link, per Table I group, at ONE target PSNR per group: the
    lowest all-NEW PSNR among them minus ``psnr_drop`` (every variant can reach it), each
    calibrated by the same rule (:func:`experiments.table.calibrate`: the lowest-rate τ that
    reaches it). Bits are bits, so variants may differ in d, b and grid, not in frame size.
    """

    if len({v.codec.frame_size for v in variants}) != 1:
        raise ValueError("link comparison needs codecs of one frame size")
    decoders = {v.codec.name: DecodeCache(v.codec) for v in variants}
    rows = []
    for group, names in TABLE_GROUPS.items():
        clips = {
            v.codec.name: prepare_clips(names, v.codec, n_frames, seed) for v in variants
        }  # encoded once per codec
        prepared = []
        for v in variants:
            all_new = v.config.replace(memory="vq", threshold=1.0)
            ceiling = run_group(clips[v.codec.name], all_new, decoders[v.codec.name], False)
            prepared.append((v, ceiling.summary.psnr))
        target = min(p for _, p in prepared) - psnr_drop
        for v, _ in prepared:
            name = v.codec.name
            result, _ = calibrate(clips[name], v.config, target, decoders[name], on_step)
            s = result.summary
            rows.append(
                LinkRow(
                    v.label,
                    group,
                    target,
                    result.threshold,
                    s.bits_per_frame,
                    s.hit_rate,
                    s.psnr,
                    s.ssim,
                )  # fmt: skip
            )
    return rows


# --- hoplink codec-eval ---------------------------------------------------------------------------


def add_codec_eval_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``hoplink codec-eval`` (its parser and help line are the CLI's)."""
    p.add_argument(
        "--codecs", default=None, help="comma-separated names (default: every shipped codec)"
    )
    p.add_argument("--bits", default="2,3,4,6,8", help="bits per value b (default 2,3,4,6,8)")
    p.add_argument(
        "--sources",
        default=None,
        help="scenarios and/or video files, comma-separated, or `real` for the Debian-packaged "
        "camera videos (default: the eight scenarios)",
    )
    p.add_argument("--frames", type=int, default=60, help="frames per source (default 60)")
    p.add_argument("--seed", type=int, default=0, help="scenario seed (default 0)")
    p.add_argument(
        "--range",
        dest="latent_range",
        default=",".join(QUANTIZER_GRIDS),
        help="quantizer grids, comma-separated: paper (every value on [-1, 1]), fitted (the "
        "card's range R), per_dim (the card's per-dimension intervals); default all three",
    )
    p.add_argument("--no-h264", action="store_true", help="skip the H.264 comparison (faster)")
    p.add_argument(
        "--link",
        action="store_true",
        help="also run each codec × b × range on the link (hopfield memory, Table I groups) at "
        "one matched PSNR per group; codecs must share the frame size",
    )
    p.add_argument(
        "--link-pairs",
        default=None,
        help="with --link: only these b:range pairs, e.g. 8:paper,4:per_dim (the common target "
        "is the worst pair's all-NEW PSNR, so leave out pairs far below the others)",
    )
    p.add_argument(
        "--weights-dir",
        type=Path,
        default=None,
        help="read the codecs' weights and cards from this folder (e.g. `python -m "
        "experiments.training --out-dir`) instead of the shipped ones; not with --link",
    )
    p.add_argument("--json", action="store_true", help="print JSON rows instead of tables")
    p.add_argument("--out", default=None, help="also write the JSON rows to this file")
    p.set_defaults(func=cmd_codec_eval)


QUANTIZER_GRIDS = ("paper", "fitted", "per_dim")


def _link_pairs(args: argparse.Namespace, bits_list, kinds) -> list[tuple[int, str]]:
    if args.link_pairs is None:
        return [(b, k) for b in bits_list for k in kinds]
    pairs = []
    for item in (s.strip() for s in args.link_pairs.split(",") if s.strip()):
        bits, _, kind = item.partition(":")
        if not bits.isdigit() or not 1 <= int(bits) <= 16 or kind not in QUANTIZER_GRIDS:
            raise SystemExit(
                f"--link-pairs takes b:range items (b in 1..16, range one of "
                f"{', '.join(QUANTIZER_GRIDS)}), got {item!r}"
            )
        pairs.append((int(bits), kind))
    return pairs


def _grids(codec, kinds: Sequence[str]) -> list[Grid]:
    """The distinct grids of ``kinds`` for ``codec`` (from the card beside its weights; R = 1
    when the card has no fitted range)."""

    folder = codec.weights_path.parent
    out: list[Grid] = []
    for kind in kinds:
        if kind == "paper":
            grid: Grid = 1.0
        elif kind == "fitted":
            grid = codec_card(codec.name, folder).get("fitted_latent_range", 1.0)
        else:
            grid = card_grid(codec.name, folder)
        if grid not in out:
            out.append(grid)
    return out


def cmd_codec_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.codecs and all(codec_kind(n.strip()) == "tokens" for n in args.codecs.split(",")):
        return cmd_token_eval(args)

    folder = args.weights_dir or codecs_dir()
    present = [n for n in CODECS if (folder / f"{n}.pt").is_file()]
    names = [n.strip() for n in (args.codecs or ",".join(present)).split(",") if n.strip()]
    if not names:
        raise SystemExit(f"hoplink codec-eval: no codec weights (<name>.pt) in {folder}")
    try:
        bits_list = sorted({int(b) for b in args.bits.split(",") if b.strip()})
    except ValueError:
        raise SystemExit(f"--bits must be comma-separated integers, got {args.bits!r}") from None
    if not bits_list or not all(1 <= b <= 16 for b in bits_list):
        raise SystemExit(f"--bits values must lie in 1..16, got {args.bits!r}")
    sources = expand_sources(args.sources or ",".join(SCENARIOS))
    kinds = [k.strip() for k in args.latent_range.split(",") if k.strip()]
    if not kinds or any(k not in QUANTIZER_GRIDS for k in kinds):
        raise SystemExit(
            f"--range takes a comma-separated subset of {', '.join(QUANTIZER_GRIDS)}, "
            f"got {args.latent_range!r}"
        )
    pairs = _link_pairs(args, bits_list, kinds)
    if args.link and args.weights_dir is not None:
        raise SystemExit("--link runs the link, which loads shipped codecs: drop --weights-dir")
    rows: list[EvalRow] = []
    try:
        codecs = [load_codec(n, args.weights_dir) for n in names]
        clips_by_size: dict[int, dict[str, np.ndarray]] = {}
        for size in sorted({c.frame_size for c in codecs}):
            clips_by_size[size] = {
                label: load_clip(source, n_frames=args.frames, size=size, seed=args.seed)
                for label, source in sources.items()
            }
    except (CodecError, ScenarioError) as exc:
        raise SystemExit(f"hoplink codec-eval: {exc}") from None
    try:
        jobs = [(codec, grid) for codec in codecs for grid in _grids(codec, kinds)]
    except ValueError as exc:
        raise SystemExit(f"hoplink codec-eval: {exc}") from None
    anchors = {
        size: None if args.no_h264 else h264_anchor(clips) for size, clips in clips_by_size.items()
    }
    for codec, r in tqdm(jobs, desc="codec-eval", unit="codec", disable=args.json or None):
        size = codec.frame_size
        rows += evaluate(codec, clips_by_size[size], bits_list, r, h264=anchors[size])
    link_rows = []
    if args.link:
        base = build_config({"memory": "hopfield"})
        with tqdm(desc="link", unit="run", disable=args.json or None) as bar:
            try:
                variants = link_variants(codecs, base, pairs)
                link_rows = link_comparison(variants, args.frames, args.seed, on_step=bar.update)
            except ValueError as exc:
                raise SystemExit(f"hoplink codec-eval --link: {exc}") from None
    payload = json.dumps(
        {"rows": [r.to_dict() for r in rows], "link": [asdict(r) for r in link_rows]}, indent=2
    )
    if args.out:
        Path(args.out).write_text(payload)
    if args.json:
        print(payload)
        return 0
    print(render_table(*summary_table(rows)))
    if link_rows:
        print("\nOn the link (hopfield, index mode), each variant at its lowest-rate τ reaching "
              "the group's common target PSNR:")  # fmt: skip
        fields = list(LinkRow.__dataclass_fields__)
        print(render_table(fields, [[getattr(r, f) for f in fields] for r in link_rows]))
    return 0


def summary_table(rows: Sequence[EvalRow]) -> tuple[list[str], list[list]]:
    """Means over sources per (codec, b, R), and the per-source PSNRs, as table headers + rows."""
    groups: dict[tuple, list[EvalRow]] = {}
    for r in rows:
        grid = "per-dim" if r.latent_grid == "per_dim" else r.latent_range
        groups.setdefault((r.codec, r.bits_per_value, grid), []).append(r)
    sources = list(dict.fromkeys(r.source for r in rows))
    headers = [
        "codec", "d", "S", "b", "range", "bits/frame", "PSNR", "SSIM", "thumbnail", "thumb PSNR",
        "PCA PSNR",
        *[f"{s[:10]}" for s in sources],
    ]  # fmt: skip
    table = []
    for (codec, bits, r), group in groups.items():
        by_source = {g.source: g for g in group}
        table.append(
            [
                codec,
                group[0].latent_dim,
                group[0].frame_size,
                bits,
                r,
                group[0].bits_per_frame,
                float(np.mean([g.psnr for g in group])),
                float(np.mean([g.ssim for g in group])),
                group[0].thumbnail,
                float(np.mean([g.thumbnail_psnr for g in group])),
                float(np.mean([g.pca_psnr for g in group])),
                *[
                    f"{by_source[s].psnr:.1f} ({by_source[s].h264_bits_at_psnr})"
                    if s in by_source
                    else "–"
                    for s in sources
                ],
            ]
        )
    return headers, table


def cmd_token_eval(args: argparse.Namespace) -> int:
    """``hoplink codec-eval --codecs TOKEN_CODEC``: the codec alone, the token link's RD curve
    and H.264 on the same frames at the working size (experiments/token_eval.py)."""
    from experiments.token_eval import render, token_eval  # deferred: a cycle (link ← table)

    sources = expand_sources(args.sources or "real")
    results = []
    for name in (n.strip() for n in args.codecs.split(",") if n.strip()):
        config = build_config({"codec": name}, read_env=False)
        found = token_eval(config, sources, args.frames, progress=not args.json)
        results += found
        if not args.json:
            print(render(found, config))
    rows = [r.to_dict() for r in results]
    if args.json:
        print(json.dumps(rows, indent=2, default=float))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2, default=float) + "\n")
    return 0
