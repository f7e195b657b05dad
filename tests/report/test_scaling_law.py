"""Scaling-law fits recover known laws from noisy synthetic sweeps, and refuse thin data."""

import math

import numpy as np
import pytest

from robustlab.report.scaling_law import fit_scaling

SIZES = np.array([50000 // 2**k for k in range(10, -1, -1)])  # the paper's 48 ... 50000


def _sweep(law, seeds=3, noise=1.0, seed=0):
    rng = np.random.default_rng(seed)
    x = np.repeat(SIZES, seeds).astype(float)
    return x, law(x) + rng.normal(0, noise, len(x))


def test_a_line_fit_recovers_the_slope_per_doubling_and_the_size_for_a_target():
    x, y = _sweep(lambda n: 20 + 5 * np.log2(n / 48))  # 5 points per doubling from 20% at N=48
    fit = fit_scaling(x, y, "line", metric="CRA")
    assert fit.status == "ok" and fit.params[1] == pytest.approx(5, abs=0.3)
    low, high = fit.interval(1)
    assert low < 5 < high and high - low < 1
    best, (low, high) = fit.x_for(60)  # true: 48 * 2**8 = 12288
    assert low < 12288 < high and best == pytest.approx(12288, rel=0.2)
    assert "points per doubling of N" in fit.summary() and "N = 48..50,000" in fit.summary()


def test_without_noise_the_interval_collapses_onto_the_law():
    fit = fit_scaling(*_sweep(lambda n: 3 * np.log2(n), noise=0.0), "line")
    assert fit.interval(1) == pytest.approx((3, 3))


def test_a_sigmoid_fit_recovers_the_ceiling_and_the_size_for_a_target():
    def law(n):  # chance 10%, ceiling 90%, steepest at N = 2**10
        return 10 + 80 / (1 + np.exp(-0.8 * (np.log2(n) - 10)))

    fit = fit_scaling(*_sweep(law), "sigmoid", chance=10)
    assert fit.status == "ok" and fit.params[0] == pytest.approx(90, abs=1.5)
    low, high = fit.interval(0)
    assert low < 90 < high
    best, (low, high) = fit.x_for(50)  # true: 2**10
    assert low < 1024 < high and best == pytest.approx(1024, rel=0.15)
    assert fit.x_for(95)[0] == math.inf  # above the ceiling: never reached
    assert "extrapolated" in fit.target_summary(95)


def test_a_narrow_range_or_too_few_points_is_refused_and_thin_data_is_flagged():
    narrow = fit_scaling([1437, 1467, 1537], [50.0, 51.0, 49.0])  # extra_data's old -144.9% per doubling
    assert narrow.status == "refused" and "0.10 doublings" in narrow.summary()
    assert fit_scaling([48, 97], [10.0, 20.0]).status == "refused"
    assert fit_scaling([48, 97, 195], [1.0, 2.0, 3.0], "sigmoid").status == "refused"
    thin = fit_scaling([48, 97, 195, 390], [50.0, 60.0, 65.0, 66.0])
    assert thin.status == "flagged" and "only 4 distinct N values" in thin.summary()
    rising = fit_scaling([48, 97, 195, 390, 781], [20.0, 30.0, 40.0, 50.0, 60.0], "sigmoid", chance=10)
    assert "do not pin the ceiling down" in rising.summary()
