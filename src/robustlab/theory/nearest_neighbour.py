"""Theorem 2 of the paper: with n >= 37 * ceil(1/delta)^d samples from a distribution on
[0,1]^d that has an L-infinity robust classifier with margin delta, the 1-nearest-neighbour
classifier has >= 99% average L-infinity robust accuracy at radius delta/2.

The distribution: a checkerboard of ``cells`` cells per axis on [0,1]^d, labelled by the
parity of the cell index sum, with a band of half-width delta removed on both sides of
every interior cell boundary; uniform on what is left. Points of different classes differ
in some cell index, so they are more than 2*delta apart in L-infinity, and the checkerboard
itself is a robust classifier with margin delta.

The 1-NN classifier uses the L-infinity metric, as in the paper's proof, and a tie between
the nearest distances of two classes is no decision (an error). Its robustness at radius r
is decided exactly, in three stages:

1. certificate: correct and d_other(x) - d_own(x) > 2r (+ 1e-9 against rounding), where d_c is the L-infinity distance
   to the nearest training point of class c (a move of length r changes each by <= r);
2. attack: for each training point b of another class that could matter, the corner move
   x' = x + clip(b - x, -r, r), which brings b exactly r closer;
3. for points neither certified nor broken, a mixed-integer feasibility problem per such b
   (scipy's HiGHS): is there x' with ||x' - x||_inf <= r and ||x' - b||_inf <= t <=
   ||x' - a||_inf for every training point a of the predicted class? Each ``t <= ||x'-a||``
   is a disjunction over the 2d faces of a's box, one binary per face. Points a further
   than d_own(x) + 2r cannot bind and are left out; so are b further than that.

Stage 3 is exact up to HiGHS's feasibility tolerance (1e-6 by default), which can only count
points on the decision boundary as not robust, never the reverse. Perturbed points may leave
[0,1]^d (the threat model is the ball alone).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, milp

from robustlab.progress import progress_bar
from robustlab.theory.stats import mean_ci, trial_generator

# Status of each test point after ``robustness``
WRONG, CERTIFIED, ROBUST_BY_SEARCH, BROKEN_BY_ATTACK, BROKEN_BY_SEARCH = range(5)
# Rounding can put d_other - d_own a hair above 2r when the ball touches a tie exactly;
# points this close to the certificate's threshold go to the exact stages instead.
CERTIFICATE_SLACK = 1e-9


def sufficient_size(d: int, delta: float) -> int:
    """The theorem's sufficient number of training points, 37 * ceil(1/delta)^d."""
    return 37 * math.ceil(1 / delta) ** d


