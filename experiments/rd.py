"""``hoplink rd``: rate-distortion curves of every link method, and BD-rate against VQ and H.264.

Each method is a link configuration plus one knob swept over a grid — τ (``threshold``) for the
decisions of the paper, λ (``rdo_lambda``) for the rate-distortion-optimized decision — run through
the in-process simulator (the same Tx/Rx cores as the network) on every clip. A point is one
(method, knob value, group): its link, semantic and wire bits/frame, PSNR and SSIM, pooled frame
by frame over the group's clips. Groups are the scenarios themselves and, when all of a protocol's
scenarios are run, the protocol (pooled), as in Table I; or one group per source (``--sources``:
scenarios, video files, ``real`` for the packaged camera videos).

**Counted bits** are link bits/frame (:class:`shared.accounting.LinkLedger`): every message of the
stream in both directions at its coded payload width — frame messages (eq. 3 widths, or the coded
payload of CODED messages), REFRESH, REFRESH_REQUEST, DIGEST, HELLO, BYE. Curves, BD-rates and the
matched point use them; semantic bits/frame (the paper's eq. 3 view) and wire bits/frame (msgpack
+ websocket framing) are reported beside them.

**Cue policy** is part of a method (what the Rx can verify): ``every_reference`` (the paper: a
SimHash cue with every reference), ``on_change`` (entropy-coded modes: only when the reference
changes) or ``none``. Beside every method's BD-rate sits its silent-wrong count at its matched
point when the Rx memory is noised once (σ = 0.1) before a seeded random frame.

**BD-rate** (:mod:`experiments.bdrate`, pchip over log10 rate, Pareto frontiers, overlapping PSNR
interval) of every method against ``vq`` (the paper's fixed-length VQ memory) and against H.264
(libx264 via PyAV, :mod:`experiments.realcodecs`, CRF swept, one I-frame per clip, start codes and
x264's SEI excluded) on the very same 64×64 frames. Where the curves do not overlap, the H.264
comparison falls back to H.264's bits at the link's best PSNR (:func:`experiments.realcodecs.
bits_at_psnr`: its cheapest point when H.264 cannot go that low — then an upper bound on what
H.264 would need, which flatters the link; see ``h264_side``). The paper's single-point view sits
beside it: every method read off the lower convex hull of its points at the same PSNR as vq
(:class:`MatchedRow`, :class:`experiments.table.Curve`).

Outputs in ``--out``: ``rd_points.csv`` (tidy, one row per point), ``h264_points.csv``,
``bd_rate.csv``, ``matched.csv``, ``rd.json`` (command, timings, tables) and
``rd.png`` / ``rd.svg`` (PSNR and SSIM against link bits/frame, log scale, one row per group).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from experiments.bdrate import INTERPOLATION, bd_rate, pareto_front
from experiments.link import Corruption, simulate
from experiments.realcodecs import DEFAULT_CRFS, CodecPoint, bits_at_psnr, h264_points, pool_points
from experiments.robustness import corruption_frame
from experiments.table import THRESHOLD_GRID, Curve, matched_psnr, pool_runs, prepare_clips
from shared.accounting import Outcome, psnr_batch, ssim
from shared.codec.models import CodecError, load_codec
from shared.config import ConfigError, LinkConfig, config_from_args
from shared.scenarios import PROTOCOLS, SCENARIOS, ScenarioError, expand_sources

# λ: distortion (1 − cos) per bit; three steps a decade from "bits are free" to "bits are dear".
# (τ: the calibration's grid, experiments.table.THRESHOLD_GRID.)
LAMBDA_GRID: tuple[float, ...] = (0.0,) + tuple(
    float(f"{m}e{e}") for e in range(-8, -1) for m in (1, 2, 5)
)


class RDError(ValueError):
    """An ``rd`` request that cannot be run (unknown method, bad group); printed to the user."""


@dataclass(frozen=True)
class Method:
    """A link configuration with one knob to sweep."""

    name: str
    overrides: dict[str, Any]
    knob: str  # "threshold" or "rdo_lambda"
    grid: tuple[float, ...]
    about: str


def _methods() -> dict[str, Method]:
    vq, tau, lam = {"memory": "vq"}, "threshold", "rdo_lambda"
    rdo = {**vq, "decision": "rdo"}
    entries = [
        Method("vq", vq, tau, THRESHOLD_GRID, "paper: hard VQ memory, fixed-length symbols"),
        Method(
            "hopfield",
            {"memory": "hopfield", "transmission": "index"},
            tau,
            THRESHOLD_GRID,
            "paper: Hopfield memory, index transmission",
        ),
        Method(
            "hopfield-soft",
            {"memory": "hopfield", "transmission": "soft"},
            tau,
            THRESHOLD_GRID,
            "paper: Hopfield memory, top-k references + weights",
        ),
        Method("entropy", {**vq, "entropy_coding": True}, tau, THRESHOLD_GRID, "vq + entropy"),
        Method("delta", {**vq, "delta": True}, tau, THRESHOLD_GRID, "vq + DELTA residuals"),
        Method(
            "entropy-delta",
            {**vq, "entropy_coding": True, "delta": True},
            tau,
            THRESHOLD_GRID,
            "vq + entropy + DELTA",
        ),
        Method("rdo", rdo, lam, LAMBDA_GRID, "RDO decision, fixed-length symbols"),
        Method("rdo-delta", {**rdo, "delta": True}, lam, LAMBDA_GRID, "RDO + DELTA"),
        Method("rdo-entropy", {**rdo, "entropy_coding": True}, lam, LAMBDA_GRID, "RDO + entropy"),
        Method(
            "rdo-entropy-delta",
            {**rdo, "entropy_coding": True, "delta": True},
            lam,
            LAMBDA_GRID,
            "RDO + entropy + DELTA (all tools)",
        ),
        # The coded modes send a cue only when the reference changes; these variants send it
        # with every reference, as the paper does, to separate that protocol change from coding.
        Method(
            "entropy-cue",
            {**vq, "entropy_coding": True, "coded_cue": "every_reference"},
            tau,
            THRESHOLD_GRID,
            "vq + entropy, cue with every reference",
        ),
        Method(
            "rdo-entropy-delta-cue",
            {**rdo, "entropy_coding": True, "delta": True, "coded_cue": "every_reference"},
            lam,
            LAMBDA_GRID,
            "all tools, cue with every reference",
        ),
    ]
    return {m.name: m for m in entries}


METHODS: dict[str, Method] = _methods()
DEFAULT_METHODS: tuple[str, ...] = (
    "vq",
    "hopfield",
    "hopfield-soft",
    "entropy",
    "delta",
    "rdo",
    "rdo-entropy-delta",
)
ANCHOR = "vq"
CORRUPT_SIGMA = 0.1  # the Rx memory noise of the silent-wrong runs
PAPER_METHODS = frozenset({"vq", "hopfield", "hopfield-soft"})  # solid lines; link tools dashed


@dataclass
class RDPoint:
    """One operating point: a method at one knob value on one group (scenario or protocol)."""

    scope: str  # "scenario" (one clip) or "protocol" (its clips pooled)
    group: str
    method: str
    knob: str
    value: float
    frames: int
    link_bits_per_frame: float  # every message both ways (the rate every comparison uses)
    semantic_bits_per_frame: float  # the paper's eq. (3): frame messages and refreshes
    wire_bits_per_frame: float  # msgpack + websocket framing of every message
    psnr: float
    ssim: float
    hit_rate: float
    news: int
    deltas: int
    digests_agree: bool
    silent_wrong: int
    seconds: float  # simulation time of the point (quality measurement excluded)


@dataclass
class BDRow:
    group: str
    method: str
    anchor: str  # "vq" or "h264"
    metric: str  # "psnr" or "ssim"
    bd_rate_percent: float
    overlap_low: float
    overlap_high: float
    note: str


@dataclass
class MatchedRow:
    """A method and vq read at one PSNR off their hulls (the paper's single-point view, at equal
    quality), with H.264's bits at that PSNR and the method's silent-wrong frames there.

    Target = the best PSNR any link method reaches on the group (the codec's ceiling on this
    link) − ``psnr_drop`` dB, as in Table I. The method and vq are read at ``psnr`` = the target,
    or the higher of their cheapest points' PSNRs if that lies above it
    (:func:`experiments.table.matched_psnr`), each interpolated on the lower convex hull of its
    (PSNR, link bits/frame) points (``reached`` False: the method's best PSNR is below it).
    H.264's bits are log-linearly interpolated at that PSNR (``h264_side`` "below": H.264 cannot
    go that low, its cheapest point is used — an upper bound on what H.264 needs). The silent-wrong
    run uses the method's cheapest swept point whose PSNR reaches ``psnr`` (``value``).
    """

    group: str
    method: str
    cue: str  # cue policy: every_reference | on_change | none
    target_psnr: float
    psnr: float  # the PSNR both the method and vq are read at
    link_bits_per_frame: float  # on the method's hull at ``psnr``
    vq_bits_per_frame: float  # on vq's hull at the same PSNR
    reached: bool
    vs_vq: float  # link bits / vq's link bits at the same PSNR (NaN without vq)
    between: tuple[float, float]  # knob values of the two hull points mixed
    value: float  # knob value of the operating point run under corruption
    h264_bits: float
    h264_side: str
    ratio_h264: float  # link bits / H.264 bits at the same PSNR
    frames: int  # frames of the group's clips (of the corrupted run too)
    silent_wrong: int = -1  # hits shown from a wrong latent after the Rx was noised (-1: not run)
    corrupted_psnr: float = float("nan")  # PSNR of that run
    corrupt_frames: tuple[int, ...] = ()  # per clip: the frame the corruption came before


@dataclass
class RDResult:
    groups: dict[str, tuple[str, ...]]  # group -> its clips
    scopes: dict[str, str]
    points: list[RDPoint]
    h264: list[dict]  # CodecPoint fields + group
    bd: list[BDRow]
    matched: list[MatchedRow]
    seconds: dict[str, float] = field(default_factory=dict)
    corrupt_sigma: float = 0.0  # σ of the silent-wrong runs (0: not run)


# --- running --------------------------------------------------------------------------------------


class _Quality:
    """PSNR and SSIM of the frames a run shows, decoding each distinct latent once."""

    def __init__(self, codec, with_ssim: bool) -> None:
        self.codec = codec
        self.with_ssim = with_ssim
        self._frames: dict[bytes, np.ndarray] = {}
        self._ssim: dict[tuple[str, int, bytes], float] = {}

    def measure(self, clip, rx_latents: np.ndarray, shown: np.ndarray):

        keys = [np.ascontiguousarray(z, dtype=np.float32).tobytes() for z in rx_latents]
        missing = sorted({k for k, s in zip(keys, shown, strict=True) if s} - self._frames.keys())
        if missing:
            latents = np.stack([np.frombuffer(k, dtype=np.float32) for k in missing])
            for key, frame in zip(missing, self.codec.decode(latents), strict=True):
                self._frames[key] = frame
        psnrs = np.full(len(keys), np.nan)
        ssims = np.full(len(keys), np.nan)
        idx = np.flatnonzero(shown)
        if len(idx):
            decoded = np.stack([self._frames[keys[i]] for i in idx])
            psnrs[idx] = psnr_batch(clip.frames[idx], decoded)
            if self.with_ssim:
                for i in idx:
                    key = (clip.name, int(i), keys[i])
                    if key not in self._ssim:
                        self._ssim[key] = ssim(clip.frames[i], self._frames[keys[i]])
                    ssims[i] = self._ssim[key]
        return psnrs, ssims


def resolve_groups(
    scenario: str | None, protocol: str | None, sources: str | None = None
) -> tuple[list[str], dict[str, tuple[str, ...]], dict[str, str]]:
    """Clips to run and the groups to report: a scenario/file, a protocol, one group per source
    (scenarios, files, ``real``), or all eight scenarios."""

    if sum(bool(x) for x in (scenario, protocol, sources)) > 1:
        raise RDError("give one of --scenario, --protocol and --sources")
    if sources:
        labelled = expand_sources(sources)
        groups = {label: (source,) for label, source in labelled.items()}
        return list(labelled.values()), groups, dict.fromkeys(groups, "source")
    if scenario:
        return [scenario], {scenario: (scenario,)}, {scenario: "scenario"}
    if protocol:
        if protocol not in PROTOCOLS:
            raise RDError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
        names = list(PROTOCOLS[protocol])
    else:
        names = list(SCENARIOS)
    groups = {n: (n,) for n in names}
    scopes = {n: "scenario" for n in names}
    for p, members in PROTOCOLS.items():
        if all(m in names for m in members):
            groups[p], scopes[p] = tuple(members), "protocol"
    return names, groups, scopes


def run_rd(
    clip_names: Sequence[str],
    groups: dict[str, tuple[str, ...]],
    scopes: dict[str, str],
    methods: Sequence[str],
    base: LinkConfig,
    *,
    n_frames: int | None = None,
    with_ssim: bool = True,
    h264: bool = True,
    crfs: Sequence[int] | None = None,
    grids: dict[str, tuple[float, ...]] | None = None,
    psnr_drop: float = 0.5,
    corrupt_sigma: float = CORRUPT_SIGMA,
    progress: Callable[[str], None] | None = None,
) -> RDResult:
    """Sweep every method's knob on every clip; pool per group; BD-rate and H.264 tables; each
    method's matched point re-run with the Rx memory noised (σ = ``corrupt_sigma``; 0: skip)."""

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise RDError(f"unknown method(s) {unknown}; valid: {', '.join(METHODS)}")
    started = time.perf_counter()
    codec = load_codec(base.codec)
    if codec.latent_dim != base.latent_dim:
        raise RDError(
            f"codec {codec.name!r} makes {codec.latent_dim}-d latents, not {base.latent_dim}"
        )
    clips = {c.name: c for c in prepare_clips(clip_names, codec, n_frames, base.seed)}
    quality = _Quality(codec, with_ssim)
    seconds = {"simulation": 0.0, "quality": 0.0, "h264": 0.0, "corruption": 0.0}
    points: list[RDPoint] = []
    for name in methods:
        method = METHODS[name]
        grid = (grids or {}).get(name, method.grid)
        for value in grid:
            config = method_config(base, name, value)
            if progress:
                progress(f"{name} {method.knob}={value:g}")
            per_clip = {}
            for clip in clips.values():
                t0 = time.perf_counter()
                run = simulate(clip.latents, config)
                t1 = time.perf_counter()
                shown = np.array([r.outcome is not Outcome.LOST for r in run.records])
                psnrs, ssims = quality.measure(clip, run.rx_latents, shown)
                for record, p, s in zip(run.records, psnrs, ssims, strict=True):
                    record.psnr, record.ssim = float(p), float(s)
                seconds["simulation"] += t1 - t0
                seconds["quality"] += time.perf_counter() - t1
                per_clip[clip.name] = (run, t1 - t0)
            for group, members in groups.items():
                runs = [per_clip[m][0] for m in members]
                s = pool_runs(runs, config)
                points.append(
                    RDPoint(
                        scope=scopes[group],
                        group=group,
                        method=name,
                        knob=method.knob,
                        value=float(value),
                        frames=s.frames,
                        link_bits_per_frame=s.link_bits_per_frame,
                        semantic_bits_per_frame=s.semantic_bits_per_frame,
                        wire_bits_per_frame=s.wire_bits_per_frame,
                        psnr=s.psnr,
                        ssim=s.ssim,
                        hit_rate=s.hit_rate,
                        news=sum(run.tx.news for run in runs),
                        deltas=sum(run.tx.deltas for run in runs),
                        digests_agree=all(run.digests_agree for run in runs),
                        silent_wrong=sum(run.silent_wrong for run in runs),
                        seconds=sum(per_clip[m][1] for m in members),
                    )
                )
    h264_rows: list[dict] = []
    if h264:
        t0 = time.perf_counter()
        if progress:
            progress("h264")
        per_clip_h264 = {n: h264_points(c.frames, crfs or DEFAULT_CRFS) for n, c in clips.items()}
        for group, members in groups.items():
            for p in pool_points([per_clip_h264[m] for m in members]):
                h264_rows.append({"scope": scopes[group], "group": group, **asdict(p)})
        seconds["h264"] = time.perf_counter() - t0
    bd = _bd_table(points, h264_rows, groups, methods)
    matched = _matched_table(points, h264_rows, groups, methods, psnr_drop, base)
    if corrupt_sigma > 0:
        t0 = time.perf_counter()
        corrupted_quality = _Quality(codec, with_ssim=False)
        for row in matched:
            if progress:
                progress(f"σ={corrupt_sigma:g} at {row.group} {row.method}")
            members = [clips[m] for m in groups[row.group]]
            _corrupted_run(row, members, base, corrupt_sigma, corrupted_quality)
        seconds["corruption"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - started
    result = RDResult(dict(groups), dict(scopes), points, h264_rows, bd, matched, seconds)
    result.corrupt_sigma = corrupt_sigma
    return result


def method_config(base: LinkConfig, name: str, value: float) -> LinkConfig:
    """The link configuration of method ``name`` at knob ``value``."""
    method = METHODS[name]
    try:
        return base.replace(**method.overrides, **{method.knob: value})
    except ConfigError as exc:
        raise RDError(f"method {name}: {exc}") from None


def cue_policy(config: LinkConfig) -> str:
    """What the Rx can verify: a cue with every reference (the paper's fixed-length messages),
    only when the reference changes (entropy-coded ``on_change``), or none (no cue bits)."""
    if config.cue_bits == 0:
        return "none"
    return config.coded_cue if config.entropy_coding else "every_reference"


def _corrupted_run(
    row: MatchedRow, clips: Sequence, base: LinkConfig, sigma: float, quality: _Quality
) -> None:
    """Run ``row``'s operating point on its clips with the Rx memory noised once (σ) before a
    seeded random frame; fill in its silent-wrong count and PSNR."""
    config = method_config(base, row.method, row.value)
    silent, psnrs, at = 0, [], []
    for i, clip in enumerate(clips):
        frame = corruption_frame(len(clip.latents), config.seed + i)
        run = simulate(
            clip.latents, config, corruption=Corruption(frame, sigma=sigma, seed=config.seed)
        )
        silent += run.silent_wrong
        shown = np.array([r.outcome is not Outcome.LOST for r in run.records])
        psnrs.append(quality.measure(clip, run.rx_latents, shown)[0])
        at.append(frame)
    row.silent_wrong = silent
    row.corrupted_psnr = float(np.nanmean(np.concatenate(psnrs)))
    row.corrupt_frames = tuple(at)


def _curve(points: Sequence[RDPoint], group: str, method: str, metric: str):
    pts = [p for p in points if p.group == group and p.method == method]
    return [p.link_bits_per_frame for p in pts], [getattr(p, metric) for p in pts]


def _h264_points(h264_rows, group):

    return [
        CodecPoint(r["codec"], r["knob"], r["bits_per_frame"], r["psnr"], r["ssim"])
        for r in h264_rows
        if r["group"] == group
    ]


def _bd_table(points, h264_rows, groups, methods) -> list[BDRow]:
    bd: list[BDRow] = []
    for group in groups:
        h264_pts = _h264_points(h264_rows, group)
        for method in methods:
            for metric in ("psnr", "ssim"):
                anchors = []
                if ANCHOR in methods and method != ANCHOR:
                    anchors.append((ANCHOR, _curve(points, group, ANCHOR, metric)))
                if h264_pts:
                    h = (
                        [p.bits_per_frame for p in h264_pts],
                        [getattr(p, metric) for p in h264_pts],
                    )
                    anchors.append(("h264", h))
                rates, quality = _curve(points, group, method, metric)
                for anchor, (ar, aq) in anchors:
                    r = bd_rate(ar, aq, rates, quality)
                    bd.append(BDRow(group, method, anchor, metric, r.percent, *r.overlap, r.note))
    return bd


def _matched_table(points, h264_rows, groups, methods, psnr_drop, base) -> list[MatchedRow]:

    rows: list[MatchedRow] = []
    for group in groups:
        h264_pts = _h264_points(h264_rows, group)
        ceiling = max((p.psnr for p in points if p.group == group), default=float("nan"))
        target = ceiling - psnr_drop
        swept = {m: [p for p in points if p.group == group and p.method == m] for m in methods}
        curves = {m: Curve.of(*_curve(points, group, m, "psnr")) for m in methods}
        vq = curves.get(ANCHOR)
        for method in methods:
            pts, curve = swept[method], curves[method]
            if not pts:
                continue
            at = matched_psnr(target, [curve] + ([vq] if vq is not None else []))
            bits, lo, hi = curve.at(at)
            vq_bits = vq.at(at)[0] if vq is not None else float("nan")
            reaching = [p for p in pts if p.psnr >= at]
            point = (
                min(reaching, key=lambda p: (p.link_bits_per_frame, -p.psnr))
                if reaching
                else max(pts, key=lambda p: (p.psnr, -p.link_bits_per_frame))
            )
            h264_bits, side = float("nan"), ""
            if h264_pts:
                h = bits_at_psnr(h264_pts, at)
                h264_bits, side = float(h), h.side
            rows.append(
                MatchedRow(
                    group=group,
                    method=method,
                    cue=cue_policy(method_config(base, method, point.value)),
                    target_psnr=target,
                    psnr=at,
                    link_bits_per_frame=bits,
                    vq_bits_per_frame=vq_bits,
                    reached=bool(np.isfinite(bits)),
                    vs_vq=bits / vq_bits,
                    between=(pts[lo].value, pts[hi].value),
                    value=point.value,
                    h264_bits=h264_bits,
                    h264_side=side,
                    ratio_h264=bits / h264_bits,
                    frames=point.frames,
                )
            )
    return rows


# --- output ---------------------------------------------------------------------------------------


def write_outputs(result: RDResult, out: Path, command: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [
        _write_csv(out / "rd_points.csv", [asdict(p) for p in result.points]),
        _write_csv(out / "bd_rate.csv", [asdict(r) for r in result.bd]),
        _write_csv(out / "matched.csv", [asdict(r) for r in result.matched]),
    ]
    if result.h264:
        written.append(_write_csv(out / "h264_points.csv", result.h264))
    summary = {
        "command": command,
        "interpolation": f"{INTERPOLATION} over log10(link bits/frame), Pareto frontiers",
        "matched_rule": "each method and vq on their lower convex hulls at one PSNR",
        "corrupt_sigma": result.corrupt_sigma,
        "groups": result.groups,
        "seconds": result.seconds,
        "bd_rate": [asdict(r) for r in result.bd],
        "matched": [asdict(r) for r in result.matched],
    }
    (out / "rd.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    written.append(out / "rd.json")
    written += plot(result, out / "rd")
    return written


def _json_default(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as fh:
        if rows:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path


def plot(result: RDResult, stem: Path) -> list[Path]:
    """PSNR and SSIM against link bits/frame (log x), one row per group; PNG and SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _report_groups(result)
    methods = list(dict.fromkeys(p.method for p in result.points))
    colors = plt.get_cmap("tab20").colors
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 3.4 * len(groups) + 1), squeeze=False)
    for row, group in enumerate(groups):
        for col, metric in enumerate(("psnr", "ssim")):
            ax = axes[row][col]
            for i, method in enumerate(methods):
                rates, quality = _curve(result.points, group, method, metric)
                color = colors[(2 * i) % 20 if i < 10 else (2 * i - 19) % 20]
                style = "-o" if method in PAPER_METHODS else "--o"
                ax.scatter(rates, quality, s=8, color=color, alpha=0.35)
                fr, fq = pareto_front(rates, quality)
                ax.plot(fr, fq, style, ms=3, color=color, label=method)
            h = [r for r in result.h264 if r["group"] == group]
            if h:
                ax.plot(
                    [r["bits_per_frame"] for r in h],
                    [r[metric] for r in h],
                    "k--s",
                    ms=3,
                    label="H.264 (x264, CRF)",
                )
            link = [getattr(p, metric) for p in result.points if p.group == group]
            link = [v for v in link if math.isfinite(v)]
            if link:  # the link's range, plus room to see where H.264 starts
                top = max(link) + (2.5 if metric == "psnr" else 0.15)
                bottom = min(link) - (0.5 if metric == "psnr" else 0.03)
                ax.set_ylim(bottom, top)
            if link or h:  # no SSIM measured and no H.264: nothing to put on a log axis
                ax.set_xscale("log")
            ax.set_xlabel("link bits / frame (H.264: bitstream bits / frame)")
            ax.set_ylabel("PSNR (dB)" if metric == "psnr" else "SSIM")
            ax.set_title(f"{group}: {metric.upper()} (H.264 continues above)")
            ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(7, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.9 / fig.get_figheight()))
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for path in paths:
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return paths


def _report_groups(result: RDResult) -> list[str]:
    scopes = result.scopes
    groups = [g for g in result.groups if scopes[g] in ("protocol", "source")]
    groups = groups or list(result.groups)
    if "scene_change" in result.groups and "scene_change" not in groups:
        groups.append("scene_change")
    return groups


def format_tables(result: RDResult) -> str:
    """The BD-rate table (PSNR, link bits) with each method's cue policy and silent-wrong frames,
    and the matched-quality table, as Markdown."""
    groups = _report_groups(result)
    methods = list(dict.fromkeys(p.method for p in result.points))
    anchors = [a for a in ("vq", "h264") if any(r.anchor == a for r in result.bd)]
    names = {"vq": "vq", "h264": "H.264"}
    averaged = [g for g in groups if result.scopes.get(g) in ("protocol", "source")]
    mean = len(averaged) > 1
    over = "source" if any(result.scopes[g] == "source" for g in averaged) else "protocol"
    head = " | ".join(f"{g} vs {names[a]}" for g in groups for a in anchors)
    if mean:
        head += " | " + " | ".join(f"{over} mean vs {names[a]}" for a in anchors)
    sigma = result.corrupt_sigma
    silent = f" | silent wrong, σ = {sigma:g} |" if sigma > 0 else " |"
    columns = len(anchors) * (len(groups) + mean) + 1 + (sigma > 0)
    lines = [f"| method | cue | {head}{silent}", "|---|" + "---|" * columns]
    lookup = {(r.group, r.method, r.anchor): r for r in result.bd if r.metric == "psnr"}
    matched = {(r.group, r.method): r for r in result.matched}
    for method in methods:
        cues = {matched[g, method].cue for g in groups if (g, method) in matched}
        cells = [" / ".join(sorted(cues)) or "—"]
        for group in groups:
            for anchor in anchors:
                r = lookup.get((group, method, anchor))
                cells.append("—" if r is None else _pct(r.bd_rate_percent))
        if mean:
            for anchor in anchors:
                values = [lookup.get((g, method, anchor)) for g in averaged]
                ok = [
                    r.bd_rate_percent
                    for r in values
                    if r is not None and math.isfinite(r.bd_rate_percent)
                ]
                part = "" if len(ok) == len(averaged) else f" ({len(ok)} of {len(averaged)})"
                cells.append(_pct(float(np.mean(ok))) + part if ok else "—")
        if sigma > 0:
            rows = [matched[g, method] for g in groups if (g, method) in matched]
            cells.append(f"{sum(r.silent_wrong for r in rows)} of {sum(r.frames for r in rows)}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if result.matched:
        lines += [
            "",
            "| group | target dB | method | cue | PSNR dB | link bits/frame | vq link bits/frame | "
            "vs vq | H.264 bits/frame at that PSNR | link / H.264 | silent wrong | PSNR σ dB |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in result.matched:
            if r.group not in groups:
                continue
            short = "" if r.reached else " (short)"
            side = "" if r.h264_side in ("inside", "") else f" ({r.h264_side})"
            h264 = "—" if not math.isfinite(r.h264_bits) else f"{r.h264_bits:.1f}{side}"
            ratio = "—" if not math.isfinite(r.ratio_h264) else f"{r.ratio_h264:.3f}"
            wrong = "—" if r.silent_wrong < 0 else str(r.silent_wrong)
            hurt = "—" if not math.isfinite(r.corrupted_psnr) else f"{r.corrupted_psnr:.2f}"
            lines.append(
                f"| {r.group} | {r.target_psnr:.2f} | {r.method} | {r.cue} | {r.psnr:.2f}{short} | "
                f"{r.link_bits_per_frame:.1f} | {r.vq_bits_per_frame:.1f} | "
                f"{_pct(100 * (r.vs_vq - 1))} | {h264} | {ratio} | {wrong} | {hurt} |"
            )
    return "\n".join(lines)


def _pct(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.1f} %"


# --- command line ---------------------------------------------------------------------------------


def add_rd_arguments(rd: argparse.ArgumentParser, add_config_arguments) -> None:
    """The flags of ``hoplink rd`` (its parser and help line are the CLI's)."""
    rd.add_argument("--scenario", default=None, help="one scenario name or a video file")
    rd.add_argument("--protocol", default=None, help="a protocol's scenarios (and their pool)")
    rd.add_argument(
        "--sources",
        default=None,
        help="one group per source: scenarios, video files, or `real` (the Debian-packaged "
        "camera videos), comma-separated",
    )
    rd.add_argument(
        "--corrupt-sigma",
        type=float,
        default=CORRUPT_SIGMA,
        help="σ of the Rx memory noise of each method's silent-wrong run at its matched point, "
        f"before a seeded random frame (default {CORRUPT_SIGMA}; 0 skips it)",
    )
    rd.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"comma-separated, from: {', '.join(METHODS)} (default: {','.join(DEFAULT_METHODS)})",
    )
    rd.add_argument("--frames", type=int, default=None, help="frames per clip (default 120)")
    rd.add_argument("--out", default="rd-results", help="output folder (default rd-results)")
    rd.add_argument("--no-h264", action="store_true", help="skip the H.264 anchor")
    rd.add_argument("--no-ssim", action="store_true", help="skip SSIM (faster)")
    rd.add_argument("--crfs", default=None, help="H.264 CRFs, comma-separated (default 18..51)")
    rd.add_argument(
        "--points", type=int, default=None, help="use every n-th knob value only (quick looks)"
    )
    rd.add_argument(
        "--psnr-drop",
        type=float,
        default=0.5,
        help="matched-quality target = best link PSNR minus this many dB (default 0.5)",
    )
    rd.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_config_arguments(rd)
    rd.set_defaults(func=cmd_rd)


def _token_rd(args: argparse.Namespace, config: LinkConfig) -> int:
    """A token codec's link: its τ sweep against H.264 on the same frames at the working size
    (experiments/token_eval.py); the single-latent methods do not apply."""
    from experiments.token_eval import render, token_eval  # deferred: a cycle (link ← rd)

    sources = expand_sources(args.sources or args.scenario or "real")
    results = token_eval(config, sources, args.frames, progress=not args.json)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2, default=float))
    else:
        print(render(results, config))
    return 0


def cmd_rd(args: argparse.Namespace) -> int:
    try:
        base = config_from_args(args)
        if base.token_link:
            return _token_rd(args, base)
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        names, groups, scopes = resolve_groups(args.scenario, args.protocol, args.sources)
        crfs = [int(c) for c in args.crfs.split(",")] if args.crfs else None
        grids = None
        if args.points:
            grids = {m: METHODS[m].grid[:: args.points] for m in methods if m in METHODS}
        result = run_rd(
            names,
            groups,
            scopes,
            methods,
            base,
            n_frames=args.frames,
            with_ssim=not args.no_ssim,
            h264=not args.no_h264,
            crfs=crfs,
            grids=grids,
            psnr_drop=args.psnr_drop,
            corrupt_sigma=args.corrupt_sigma,
            progress=None if args.json else lambda s: print(f"  {s}", file=sys.stderr),
        )
    except (RDError, ConfigError, ScenarioError, CodecError) as exc:
        print(f"hoplink rd: {exc}", file=sys.stderr)
        return 2
    command = "hoplink " + " ".join(sys.argv[1:])
    written = write_outputs(result, Path(args.out), command)
    if args.json:
        print(json.dumps({"files": [str(p) for p in written], "seconds": result.seconds}))
        return 0
    print(format_tables(result))
    print(f"\nwrote {', '.join(str(p) for p in written)}")
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result.seconds.items()))
    return 0
