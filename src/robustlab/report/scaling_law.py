"""Scaling-law fits: how accuracy and CRA grow with the training-set size (or the epochs).

Two readings of the paper's Figures 1-2, both in t = log2 x:

* a **line**, y = a + b t: b is "percentage points per doubling" (the paper: about 5 CRA
  points per doubling of CIFAR-10);
* a **sigmoid** from chance level to a ceiling, y = chance + (ceiling - chance) / (1 + exp(-rate (t -
  midpoint))): the paper's reading across MNIST, CIFAR-10 and CIFAR-100 (flat near chance with
  little data, linear in log N in the middle, flattening towards the ceiling).

Uncertainty comes from the fit's own sampling distribution: every run (each seed at each x) is
one observation; the noise is estimated from the residuals around the fitted law (so it holds
the seed noise and any lack of fit), with n - p degrees of freedom, and the replicates are draws
of the parameters from the multivariate t distribution this gives (exact for the line: its slope
interval is the classical t interval; the sigmoid's uses the Jacobian at the fit). 95% intervals,
the band and the N for a target are percentiles of the replicates. Measured coverage on sweeps
with known laws (``report.coverage``, ``benchmarks/fit_coverage.py``): 93-97% for the slope, the N
for a target, the sigmoid's ceiling and its midpoint, with 6 or 11 sizes and 1 or 3 seeds. (A
pairs bootstrap over 6-11 points was too narrow with one seed and too wide with three, and a
sigmoid bootstrap started every refit from the original fit.)

Every fit states its range. A fit over too few distinct x values or too narrow a range is
**refused** (no numbers, a reason instead); one that stands on little (few points, a ceiling
the data do not pin down, a prediction far outside the measured range) is **flagged** and says
why. A number that contradicts the data it came from is not printed: a sigmoid midpoint outside
the measured range, or an x for a target that a measured mean contradicts (a larger measured x
still below the target, or a smaller one already above it). ``fit_scaling`` never raises on bad
data: a report shows the refusal and carries on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.optimize import least_squares
from scipy.special import expit, logit
from scipy.stats import chi2

Kind = Literal["line", "sigmoid"]
MIN_POINTS = {"line": 3, "sigmoid": 4}  # distinct x values; a sigmoid has three free parameters
MIN_DOUBLINGS = 2.0  # the largest x at least 4x the smallest
FEW_POINTS = 5  # fewer distinct x values than this: the fit is flagged
EXTRAPOLATION_DOUBLINGS = 1.0  # a prediction more than one doubling outside the range is flagged
CONFIDENCE = 0.95
DRAWS = 4000  # parameter draws per fit: the intervals' percentiles


@dataclass
class Fit:
    """One fitted law with its parameter draws; ``status`` is ok, flagged or refused."""

    kind: Kind
    metric: str  # e.g. "CRA 36/255 (%)"
    x_name: str  # "N" or "epochs"
    x_range: tuple[float, float]
    points: int  # distinct x values
    observations: int
    chance: float
    status: Literal["ok", "flagged", "refused"] = "ok"
    reasons: list[str] = field(default_factory=list)
    params: np.ndarray = field(default_factory=lambda: np.zeros(0))  # line: (a, b); sigmoid: (ceiling, rate, mid)
    replicates: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (B, params)
    means: list[tuple[float, float]] = field(default_factory=list)  # (x, mean over its runs), the data
    confidence: float = CONFIDENCE

    @property
    def usable(self) -> bool:
        return self.status != "refused"

    # -- evaluating the law -------------------------------------------------------------

    def predict(self, x: Sequence[float] | np.ndarray, params: np.ndarray | None = None) -> np.ndarray:
        """The law at ``x`` (rows of ``params`` give one curve each; default: the fit)."""
        p = np.atleast_2d(self.params if params is None else params)
        t = np.log2(np.asarray(x, float))[None, :]
        if self.kind == "line":
            out = p[:, :1] + p[:, 1:2] * t
        else:
            out = self.chance + (p[:, :1] - self.chance) * expit(p[:, 1:2] * (t - p[:, 2:3]))
        return out[0] if params is None or np.ndim(params) == 1 else out

    def band(self, x: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise 95% band of the law at ``x`` over the parameter draws."""
        curves = self.predict(x, self.replicates)
        return tuple(np.percentile(curves, [50 * (1 - self.confidence), 50 * (1 + self.confidence)], axis=0))

    def x_for(self, target: float) -> tuple[float, tuple[float, float]]:
        """The x at which the law reaches ``target``, and its 95% interval (inf: never reached)."""
        best = float(self._x_for(self.params[None, :], target)[0])
        return best, _percentiles(self._x_for(self.replicates, target), self.confidence)

    def _x_for(self, params: np.ndarray, target: float) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if self.kind == "line":
                a, b = params[:, 0], params[:, 1]
                t = np.where(b > 0, (target - a) / b, np.inf)
            else:
                ceiling, rate, mid = params[:, 0], params[:, 1], params[:, 2]
                share = (target - self.chance) / (ceiling - self.chance)
                t = np.where(share >= 1, np.inf, np.where(share <= 0, -np.inf, mid + logit(share) / rate))
            return np.exp2(t)  # inf: never reached (exp2 of +inf); 0: reached by any x

    # -- reading it ---------------------------------------------------------------------

    def interval(self, index: int) -> tuple[float, float]:
        """95% interval of parameter ``index`` over the replicates."""
        return _percentiles(self.replicates[:, index], self.confidence)

    @property
    def midpoint_inside(self) -> bool:
        """A sigmoid's steepest point lies within the measured range (else the data do not show it)."""
        low, high = self.x_range
        return self.kind == "sigmoid" and low <= 2 ** self.params[2] <= high

    def contradiction(self, x: float, target: float) -> str | None:
        """Why ``x`` (the fit's x for ``target``) contradicts the measured means, or None: a larger
        measured x whose mean is still below the target, or a smaller one already at or above it."""
        later = [(xi, m) for xi, m in self.means if xi >= x and m < target]
        earlier = [(xi, m) for xi, m in self.means if xi < x and m >= target]
        if later:
            xi, m = later[-1]
            return f"the measured mean at {self.x_name} = {_number(xi)} is {m:.1f}%, still below {target:g}%"
        if earlier:
            xi, m = earlier[0]
            return f"the measured mean at {self.x_name} = {_number(xi)} is already {m:.1f}%"
        return None

    @property
    def range_text(self) -> str:
        low, high = self.x_range
        return f"{self.x_name} = {_number(low)}..{_number(high)}, {self.points} points, {self.observations} runs"

    def summary(self) -> str:
        """One sentence: the law, its 95% interval, the range, and any flag."""
        if not self.usable:
            return f"{self.metric}: no {self.kind} fit ({'; '.join(self.reasons)})."
        if self.kind == "line":
            low, high = self.interval(1)
            text = (
                f"{self.metric}: {self.params[1]:+.1f} points per doubling of {self.x_name} "
                f"(95% CI {low:+.1f} to {high:+.1f}; line in log2 {self.x_name} over {self.range_text})"
            )
        else:
            low, high = self.interval(0)
            steepest = f", steepest at {self.x_name} = {_number(2 ** self.params[2])}" if self.midpoint_inside else ""
            text = (
                f"{self.metric}: sigmoid from chance {self.chance:.0f}% to a ceiling of {self.params[0]:.1f}% "
                f"(95% CI {low:.1f} to {high:.1f}){steepest} ({self.range_text})"
            )
        return text + (f"; flagged: {'; '.join(self.reasons)}." if self.reasons else ".")

    def target_summary(self, target: float) -> str:
        """'N for 80% CRA: 1.2e5 (95% CI ...)', flagged when far outside the measured range."""
        if not self.usable:
            return ""
        best, (low, high) = self.x_for(target)
        contradiction = self.contradiction(best, target)
        if contradiction:
            return (
                f"{self.metric}: {self.x_name} for {target:g}% ({self.kind} fit): not given, the fit contradicts "
                f"its data ({contradiction})"
            )
        text = (
            f"{self.metric}: {self.x_name} for {target:g}% ({self.kind} fit): {_number(best)} "
            f"(95% CI {_number(low)} to {_number(high)})"
        )
        top = self.x_range[1]
        if not math.isfinite(best) or best > top * 2**EXTRAPOLATION_DOUBLINGS:
            text += f", extrapolated beyond the measured {self.x_name} <= {_number(top)}"
        return text

    def to_dict(self) -> dict[str, Any]:
        names = ("intercept", "slope") if self.kind == "line" else ("ceiling", "rate", "midpoint_log2")
        data: dict[str, Any] = {
            "kind": self.kind,
            "metric": self.metric,
            "x": self.x_name,
            "x_range": list(self.x_range),
            "points": self.points,
            "observations": self.observations,
            "chance": self.chance,
            "status": self.status,
            "reasons": self.reasons,
        }
        if self.usable:
            data["params"] = {name: float(value) for name, value in zip(names, self.params)}
            data["ci95"] = {name: list(self.interval(i)) for i, name in enumerate(names)}
            if self.kind == "sigmoid" and not self.midpoint_inside:
                del data["params"]["midpoint_log2"], data["ci95"]["midpoint_log2"]  # not shown by the data
        return data


