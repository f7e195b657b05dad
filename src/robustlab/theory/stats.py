"""Averages over repeated random draws, with t confidence intervals."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from scipy import stats


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float | None]:
    """Mean and half-width of the two-sided Student-t interval; half-width None for one value."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = float(array.mean())
    if array.size == 1:
        return mean, None
    sem = array.std(ddof=1) / math.sqrt(array.size)
    return mean, float(stats.t.ppf(0.5 + confidence / 2, array.size - 1) * sem)


def trial_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from a tuple of integers (seed, n, trial, ...), so every draw
    of an experiment is reproducible on its own and independent of the others."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
