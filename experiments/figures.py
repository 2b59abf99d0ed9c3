"""The paper's figures, drawn from a sweep folder's CSVs (matplotlib, Agg backend, PNG + SVG).

- Fig. 1(a) ``fig1a_savings_vs_tau``: bit savings of hopfield over vq at the SAME τ, per protocol,
  one panel per β — with the PSNR difference at that τ underneath, since equal τ is not equal
  quality.
- Fig. 1(b) ``fig1b_bits_over_time``: bits per frame over time on the gradual-drift clips, both
  memories at their symmetric matched-PSNR τ; NEW frames are the spikes.
- Fig. 2 ``fig2_rate_distortion``: bits/frame vs PSNR for every clean run pooled per protocol,
  coloured by hit rate, with the H.264 and JPEG curves of the same clips.
- Fig. 3 ``fig3_corruption``: refreshes, bits/frame and silently wrong frames vs ρ and vs σ, per
  memory and cue length K (K = 0: no cue verification).
- ``fig_matched_vs_beta``: hopfield's bit reduction over vq at matched PSNR vs β, per group, under
  the symmetric rule and the two one-sided protocols.
- ``snr``: PSNR, bits/frame and concealed frames vs Eb/N0 of an SNR grid, per memory kind, mean
  over seeds with a 95 % band (:func:`experiments.snr.plot_snr`).

Every number plotted is a column of the CSVs (computed by :mod:`shared.accounting` in the runs);
this module only selects, pools (equal-length clips: a mean over clips is a mean over frames) and
draws.
"""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.realcodecs import CodecPoint, pool_points
from experiments.snr import plot_snr
from experiments.sweep_rows import MATCHED_GROUPS, RULES, read_rows
from shared.config import LinkConfig
from shared.scenarios import PROTOCOLS

Row = dict[str, Any]
GROUP_ORDER = (*PROTOCOLS, "scene_change", "file")
# Parameters that identify a run's configuration, apart from its scenario.
CONFIG_PARAMS = ("n_frames", "rho", "sigma", "corrupt_at", *LinkConfig.model_fields, "codec_digest")
MEMORY_STYLE: dict[tuple[str, str], dict[str, Any]] = {
    ("hopfield", "index"): dict(color="tab:blue", marker="o", label="hopfield"),
    ("hopfield", "soft"): dict(color="tab:purple", marker="^", label="hopfield (soft)"),
    ("vq", "index"): dict(color="tab:orange", marker="s", label="vq"),
}


def memory_style(memory: str, transmission: str = "index") -> dict[str, Any]:
    """Colour, marker and label of a memory kind (other kinds get a neutral style)."""
    label = memory if transmission == "index" else f"{memory} ({transmission})"
    return MEMORY_STYLE.get(
        (memory, transmission), dict(color="tab:green", marker="D", label=label)
    )


CODEC_STYLE = {
    "h264": dict(color="black", ls="-", marker=".", label="H.264 (x264, CRF)"),
    "jpeg": dict(color="grey", ls="--", marker=".", label="JPEG (quality)"),
}
RULE_SHORT = {
    "symmetric": "symmetric (hoplink)",
    "one_sided_vq_fixed": "ONE-SIDED (paper): vq fixed",
    "one_sided_hopfield_fixed": "ONE-SIDED reversed: hopfield fixed",
    "one_sided_vq_fixed_slack": "ONE-SIDED, slack spent: vq fixed",
    "one_sided_hopfield_fixed_slack": "ONE-SIDED, slack spent: hopfield fixed",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["figure.constrained_layout.use"] = True  # titles and labels never overlap

    return plt


# --- selection and pooling ------------------------------------------------------------------------


def clean(rows: Iterable[Row]) -> list[Row]:
    """Runs without memory corruption."""
    return [r for r in rows if not r["rho"] and not r["sigma"]]


def restrict_to_mode(rows: list[Row], free: Sequence[str]) -> list[Row]:
    """Keep the rows whose every configuration parameter not in ``free`` has its most common value.

    A figure that varies a few parameters (e.g. τ and β) shows the slice of the sweep where the
    others sit at the value most runs used.
    """
    for column in CONFIG_PARAMS:
        if column in free or not rows:
            continue
        mode = Counter(_hashable(r.get(column)) for r in rows).most_common(1)[0][0]
        rows = [r for r in rows if _hashable(r.get(column)) == mode]
    return rows


def _hashable(value: Any) -> Any:
    return "" if value is None else value


def pool_by_protocol(rows: Iterable[Row]) -> list[Row]:
    """One row per (protocol, configuration): means of the numeric results over its clips.

    ``clips`` says how many of the protocol's scenarios were present.
    """
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r["protocol"], *(_hashable(r.get(c)) for c in CONFIG_PARAMS))].append(r)
    pooled = []
    for members in groups.values():
        first = members[0]
        out = {c: first.get(c) for c in ("protocol", *CONFIG_PARAMS)}
        for column in (
            "bits_per_frame",
            "hit_rate",
            "psnr",
            "ssim",
            "refreshes",
            "silent_wrong",
            "rx_cue_failures",
            "efficiency",
        ):
            values = [m[column] for m in members if isinstance(m.get(column), int | float)]
            out[column] = float(np.mean(values)) if values else math.nan
        out["clips"] = len({m["scenario"] for m in members})
        pooled.append(out)
    return pooled


