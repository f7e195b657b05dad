"""Exactly orthogonal layers: dense via torch's orthogonal parametrization, conv via the
Cayley transform in the Fourier domain (Trockman & Kolter, 2021).

CayleyConv2d uses *circular* padding: a circular convolution is diagonalised by the 2-D
DFT into one (channels x channels) matrix A(w) per frequency. With A skew-Hermitian,
Q(w) = (I + A)^-1 (I - A) is unitary, and because the kernel is real Q(-w) = conj(Q(w)),
so the layer is a real orthogonal map of the whole image (to float precision), for every
kernel. Costs one batched complex solve per forward (cached in eval mode).
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrizations, parametrize
from torch.types import Device

from robustlab.nn.lipschitz.base import (
    EvalCache,
    LanczosOptions,
    LipschitzLayer,
    NormReport,
    TensorFactory,
    check_channels,
    dense_norm_report,
    odd_kernel_size,
    plain_linear,
    spatial_size,
)
from robustlab.nn.lipschitz.fourier import apply_response, kernel_response, within_one

if TYPE_CHECKING:
    from typing_extensions import Unpack


# The lr this family trains at relative to AOL's (LayerFamily.lr_scale), measured with
# benchmarks/family_lr.py (digits, lipconvnet width 32 depth 2, 5 epochs, test accuracy):
# lr 0.3 diverges (15.8%), 0.1: 91.7%, 0.03: 91.9%.
LR_SCALE = 1 / 3


class OrthogonalLinear(nn.Linear, LipschitzLayer):
    """``nn.Linear`` whose weight is (semi-)orthogonal: W^T W = I if out >= in, else W W^T = I.

    ``weight`` is the orthogonal matrix (a parametrization of ``weight.original``). Eval mode
    divides it by max(1, a guaranteed float64 bound on its norm) (the parametrization is
    orthogonal only up to rounding), cached until the underlying parameter changes.
    """

    parametrizations: nn.ModuleDict  # registered by parametrizations.orthogonal in __init__

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(in_features, out_features, bias, device, dtype)  # calls reset_parameters
        # torch's default map: matrix_exp for square weights, Householder products for
        # rectangular ones (matrix_exp would cost a max(in, out)^2 exponential). The
        # Householder map multiplies by the integer part of the raw parameter's diagonal,
        # which training keeps at +-1 (it gets no gradient; weight decay only shrinks it,
        # which keeps the norm <= 1); editing the raw parameter by hand can break that,
        # which `verify` would report.
        parametrizations.orthogonal(self, "weight")
        self._cache = EvalCache()

    def reset_parameters(self) -> None:
        """``nn.Linear``'s weight init (orthogonalised by the parametrization), zero bias."""
        if not parametrize.is_parametrized(self, "weight"):  # from nn.Linear.__init__
            super().reset_parameters()
        else:  # assigning goes through the parametrization's right inverse, as registering it did
            weight = torch.empty_like(self.original_weight())
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
            with torch.no_grad():
                self.weight = weight
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def original_weight(self) -> Tensor:
        """The free parameter under the orthogonal parametrization of ``weight``."""
        # the ModuleDict types its entries as plain Modules
        return cast(parametrize.ParametrizationList, self.parametrizations["weight"]).original

    def effective_weight(self) -> Tensor:
        if self.training:
            return self.weight
        # torch's orthogonal map is orthogonal up to its own rounding (norm 1 + 2e-4 seen in
        # float32): divided by a guaranteed bound, as the Björck, LOT and BRO dense layers are
        return self._cache.get((self.original_weight(),), lambda: within_one(self.weight.detach()), module=self)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.effective_weight(), self.bias)

    def export(self) -> nn.Module:
        return plain_linear(self.effective_weight(), self.bias)

    def norm_report(self, inputs: Tensor, **lanczos: Unpack[LanczosOptions]) -> NormReport:
        return dense_norm_report(self.effective_weight())


class CayleyConv2d(LipschitzLayer):
    """Orthogonal channels -> channels convolution with circular padding (any image size)."""

    affine = True

    def __init__(
        self,
        channels: int,
        kernel_size: int | tuple[int, int] = 3,
        bias: bool = True,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.channels = channels
        self.kernel_size = odd_kernel_size(kernel_size)
        factory = TensorFactory(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(channels, channels, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.zeros(channels, **factory)) if bias else None
        self._cache = EvalCache()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def frequency_response(self, size: tuple[int, int]) -> Tensor:
        """Q(w) for every frequency of the rfft2 grid: (H, W // 2 + 1, channels, channels)."""
        a = kernel_response(self.weight, size)
        a = a - a.conj().transpose(-2, -1)
        eye = torch.eye(self.channels, dtype=a.dtype, device=a.device)
        # I + A is invertible for every skew-Hermitian A (eigenvalues 1 + i*lambda), and a - a^H is
        # exactly skew-Hermitian in floating point: solve_ex without the error check, whose read of
        # the status on the host would stall the GPU every step and forbid CUDA-graph capture.
        return torch.linalg.solve_ex(eye + a, eye - a, check_errors=False).result

    def forward(self, x: Tensor) -> Tensor:
        check_channels(x, self.channels, "CayleyConv2d")
        size = spatial_size(x)
        if self.training:
            q = self.frequency_response(size)
        else:
            q = self._cache.get((self.weight,), lambda: self.frequency_response(size), extra=size, module=self)
        y = apply_response(q, x)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def export(self) -> nn.Module:
        """Itself: a frequency-domain operator with no plain torch equivalent (its eval-mode
        frequency response is computed once and cached)."""
        return copy.deepcopy(self)

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}, bias={self.bias is not None}, padding_mode=circular"
