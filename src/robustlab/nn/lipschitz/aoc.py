"""AOC, adaptive orthogonal convolution (Boissin et al., 2025, the ``orthogonium`` library),
in its stride-1 form (orthogonium's ``FastBlockConv2d``).

The kernel is explicit, built as BCOP builds it but faster: every matrix is a rank-c/2
projector P = V V^T, with all the V (c x c/2) orthonormalised in one batched Björck
iteration (12 steps, as orthogonium's default), and

    K = R ⊛ B_1 ⊛ ... ⊛ B_{k-1},   R = (I - 2 P_a)(I - 2 P_b),
    B_j = [P_j; I - P_j] ⊛ [Q_j, I - Q_j] = [[P_j Q_j, P_j (I - Q_j)], [(I - P_j) Q_j, (I - P_j)(I - Q_j)]],

where R, a product of two block reflectors, is orthogonal, and each 2 x 2 block is the
block convolution of a vertical and a horizontal 2-tap orthogonal convolution. The k - 1
blocks are combined pairwise (block convolution is associative), in log2(k - 1) rounds.
``in_channels != out_channels`` builds the max(in, out) kernel and keeps the first rows or
columns. Circular padding by default (orthogonium's default); zero padding keeps the layer
1-Lipschitz, not orthogonal.

Soundness: as BCOP, every factor has norm <= 1 for any Björck iterate (a reflector I - 2P
has eigenvalues in [-1, 1]); evaluation mode also divides the kernel by a guaranteed bound on
the operator norm (``orthogonal_kernels``). AOC's dense layer is orthogonium's Björck
orthonormalised matrix: ``BjorckLinear`` (with 12 iterations).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.types import Device

from robustlab.nn.lipschitz.base import PaddingMode, TensorFactory
from robustlab.nn.lipschitz.orthogonal_kernels import ExplicitKernelConv, bjorck, block_convolution, projector

# The lr this family trains at relative to AOL's (LayerFamily.lr_scale), measured with
# benchmarks/family_lr.py (digits, lipconvnet width 32 depth 2, 5 epochs, test accuracy):
# lr 0.3 diverges (10.3%), 0.1: 91.7%, 0.03: 88.3%.
LR_SCALE = 1 / 3


class AOCConv2d(ExplicitKernelConv):
    """Like ``nn.Conv2d`` (stride 1, 'same' padding, square odd kernel), 1-Lipschitz."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        bias: bool = True,
        padding_mode: PaddingMode = "circular",
        input_size: int | tuple[int, int] | None = None,
        iterations: int = 12,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ):
        factory = TensorFactory(device=device, dtype=dtype)
        super().__init__(in_channels, out_channels, kernel_size, bias, padding_mode, input_size, iterations, factory)
        k = self.kernel_size[0]
        if self.kernel_size[1] != k:
            raise ValueError(f"AOCConv2d: the kernel must be square, got kernel_size={kernel_size!r}")
        c = self.channels
        # two reflectors for R, then k - 1 vertical and k - 1 horizontal projectors
        self.projections = nn.Parameter(torch.empty(2 * k, c, max(1, c // 2), **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for basis in self.projections:
            nn.init.orthogonal_(basis)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def kernel_parameters(self) -> tuple[Tensor, ...]:
        return (self.projections,)

    def square_kernel(self) -> Tensor:
        p = projector(bjorck(self.projections, self.iterations))
        eye = torch.eye(self.channels, dtype=p.dtype, device=p.device)
        reflections = (eye - 2 * p[0]) @ (eye - 2 * p[1])
        if self.kernel_size[0] == 1:
            return reflections[:, :, None, None]
        vertical, horizontal = p[2:].chunk(2)
        v_taps = torch.stack((vertical, eye - vertical), dim=1)  # (k - 1, 2, c, c)
        h_taps = torch.stack((horizontal, eye - horizontal), dim=1)
        blocks = list(torch.einsum("jamn,jbni->jmiab", v_taps, h_taps))  # tap (a, b) = V_a H_b
        while len(blocks) > 1:
            pairs = zip(blocks[0::2], blocks[1::2])
            blocks = [block_convolution(a, b) for a, b in pairs] + blocks[len(blocks) - len(blocks) % 2 :]
        return torch.einsum("om,mihw->oihw", reflections, blocks[0])