def fit_scaling(
    x: Sequence[float],
    y: Sequence[float],
    kind: Kind = "line",
    *,
    metric: str = "",
    x_name: str = "N",
    chance: float = 0.0,
    bootstraps: int | None = None,
    seed: int = 0,
    confidence: float = CONFIDENCE,
) -> Fit:
    """Fit ``kind`` to observations ``(x[i], y[i])`` (several seeds share an x) on log2 x.

    ``chance`` is the sigmoid's floor (100 / classes for accuracy and CRA). ``bootstraps`` is
    the number of parameter draws (default 4000) the intervals are percentiles of.
    """
    xs, ys = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(xs) & np.isfinite(ys) & (xs > 0)
    xs, ys = xs[keep], ys[keep]
    distinct = np.unique(xs)
    fit = Fit(
        kind,
        metric,
        x_name,
        (float(distinct.min()), float(distinct.max())) if len(distinct) else (math.nan, math.nan),
        len(distinct),
        len(xs),
        chance,
        confidence=confidence,
    )
    fit.means = [(float(v), float(ys[xs == v].mean())) for v in distinct]
    fit.reasons = _refusals(fit)
    if fit.reasons:
        fit.status = "refused"
        return fit
    t = np.log2(xs)
    rng = np.random.default_rng(seed)
    if kind == "line":
        fit.params = _fit_lines(t[None, :], ys[None, :])[0]
        jacobian = np.stack([np.ones_like(t), t], axis=1)
    else:
        fit.params, jacobian = _fit_sigmoid(t, ys, chance)
    residuals = fit.predict(xs) - ys
    fit.replicates = _draws(fit.params, jacobian, residuals, rng, bootstraps or DRAWS)
    if kind == "sigmoid":
        fit.replicates[:, 0] = np.clip(fit.replicates[:, 0], chance, 100.0)  # no ceiling beyond 100%
    fit.reasons = _flags(fit)
    fit.status = "flagged" if fit.reasons else "ok"
    return fit


