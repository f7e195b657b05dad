"""Gradient-norm-preserving activations: MaxMin and GroupSort (Anil et al., 2019).

Both only sort values, so they are 1-Lipschitz and their Jacobian is a permutation
wherever it exists.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


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
            raise ValueError(f"{self!r} needs channels divisible by {self.group_size}, got shape {tuple(x.shape)}")
        grouped = x.unflatten(1, (channels // self.group_size, self.group_size))
        return grouped.sort(dim=2, descending=True).values.flatten(1, 2)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


class MaxMin(nn.Module):
    """Sorts each pair of adjacent channels (2i, 2i+1) of dim 1: max, then min, in their place.

    Pairing adjacent channels, as the reference code does, matters where ``FirstChannels``
    follows: keeping the first half of the channels then keeps whole sorted pairs. Pairing
    the halves (i, i + C/2) instead would keep the max of every pair and drop every min,
    which cost CPL-LipConvNet about 4 points of accuracy and of CRA at 3 epochs
    (docs/performance.md). ``GroupSort(2)`` computes the same function; this one avoids a
    sort, whose int64 indices autograd would keep for the backward pass, and runs forward
    and backward as one autograd node (``_MaxMinPairs``).
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[1] % 2:
            raise ValueError(f"MaxMin needs an even number of channels in dim 1, got shape {tuple(x.shape)}")
        # Pair along the dimension whose neighbours are adjacent in memory: for a
        # channels_last batch that is the last one of its (N, H, W, C) view, which keeps the
        # output channels_last.
        channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        y = x.movedim(1, -1) if channels_last else x
        dim = y.dim() - 1 if channels_last else 1
        out = _MaxMinPairs.apply(y.unflatten(dim, (y.shape[dim] // 2, 2)), dim + 1).flatten(dim, dim + 1)
        return out.movedim(-1, 1) if channels_last else out


class _MaxMinPairs(torch.autograd.Function):
    """(max, min) of the pairs along ``dim`` (of size 2), forward and backward in one node.

    The gradients are those of ``torch.maximum`` / ``torch.minimum`` bit for bit (a test
    compares): to the larger input the max's gradient, to the smaller the min's; at a tie
    half of each to both; where the pair is unordered (NaN) both gradients to both. Only
    the input is saved, as the two separate ops saved it, and the comparison runs once in
    the backward pass instead of four times.
    """

    @staticmethod
    def forward(ctx: Any, pairs: Tensor, dim: int) -> Tensor:  # ctx: torch's own annotation, it takes attributes
        a, b = pairs.unbind(dim)
        out = torch.empty_like(pairs)
        torch.maximum(a, b, out=out.select(dim, 0))
        torch.minimum(a, b, out=out.select(dim, 1))
        ctx.save_for_backward(pairs)
        ctx.dim = dim
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (pairs,) = ctx.saved_tensors
        a, b = pairs.unbind(ctx.dim)
        grad_max, grad_min = grad.unbind(ctx.dim)
        greater, less = a > b, a < b
        shared = torch.where(a == b, grad_max / 2 + grad_min / 2, grad_max + grad_min)
        # maximum's backward adds the +0.0 of minimum's masked-out half (and vice versa): + 0.0
        # turns a -0.0 gradient into +0.0 as that sum does
        to_larger, to_smaller = grad_max + 0.0, grad_min + 0.0
        grad_pairs = torch.empty_like(pairs)
        grad_a, grad_b = grad_pairs.select(ctx.dim, 0), grad_pairs.select(ctx.dim, 1)
        torch.where(less, to_smaller, shared, out=grad_a)
        torch.where(greater, to_larger, grad_a, out=grad_a)
        torch.where(less, to_larger, shared, out=grad_b)
        torch.where(greater, to_smaller, grad_b, out=grad_b)
        return grad_pairs, None
