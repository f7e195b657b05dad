"""Sandwich layers (Wang & Manchester, ICML 2023): y = sqrt(2) A^T Psi relu(sqrt(2) Psi^-1 B x + b).

A (m x m) and B (m x n) come from one free weight X = [X_A X_B] (m x (m + n)) through a
Cayley transform: with M = X_A - X_A^T + X_B X_B^T,

    A = (I + M)^-1 (I - M),    B = -2 (I + M)^-1 X_B,    so that A A^T + B B^T = I

(expand both sides with M + M^T = 2 X_B X_B^T). I + M is always invertible: its symmetric
part is I + X_B X_B^T. X is used as alpha X / ||X||_F with a learned scalar alpha, and
Psi = diag(exp(psi)) is learned, as in the paper's code (the initialisation is not the
paper's: see ``reset_parameters``). The conv layer does the same per
frequency of a *circular* convolution (``fourier.py``): X(w) is the DFT of a kernel
(m, m + n, k, k) and [A(w) B(w)] its Cayley transform.

Why 1-Lipschitz, and the bound that certification uses. Let z = sqrt(2) Psi^-1 B x + b and
u = Psi relu(z). relu is monotone with slope <= 1, so (du_i)^2 <= du_i psi_i dz_i, i.e.
||du||^2 <= sqrt(2) <B^T du, dx>. If A A^T + B B^T <= I, then
||dy||^2 = 2 ||A^T du||^2 <= 2 ||du||^2 - 2 ||B^T du||^2 <= ||dx||^2 - ||sqrt(2) B^T du - dx||^2.
For s = ||[A B]||_2 > 1, dividing A and B by s (relu is positively homogeneous) shows that
the layer is s^2-Lipschitz. The Cayley transform gives s = 1 only up to the rounding of a
linear solve, so evaluation does not trust it: it computes s exactly in float64
(``spectral_norm_bound``; for the conv the largest over frequencies, a bound on the real
operator, see ``fourier.py``) and divides [A B] by s when s > 1. The evaluated layer is
then 1-Lipschitz by this bound in any precision, so ``lipschitz_bound()`` is 1;
``norm_report`` gives the exact s^2 of the evaluated layer (``exact_bound``) as its proof.

The layer has its own ReLU; in the model zoo MaxMin still follows it.
"""

from __future__ import annotations