def latest_matched(rows: list[Row]) -> list[Row]:
    """Matched-study (or timeline) rows of the last study written for each (β, group).

    A folder swept twice with different study settings (say another ``--psnr-drop``) holds both;
    figures and reports show the latest.
    """
    last: dict[tuple, str] = {}
    for r in rows:
        last[(r["beta"], r.get("capacity"), r["group"])] = r["key"]
    keep = set(last.values())
    return [r for r in rows if r["key"] in keep]


def reference_capacity(rows: list[Row]) -> int | None:
    """The memory size M the study's β-wise views use: 256 (the default) if studied, else the
    largest."""
    capacities = sorted({r["capacity"] for r in rows if r.get("capacity") is not None})
    if not capacities:
        return None
    return 256 if 256 in capacities else capacities[-1]


def at_capacity(rows: list[Row], capacity: int | None) -> list[Row]:
    return [r for r in rows if capacity is None or r.get("capacity") in (capacity, None)]


def codec_curves(codec_rows: list[Row]) -> dict[str, dict[str, list[CodecPoint]]]:
    """group -> codec -> pooled points over the group's clips (those present in codecs.csv)."""
    by_clip: dict[tuple[str, str], list[CodecPoint]] = defaultdict(list)
    for r in codec_rows:
        by_clip[(r["scenario"], r["codec"])].append(
            CodecPoint(r["codec"], r["knob"], r["bits_per_frame"], r["psnr"], r["ssim"])
        )
    curves: dict[str, dict[str, list[CodecPoint]]] = defaultdict(dict)
    for group, members in MATCHED_GROUPS.items():
        for codec in ("h264", "jpeg"):
            clips = [sorted(by_clip[(s, codec)], key=lambda p: p.knob) for s in members]
            if all(clips):
                curves[group][codec] = pool_points(clips)
    return dict(curves)


def _ordered(groups: Iterable[str]) -> list[str]:
    groups = set(groups)
    return [g for g in GROUP_ORDER if g in groups] + sorted(groups - set(GROUP_ORDER))


def _label(protocol: str, clips: int) -> str:
    total = len(MATCHED_GROUPS.get(protocol, ()))
    return protocol if not total or clips >= total else f"{protocol} ({clips}/{total} clips)"


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        path = out_dir / f"{name}.{ext}"
        fig.savefig(path, dpi=130, bbox_inches="tight")
        paths.append(path)
    _pyplot().close(fig)
    return paths


# --- the figures ----------------------------------------------------------------------------------


