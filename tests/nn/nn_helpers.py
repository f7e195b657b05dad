"""Exact Lipschitz checks for small layers: the dense Jacobian and random input pairs."""

from __future__ import annotations

import copy

import torch
from torch import nn

REL_TOL = 1e-4


def jacobian_norm(layer: nn.Module, x: torch.Tensor) -> float:
    """Exact spectral norm of the Jacobian of ``layer`` at the single input ``x`` (1, ...)."""
    jacobian = torch.autograd.functional.jacobian(lambda v: layer(v.view_as(x)).flatten(), x.flatten())
    return float(torch.linalg.matrix_norm(jacobian.double(), ord=2))


def pair_ratio(layer: nn.Module, shape: tuple[int, ...], count: int = 64) -> float:
    """max ||f(x) - f(y)|| / ||x - y|| over random pairs, near and far, in one batch
    (in float64 on a copy: in float32 the rounding of close pairs alone exceeds 1e-4)."""
    layer = copy.deepcopy(layer).double()
    x = torch.randn(count, *shape, dtype=torch.float64) * 3
    scales = torch.logspace(-3, 1, count).view(-1, *([1] * len(shape)))
    y = x + scales * torch.randn(count, *shape, dtype=torch.float64)
    with torch.no_grad():
        out = layer(torch.cat((x, y)))
    fx, fy = out.chunk(2)
    return float(((fx - fy).flatten(1).norm(dim=1) / (x - y).flatten(1).norm(dim=1)).max())


def assert_one_lipschitz(layer: nn.Module, shape: tuple[int, ...], points: int = 3) -> None:
    for _ in range(points):
        norm = jacobian_norm(layer, torch.randn(1, *shape) * 3)
        assert norm <= 1 + REL_TOL, f"{type(layer).__name__}: Jacobian norm {norm}"
    ratio = pair_ratio(layer, shape)
    assert ratio <= 1 + REL_TOL, f"{type(layer).__name__}: pair ratio {ratio}"


def train_a_little(layer: nn.Module, shape: tuple[int, ...], steps: int = 5, lr: float = 0.5) -> None:
    """A few SGD steps that push the output norm up, so the constraint is exercised."""
    optimizer = torch.optim.SGD(layer.parameters(), lr=lr)
    layer.train()
    for _ in range(steps):
        loss = -layer(torch.randn(8, *shape)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def dense_matrix(operator, shape: tuple[int, ...]) -> torch.Tensor:
    """The matrix of a linear map on float64 tensors of ``shape`` (one column per input)."""
    count = int(torch.tensor(shape).prod())
    basis = torch.eye(count, dtype=torch.float64).reshape(count, *shape)
    return operator(basis).reshape(count, -1).t()