import math
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
    TensorFactory,
    check_channels,
    jacobian_norm_report,
    odd_kernel_size,
    pair,
    plain_linear,
    spatial_size,
)
from robustlab.nn.lipschitz.fourier import (
    FourierConv2d,
    apply_response,
    cached_within_one,
    check_size,
    kernel_response,
    known_size,
    spectral_norm_bound,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack


# The lr this family trains at relative to AOL's (LayerFamily.lr_scale), measured with
# benchmarks/family_lr.py (digits, lipconvnet width 32 depth 2, 5 epochs, test accuracy):
# lr 0.3 learns nothing (10.0%), 0.1: 89.2%, 0.03: 88.1% (with this file's init).
LR_SCALE = 1 / 3

SQRT2 = math.sqrt(2)


def sandwich_factors(weight: Tensor) -> Tensor:
    """[A B] with A A^H + B B^H = I from X = [X_A X_B] (..., m, m + n), real or complex."""
    m = weight.shape[-2]
    xa, xb = weight[..., :m], weight[..., m:]
    eye = torch.eye(m, dtype=weight.dtype, device=weight.device)
    skew_plus = xa - xa.mH + xb @ xb.mH
    rhs = torch.cat((eye - skew_plus, -2 * xb), dim=-1)
    # I + M is invertible for every X (see the module docstring): no error check, whose read
    # on the host would stall the GPU every step.
    return torch.linalg.solve_ex(eye + skew_plus, rhs, check_errors=False).result


class _Sandwich(LipschitzLayer):
    """y = up(relu(down(x) + b)) with down = sqrt(2) Psi^-1 B and up = sqrt(2) A^H Psi:
    matrices (dense) or per-frequency responses (conv)."""

    hidden: int  # m: hidden units = outputs
    weight: nn.Parameter
    alpha: nn.Parameter
    psi: nn.Parameter
    bias: nn.Parameter | None
    _cache: EvalCache

    def _make_parameters(
        self, weight_shape: tuple[int, ...], bias: bool, device: Device, dtype: torch.dtype | None
    ) -> None:
        factory = TensorFactory(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(weight_shape, **factory))
        self.alpha = nn.Parameter(torch.empty((), **factory))
        self.psi = nn.Parameter(torch.empty(self.hidden, **factory))
        self.bias = nn.Parameter(torch.empty(self.hidden, **factory)) if bias else None
        self._cache = EvalCache()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """X = [0, s Q] with Q (semi-)orthogonal (the centre tap of a conv kernel) and
        s = sqrt(2) - 1, alpha = ||X||_F, Psi = I, zero bias: then A = B = Q / sqrt(2) on Q's
        range and the layer starts as relu through an orthogonal map (Jacobian norm 1).

        The paper's code uses torch's nn.Linear init of X: for a conv its DFT has singular
        values far above 1, the Cayley transform then makes B tiny, and a lipconvnet's
        Jacobian starts near 0.003: no signal reaches the head and nothing is learned
        (issue 23)."""
        with torch.no_grad():
            self.weight.zero_()
            centre = self.weight[:, self.hidden :]  # X_B
            if centre.dim() == 4:  # conv: (m, n, kh, kw), the tap at the kernel's centre
                kh, kw = centre.shape[-2:]
                centre = centre[:, :, kh // 2, kw // 2]
            centre.copy_(nn.init.orthogonal_(torch.empty_like(centre)) * (SQRT2 - 1))
            self.alpha.copy_(self.weight.norm())
            self.psi.zero_()
            if self.bias is not None:  # a positive bias (all units on) trained worse on digits
                self.bias.zero_()

    def scaled_weight(self) -> Tensor:
        return self.weight * (self.alpha / self.weight.norm())

    def _compute_factors(self, size: tuple[int, int] | None) -> Tensor:
        raise NotImplementedError

    def _eval_factors(self, size: tuple[int, int] | None) -> Tensor:
        """[A B] divided by s = ||[A B]||_2 where s > 1 (see the module docstring); cached."""
        weights = (self.weight, self.alpha)
        return cached_within_one(self._cache, weights, lambda: self._compute_factors(size), size, self)

    def plain(self, size: tuple[int, int] | None = None, evaluated: bool | None = None) -> tuple[Tensor, Tensor]:
        """(down, up) with every scaling folded in: y = up(relu(down(x) + b)).

        ``evaluated``: the evaluation-mode (cached, normalised) factors; default: in eval mode.
        """
        evaluated = not self.training if evaluated is None else evaluated
        factors = self._eval_factors(size) if evaluated else self._compute_factors(size)
        a, b = factors[..., : self.hidden], factors[..., self.hidden :]
        scale = self.psi.exp()
        return SQRT2 * b / scale.view(-1, 1), SQRT2 * a.mH * scale.view(1, -1)

    @torch.no_grad()
    def exact_bound(self) -> float:
        """s^2 for s = ||[A B]||_2 of what evaluation computes (largest over frequencies for the
        conv), in float64: a guaranteed bound on the evaluated layer, <= 1 up to rounding."""
        factors = self._eval_factors(getattr(self, "input_size", None))
        return spectral_norm_bound(factors) ** 2

    def norm_report(self, inputs: Tensor, **lanczos: Unpack[LanczosOptions]) -> NormReport:
        """The Jacobian's norm at ``inputs`` (Lanczos, the default), with ``exact_bound`` as the proof."""
        return jacobian_norm_report(self, inputs, **lanczos)._replace(upper_bound=self.exact_bound())


class SandwichLinear(_Sandwich):
    """Like ``nn.Linear`` (in_features -> out_features), 1-Lipschitz: a sandwich layer with
    out_features hidden units and its own ReLU."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.in_features, self.out_features, self.hidden = in_features, out_features, out_features
        self._make_parameters((out_features, out_features + in_features), bias, device, dtype)

    def _compute_factors(self, size: tuple[int, int] | None = None) -> Tensor:
        return sandwich_factors(self.scaled_weight())

    def forward(self, x: Tensor) -> Tensor:
        check_channels(x, self.in_features, "SandwichLinear")
        down, up = self.plain()
        return F.linear(F.relu(F.linear(x, down, self.bias)), up)

    @torch.no_grad()
    def export(self) -> nn.Module:
        """Linear -> ReLU -> Linear with the evaluation-mode weights."""
        down, up = self.plain(evaluated=True)
        return nn.Sequential(plain_linear(down, self.bias), nn.ReLU(), plain_linear(up))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class SandwichConv2d(_Sandwich):
    """Like ``nn.Conv2d`` (in_channels -> out_channels, 'same' size), 1-Lipschitz: a sandwich
    layer of circular convolutions with out_channels hidden channels and its own ReLU.

    The Cayley transform is taken per frequency of one image size: ``input_size`` (H, W), or
    the first input's; other sizes are refused.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        bias: bool = True,
        input_size: int | tuple[int, int] | None = None,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.in_channels, self.out_channels, self.hidden = in_channels, out_channels, out_channels
        self.kernel_size = odd_kernel_size(kernel_size)
        self.input_size = pair(input_size, "input_size") if input_size is not None else None
        shape = (out_channels, out_channels + in_channels, *self.kernel_size)
        self._make_parameters(shape, bias, device, dtype)

    def _compute_factors(self, size: tuple[int, int] | None) -> Tensor:
        return sandwich_factors(kernel_response(self.scaled_weight(), known_size(size, "SandwichConv2d")))

    def forward(self, x: Tensor) -> Tensor:
        check_channels(x, self.in_channels, "SandwichConv2d")
        size = spatial_size(x)
        check_size(size, self.input_size, "SandwichConv2d")
        self.input_size = size
        down, up = self.plain(size)
        z = apply_response(down, x)
        if self.bias is not None:
            z = z + self.bias.view(1, -1, 1, 1)
        return apply_response(up, F.relu(z))

    @torch.no_grad()
    def export(self) -> nn.Module:
        """FourierConv2d -> ReLU -> FourierConv2d with the evaluation-mode responses."""
        if self.input_size is None:
            raise ValueError("SandwichConv2d: export needs the image size; give input_size or run one input first")
        down, up = self.plain(self.input_size, evaluated=True)
        first = FourierConv2d.from_response(down, self.input_size, self.bias)
        return nn.Sequential(first, nn.ReLU(), FourierConv2d.from_response(up, self.input_size))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, bias={self.bias is not None}, "
            f"input_size={self.input_size}, padding_mode=circular"
        )