@dataclass(frozen=True)
class CheckerboardProblem:
    """Uniform on the checkerboard of ``cells`` per axis minus bands of half-width delta."""

    d: int
    delta: float
    cells: int = 3

    def __post_init__(self) -> None:
        if self.d < 1:
            raise ValueError(f"the dimension d must be >= 1, got {self.d}")
        if self.cells < 2:
            raise ValueError(f"the checkerboard needs >= 2 cells per axis for two classes, got {self.cells}")
        if not 0 < 2 * self.delta < 1 / self.cells:
            raise ValueError(
                f"delta must be in (0, 1/(2*cells)) = (0, {1 / (2 * self.cells):.4g}) so every "
                f"cell keeps some mass after removing the bands, got {self.delta}"
            )

    def intervals(self) -> torch.Tensor:
        """The (cells, 2) intervals per axis that remain after removing the bands."""
        edges = torch.arange(self.cells + 1, dtype=torch.float64) / self.cells
        low, high = edges[:-1] + self.delta, edges[1:] - self.delta
        low[0], high[-1] = 0.0, 1.0
        return torch.stack([low, high], dim=1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` i.i.d. points: x float64 (n, d) in [0,1]^d, y int64 in {0, 1}. The support is
        a product of per-axis sets, so each coordinate is drawn on its own."""
        intervals = self.intervals()
        lengths = intervals[:, 1] - intervals[:, 0]
        ends = lengths.cumsum(0)
        u = torch.rand(n, self.d, generator=generator, dtype=torch.float64) * ends[-1]
        piece = torch.searchsorted(ends, u, right=True).clamp(max=self.cells - 1)
        x = intervals[piece, 0] + u - (ends - lengths)[piece]
        return x, self.label(x)

    def label(self, x: torch.Tensor) -> torch.Tensor:
        """The robust classifier: parity of the sum of the cell indices."""
        cell = (x * self.cells).floor().clamp(0, self.cells - 1).long()
        return cell.sum(dim=1) % 2


class LinfNearestNeighbour:
    """1-NN under the L-infinity metric, with an exact robustness check (module docstring)."""

    def __init__(self, x_train: torch.Tensor, y_train: torch.Tensor, chunk_size: int = 1024):
        if len(x_train) == 0:
            raise ValueError("1-NN needs at least one training point")
        self.x_train = x_train.double()
        self.y_train = y_train.long()
        self.num_classes = int(self.y_train.max()) + 1
        self.chunk_size = chunk_size

    def class_distances(self, x: torch.Tensor) -> torch.Tensor:
        """(m, num_classes) L-infinity distance to the nearest training point of each class;
        inf for a class without training points."""
        parts = []
        for chunk in x.double().split(self.chunk_size):
            dist = torch.cdist(chunk, self.x_train, p=math.inf)
            per_class = torch.full((len(chunk), self.num_classes), math.inf, dtype=torch.float64, device=x.device)
            per_class.scatter_reduce_(1, self.y_train.expand_as(dist), dist, reduce="amin")
            parts.append(per_class)
        return torch.cat(parts)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The nearest class, or -1 where two classes are equally near."""
        nearest, label = _two_nearest_classes(self.class_distances(x))
        return torch.where(nearest[:, 0] < nearest[:, 1], label, -1)

    def robustness(self, x: torch.Tensor, y: torch.Tensor, radius: float) -> torch.Tensor:
        """The status of each test point at L-infinity radius ``radius``: WRONG, CERTIFIED,
        ROBUST_BY_SEARCH, BROKEN_BY_ATTACK or BROKEN_BY_SEARCH (module docstring)."""
        x = x.double()
        nearest, label = _two_nearest_classes(self.class_distances(x))
        d_own, d_other = nearest[:, 0], nearest[:, 1]
        status = torch.full((len(x),), WRONG, dtype=torch.long)
        correct = (label == y.to(label.device)) & (d_own < d_other)
        status[correct.cpu()] = CERTIFIED
        for i in torch.nonzero(correct & (d_other - d_own <= 2 * radius + CERTIFICATE_SLACK)).flatten().tolist():
            status[i] = self._decide(x[i], int(label[i]), float(d_own[i]), radius)
        return status

    def _decide(self, x: torch.Tensor, own: int, d_own: float, radius: float) -> int:
        """A correct, uncertified point: attack it, then search exactly."""
        distance = (self.x_train - x).abs().amax(dim=1)
        reach = distance <= d_own + 2 * radius + CERTIFICATE_SLACK
        rivals = self.x_train[reach & (self.y_train != own)]
        rivals = rivals[(rivals - x).abs().amax(dim=1).argsort()]
        corners = x + (rivals - x).clamp(-radius, radius)
        if (self.predict(corners) != own).any():
            return BROKEN_BY_ATTACK
        friends = self.x_train[reach & (self.y_train == own)].cpu().numpy()
        for rival in rivals.cpu().numpy():
            if _closer_point_exists(x.cpu().numpy(), radius, rival, friends, d_own):
                return BROKEN_BY_SEARCH
        return ROBUST_BY_SEARCH


def _two_nearest_classes(class_distances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances to the nearest and second-nearest class, and the nearest class."""
    values, classes = class_distances.topk(min(2, class_distances.shape[1]), dim=1, largest=False)
    if values.shape[1] == 1:  # a single class: nothing to be confused with
        values = torch.cat([values, torch.full_like(values, math.inf)], dim=1)
    return values, classes[:, 0]


def _closer_point_exists(x: np.ndarray, radius: float, rival: np.ndarray, friends: np.ndarray, d_own: float) -> bool:
    """Is there x' with ||x'-x||_inf <= radius and ||x'-rival||_inf <= ||x'-a||_inf for
    every a in ``friends``? A MILP over (x', t, one binary per face of each friend's box)."""
    d = len(x)
    t_max = d_own + radius  # t <= ||x' - a*||_inf <= d_own + radius for the nearest friend a*
    faces = [(i, s) for i in range(d) for s in (1.0, -1.0)]
    num_vars = d + 1 + len(friends) * len(faces)
    rows, lower, upper = [], [], []

    def constraint(coefficients: dict[int, float], lo: float, hi: float) -> None:
        row = np.zeros(num_vars)
        for index, value in coefficients.items():
            row[index] = value
        rows.append(row)
        lower.append(lo)
        upper.append(hi)

    t = d
    for i in range(d):  # |x'_i - rival_i| <= t
        constraint({i: 1.0, t: -1.0}, -np.inf, rival[i])
        constraint({i: -1.0, t: -1.0}, -np.inf, -rival[i])
    for j, friend in enumerate(friends):  # some face k of friend's box: s (x'_i - a_i) >= t
        big_m = t_max + np.abs(x - friend).max() + radius + 1.0
        first = d + 1 + j * len(faces)
        for k, (i, s) in enumerate(faces):
            constraint({i: s, t: -1.0, first + k: -big_m}, s * friend[i] - big_m, np.inf)
        constraint({first + k: 1.0 for k in range(len(faces))}, 1.0, np.inf)
    bounds = Bounds(
        np.concatenate([x - radius, [0.0], np.zeros(num_vars - d - 1)]),
        np.concatenate([x + radius, [t_max], np.ones(num_vars - d - 1)]),
    )
    integrality = np.concatenate([np.zeros(d + 1), np.ones(num_vars - d - 1)])
    result = milp(
        np.zeros(num_vars),
        constraints=LinearConstraint(np.array(rows), lower, upper),
        integrality=integrality,
        bounds=bounds,
    )
    if result.status == 2:  # infeasible: no such x'
        return False
    if result.status == 0:
        return True
    raise RuntimeError(f"the MILP solver stopped without an answer: {result.message}")


def summarise_status(status: torch.Tensor) -> dict[str, float]:
    """Accuracies from the per-point status of ``LinfNearestNeighbour.robustness``."""
    count = lambda *codes: sum(int((status == c).sum()) for c in codes)  # noqa: E731
    total = len(status)
    return {
        "clean": 1 - count(WRONG) / total,
        "certified": count(CERTIFIED) / total,
        "robust": count(CERTIFIED, ROBUST_BY_SEARCH) / total,
        "searched": count(ROBUST_BY_SEARCH, BROKEN_BY_SEARCH) / total,
    }


def default_sizes(d: int, delta: float, count: int = 8) -> list[int]:
    """Log-spaced training-set sizes from 8 up to the sufficient size, and twice it."""
    top = sufficient_size(d, delta)
    sizes = np.unique(np.geomspace(8, top, count).round().astype(int))
    return [int(s) for s in sizes] + [2 * top]


def theorem2_sweep(
    ns: Sequence[int] | None = None,
    *,
    d: int = 2,
    delta: float = 0.1,
    cells: int = 3,
    radius: float | None = None,
    trials: int = 5,
    test_size: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Clean, certified and exact robust accuracy of L-infinity 1-NN against n, averaged
    over ``trials`` training sets (95% t-intervals). ``radius`` defaults to delta/2."""
    problem = CheckerboardProblem(d, delta, cells)
    radius = delta / 2 if radius is None else float(radius)
    ns = list(dict.fromkeys(int(n) for n in ns)) if ns else default_sizes(d, delta)
    if any(int(n) < 1 for n in ns) or radius < 0 or trials < 1 or test_size < 1:
        raise ValueError(
            f"need sizes >= 1, radius >= 0, trials >= 1 and test size >= 1; got "
            f"sizes {ns}, radius {radius}, trials {trials}, test size {test_size}"
        )
    results: dict[int, list[dict]] = {}
    runs = [(n, t) for n in ns for t in range(trials)]
    for n, trial in progress_bar(runs, "theorem 2", "trial", progress):
        generator = trial_generator(seed, n, d, trial)
        x_train, y_train = problem.sample(n, generator)
        x_test, y_test = problem.sample(test_size, generator)
        status = LinfNearestNeighbour(x_train, y_train).robustness(x_test, y_test, radius)
        results.setdefault(n, []).append(summarise_status(status))
    rows = []
    for n in ns:
        row: dict = {"n": n, "trials": trials}
        for key in ("clean", "certified", "robust", "searched"):
            row[key], row[f"{key}_ci"] = mean_ci([r[key] for r in results[n]])
        rows.append(row)
    settings = {
        "d": d,
        "delta": delta,
        "cells": cells,
        "radius": radius,
        "trials": trials,
        "test_size": test_size,
        "seed": seed,
        "sufficient_n": sufficient_size(d, delta),
    }
    return {"settings": settings, "rows": rows}
