"""Bjøntegaard delta rate (BD-rate): the average rate difference of two RD curves at equal quality.

Computed with the maintained ``bjontegaard`` package (PyPI, FAU Erlangen), which follows VCEG-M33
(Bjøntegaard 2001) and its later revisions: log10(rate) is interpolated as a function of quality
(PSNR in dB, or SSIM), both interpolants are integrated over the quality interval where the two
curves overlap, and the mean log-rate difference Δ becomes a percentage, 100·(10^Δ − 1). A
negative BD-rate means the test curve needs fewer bits than the anchor at the same quality.

Interpolation: **pchip** (piecewise cubic Hermite, shape-preserving) over log10(rate) — unlike the
original cubic polynomial fit it cannot overshoot between points, which matters here because a
link's curves are steep (rate changes by 10× while PSNR moves by tenths of a dB).

Before interpolating, each curve is reduced to its **Pareto frontier** (sorted by rate, a point is
kept only if its quality exceeds every cheaper point's): a knob sweep can produce dominated points
(more bits, no better quality), which are not operating points anyone would choose and would make
log-rate a non-function of quality. Where a frontier has fewer than two points or the curves do
not overlap in quality, the BD-rate is undefined (NaN) and :attr:`BDRate.note` says why.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

INTERPOLATION = "pchip"


@dataclass(frozen=True)
class BDRate:
    """A BD-rate in percent (NaN if undefined) and the quality interval it averages over."""

    percent: float
    overlap: tuple[float, float]  # quality interval of the integration (NaN, NaN if none)
    anchor_points: int  # frontier points used
    test_points: int
    note: str = ""

    @property
    def defined(self) -> bool:
        return math.isfinite(self.percent)


def pareto_front(rates: Sequence[float], quality: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The non-dominated points, by increasing rate (and strictly increasing quality)."""
    r = np.asarray(rates, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    ok = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[ok], q[ok]
    order = np.lexsort((-q, r))  # by rate, best quality first among equal rates
    keep_r, keep_q = [], []
    for rate, qual in zip(r[order], q[order], strict=True):
        if not keep_q or qual > keep_q[-1]:
            if keep_r and rate == keep_r[-1]:
                continue
            keep_r.append(rate)
            keep_q.append(qual)
    return np.asarray(keep_r), np.asarray(keep_q)


def bd_rate(
    anchor_rates: Sequence[float],
    anchor_quality: Sequence[float],
    test_rates: Sequence[float],
    test_quality: Sequence[float],
    method: str = INTERPOLATION,
) -> BDRate:
    """BD-rate of the test curve against the anchor curve (percent; negative = test cheaper)."""
    import bjontegaard

    ar, aq = pareto_front(anchor_rates, anchor_quality)
    tr, tq = pareto_front(test_rates, test_quality)
    nan = (float("nan"), float("nan"))
    if len(ar) < 2 or len(tr) < 2:
        note = f"frontier has {min(len(ar), len(tr))} point(s); need 2 on each curve"
        return BDRate(float("nan"), nan, len(ar), len(tr), note)
    lo, hi = max(aq.min(), tq.min()), min(aq.max(), tq.max())
    if hi <= lo:
        note = (
            f"no quality overlap: anchor {aq.min():.3f}–{aq.max():.3f}, "
            f"test {tq.min():.3f}–{tq.max():.3f}"
        )
        return BDRate(float("nan"), nan, len(ar), len(tr), note)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = bjontegaard.bd_rate(
            ar, aq, tr, tq, method=method, require_matching_points=False, min_overlap=0.0
        )
    return BDRate(float(value), (float(lo), float(hi)), len(ar), len(tr))
