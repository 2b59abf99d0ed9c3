"""BD-rate (experiments/bdrate.py): known answers on synthetic curves."""

import math

import numpy as np
import pytest

from experiments.bdrate import bd_rate, pareto_front

RATES = np.array([40.0, 80.0, 160.0, 320.0, 640.0])
PSNR = np.array([30.0, 32.5, 34.6, 36.3, 37.5])


def test_a_curve_against_itself_is_zero():
    r = bd_rate(RATES, PSNR, RATES, PSNR)
    assert r.percent == pytest.approx(0.0, abs=1e-9)
    assert r.overlap == (30.0, 37.5) and r.anchor_points == 5


@pytest.mark.parametrize("factor", [0.8, 0.5, 1.25])
def test_a_rate_factor_is_recovered_exactly(factor):
    r = bd_rate(RATES, PSNR, RATES * factor, PSNR)
    assert r.percent == pytest.approx(100 * (factor - 1), abs=1e-6)


def test_a_partial_overlap_averages_over_the_overlap_only():
    shifted = PSNR + 1.0  # the test curve is 1 dB better everywhere
    r = bd_rate(RATES, PSNR, RATES, shifted)
    assert r.overlap == (31.0, 37.5)
    assert r.percent < 0  # same bits for more quality: cheaper at equal quality


def test_dominated_points_are_dropped():
    rates, quality = pareto_front([10, 20, 30, 40, 40], [1.0, 0.9, 2.0, 1.5, 2.5])
    assert rates.tolist() == [10, 30, 40] and quality.tolist() == [1.0, 2.0, 2.5]
    r = bd_rate([10, 20, 30, 40], [1.0, 0.9, 2.0, 3.0], [8, 16, 24, 32], [1.0, 0.9, 2.0, 3.0])
    assert r.percent == pytest.approx(-20.0, abs=1e-6) and r.test_points == 3


def test_undefined_cases_say_why():
    r = bd_rate(RATES, PSNR, RATES, PSNR + 20)
    assert math.isnan(r.percent) and "no quality overlap" in r.note
    r = bd_rate(RATES, PSNR, [10.0, 20.0], [31.0, 31.0])
    assert math.isnan(r.percent) and "point" in r.note and not r.defined