def fig1a_savings_vs_tau(runs: list[Row], out_dir: Path) -> list[Path]:
    rows = [r for r in clean(runs) if r["transmission"] == "index"]
    rows = restrict_to_mode(rows, free=("memory", "threshold", "beta"))
    pooled = pool_by_protocol(rows)
    table: dict[tuple, dict[str, Row]] = defaultdict(dict)
    for p in pooled:
        table[(p["beta"], p["protocol"], p["threshold"])][p["memory"]] = p
    # vq ignores β: a vq run at any β pairs with hopfield at every β.
    vq_any = {(k[1], k[2]): v["vq"] for k, v in table.items() if "vq" in v}
    pairs = []
    for (beta, protocol, tau), by_memory in table.items():
        hop, vq = by_memory.get("hopfield"), by_memory.get("vq") or vq_any.get((protocol, tau))
        if hop and vq and vq["bits_per_frame"] > 0:
            saving = 100 * (1 - hop["bits_per_frame"] / vq["bits_per_frame"])
            pairs.append((beta, protocol, tau, saving, hop["psnr"] - vq["psnr"], hop["clips"]))
    betas = sorted({p[0] for p in pairs})
    taus = {p[2] for p in pairs}
    if not betas or len(taus) < 2:
        return []
    plt = _pyplot()
    fig, axes = plt.subplots(
        2, len(betas), figsize=(3.6 * len(betas) + 0.8, 5.6), sharex=True, squeeze=False
    )
    for col, beta in enumerate(betas):
        top, bottom = axes[0][col], axes[1][col]
        for protocol in _ordered({p[1] for p in pairs if p[0] == beta}):
            pts = sorted(
                (p for p in pairs if p[0] == beta and p[1] == protocol), key=lambda p: p[2]
            )
            x = [p[2] for p in pts]
            label = _label(protocol, min(p[5] for p in pts))
            top.plot(x, [p[3] for p in pts], marker="o", ms=3, label=label)
            bottom.plot(x, [p[4] for p in pts], marker="o", ms=3, label=label)
        top.axhline(0, color="k", lw=0.6)
        bottom.axhline(0, color="k", lw=0.6)
        top.set_title(f"β = {beta:g}")
        bottom.set_xlabel("threshold τ (same for both memories)")
    axes[0][0].set_ylabel("bit savings of hopfield over vq (%)")
    axes[1][0].set_ylabel("PSNR hopfield − vq (dB)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle("Fig. 1(a): savings at equal τ (not at equal quality; see the PSNR row)")
    return _save(fig, out_dir, "fig1a_savings_vs_tau")


def fig1b_bits_over_time(
    timeline: list[Row], out_dir: Path, beta: float | None = None
) -> list[Path]:
    if not timeline:
        return []
    betas = sorted({r["beta"] for r in timeline})
    beta = beta if beta in betas else (20.0 if 20.0 in betas else betas[0])
    rows = [r for r in timeline if r["beta"] == beta]
    scenarios = sorted({r["scenario"] for r in rows})
    plt = _pyplot()
    fig, axes = plt.subplots(len(scenarios), 1, figsize=(9, 2.8 * len(scenarios)), squeeze=False)
    for ax, scenario in zip(axes[:, 0], scenarios, strict=True):
        for method, ls, lw in (("hopfield", "-", 2.2), ("vq", "--", 1.0)):
            pts = sorted(
                (r for r in rows if r["scenario"] == scenario and r["method"] == method),
                key=lambda r: r["seq"],
            )
            if not pts:
                continue
            style = memory_style(method)
            seq = np.array([r["seq"] for r in pts])
            bits = np.array([r["bits"] for r in pts], dtype=float)
            total = bits.mean()
            ax.step(
                seq,
                bits,
                where="mid",
                color=style["color"],
                ls=ls,
                lw=lw,
                alpha=0.85,
                label=f"{method} (τ={pts[0]['threshold']:.4f}, {total:.1f} semantic bits/frame, "
                f"{sum(not r['hit'] for r in pts)} NEW)",
            )
            news = [r for r in pts if not r["hit"]]
            ax.plot(
                [r["seq"] for r in news],
                [r["bits"] for r in news],
                ls="none",
                marker=style["marker"],
                ms=4,
                color=style["color"],
            )
        ax.set_yscale("log")
        ax.set_ylabel("semantic bits")
        capacity = rows[0].get("capacity")
        m_text = "" if capacity is None else f", M = {capacity}"
        ax.set_title(f"{scenario} (gradual drift), β = {beta:g}{m_text}", fontsize=10)
        ax.legend(fontsize=8, loc="upper right")
    axes[-1, 0].set_xlabel("frame")
    fig.suptitle(
        "Fig. 1(b): semantic bits per frame over time at matched PSNR (symmetric τ); NEW = spikes"
    )
    return _save(fig, out_dir, "fig1b_bits_over_time")


def fig2_rate_distortion(runs: list[Row], codec_rows: list[Row], out_dir: Path) -> list[Path]:
    pooled = pool_by_protocol(clean(runs))
    if not pooled:
        return []
    curves = codec_curves(codec_rows)
    groups = _ordered({p["protocol"] for p in pooled})
    plt = _pyplot()
    ncols = min(2, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6 * ncols, 4.2 * nrows), squeeze=False)
    scatter = None
    for ax, group in zip(axes.flat, groups, strict=False):
        pts = [p for p in pooled if p["protocol"] == group]
        for memory, mode in sorted({(p["memory"], p["transmission"]) for p in pts}):
            style = memory_style(memory, mode)
            sel = [p for p in pts if p["memory"] == memory and p["transmission"] == mode]
            scatter = ax.scatter(
                [p["psnr"] for p in sel],
                [p["bits_per_frame"] for p in sel],
                c=[p["hit_rate"] for p in sel],
                cmap="viridis",
                vmin=0,
                vmax=1,
                marker=style["marker"],
                s=40 if memory == "hopfield" else 16,  # vq drawn on top, smaller: both visible
                edgecolors="k",
                linewidths=0.3,
                label=style["label"],
            )
        for codec, points in curves.get(group, {}).items():
            style = CODEC_STYLE[codec]
            pts_sorted = sorted(points, key=lambda p: p.bits_per_frame)
            ax.plot(
                [p.psnr for p in pts_sorted],
                [p.bits_per_frame for p in pts_sorted],
                color=style["color"],
                ls=style["ls"],
                marker=style["marker"],
                lw=1,
                label=style["label"],
            )
        ax.set_yscale("log")
        ax.set_title(_label(group, min(p["clips"] for p in pts)), fontsize=10)
        ax.set_xlabel("PSNR (dB)")
        ax.set_ylabel("semantic bits / frame")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left")
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    if scatter is not None:
        fig.colorbar(scatter, ax=axes.ravel().tolist(), label="hit rate", shrink=0.8)
    fig.suptitle("Fig. 2: rate vs distortion, every clean run pooled per protocol")
    return _save(fig, out_dir, "fig2_rate_distortion")


