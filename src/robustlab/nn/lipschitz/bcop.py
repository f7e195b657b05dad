"""BCOP, block convolution orthogonal parametrization (Li et al., 2019), and Björck dense layers
(Anil et al., 2019).

A 1-D convolution with the two taps [P, I - P], P a symmetric projector, is orthogonal on
the infinite line (its frequency response P + (I - P) e^{iw} is unitary). BCOP builds a
k x k kernel as the block convolution (the kernel of the composed convolutions, see
``block_convolution``)

    K = H ⊛ [P_1; I - P_1] ⊛ [Q_1, I - Q_1] ⊛ ... ⊛ [P_{k-1}; I - P_{k-1}] ⊛ [Q_{k-1}, I - Q_{k-1}]

of an orthogonal c x c matrix H and 2(k - 1) vertical / horizontal 2-tap blocks with
projectors P = V V^T of rank c/2 (V: c x c/2 with orthonormal columns). H and every V are
Björck orthonormalisations of free parameters (20 iterations, as the reference code),
recomputed with gradients on every training forward. Circular padding by default (as the
reference code), where the layer is orthogonal; zero padding keeps it 1-Lipschitz (the
infinite-plane convolution restricted to the image), not orthogonal.

Soundness: with Björck iterates of norm <= 1 (see ``bjorck``), every projector has
eigenvalues in [0, 1] and each 2-tap block and H have norm <= 1, so even a truncated
iteration gives a 1-Lipschitz layer in exact arithmetic; evaluation mode also divides the
kernel by a guaranteed bound on its operator norm (see ``orthogonal_kernels``).
"""

from __future__ import annotations

from itertools import zip_longest

import torch
from torch import Tensor, nn
from torch.types import Device

from robustlab.nn.lipschitz.base import PaddingMode, TensorFactory
from robustlab.nn.lipschitz.orthogonal_kernels import (
    ExplicitKernelConv,
    OrthogonalizedLinear,
    bjorck,
    block_convolution,
    projector,
)

# The lr this family trains at relative to AOL's (LayerFamily.lr_scale), measured with
# benchmarks/family_lr.py (digits, lipconvnet width 32 depth 2, 5 epochs, test accuracy):
# lr 0.3: 57.8% (loss 1.21), 0.1: 90.6%, 0.03: 88.3%.
LR_SCALE = 1 / 3


def two_tap_block(projection: Tensor, vertical: bool) -> Tensor:
    """The kernel [P; I - P] (2 x 1, vertical) or [P, I - P] (1 x 2): (c, c, 2, 1) or (c, c, 1, 2)."""
    eye = torch.eye(projection.shape[-1], dtype=projection.dtype, device=projection.device)
    taps = torch.stack((projection, eye - projection), dim=-1)
    return taps.unsqueeze(-1) if vertical else taps.unsqueeze(-2)


class BCOPConv2d(ExplicitKernelConv):
    """Like ``nn.Conv2d`` (stride 1, 'same' padding), 1-Lipschitz: the BCOP kernel.

    ``in_channels != out_channels`` builds the max(in, out) kernel and keeps the first rows
    (out < in) or columns (out > in), which stays 1-Lipschitz.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        bias: bool = True,
        padding_mode: PaddingMode = "circular",
        input_size: int | tuple[int, int] | None = None,
        iterations: int = 20,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ):
        factory = TensorFactory(device=device, dtype=dtype)
        super().__init__(in_channels, out_channels, kernel_size, bias, padding_mode, input_size, iterations, factory)
        c = self.channels
        blocks = sum(k - 1 for k in self.kernel_size)
        self.orthogonal = nn.Parameter(torch.empty(c, c, **factory))
        self.projections = nn.Parameter(torch.empty(blocks, c, max(1, c // 2), **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.orthogonal_(self.orthogonal)
        for basis in self.projections:
            nn.init.orthogonal_(basis)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def kernel_parameters(self) -> tuple[Tensor, ...]:
        return (self.orthogonal, self.projections)

    def square_kernel(self) -> Tensor:
        h = bjorck(self.orthogonal, self.iterations)
        projections = projector(bjorck(self.projections, self.iterations))
        vertical = range(self.kernel_size[0] - 1)
        horizontal = range(len(vertical), len(projections))
        kernel = h[:, :, None, None]
        for pair in zip_longest(vertical, horizontal):  # alternating, as the paper's construction
            for i in pair:
                if i is not None:
                    kernel = block_convolution(kernel, two_tap_block(projections[i], vertical=i in vertical))
        return kernel


class BjorckLinear(OrthogonalizedLinear):
    """Like ``nn.Linear``, 1-Lipschitz: W is the Björck orthonormalisation of a free matrix."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        iterations: int = 20,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(in_features, out_features, bias, iterations, device, dtype)

    def orthogonal_weight(self) -> Tensor:
        return bjorck(self.weight, self.iterations)
