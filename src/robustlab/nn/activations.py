"""Gradient-norm-preserving activations: MaxMin and GroupSort (Anil et al., 2019).

Both only sort values, so they are 1-Lipschitz and their Jacobian is a permutation
wherever it exists.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MaxMin(nn.Module):
    """Splits the channels (dim 1) into halves a, b and returns cat(max(a, b), min(a, b))."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[1] % 2:
            raise ValueError(f"MaxMin needs an even number of channels in dim 1, got shape {tuple(x.shape)}")
        a, b = x.chunk(2, dim=1)
        return torch.cat((torch.maximum(a, b), torch.minimum(a, b)), dim=1)


class GroupSort(nn.Module):
    """Sorts each group of ``group_size`` consecutive channels in descending order."""

    def __init__(self, group_size: int = 2):
        super().__init__()
        if group_size < 1:
            raise ValueError(f"GroupSort: group_size must be >= 1, got {group_size}")
        self.group_size = group_size

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[1] if x.dim() >= 2 else 0
        if channels == 0 or channels % self.group_size:
            raise ValueError(f"GroupSort({self.group_size}) needs channels divisible by {self.group_size}, got shape {tuple(x.shape)}")
        grouped = x.unflatten(1, (channels // self.group_size, self.group_size))
        return grouped.sort(dim=2, descending=True).values.flatten(1, 2)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"
