"""The link against channel SNR: semantic bits/frame, refreshes, PSNR and frames lost vs Eb/N0.

Each point runs a clip through the real Tx, channel and Rx cores on a virtual clock
(:class:`experiments.faults.InProcessLink`) with the ``phy`` impairment on both directions, so the
errors are the ones the network would see at that SNR. :func:`snr_point` is the one place a point
is computed: ``hoplink snr`` (:func:`snr_sweep`) and the SNR axes of ``hoplink sweep``
(:mod:`experiments.sweep`, ``ebn0_db`` …) both call it.

A point's figures (:data:`POINT_COLUMNS`), all from :func:`shared.accounting.summarize`:

- ``bits_per_frame`` — semantic bits (eq. 3) of the frame messages plus the refreshes, per frame;
- ``psnr`` — over the frames the Rx showed (a concealed frame shows the last good one);
- ``lost``, ``concealed``, ``recovered`` (by lookup or refresh), ``silent_wrong``, ``refreshes``;
- ``ber`` — information-bit errors the phy injected on Tx→Rx payload bits, per payload bit;
- ``symbols_per_frame`` — Tx→Rx channel symbols per frame (airtime = symbols / symbol rate);
- ``efficiency`` η and ``reasoning_capacity`` C = log2(1 + η) (eq. 5, κ = 1, dimensionless);
- ``kappa_bps_per_hz`` — κ in bits/s/Hz: the spectral efficiency of the raw latent link at this
  modulation and code, κ = d·b / ⌈coded bits of one NEW frame / log2 M⌉ (latent bits per
  symbol, i.e. per second per Hz of Nyquist bandwidth;
  :func:`channel.impairments.phy.latent_kappa`);
- ``reasoning_capacity_bps_per_hz`` — C = κ·log2(1 + η) in bits/s/Hz (C is linear in κ).

Several seeds of a point are summarised by :func:`aggregate` (mean and 95 % Student-t interval)
and :func:`paired_difference` (one memory minus another, seed by seed), and the shape of each
seed's PSNR curve by :func:`breakdown` (where it leaves its floor, where it reaches the clean
level, and the width between: an abrupt failure has a narrow one); the plots and
``hoplink report`` read them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from channel.core import DIRECTIONS
from channel.impairments.phy import Attributes as PhyAttributes
from channel.impairments.phy import latent_kappa
from experiments.link import InProcessLink, measure_quality, run_stream
from shared.codec.cache import DecodeCache
from shared.config import LinkConfig
from shared.scenarios import load_clip

POINT_COLUMNS = (
    "bits_per_frame",
    "hit_rate",
    "refreshes",
    "psnr",
    "lost",
    "concealed",
    "recovered",
    "silent_wrong",
    "digests_agree",
    "ber",
    "symbols_per_frame",
    "efficiency",
    "reasoning_capacity",
    "kappa_bps_per_hz",
    "reasoning_capacity_bps_per_hz",
)
# What sets a curve apart (besides the method); absent keys (``hoplink snr`` rows) read as "".
CURVE_KEYS = ("scenario", "modulation", "fec", "channel")


def snr_point(
    frames: np.ndarray,
    latents: np.ndarray,
    config: LinkConfig,
    phy: dict,
    decoder: DecodeCache,
    seed: int = 0,
) -> dict:
    """One clip at one channel setting; ``phy`` are the phy impairment's attributes and ``seed``
    the channel's. Returns :data:`POINT_COLUMNS`."""
    attributes = PhyAttributes(**phy)
    link = InProcessLink(config, seed=seed)
    for direction in DIRECTIONS:
        link.channel.set_impairment(direction, "phy", phy)
    run_stream(latents, link)
    n = len(latents)
    records = link.ledger.ordered(n)
    measure_quality(records, frames, link.shown, decoder)
    summary = link.ledger.summary(records)
    refreshes = link.tx.counters.refreshes_sent
    phy_counters = link.channel.impairments()["tx_to_rx"]["phy"]["counters"]
    kappa = latent_kappa(config, attributes.modulation, attributes.fec)
    outcomes = summary.outcomes
    return {
        "bits_per_frame": summary.bits_per_frame,
        "hit_rate": summary.hit_rate,
        "refreshes": refreshes,
        "psnr": summary.psnr,
        "lost": outcomes["lost"],
        "concealed": outcomes["concealed"],
        "recovered": outcomes["recovered_lookup"] + outcomes["recovered_refresh"],
        "silent_wrong": len(link.silent),
        "digests_agree": link.agree(),
        "ber": phy_counters["bits_flipped"] / max(phy_counters["payload_bits"], 1),
        "symbols_per_frame": phy_counters["symbols"] / n,
        "efficiency": summary.efficiency,
        "reasoning_capacity": summary.capacity,
        "kappa_bps_per_hz": kappa,
        "reasoning_capacity_bps_per_hz": kappa * summary.capacity,
    }


