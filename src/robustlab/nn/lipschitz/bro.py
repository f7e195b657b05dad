"""BRO, block reflector orthogonal layers (Lai et al., ICML 2025): W = I - 2 V (V^T V)^-1 V^T.

For V (n x r) of rank r, V (V^T V)^-1 V^T is the orthogonal projection onto the columns of
V, and W the reflection through their complement: symmetric and orthogonal, with r
eigenvalues -1 and n - r eigenvalues 1 (r = n would give -I, so r < n; default n // 2).
No iteration and no truncation. As in the paper, the Gram matrix is regularised,
G = V^T V + eps I with eps = 1e-5 * mean(diag(V^T V)) (plus the smallest normal float,
so that V = 0 stays finite): with V = U S R^T, W = I - 2 U diag(s^2 / (s^2 + eps)) U^T,
whose eigenvalues lie in [-1, 1], so W stays 1-Lipschitz (and near-orthogonal) for any V.

The conv layer applies W per frequency (``fourier.py``): V(w) (n x r) is the DFT of a
kernel (n, r, k, k), W(w) = I - 2 V(w) G(w)^-1 V(w)^H, unitary with W(-w) = conj(W(w)). As
in the paper, the input is zero-padded by k // 2 on each side, convolved circularly on the
padded grid and cropped back: a crop of an orthogonal map, so 1-Lipschitz, with zero
padding. in != out: the n x n reflector with n = max(in, out), of which the first out rows
and in columns are used (a submatrix of an orthogonal matrix: norm <= 1).

Evaluation does not trust the solve: it computes ||W|| (per frequency for the conv) exactly
in float64 (``spectral_norm_bound``) and divides W by it where it exceeds 1, so the evaluated
layer is 1-Lipschitz in any precision (``lipschitz_bound()`` is 1); ``norm_report`` gives
the float64 norm of the evaluated W (``exact_bound``) as its proof.
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
    TensorFactory,
    check_channels,
    dense_norm_report,
    jacobian_norm_report,
    odd_kernel_size,
    pair,
    plain_linear,
    same_padding,
    spatial_size,
)
from robustlab.nn.lipschitz.fourier import (
    FourierConv2d,
    cached_within_one,
    check_size,
    kernel_response,
    known_size,
    padded_apply,
    spectral_norm_bound,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack


# The lr this family trains at relative to AOL's (LayerFamily.lr_scale), measured with
# benchmarks/family_lr.py (digits, lipconvnet width 32 depth 2, 5 epochs, test accuracy):
# lr 0.3: 89.7%, 0.1: 73.3%, 0.03: 65.8% (with this file's random init; the identity init
# learned nothing at 0.3, 0.1, 0.03 or 0.01: 10.0%).
LR_SCALE = 1.0

GRAM_REGULARISATION = 1e-5


def _gram_factor(v: Tensor) -> Tensor:
    """Cholesky factor of G = V^H V + eps I for V (..., n, r) (see the module docstring)."""
    gram = v.mH @ v
    diagonal = gram.diagonal(dim1=-2, dim2=-1).real
    eps = GRAM_REGULARISATION * diagonal.mean(dim=-1) + torch.finfo(diagonal.dtype).tiny
    gram = gram + eps[..., None, None] * torch.eye(v.shape[-1], dtype=gram.dtype, device=gram.device)
    # G is Hermitian positive definite; no error check, whose read on the host would stall
    # the GPU every step.
    return torch.linalg.cholesky_ex(gram, check_errors=False).L


def block_reflector(v: Tensor) -> Tensor:
    """W = I - 2 V G^-1 V^H for V (..., n, r)."""
    projection = v @ torch.cholesky_solve(v.mH, _gram_factor(v))
    return torch.eye(v.shape[-2], dtype=v.dtype, device=v.device) - 2 * projection


def reflect(v: Tensor, x: Tensor) -> Tensor:
    """W x = x - 2 V G^-1 V^H x for V (..., n, r) and x (..., n, batch), without forming W:
    2 n r + r^2 multiplications per column instead of n^2, and n r^2 for G instead of n^2 r."""
    return x - 2 * v @ torch.cholesky_solve(v.mH @ x, _gram_factor(v))


def _rank(width: int, rank: int | None, layer: str) -> int:
    rank = max(1, width // 2) if rank is None else rank
    if not 0 < rank < width:
        raise ValueError(
            f"{layer}: rank must be in [1, {width - 1}] for width {width} (rank {width} would make W = -I), got {rank}"
        )
    return rank


class _BRO(LipschitzLayer):
    """The eval-mode cache of the (normalised) reflector, shared by the dense and conv layers."""

    affine = True

    weight: nn.Parameter
    bias: nn.Parameter | None
    in_features: int
    out_features: int
    _cache: EvalCache

    def _compute_matrix(self, size: tuple[int, int] | None) -> Tensor:
        raise NotImplementedError

    def _eval_matrix(self, size: tuple[int, int] | None) -> Tensor:
        """W divided by ||W||_2 where that exceeds 1 (see the module docstring); cached."""
        return cached_within_one(self._cache, (self.weight,), lambda: self._compute_matrix(size), size, self)

    def matrix(self, size: tuple[int, int] | None = None, evaluated: bool | None = None) -> Tensor:
        """The used block of W (per frequency for the conv); ``evaluated``: eval mode's (default: in eval mode)."""
        evaluated = not self.training if evaluated is None else evaluated
        return self._eval_matrix(size) if evaluated else self._compute_matrix(size)

    @torch.no_grad()
    def exact_bound(self) -> float:
        """||W||_2 of what evaluation computes (largest over frequencies for the conv), in
        float64: a guaranteed bound on the evaluated layer, <= 1 up to rounding."""
        return spectral_norm_bound(self.matrix(getattr(self, "input_size", None), evaluated=True))