def fig3_corruption(runs: list[Row], out_dir: Path) -> list[Path]:
    corrupted = [r for r in runs if r["rho"] or r["sigma"]]
    if not corrupted:
        return []
    # The slice of the sweep where the parameters other than these sit at their usual value.
    free = ("memory", "cue_bits", "cue_tolerance", "rho", "sigma", "corrupt_at")
    keep = restrict_to_mode(corrupted, free=free)[0]

    def same_context(r: Row) -> bool:
        return all(
            _hashable(r.get(c)) == _hashable(keep.get(c)) for c in CONFIG_PARAMS if c not in free
        )

    rows = [r for r in runs if same_context(r)]
    axes_spec = [(a, o) for a, o in (("rho", "sigma"), ("sigma", "rho")) if any(r[a] for r in rows)]
    metrics = (
        ("refreshes", "refreshes per clip"),
        ("bits_per_frame", "bits / frame"),
        ("silent_wrong", "silently wrong frames per clip"),
    )
    plt = _pyplot()
    fig, axes = plt.subplots(
        len(metrics), len(axes_spec), figsize=(5.2 * len(axes_spec), 8.4), squeeze=False
    )
    series = sorted({(r["memory"], r["cue_bits"]) for r in rows})
    for col, (axis, other) in enumerate(axes_spec):
        sel = [r for r in rows if not r[other]]
        for memory, cue_bits in series:
            pts = [r for r in sel if r["memory"] == memory and r["cue_bits"] == cue_bits]
            by_x: dict[float, list[Row]] = defaultdict(list)
            for r in pts:
                by_x[r[axis]].append(r)
            xs = sorted(by_x)
            if not xs:
                continue
            style = memory_style(memory)
            ls = {0: ":", 16: "--"}.get(cue_bits, "-")
            for row_i, (metric, _label_text) in enumerate(metrics):
                ys = [np.mean([r[metric] for r in by_x[x]]) for x in xs]
                axes[row_i][col].plot(
                    xs,
                    ys,
                    color=style["color"],
                    ls=ls,
                    marker=style["marker"],
                    ms=4,
                    label=f"{memory}, K={cue_bits}" + (" (no cue)" if cue_bits == 0 else ""),
                )
        symbol = "ρ (fraction of the ID map permuted)" if axis == "rho" else "σ (prototype noise)"
        axes[-1][col].set_xlabel(symbol)
        for row_i, (_metric, label_text) in enumerate(metrics):
            axes[row_i][0].set_ylabel(label_text)
            axes[row_i][col].grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    n_clips = len({r["scenario"] for r in rows})
    ctx = f"τ={keep['threshold']:g}, M={keep['capacity']}, β={keep['beta']:g}"
    fig.suptitle(
        f"Fig. 3: one-shot Rx memory corruption at mid-clip ({ctx}; mean over {n_clips} clips)"
    )
    return _save(fig, out_dir, "fig3_corruption")


