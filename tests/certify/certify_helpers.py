"""Small real models with known certified radii, shared by the certify tests."""

import torch
from torch import nn


class LinearClassifier(nn.Module):
    """z = W x on flattened images; claims the Lipschitz constant it is given."""

    def __init__(self, weight: torch.Tensor, lipschitz_constant: float | None = 1.0):
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        self.linear.weight.data.copy_(weight)
        self.lipschitz_constant = lipschitz_constant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


def orthonormal_rows(classes: int, dim: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, classes, generator=generator, dtype=torch.float64))
    return q.T.float().contiguous()


def linear_problem():
    """A 1-Lipschitz linear classifier on 4x4 images and labels it mostly gets right."""
    weight = orthonormal_rows(4, 16)
    model = LinearClassifier(weight)
    x = torch.rand(300, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    y[:30] = (y[:30] + 1) % 4  # some misclassified points
    return model, weight, x, y
