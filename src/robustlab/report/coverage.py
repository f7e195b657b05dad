"""How often the scaling-law fits' 95% intervals hold the truth: a simulation with known laws.

Each replicate draws a synthetic sweep from a known law (a line in log2 N for the slope and the N
for a target; a sigmoid for its ceiling and midpoint) at the paper's sizes, with Gaussian seed
noise, fits it with ``scaling_law.fit_scaling`` and checks whether each interval holds the true
value. ``benchmarks/fit_coverage.py`` prints the table; a test checks a few designs.

Designs are (sizes, seeds): 11 sizes are CIFAR-10's 48 ... 50,000 halvings (the paper's), 6 every
other one of them (48, 195, 781, 3,125, 12,500, 50,000).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

PAPER_SIZES = np.array([50_000 // 2**k for k in range(10, -1, -1)], float)  # 48 ... 50,000
DESIGNS = {"6x1": (6, 1), "6x3": (6, 3), "11x1": (11, 1), "11x3": (11, 3)}
QUANTITIES = ("slope", "N for target", "ceiling", "midpoint")

# The known laws, about the paper's CIFAR-10 CRA: +5 points per doubling; a sigmoid from chance
# (10%) to 80% with its steepest point at N = 1,500; the seed noise of one run, 2 points.
LINE = {"intercept": -5.0, "slope": 5.0}
SIGMOID = {"ceiling": 80.0, "rate": 0.7, "midpoint_log2": float(np.log2(1500))}
CHANCE, NOISE = 10.0, 2.0
TARGET_N = 12_500.0  # the N-for-target quantity: the N at which the line reaches its value there


def sizes(points: int) -> np.ndarray:
    return PAPER_SIZES if points == 11 else PAPER_SIZES[::2]


def line_truth(n: np.ndarray) -> np.ndarray:
    return LINE["intercept"] + LINE["slope"] * np.log2(n)


def sigmoid_truth(n: np.ndarray) -> np.ndarray:
    t = np.log2(n)
    return CHANCE + (SIGMOID["ceiling"] - CHANCE) * expit(SIGMOID["rate"] * (t - SIGMOID["midpoint_log2"]))


@dataclass
class Coverage:
    design: str
    quantity: str
    covered: int
    fits: int  # usable fits (refused ones hold no interval)
    replicates: int

    @property
    def percent(self) -> float:
        return 100 * self.covered / self.fits if self.fits else float("nan")


def measure(
    design: str,
    replicates: int,
    fit: Callable,
    *,
    seed: int = 0,
    bootstraps: int | None = None,
    kinds: tuple[str, ...] = ("line", "sigmoid"),
) -> list[Coverage]:
    """Coverage of each quantity's 95% interval in ``design`` over ``replicates`` synthetic sweeps.
    ``fit`` is ``fit_scaling`` (or another method with its signature, to compare); ``kinds`` the
    laws to fit (the line's quantities, the sigmoid's, or both)."""
    points, seeds = DESIGNS[design]
    n = np.repeat(sizes(points), seeds)
    rng = np.random.default_rng(seed)
    target = float(line_truth(np.array([TARGET_N]))[0])
    hits = dict.fromkeys(QUANTITIES, 0)
    fits = dict.fromkeys(QUANTITIES, 0)
    options = {} if bootstraps is None else {"bootstraps": bootstraps}
    for r in range(replicates):
        line_y, sigmoid_y = (
            line_truth(n) + rng.normal(0, NOISE, n.size),
            sigmoid_truth(n) + rng.normal(0, NOISE, n.size),
        )
        line = fit(n, line_y, "line", seed=r, **options) if "line" in kinds else None
        if line is not None and line.status != "refused":
            fits["slope"] += 1
            low, high = line.interval(1)
            hits["slope"] += low <= LINE["slope"] <= high
            fits["N for target"] += 1
            low, high = line.x_for(target)[1]
            hits["N for target"] += low <= TARGET_N <= high
        sigmoid = fit(n, sigmoid_y, "sigmoid", chance=CHANCE, seed=r, **options) if "sigmoid" in kinds else None
        if sigmoid is not None and sigmoid.status != "refused":
            for quantity, index, truth in (
                ("ceiling", 0, SIGMOID["ceiling"]),
                ("midpoint", 2, SIGMOID["midpoint_log2"]),
            ):
                fits[quantity] += 1
                low, high = sigmoid.interval(index)
                hits[quantity] += low <= truth <= high
    return [Coverage(design, q, hits[q], fits[q], replicates) for q in QUANTITIES if fits[q]]