class BROLinear(_BRO):
    """Like ``nn.Linear``, 1-Lipschitz: y = W[:out, :in] x + b for the n x n block reflector
    of V (n x rank), n = max(in, out). Starts as I - 2 diag(1, .., 1, 0, .., 0) (V = [I; 0])."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        rank: int | None = None,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        width = max(in_features, out_features)
        self.rank = _rank(width, rank, "BROLinear")
        factory = TensorFactory(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(width, self.rank, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self._cache = EvalCache()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.eye_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def _compute_matrix(self, size: tuple[int, int] | None = None) -> Tensor:
        return block_reflector(self.weight)[: self.out_features, : self.in_features]

    def forward(self, x: Tensor) -> Tensor:
        check_channels(x, self.in_features, "BROLinear")
        return F.linear(x, self.matrix(), self.bias)

    @torch.no_grad()
    def export(self) -> nn.Module:
        return plain_linear(self.matrix(evaluated=True), self.bias)

    def norm_report(self, inputs: Tensor, **lanczos: Unpack[LanczosOptions]) -> NormReport:
        return dense_norm_report(self.matrix(evaluated=True))

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
            f"bias={self.bias is not None}"
        )


class BROConv2d(_BRO):
    """Like ``nn.Conv2d`` (in_channels -> out_channels, 'same' size, zero padding k // 2),
    1-Lipschitz: the block reflector of a kernel V (n, rank, k, k) per frequency, n = max(in, out).

    The reflector is taken per frequency of one padded image size: ``input_size`` (H, W), or
    the first input's; other sizes are refused. Starts from a random orthogonal V, not the
    paper's Dirac V (see ``reset_parameters``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        bias: bool = True,
        rank: int | None = None,
        input_size: int | tuple[int, int] | None = None,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.in_features, self.out_features = in_channels, out_channels
        width = max(in_channels, out_channels)
        self.rank = _rank(width, rank, "BROConv2d")
        self.kernel_size = odd_kernel_size(kernel_size)
        self.padding = same_padding(self.kernel_size)
        self.input_size = pair(input_size, "input_size") if input_size is not None else None
        factory = TensorFactory(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(width, self.rank, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self._cache = EvalCache()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # A random V, not the centred identity (V(f) = [I; 0] at every frequency): that
        # reflection keeps a digit's one channel among a few channels, where every gradient
        # to V vanishes, and the lipconvnet learned nothing on digits at any lr (issue 23).
        nn.init.orthogonal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def grid(self, size: tuple[int, int]) -> tuple[int, int]:
        return size[0] + 2 * self.padding[0], size[1] + 2 * self.padding[1]

    def _compute_matrix(self, size: tuple[int, int] | None) -> Tensor:
        reflector = block_reflector(kernel_response(self.weight, self.grid(known_size(size, "BROConv2d"))))
        return reflector[..., : self.out_channels, : self.in_channels]

    def forward(self, x: Tensor) -> Tensor:
        check_channels(x, self.in_channels, "BROConv2d")
        size = spatial_size(x)
        check_size(size, self.input_size, "BROConv2d")
        self.input_size = size
        if self.training:
            y = self._train_forward(x)
        else:
            y = padded_apply(self.matrix(size), x, self.padding)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def _train_forward(self, x: Tensor) -> Tensor:
        """``reflect`` per frequency, on the input zero-padded in space and to n channels."""
        (ph, pw), size = self.padding, spatial_size(x)
        grid = self.grid(size)
        v = kernel_response(self.weight, grid)  # (H', W' // 2 + 1, n, r)
        x = F.pad(x, (pw, pw, ph, ph, 0, v.shape[-2] - self.in_channels))
        x_hat = torch.fft.rfft2(x.to(v.real.dtype)).permute(2, 3, 1, 0)  # (H', W' // 2 + 1, n, batch)
        y_hat = reflect(v, x_hat)[..., : self.out_channels, :].permute(3, 2, 0, 1)
        y = torch.fft.irfft2(y_hat, s=grid).to(x.dtype)
        return y[..., ph : ph + size[0], pw : pw + size[1]]

    @torch.no_grad()
    def export(self) -> nn.Module:
        """A ``FourierConv2d`` with the evaluation-mode response (same padding and crop)."""
        if self.input_size is None:
            raise ValueError("BROConv2d: export needs the image size; give input_size or run one input first")
        response = self.matrix(self.input_size, evaluated=True)
        return FourierConv2d.from_response(response, self.grid(self.input_size), self.bias, self.padding)

    def norm_report(self, inputs: Tensor, **lanczos: Unpack[LanczosOptions]) -> NormReport:
        """Lanczos on the Jacobian (the default), with the largest per-frequency norm of the
        evaluated reflector in float64 as the proof (exact for the circular convolution on
        the padded grid, an upper bound for its crop)."""
        return jacobian_norm_report(self, inputs, affine=True, **lanczos)._replace(upper_bound=self.exact_bound())

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, rank={self.rank}, "
            f"bias={self.bias is not None}, input_size={self.input_size}, padding={self.padding}"
        )
