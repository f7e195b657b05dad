"""Logit margins, certified radii and certified robust accuracy (CRA).

For a classifier whose logits are L-Lipschitz in the L2 norm, changing the input by
``delta`` changes the margin ``z_y - max_{j != y} z_j`` by at most ``sqrt(2) * L * |delta|``
(two logits move, each by at most ``L * |delta|``, and the worst case splits the change
evenly). A point is therefore certified at radius eps iff it is classified correctly and
``margin > sqrt(2) * L * eps``; its certified radius is ``margin / (sqrt(2) * L)``.

Pairwise bounds. When a network bounds each logit difference on its own, by a matrix K
with |(z_i - z_j)(x) - (z_i - z_j)(x')| <= K_ij ||x - x'|| (LiResNet's normalised last
layer: K_ij = L_body ||w_i - w_j||), a point is certified at eps iff
z_y - z_j > K_yj * eps for every j != y, and its radius is min_j (z_y - z_j) / K_yj. With
K_ij = sqrt(2) L this is the rule above; it is never worse, since
||w_i - w_j|| <= sqrt(2) ||W||.

``slack`` lowers every margin by an amount that covers floating-point error in the
computed logits (see ``evaluate.float_error_slack``), so a radius is never claimed where
exact arithmetic would not give it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{j != y} z_j`` per row; positive iff the prediction is correct and unique."""
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (batch, classes >= 2), got {tuple(logits.shape)}")
    true_logit = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return true_logit - others.amax(dim=1)


def certified_radii(
    logits: torch.Tensor,
    labels: torch.Tensor,
    lipschitz: float | torch.Tensor = 1.0,
    slack: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """L2 radius around each input within which the prediction provably stays correct.

    ``lipschitz`` is the network's constant L, or a (classes x classes) matrix of pairwise
    bounds K (see the module docstring). Misclassified points (and points whose margin
    does not exceed ``slack``) get radius 0, which is never certified, since certification
    at eps asks for ``radius > eps``.
    """
    if torch.is_tensor(lipschitz) and lipschitz.dim() == 2:
        return _pairwise_radii(logits, labels, lipschitz, slack)
    if lipschitz is None or not lipschitz > 0:
        raise ValueError(f"a positive Lipschitz constant is needed to certify, got {lipschitz}")
    safe_margin = margins(logits, labels) - slack
    return safe_margin.clamp_min(0) / (math.sqrt(2) * lipschitz)


def _pairwise_radii(
    logits: torch.Tensor, labels: torch.Tensor, pair_bounds: torch.Tensor, slack: torch.Tensor | float
) -> torch.Tensor:
    """min over j != y of (z_y - z_j - slack) / K_yj, and 0 where any of them is not positive."""
    slack = torch.as_tensor(slack, dtype=logits.dtype, device=logits.device).reshape(-1, 1)
    gaps = logits.gather(1, labels[:, None]) - logits - slack
    bounds = pair_bounds.to(logits.dtype)[labels]
    radii = torch.where(gaps > 0, gaps / bounds, torch.zeros_like(gaps))  # K_yj = 0: that pair cannot flip
    return radii.scatter(1, labels[:, None], float("inf")).amin(dim=1)


def cra(radii: torch.Tensor, eps: float) -> float:
    """Certified robust accuracy: the fraction of points certified at radius ``eps``."""
    if radii.numel() == 0:
        raise ValueError("cannot compute the CRA of an empty set of points")
    return (radii > eps).double().mean().item()


def cra_curve(radii: torch.Tensor, eps_grid: Sequence[float] | torch.Tensor) -> list[float]:
    """CRA at every radius of ``eps_grid`` (one pass over the sorted radii)."""
    if radii.numel() == 0:
        raise ValueError("cannot compute the CRA of an empty set of points")
    ordered = radii.detach().flatten().sort().values
    grid = torch.as_tensor(eps_grid, dtype=ordered.dtype, device=ordered.device)  # compare as cra() does
    at_or_below = torch.searchsorted(ordered, grid, right=True)  # radii <= eps: not certified
    return ((ordered.numel() - at_or_below).double() / ordered.numel()).tolist()
