"""LOT, layer-wise orthogonal training (Xu, Li & Li, 2022).

A circular convolution is diagonalised by the 2-D DFT into one (c x c) matrix V(f) per
frequency. LOT orthogonalises each of them,

    W(f) = V(f) (V(f)^H V(f))^{-1/2},

so the layer is an orthogonal map of the whole image (its kernel covers the whole image,
not k x k). The inverse square root is Newton-Schulz's coupled iteration, as in the paper:
S = G / ||G||_F with G = V^H V (so S's eigenvalues lie in (0, 1]), Y_0 = S, Z_0 = I,
T = (3 I - Z Y) / 2, Y <- Y T, Z <- T Z, and Z -> S^{-1/2}; 10 iterations in training and
evaluation (the reference code's). Padding: circular by default; ``padding_mode="zeros"``
is the reference code's: zero-pad by k // 2, orthogonal map on the padded grid, crop (a
restriction of an orthogonal map: 1-Lipschitz, not orthogonal). A 1 x 1 kernel has one
matrix for all frequencies and runs as a plain 1 x 1 convolution.

Soundness: all iterates are polynomials in S, and an eigenvalue s of S takes x = s z^2 to
x (3 - x)^2 / 4, which maps (0, 1] into itself increasing to 1; W's singular values are
sqrt(x) <= 1, so even a truncated iteration is 1-Lipschitz in exact arithmetic. Evaluation
mode also divides W(f) by max(1, a guaranteed bound on max_f ||W(f)||), which bounds the
layer exactly as computed (see ``orthogonal_kernels``). The dense ``LOTLinear`` is the same
orthogonalisation of one matrix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.types import Device

from robustlab.nn.lipschitz.base import (
    EvalCache,
    LanczosOptions,
    LipschitzLayer,
    NormReport,
    PaddingMode,
    TensorFactory,
    check_channels,
    dense_norm_report,
    odd_kernel_size,
    pair,
    same_padding,
    spatial_size,
    with_weights,
)
from robustlab.nn.lipschitz.fourier import (
    CHEAP_BOUND_SLACK,
    FourierConv2d,
    kernel_response,
    padded_apply,
    spectral_norm_bound,
    within_one,
)
from robustlab.nn.lipschitz.orthogonal_kernels import OrthogonalizedLinear, check_padding_mode

if TYPE_CHECKING:
    from typing_extensions import Unpack


# The lr this family trains at relative to AOL's (LayerFamily.lr_scale), measured with
# benchmarks/family_lr.py (digits, lipconvnet width 32 depth 2, 5 epochs, test accuracy):
# lr 0.3: 19.4% (loss 1.24), 0.1: 90.6%.
LR_SCALE = 1 / 3


def newton_schulz_polar(v: Tensor, iterations: int) -> Tensor:
    """V (V^H V)^{-1/2} for a batch of (real or complex) matrices; (V V^H)^{-1/2} V for wide ones.

    The coupled Newton-Schulz iteration of the module docstring. The first step skips the
    product with Z_0 = I and the last the unused update of Y.
    """
    wide = v.shape[-2] < v.shape[-1]
    gram = v @ v.mH if wide else v.mH @ v
    norm = torch.linalg.matrix_norm(gram).clamp_min(torch.finfo(gram.real.dtype).tiny)[..., None, None]
    y = gram / norm
    eye = torch.eye(y.shape[-1], dtype=y.dtype, device=y.device)
    z = eye
    for step in range(iterations):
        t = 1.5 * eye - 0.5 * (y if step == 0 else z @ y)
        z = t if step == 0 else t @ z
        if step + 1 < iterations:
            y = y @ t
    z = z / norm.sqrt()
    return z @ v if wide else v @ z


class LOTConv2d(LipschitzLayer):
    """Orthogonal channels -> channels convolution (kernel ``kernel_size``, circular padding by default)."""

    affine = True

    def __init__(
        self,
        channels: int,
        kernel_size: int | tuple[int, int] = 3,
        bias: bool = True,
        padding_mode: PaddingMode = "circular",
        input_size: int | tuple[int, int] | None = None,
        iterations: int = 10,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if iterations < 0:
            raise ValueError(f"LOTConv2d: iterations must be >= 0, got {iterations}")
        self.channels = channels
        self.kernel_size = odd_kernel_size(kernel_size)
        self.padding = same_padding(self.kernel_size)
        self.padding_mode = check_padding_mode(padding_mode, "LOTConv2d")
        self.input_size = None if input_size is None else pair(input_size, "input_size")  # for export
        self.iterations = iterations
        factory = TensorFactory(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(channels, channels, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(channels, **factory)) if bias else None
        self._cache = EvalCache()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.dirac_(self.weight)  # the identity map, as the reference code
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @property
    def pointwise(self) -> bool:
        return self.kernel_size == (1, 1)

    def grid(self, size: tuple[int, int]) -> tuple[int, int]:
        """The size of the circular convolution that runs on ``size`` images."""
        if self.pointwise:
            return (1, 1)
        if self.padding_mode == "zeros":
            return (size[0] + 2 * self.padding[0], size[1] + 2 * self.padding[1])
        return size

    def frequency_response(self, grid: tuple[int, int]) -> Tensor:
        """W(f) on the rfft2 grid: (H, W // 2 + 1, c, c) complex; (c, c) real for a 1 x 1 kernel."""
        v = self.weight[:, :, 0, 0] if self.pointwise else kernel_response(self.weight, grid, correlation=True)
        return newton_schulz_polar(v, self.iterations)

    def eval_response(self, grid: tuple[int, int]) -> Tensor:
        """W(f) / max(1, bound), cached until the weight changes."""
        return self._cache.get(
            (self.weight,),
            lambda: within_one(self.frequency_response(grid), CHEAP_BOUND_SLACK),
            extra=grid,
            module=self,
        )

    def forward(self, x: Tensor) -> Tensor:
        check_channels(x, self.channels, "LOTConv2d")
        self.input_size = self.input_size or spatial_size(x)
        grid = self.grid(spatial_size(x))
        response = self.frequency_response(grid) if self.training else self.eval_response(grid)
        return apply_lot(response, x, self.padding if self.padding_mode == "zeros" else (0, 0), self.bias)

    def export(self) -> nn.Module:
        """Plain modules with the evaluation-mode response for ``input_size`` images (given, or
        the first input's): an ``nn.Conv2d`` for a 1 x 1 kernel, else a ``FourierConv2d``."""
        if self.pointwise:  # one (c, c) matrix on every image size: the (1, 1) grid of ``grid``
            conv = nn.Conv2d(self.channels, self.channels, 1, bias=self.bias is not None)
            return with_weights(conv, self.eval_response((1, 1))[:, :, None, None], self.bias)
        if self.input_size is None:
            raise ValueError("LOTConv2d.export needs the image size: give input_size, or run one input through first")
        grid = self.grid(self.input_size)
        padding = self.padding if self.padding_mode == "zeros" else (0, 0)
        return FourierConv2d.from_response(self.eval_response(grid), grid, self.bias, padding)

    def norm_report(self, inputs: Tensor, **lanczos: Unpack[LanczosOptions]) -> NormReport:
        """Lanczos on the Jacobian, and the largest norm of the evaluation-mode W(f) (exact SVD
        for a 1 x 1 kernel)."""
        response = self.eval_response(self.grid(spatial_size(inputs)))
        if self.pointwise:
            return dense_norm_report(response)
        report = super().norm_report(inputs, **lanczos)
        return report._replace(upper_bound=spectral_norm_bound(response, CHEAP_BOUND_SLACK))

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, bias={self.bias is not None}, "
            f"padding_mode={self.padding_mode}, iterations={self.iterations}"
        )


def apply_lot(response: Tensor, x: Tensor, padding: tuple[int, int], bias: Tensor | None) -> Tensor:
    """The convolution with ``response`` (see ``LOTConv2d.frequency_response``): zero-pad by
    ``padding``, circular convolution on the padded grid, crop."""
    if response.dim() == 2:
        return F.conv2d(x, response[:, :, None, None], bias)
    y = padded_apply(response, x, padding)
    return y if bias is None else y + bias.view(1, -1, 1, 1)


class LOTLinear(OrthogonalizedLinear):
    """Like ``nn.Linear``, 1-Lipschitz: W = V (V^T V)^{-1/2} of a free V, by Newton-Schulz."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        iterations: int = 10,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(in_features, out_features, bias, iterations, device, dtype)

    def orthogonal_weight(self) -> Tensor:
        return newton_schulz_polar(self.weight, self.iterations)
