"""Statistics of randomized smoothing, on the host, element-wise on counts or frequencies."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import beta, norm


def clopper_pearson_lower(successes: ArrayLike, trials: int, alpha: float) -> float | np.ndarray:
    """One-sided (1 - alpha) Clopper-Pearson lower confidence bound of a binomial proportion.

    Element-wise on arrays of success counts.
    """
    successes = np.asarray(successes)
    bound = np.where(successes == 0, 0.0, beta.ppf(alpha, np.maximum(successes, 1), trials - successes + 1))
    return _scalar_or_array(bound)


def estimated_radius(
    p1: ArrayLike, p2: ArrayLike, sigma: float, clip: tuple[float, float] = (0.01, 0.99)
) -> float | np.ndarray:
    """The paper's radius sigma/2 * (PhiInv(p1) - PhiInv(p2)) with clipped frequencies (element-wise)."""
    return _scalar_or_array(sigma / 2 * (norm.ppf(np.clip(p1, *clip)) - norm.ppf(np.clip(p2, *clip))))


def certified_radius(p_lower: ArrayLike, sigma: float) -> float | np.ndarray:
    """Cohen et al.'s radius sigma * PhiInv(pA) for a lower bound pA >= 1/2 (element-wise)."""
    return _scalar_or_array(sigma * norm.ppf(p_lower))


def _scalar_or_array(values: np.ndarray | float) -> float | np.ndarray:
    return float(values) if np.ndim(values) == 0 else np.asarray(values, dtype=np.float64)