def _refusals(fit: Fit) -> list[str]:
    if fit.points < MIN_POINTS[fit.kind]:
        return [f"{fit.points} distinct {fit.x_name} values; a {fit.kind} needs at least {MIN_POINTS[fit.kind]}"]
    doublings = math.log2(fit.x_range[1] / fit.x_range[0])
    if doublings < MIN_DOUBLINGS:
        return [
            f"{fit.x_name} = {_number(fit.x_range[0])}..{_number(fit.x_range[1])} spans {doublings:.2f} doublings; "
            f"a fit needs at least {MIN_DOUBLINGS:g}"
        ]
    return []


def _flags(fit: Fit) -> list[str]:
    flags = []
    if fit.points < FEW_POINTS:
        flags.append(f"only {fit.points} distinct {fit.x_name} values")
    if fit.kind == "sigmoid":
        low, high = fit.interval(0)
        if high >= 99.9 or high - low > 30:
            flags.append("the data do not pin the ceiling down (the curve has not bent yet)")
    return flags


def _draws(
    params: np.ndarray, jacobian: np.ndarray, residuals: np.ndarray, rng: np.random.Generator, count: int
) -> np.ndarray:
    """``count`` draws of the parameters from their multivariate t distribution: covariance
    s^2 (J^T J)^-1 with s^2 the residual variance over n - p degrees of freedom."""
    n, p = jacobian.shape
    dof = max(n - p, 1)
    scale = float(residuals @ residuals) / dof
    covariance = scale * np.linalg.pinv(jacobian.T @ jacobian)
    values, vectors = np.linalg.eigh((covariance + covariance.T) / 2)
    root = vectors * np.sqrt(np.clip(values, 0, None))
    normal = rng.standard_normal((count, p)) @ root.T
    return params + normal * np.sqrt(dof / chi2.rvs(dof, size=(count, 1), random_state=rng))


def _fit_lines(t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares lines through each row of (t, y): rows of (intercept, slope)."""
    t_centred = t - t.mean(axis=1, keepdims=True)
    slope = (t_centred * y).sum(axis=1) / (t_centred**2).sum(axis=1)
    return np.stack([y.mean(axis=1) - slope * t.mean(axis=1), slope], axis=1)


def _percentiles(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    # inverted_cdf picks observed values: no interpolation between an infinite and a finite x
    low, high = np.percentile(values, [50 * (1 - confidence), 50 * (1 + confidence)], method="inverted_cdf")
    return float(low), float(high)


def _fit_sigmoid(t: np.ndarray, y: np.ndarray, chance: float) -> tuple[np.ndarray, np.ndarray]:
    """Least squares with the ceiling in (chance, 100], a positive rate and the midpoint
    within 20 doublings of the data, from a few starting guesses; returns (params, Jacobian)."""
    lower = [chance + 1e-3, 1e-3, t.min() - 20]
    upper = [100.0, 20.0, t.max() + 20]

    def residuals(p: np.ndarray) -> np.ndarray:
        return chance + (p[0] - chance) * expit(p[1] * (t - p[2])) - y

    top = min(100.0, max(y.max() + 5, chance + 1))
    guesses = [
        np.clip([ceiling, rate, mid], lower, upper)
        for ceiling in (top, 100.0)
        for rate in (0.5, 2.0)
        for mid in (np.median(t), t.max())
    ]
    best = min((least_squares(residuals, g, bounds=(lower, upper)) for g in guesses), key=lambda r: r.cost)
    return best.x, best.jac


def _number(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if not math.isfinite(value):
        return "never" if value > 0 else "any"
    if value >= 1e7:
        return f"{value:.1e}"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"