def snr_sweep(
    codec,
    config: LinkConfig,
    *,
    scenario: str = "low_motion",
    n_frames: int = 120,
    ebn0_db: Iterable[float] = (0, 2, 4, 6, 8, 10, 12, 14),
    memories: Iterable[str] = ("hopfield", "vq"),
    channels: Iterable[str] = ("awgn", "rayleigh"),
    modulation: str = "qpsk",
    progress=None,
) -> list[dict]:
    """One seed (``config.seed``: the clip, the cues and the channel draws) at one τ; for seeds
    and matched τ use ``hoplink sweep --preset snr``."""

    frames = load_clip(scenario, n_frames=n_frames, size=codec.frame_size, seed=config.seed)
    latents = codec.encode(frames)
    decoder = DecodeCache(codec)
    rows = []
    for channel in channels:
        for memory in memories:
            for snr in ebn0_db:
                phy = {"snr_db": float(snr), "modulation": modulation, "channel": channel}
                point = snr_point(
                    frames, latents, config.replace(memory=memory), phy, decoder, config.seed
                )
                rows.append({"channel": channel, "memory": memory, "ebn0_db": snr, **point})
                if progress:
                    progress()
    return rows


# --- several seeds --------------------------------------------------------------------------------


def method_label(row: dict) -> str:
    """The memory kind, with the HEN iterations when the Hopfield update is iterated and
    ``-soft`` in the soft transmission mode."""
    label = row["memory"]
    steps = int(row.get("hopfield_steps") or 1)
    if label == "hopfield" and steps > 1:
        label += f"+HEN{steps}"
    return label + ("-soft" if row.get("transmission") == "soft" else "")


def curve_of(row: dict) -> tuple:
    return tuple(row.get(k, "") for k in CURVE_KEYS)


def mean_ci(values: Iterable[float], level: float = 0.95) -> tuple[float, float, int]:
    """Mean, half-width of its Student-t confidence interval, and the number of values (the
    seeds are independent repetitions); the half-width is NaN for fewer than two values."""
    from scipy.stats import t

    arr = np.asarray([float(v) for v in values], dtype=np.float64)
    n = len(arr)
    if n == 0:
        return math.nan, math.nan, 0
    if n == 1:
        return float(arr[0]), math.nan, 1
    half = t.ppf(0.5 + level / 2, n - 1) * arr.std(ddof=1) / math.sqrt(n)
    return float(arr.mean()), float(half), n