def matched_reductions(matched: list[Row]) -> dict[tuple[float, str, str], float]:
    """(β, group, rule) -> 1 − bits(hopfield)/bits(vq) at matched quality."""
    cells: dict[tuple[float, str, str], dict[str, float]] = defaultdict(dict)
    for r in matched:
        cells[(r["beta"], r["group"], r["rule"])][r["method"]] = r["bits_per_frame"]
    return {
        k: 1 - v["hopfield"] / v["vq"] for k, v in cells.items() if {"hopfield", "vq"} <= v.keys()
    }


def fig_matched_vs_beta(matched: list[Row], out_dir: Path) -> list[Path]:
    reductions = matched_reductions(matched)
    if not reductions:
        return []
    betas = sorted({k[0] for k in reductions})
    groups = _ordered({k[1] for k in reductions})
    plt = _pyplot()
    rules = [r for r in RULES if any(k[2] == r for k in reductions)]
    ncols = min(3, len(rules))
    nrows = math.ceil(len(rules) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), sharey=True, squeeze=False
    )
    for ax, rule in zip(axes.flat, rules, strict=False):
        for group in groups:
            xs = [b for b in betas if (b, group, rule) in reductions]
            ax.plot(
                xs,
                [100 * reductions[(b, group, rule)] for b in xs],
                marker="o",
                ms=3,
                label=group,
            )
        avg = [
            (
                b,
                np.mean(
                    [reductions[(b, g, rule)] for g in PROTOCOLS if (b, g, rule) in reductions]
                ),
            )
            for b in betas
        ]
        ax.plot(
            [a[0] for a in avg],
            [100 * a[1] for a in avg],
            color="k",
            lw=2,
            label="average (3 protocols)",
        )
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xscale("log")
        ax.set_xlabel("β")
        ax.set_title(RULE_SHORT[rule], fontsize=10)
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel("hopfield's bit reduction over vq (%)")
    for ax in list(axes.flat)[len(rules) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    capacity = matched[0].get("capacity")
    m_text = "" if capacity is None else f" (M = {capacity})"
    fig.suptitle(f"Matched PSNR: the verdict by comparison rule and β{m_text}")
    return _save(fig, out_dir, "fig_matched_vs_beta")


def make_figures(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Draw every figure the data in ``run_dir`` supports into ``run_dir/figures``."""
    run_dir = Path(run_dir)
    runs = read_rows(run_dir / "runs.csv")
    matched = latest_matched(read_rows(run_dir / "matched.csv"))
    capacity = reference_capacity(matched)
    matched = at_capacity(matched, capacity)
    timeline = at_capacity(latest_matched(read_rows(run_dir / "timeline.csv")), capacity)
    codecs = read_rows(run_dir / "codecs.csv")
    out = run_dir / "figures"
    paths: list[Path] = []
    paths += fig1a_savings_vs_tau(runs, out)
    paths += fig1b_bits_over_time(timeline, out)
    paths += fig2_rate_distortion(runs, codecs, out)
    paths += fig3_corruption(runs, out)
    paths += fig_matched_vs_beta(matched, out)
    paths += fig_snr(read_rows(run_dir / "snr.csv"), out)
    return paths


def fig_snr(rows: list[Row], out: Path) -> list[Path]:
    if not rows:
        return []

    out.mkdir(parents=True, exist_ok=True)
    return [Path(p) for p in plot_snr(rows, str(out / "snr"))]
