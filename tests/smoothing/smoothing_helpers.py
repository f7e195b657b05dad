"""A base classifier whose smoothed behaviour is known in closed form (shared with subprocesses)."""

from __future__ import annotations

import torch
from torch import nn

SIGMA = 0.25
SHAPE = (1, 4, 4)


class LinearTwoClass(nn.Module):
    """Logits (0, w.x + b): class 1 exactly where w.x + b > 0.

    Under noise N(0, sigma^2 I) it predicts class 1 with probability
    Phi((w.x + b) / (sigma ||w||)), so the smoothed classifier's radius is |w.x + b| / ||w||.
    """

    def __init__(self, w: torch.Tensor, b: float):
        super().__init__()
        self.w = nn.Parameter(w.flatten(), requires_grad=False)
        self.b = nn.Parameter(torch.tensor(float(b)), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(score), score], dim=1)


def linear_model() -> LinearTwoClass:
    """The same model in every process: its boundary passes through the grey image 0.5."""
    w = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    return LinearTwoClass(w, b=-float(w.sum()) * 0.5)


def points_at(model: LinearTwoClass, signed_radii: list[float]) -> torch.Tensor:
    """Images at signed distance r from the boundary (r > 0 on the class-1 side)."""
    unit = model.w / model.w.norm()
    grey = torch.full((unit.numel(),), 0.5)
    return torch.stack([grey + r * unit for r in signed_radii]).view(-1, *SHAPE)
