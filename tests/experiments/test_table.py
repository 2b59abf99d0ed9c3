"""Calibration and matched points (experiments.table) on synthetic rate/PSNR curves, no codec."""

import math

import pytest

from experiments.table import (
    THRESHOLD_GRID,
    Curve,
    GroupResult,
    calibrate,
    curve_of,
    matched_psnr,
)
from shared.accounting import LinkSummary
from shared.config import build_config

BASE = build_config({"memory": "vq"}, read_env=False)


def point(tau: float, rate: float, psnr: float) -> GroupResult:
    nan = float("nan")
    summary = LinkSummary(
        frames=10,
        hits=0,
        news=0,
        hit_rate=nan,
        bits_per_frame=rate / 2,  # semantic bits: not what calibration compares
        wire_bytes_per_frame=nan,
        feedback_bits_per_frame=0.0,
        compression_ratio=nan,
        efficiency=nan,
        capacity=nan,
        psnr=psnr,
        ssim=nan,
        link_bits_per_frame=rate,
    )
    return GroupResult(BASE.replace(threshold=tau), summary)


def wavy(tau: float) -> tuple[float, float]:
    """Rate rises with τ; PSNR rises too but dips below the target on (0.95, 0.99) after a
    passing island at τ ≈ 0.93 — the shape a dense sweep of a real clip shows."""
    rate = 40.0 + 400.0 * tau**20
    if 0.925 <= tau <= 0.94:
        psnr = 20.3
    elif tau < 0.99:
        psnr = 19.0 + tau
    else:
        psnr = 21.0
    return rate, psnr


def fake_run(config) -> GroupResult:
    return point(config.threshold, *wavy(config.threshold))


def test_calibrate_returns_the_cheapest_passing_point_of_a_non_monotone_curve():
    target = 20.2
    calls = []
    best, points = calibrate(
        [], BASE, target, decoder=None, on_step=lambda: calls.append(1), evaluate=fake_run
    )
    assert len(points) == len(THRESHOLD_GRID) == len(calls)
    assert [p.threshold for p in points] == sorted(THRESHOLD_GRID)
    passing = [p for p in points if p.summary.psnr >= target]
    assert best.summary.link_bits_per_frame == min(p.summary.link_bits_per_frame for p in passing)
    assert 0.925 <= best.threshold <= 0.94  # the island, not the first τ after the dip
    # PSNR is not monotone in τ here: a point above the island's τ fails the target.
    assert any(p.threshold > best.threshold and p.summary.psnr < target for p in points)
    # Semantic bits would pick the same point here, but the rate compared is link bits.
    assert best.summary.bits_per_frame == best.summary.link_bits_per_frame / 2


def test_no_passing_point_gives_the_best_psnr():
    best, _ = calibrate([], BASE, 99.0, decoder=None, evaluate=fake_run)
    assert best.summary.psnr == 21.0
    assert best.summary.link_bits_per_frame == min(
        wavy(t)[0] for t in THRESHOLD_GRID if wavy(t)[1] == 21.0
    )


def test_hull_drops_points_above_it_and_interpolates_at_equal_psnr():
    # (rate, PSNR): B lies above the segment A–C, D costs more for less PSNR than C.
    rates = [10.0, 15.0, 16.0, 30.0, 9.0]
    psnrs = [20.0, 20.6, 22.0, 21.0, 18.0]
    curve = Curve.of(rates, psnrs)
    assert curve.hull == (4, 0, 2)  # by PSNR: E (cheapest), A, C
    assert curve.floor == 18.0 and curve.ceiling == 22.0
    bits, lo, hi = curve.at(20.5)
    assert (lo, hi) == (0, 2)
    assert bits == pytest.approx(10.0 + 6.0 * 0.5 / 2.0)  # below B's 15: mixing A and C
    assert curve.at(17.0) == (9.0, 4, 4)  # below the floor: the cheapest point
    assert math.isnan(curve.at(22.5)[0])  # out of reach


def test_a_dearer_point_at_lower_psnr_starts_no_hull():
    curve = Curve.of([50.0, 10.0, 20.0], [19.0, 20.0, 21.0])
    assert curve.hull == (1, 2) and curve.floor == 20.0


def test_methods_are_read_at_one_psnr_inside_every_hull():
    a = Curve.of([10.0, 20.0], [20.0, 22.0])
    b = Curve.of([12.0, 18.0], [21.0, 22.0])
    assert matched_psnr(20.5, [a, b]) == 21.0  # b cannot be read lower than its cheapest point
    assert matched_psnr(21.5, [a, b]) == 21.5
    assert a.at(21.0)[0] == pytest.approx(15.0) and b.at(21.0)[0] == 12.0


def test_curve_of_group_results_uses_link_bits():
    points = [point(t, *wavy(t)) for t in (0.5, 0.93, 1.0)]
    curve = curve_of(points)
    assert curve.rates == tuple(p.summary.link_bits_per_frame for p in points)