def aggregate(rows: list[dict], metrics: Iterable[str]) -> list[dict]:
    """Per curve, method and Eb/N0: ``<metric>`` (mean over seeds), ``<metric>_ci`` (95 %
    half-width) and ``seeds``."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(*curve_of(r), method_label(r), float(r["ebn0_db"]))].append(r)
    out = []
    for key, mine in groups.items():
        point = {**dict(zip(CURVE_KEYS, key[:-2], strict=True)), "method": key[-2]}
        point["ebn0_db"] = key[-1]
        for metric in metrics:
            point[metric], point[f"{metric}_ci"], point["seeds"] = mean_ci(r[metric] for r in mine)
        out.append(point)
    return sorted(out, key=lambda p: (*(str(p[k]) for k in CURVE_KEYS), p["method"], p["ebn0_db"]))


def paired_difference(rows: list[dict], metric: str, a: str, b: str) -> list[dict]:
    """Per curve and Eb/N0: mean and 95 % interval of ``metric`` of method ``a`` minus ``b``,
    paired by seed (same clip, cue hyperplanes and channel seed)."""
    by_seed: dict[tuple, dict[str, float]] = defaultdict(dict)
    for r in rows:
        by_seed[(*curve_of(r), float(r["ebn0_db"]), r.get("seed", 0))][method_label(r)] = r[metric]
    diffs: dict[tuple, list[float]] = defaultdict(list)
    for (*key, _seed), methods in by_seed.items():
        if a in methods and b in methods:
            diffs[tuple(key)].append(methods[a] - methods[b])
    out = []
    for key in sorted(diffs, key=lambda k: (*map(str, k[:-1]), k[-1])):
        mean, half, n = mean_ci(diffs[key])
        out.append({**dict(zip(CURVE_KEYS, key[:-1], strict=True)), "ebn0_db": key[-1],
                    "mean": mean, "ci": half, "seeds": n})  # fmt: skip
    return out


def breakdown(rows: list[dict], low: float = 0.1, high: float = 0.9) -> list[dict]:
    """How abruptly each method fails, per curve and method, from each seed's PSNR curve: with
    ``floor`` and ``clean`` its PSNR at the lowest and highest Eb/N0 of the grid, ``leaves``
    is the lowest Eb/N0 from which the PSNR stays above floor + ``low``·(clean − floor),
    ``reaches`` the lowest from which it stays above floor + ``high``·(clean − floor), and
    ``width`` = reaches − leaves (dB; small = an abrupt cliff). Means and 95 % intervals over
    seeds (``<name>`` and ``<name>_ci``)."""
    curves: dict[tuple, dict] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        curves[(*curve_of(r), method_label(r))][r.get("seed", 0)].append(r)
    out = []
    for key in sorted(curves, key=str):
        found: dict[str, list[float]] = defaultdict(list)
        for seed_rows in curves[key].values():
            line = sorted(seed_rows, key=lambda r: r["ebn0_db"])
            x = [float(r["ebn0_db"]) for r in line]
            y = np.array([r["psnr"] for r in line])
            span = y[-1] - y[0]
            if span <= 0:  # no failure to locate on this grid
                continue
            for name, level in (("leaves", low), ("reaches", high)):
                below = np.flatnonzero(y < y[0] + level * span)
                found[name].append(x[below[-1] + 1] if len(below) else x[0])
            found["width"].append(found["reaches"][-1] - found["leaves"][-1])
        if not found:
            continue
        point = {**dict(zip(CURVE_KEYS, key[:-1], strict=True)), "method": key[-1]}
        for name, values in found.items():
            point[name], point[f"{name}_ci"], point["seeds"] = mean_ci(values)
        out.append(point)
    return out


def plot_snr(rows: list[dict], prefix: str) -> list[str]:
    """PSNR, bits/frame and concealed frames against Eb/N0, one row of panels per curve (scenario,
    modulation, FEC, fading), one line per method: the mean over seeds with its 95 % band.
    Writes ``prefix``.png and .svg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("psnr", "PSNR (dB)"), ("bits_per_frame", "semantic bits/frame (incl. refreshes)"),
              ("concealed", "concealed frames"))  # fmt: skip
    points = aggregate(rows, [key for key, _ in panels])
    curves = sorted({curve_of(p) for p in points}, key=str)
    fig, axes = plt.subplots(len(curves), 3, figsize=(13, 3.6 * len(curves)), squeeze=False)
    for row_axes, curve in zip(axes, curves, strict=True):
        mine = [p for p in points if curve_of(p) == curve]
        title = ", ".join(str(v) for v in curve if v != "")
        for method in sorted({p["method"] for p in mine}):
            line = [p for p in mine if p["method"] == method]
            x = np.array([p["ebn0_db"] for p in line])
            for ax, (key, label) in zip(row_axes, panels, strict=True):
                y = np.array([p[key] for p in line])
                ci = np.nan_to_num(np.array([p[f"{key}_ci"] for p in line]))
                (drawn,) = ax.plot(x, y, marker="o", markersize=3, label=method)
                ax.fill_between(x, y - ci, y + ci, color=drawn.get_color(), alpha=0.2)
                ax.set_xlabel("Eb/N0 (dB)")
                ax.set_ylabel(label)
                ax.set_title(title, fontsize=9)
        seeds = max(p["seeds"] for p in mine)
        row_axes[0].legend(fontsize=8, title=f"{seeds} seed(s)", title_fontsize=8)
    fig.tight_layout()
    paths = [f"{prefix}.png", f"{prefix}.svg"]
    for path in paths:
        fig.savefig(path, dpi=80)
    plt.close(fig)
    return paths
