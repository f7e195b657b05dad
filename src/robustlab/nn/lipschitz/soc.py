"""SOC, skew orthogonal convolution (Singla & Feizi, 2021).

A kernel A with A = -flip(A)^T defines a skew-symmetric convolution L (with 'same' zero
padding and an odd kernel, conv_transpose2d is the exact adjoint, so L^T = -L exactly), and
exp(L) is orthogonal. The layer computes the truncated Taylor series
y = sum_{j<=terms} L^j x / j! + b.

The kernel is rescaled so that ||L|| <= ``correction`` (0.7, as in the reference code):
a convolution with kernel A (out, in, kh, kw) has ||L|| <= sqrt(kh kw) ||M|| where M is A
reshaped to (out, in kh kw) (each pixel lies in at most kh kw patches). The truncation then
changes singular values by at most 0.7^(t+1) / (t+1)! * e^0.7: 3e-5 with the 6 training
terms and 3e-12 with the 12 evaluation terms, so the evaluated layer is orthogonal to float
precision (``eval_terms`` whose bound exceeds ``MAX_EVAL_TRUNCATION`` are refused). ||M|| is exact (cached) in eval mode; in training one power-iteration step per
forward on the stored vector ``u`` estimates it, as CPL does for its sigma.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.types import Device

from robustlab.nn.lipschitz.base import (
    EvalCache,
    LipschitzLayer,
    TensorFactory,
    check_channels,
    normalize,
    odd_kernel_size,
    same_padding,
    with_weights,
)

# The lr this family trains at relative to AOL's (LayerFamily.lr_scale), measured with
# benchmarks/family_lr.py (digits, lipconvnet width 32 depth 2, 5 epochs, test accuracy):
# lr 0.3 diverges (8.3%), 0.1: 85.6%, 0.03: 80.0%.
LR_SCALE = 1 / 3

# Evaluation is certified as exactly 1-Lipschitz, so its truncation must be negligible
# next to the certificates' float-error slack (1e-6 relative).
MAX_EVAL_TRUNCATION = 1e-9


def truncation_error(norm: float, terms: int) -> float:
    """Bound on ||exp(L) - sum_{j<=terms} L^j / j!|| for ||L|| <= norm."""
    return norm ** (terms + 1) / math.factorial(terms + 1) * math.exp(norm)


def skew_kernel(kernel: Tensor) -> Tensor:
    """(K - K^T) / 2 where K^T is the kernel of the adjoint convolution."""
    adjoint = kernel.transpose(0, 1).flip(-2, -1)
    return (kernel - adjoint) / 2


def taylor_exp_conv(x: Tensor, kernel: Tensor, terms: int, padding: tuple[int, int]) -> Tensor:
    """sum_{j=0..terms} L^j x / j! for the convolution L with ``kernel``."""
    term, total = x, x
    for j in range(1, terms + 1):
        term = F.conv2d(term, kernel, padding=padding) / j
        total = total + term
    return total


class TaylorSeriesConv(nn.Module):
    """y = sum_{j<=terms} conv^j(x) / j! + bias, with ``conv`` a plain bias-free nn.Conv2d:
    the exported SOC layer (a single composed kernel would differ at the borders, because
    zero padding does not compose)."""

    def __init__(self, conv: nn.Conv2d, terms: int, bias: Tensor | None):
        super().__init__()
        self.conv, self.terms = conv, terms
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        # nn.Conv2d types its padding str | tuple[int, ...]; SOCConv2d.export gives it a pair
        y = taylor_exp_conv(x, self.conv.weight, self.terms, cast(tuple[int, int], self.conv.padding))
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"terms={self.terms}"


class SOCConv2d(LipschitzLayer):
    """Orthogonal channels -> channels convolution (kernel ``kernel_size``, 'same' padding)."""

    affine = True
    u: Tensor  # buffer: the power-iteration vector of the training-mode bound

    def __init__(
        self,
        channels: int,
        kernel_size: int | tuple[int, int] = 3,
        bias: bool = True,
        train_terms: int = 6,
        eval_terms: int = 12,
        correction: float = 0.7,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if not 0 < correction <= 1:
            raise ValueError(f"SOCConv2d: correction must be in (0, 1], got {correction}")
        if truncation_error(correction, eval_terms) > MAX_EVAL_TRUNCATION:
            enough = next(t for t in range(eval_terms, 100) if truncation_error(correction, t) <= MAX_EVAL_TRUNCATION)
            raise ValueError(
                f"SOCConv2d: eval_terms={eval_terms} leaves the evaluated layer up to "
                f"{truncation_error(correction, eval_terms):.1e} from orthogonal, too far for sound "
                f"certificates; use eval_terms >= {enough} (with correction={correction})"
            )
        self.channels = channels
        self.kernel_size = odd_kernel_size(kernel_size)
        self.padding = same_padding(self.kernel_size)
        self.train_terms, self.eval_terms, self.correction = train_terms, eval_terms, correction
        factory = TensorFactory(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(channels, channels, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.zeros(channels, **factory)) if bias else None
        self.register_buffer("u", normalize(torch.randn(channels, **factory)))
        self._cache = EvalCache()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _patch_matrix(self, skew: Tensor) -> Tensor:
        return skew.reshape(self.channels, -1)

    def _bound_factor(self) -> float:
        return float(self.kernel_size[0] * self.kernel_size[1]) ** 0.5

    def _exact_bound(self) -> Tensor:
        matrix = self._patch_matrix(skew_kernel(self.weight))
        gram = matrix @ matrix.t()  # (c, c): cheaper than an SVD of (c, c k^2)
        return (
            torch.linalg.eigvalsh(gram.to(torch.promote_types(gram.dtype, torch.float32)))[-1].sqrt().to(gram.dtype)
            * self._bound_factor()
        )

    def scaled_kernel(self) -> Tensor:
        """The kernel of L, scaled so that ||L|| <= correction."""
        skew = skew_kernel(self.weight)
        if self.training:
            matrix = self._patch_matrix(skew)
            with torch.no_grad():
                self.u.copy_(normalize(matrix @ (matrix.t() @ self.u)))
            bound = (matrix.t() @ self.u).norm() * self._bound_factor()
        else:
            bound = self._cache.get((self.weight,), self._exact_bound, module=self)
        return skew * (self.correction / bound)

    def forward(self, x: Tensor) -> Tensor:
        check_channels(x, self.channels, "SOCConv2d")
        terms = self.train_terms if self.training else self.eval_terms
        y = taylor_exp_conv(x, self.scaled_kernel(), terms, self.padding)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def export(self) -> nn.Module:
        """The eval-mode series over one plain ``nn.Conv2d`` holding the scaled skew kernel."""
        conv = nn.Conv2d(self.channels, self.channels, self.kernel_size, padding=self.padding, bias=False)
        return TaylorSeriesConv(with_weights(conv, self.scaled_kernel()), self.eval_terms, self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, bias={self.bias is not None}, "
            f"train_terms={self.train_terms}, eval_terms={self.eval_terms}, correction={self.correction}"
        )
