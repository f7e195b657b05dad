"""CPL, convex potential layers (Meunier et al., 2022): y = x - (2 / sigma^2) W^T relu(W x + b).

sigma is the spectral norm of W (dense) or of the convolution operator (conv). The
Jacobian is I - (2 / sigma^2) W^T D W with D diagonal in [0, 1], whose eigenvalues lie in
[1 - 2 ||W||^2 / sigma^2, 1]: the layer is 1-Lipschitz whenever sigma >= ||W||.

sigma, by mode:
- training: one power-iteration step per forward on the stored vector ``u`` (a buffer,
  saved in the state dict; updated without gradients), then sigma = ||W u|| with
  gradients through W, as in the reference code.
- evaluation: a guaranteed upper bound on ||W||, computed without gradients and cached
  until the weights change. Dense: the exact spectral norm (``matrix_norm(ord=2)``).
  Conv (``certified_conv_sigma``): the smaller of two proofs, both in float64:
  1. the per-frequency bound: the zero-padded convolution is a restriction of a circular
     one on the (H + kh - 1) x (W + kw - 1) grid, whose norm is the largest norm of its
     per-frequency matrices (``exact_spectral_norm``, eigenvalues exact to ~1e-13);
     tight on large images (0.1% on 32x32 at initialisation), loose on tiny ones (50%
     on 2x2);
  2. where the layer's operator has at most ``DENSE_LIMIT`` inputs: a certified shift
     test. Restarted Lanczos in float32 from the stored vector (fast) gives
     theta ~ ||W||^2; then a float64 Cholesky factorisation of c I - W^T W with
     c = theta (1 + delta) proves ||W||^2 <= c, with the rounding of the Gram matrix and
     of the factorisation itself (Demmel's bound: a completed Cholesky of X proves
     lambda_min(X) >= -gamma_{n+1} / (1 - gamma_{n+1}) tr(X)) subtracted from c first.
     delta is the first of ``SHIFT_STEPS`` that passes: sigma is then within 5e-6 of
     ||W|| (the previous estimate, a converged Lanczos value times 1.001, was not a
     proof and was 0.1% loose).
  The stored vector is not changed. If Lanczos has not converged within
  ``eval_iterations`` steps, the per-frequency bound is used alone, with a warning.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.nn.lipschitz.base import (
    EvalCache,
    check_channels,
    normalize,
    odd_kernel_size,
    pair,
    same_padding,
    spatial_size,
    top_eigenpair,
)
from robustlab.nn.lipschitz.bounded import frequency_matrices
from robustlab.nn.lipschitz.fourier import exact_spectral_norm
from robustlab.nn.lipschitz.residual import ConvResidual, DenseResidual, ResidualLipschitz

# The shift test's float64 Cholesky costs ~n^3 / 3 flops for n = channels * H * W inputs
# (about 1 s at n = 4096 on one core); larger layers keep the per-frequency bound.
DENSE_LIMIT = 4096
SHIFT_STEPS = (1e-5, 1e-4, 1e-3)  # c = theta * (1 + delta), tried in this order
FREQUENCY_BOUND_SLACK = 1e-10  # exact_spectral_norm's float64 eigenvalues, with a wide margin
UNIT_ROUNDOFF = 2.0**-53


def gamma(n: int) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative error of an n-term float64 sum."""
    return n * UNIT_ROUNDOFF / (1 - n * UNIT_ROUNDOFF)


def conv_gram_matrix(kernel: Tensor, size: tuple[int, int]) -> Tensor:
    """W^T W as an (n, n) matrix, n = in * H * W, for the zero-padded 'same' convolution
    with ``kernel`` (out, in, kh, kw) on ``size`` images; in the kernel's dtype.

    With S_t the (output pixel x input pixel) 0/1 matrix of tap t, W = sum_t W_t (x) S_t,
    so W^T W = sum_{t,s} (W_t^T W_s) (x) (S_t^T S_s): 81 channel products and 81 pixel
    products for a 3x3 kernel, instead of n convolutions.
    """
    out_channels, in_channels, kh, kw = kernel.shape
    height, width = size
    rows = torch.arange(height, device=kernel.device).view(-1, 1)
    cols = torch.arange(width, device=kernel.device).view(1, -1)
    shifts = []
    for i in range(kh):
        for j in range(kw):
            source_rows, source_cols = rows + i - kh // 2, cols + j - kw // 2
            valid = (source_rows >= 0) & (source_rows < height) & (source_cols >= 0) & (source_cols < width)
            shift = torch.zeros(height * width, height * width, dtype=kernel.dtype, device=kernel.device)
            outputs = (rows * width + cols).expand(height, width)[valid]
            shift[outputs, (source_rows * width + source_cols)[valid]] = 1
            shifts.append(shift)
    taps = kernel.reshape(out_channels, in_channels, kh * kw)
    channel_products = torch.einsum("oat,obs->tsab", taps, taps)  # (taps, taps, in, in)
    stacked = torch.stack(shifts)
    pixel_products = torch.einsum("trp,srq->tspq", stacked, stacked)  # (taps, taps, HW, HW)
    gram = torch.einsum("tsab,tspq->apbq", channel_products, pixel_products)
    n = in_channels * height * width
    return gram.reshape(n, n)


def shift_test(gram: Tensor, bound: float, kernel: Tensor, size: tuple[int, int]) -> bool:
    """True only if lambda_max of the exact W^T W is at most ``bound`` (a proof).

    ``gram`` is ``conv_gram_matrix`` computed in float64. Its entries are sums of at most
    out * kh * kw * kh * kw products, so each errs by at most gamma_m times the same sum
    of absolute values; those sums form |W|^T |W|, whose Frobenius norm is at most its
    trace ||W||_F^2 <= H W ||kernel||_F^2: ||E||_2 <= gamma_m H W ||kernel||_F^2. A
    float64 Cholesky of X = c' I - gram that runs to completion proves
    lambda_min(X) >= -gamma_{n+1} / (1 - gamma_{n+1}) tr(X) (Demmel 1989), and forming
    the diagonal of X errs by at most u c' per entry. So with c' = bound minus both
    allowances, success proves bound I - W^T W >= 0.
    """
    n = gram.shape[0]
    out_channels, _, kh, kw = kernel.shape
    terms = out_channels * (kh * kw) ** 2
    gram_error = gamma(terms) * size[0] * size[1] * float(kernel.double().pow(2).sum()) * (1 + 1e-6)
    cholesky_error = (gamma(n + 1) / (1 - gamma(n + 1)) * n + 2 * UNIT_ROUNDOFF) * bound * (1 + 1e-6)
    shifted = bound - gram_error - cholesky_error
    if shifted <= 0:
        return False
    matrix = -gram
    matrix.diagonal().add_(shifted)
    return int(torch.linalg.cholesky_ex(matrix).info) == 0


def certified_conv_sigma(kernel: Tensor, size: tuple[int, int], theta: Callable[[], float | None]) -> float:
    """A guaranteed upper bound on the norm of the zero-padded 'same' convolution with
    ``kernel`` on ``size`` images (float64). Up to ``DENSE_LIMIT`` inputs: sqrt(c) for the
    first c = theta (1 + delta) that ``shift_test`` proves; otherwise, or when none passes,
    the per-frequency bound. ``theta()`` estimates the squared norm (None: no estimate).
    """
    kernel = kernel.detach().double()
    if kernel.shape[1] * size[0] * size[1] <= DENSE_LIMIT:
        estimate = theta()
        if estimate is not None and estimate > 0:
            gram = conv_gram_matrix(kernel, size)
            for delta in SHIFT_STEPS:
                bound = estimate * (1 + delta)
                if shift_test(gram.clone(), bound, kernel, size):
                    return math.sqrt(bound) * (1 + 2 * UNIT_ROUNDOFF)  # sqrt rounds to nearest
    return exact_spectral_norm(frequency_matrices(kernel, size)) * (1 + FREQUENCY_BOUND_SLACK)


def _conv_gram(v: Tensor, weight: Tensor, padding: tuple[int, int]) -> Tensor:
    return F.conv_transpose2d(F.conv2d(v, weight, padding=padding), weight, padding=padding)


def rounded_up(value: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``value`` as a tensor of ``dtype``, never below it (a float32 cast rounds to nearest)."""
    result = torch.tensor(value, dtype=dtype, device=device)
    if float(result) < value:
        result = torch.nextafter(result, torch.tensor(math.inf, dtype=dtype, device=device))
    return result


class _CPL(ResidualLipschitz):
    eval_iterations: int
    u: Tensor
    _cache: EvalCache

    def reset_parameters(self) -> None:
        # As the paper's reference code: torch's default weight init, zero bias. Scaling W and b
        # together leaves the layer unchanged, so the weight's scale only sets SGD's effective
        # step size: Xavier-normal weights would be sqrt(3) larger at equal fan-in and fan-out,
        # and their relative steps 3x smaller at the same lr.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def configure_eval(self, *, power_iterations: int | None = None, **settings) -> None:
        """``power_iterations``: the most Lanczos matvecs for the eval-mode sigma (conv)."""
        if power_iterations is not None:
            self.eval_iterations = power_iterations
            self._cache.clear()

    def scale(self) -> Tensor:
        if self.training:
            with torch.no_grad():
                self.u.copy_(normalize(self.up(self.down(self.u))))
            sigma_sq = self.down(self.u).pow(2).sum()
            return 2 / sigma_sq
        sigma = self._cache.get((self.weight,), self.eval_sigma, extra=tuple(self.u.shape))
        return 2 / sigma**2

    def eval_sigma(self) -> Tensor:
        raise NotImplementedError


class CPLLinear(_CPL, DenseResidual):
    """Dense CPL: maps ``features`` to ``features`` through ``hidden_features`` units."""

    def __init__(
        self,
        features: int,
        hidden_features: int | None = None,
        bias: bool = True,
        eval_iterations: int = 1000,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.features = features
        self.hidden_features = hidden_features or features
        self.eval_iterations = eval_iterations
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(self.hidden_features, features, **factory))
        self.bias = nn.Parameter(torch.empty(self.hidden_features, **factory)) if bias else None
        self.register_buffer("u", normalize(torch.randn(features, **factory)))
        self._cache = EvalCache()
        self.reset_parameters()

    def eval_sigma(self) -> Tensor:
        weight = self.weight.to(torch.promote_types(self.weight.dtype, torch.float32))
        return torch.linalg.matrix_norm(weight, ord=2).to(self.weight.dtype)


class CPLConv2d(_CPL, ConvResidual):
    """Convolutional CPL (kernel ``kernel_size``, 'same' zero padding, stride 1).

    The spectral norm of a convolution depends on the image size, so the power-iteration
    vector ``u`` has shape (1, channels, H, W). Give ``input_size`` when it is known (the
    models do); otherwise it is taken from the first input. Loading a state dict adopts
    the saved vector's size.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int | tuple[int, int] = 3,
        hidden_channels: int | None = None,
        bias: bool = True,
        input_size: int | tuple[int, int] | None = None,
        eval_iterations: int = 1000,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.channels = channels
        self.hidden_channels = hidden_channels or channels
        self.kernel_size = odd_kernel_size(kernel_size)
        self.padding = same_padding(self.kernel_size)
        self.eval_iterations = eval_iterations
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(self.hidden_channels, channels, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(self.hidden_channels, **factory)) if bias else None
        size = pair(input_size, "input_size") if input_size is not None else (0, 0)
        self.register_buffer("u", self._random_vector(size, self.weight))
        self._cache = EvalCache()
        self.reset_parameters()

    def _random_vector(self, size: tuple[int, int], like: Tensor) -> Tensor:
        u = torch.randn(1, self.channels, *size, device=like.device, dtype=like.dtype)
        return normalize(u) if u.numel() else u

    def eval_sigma(self) -> Tensor:
        sigma = certified_conv_sigma(self.weight, tuple(self.u.shape[-2:]), self._lanczos_estimate)
        return rounded_up(sigma, self.weight.dtype, self.weight.device)

    def _lanczos_estimate(self) -> float | None:
        """||W||^2 by restarted Lanczos in float32 from the stored vector: only the candidate
        that the shift test then proves or rejects, so float32 is enough."""
        if self.eval_iterations > 0:
            weight = self.weight.detach().float()
            start = self.u.detach().float()
            top = top_eigenpair(lambda v: _conv_gram(v, weight, self.padding), start, max_steps=self.eval_iterations)
            if top.converged:
                return float(top.value)
        # An unconverged estimate can be far below sigma: the per-frequency bound is then
        # the only proof, and it is loose on small images.
        warnings.warn(
            f"CPLConv2d: {self.eval_iterations} Lanczos steps did not converge on the spectral norm; "
            "using a rigorous but looser bound (lower accuracy and radii). Raise eval_iterations "
            "(config eval.power_iterations) to 1000 for the tight value.",
            stacklevel=2,
        )
        return None

    def _gram(self, v: Tensor) -> Tensor:
        return self.up(self.down(v))

    def _check_input(self, x: Tensor) -> None:
        check_channels(x, self.channels, "CPLConv2d")
        size = spatial_size(x)
        if self.u.shape[-2:] == size:
            return
        if self.u.numel() == 0:  # first input fixes the size
            self.u = self._random_vector(size, self.weight)
            return
        raise ValueError(
            f"CPLConv2d computes its spectral norm for {tuple(self.u.shape[-2:])} images, got {size}; "
            "give input_size when creating the layer, or use a separate layer per image size"
        )

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return super().forward(x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        saved = state_dict.get(prefix + "u")
        if isinstance(saved, Tensor) and saved.dim() == 4 and saved.shape != self.u.shape:
            self.u = torch.empty_like(saved, device=self.u.device, dtype=self.u.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        size = tuple(self.u.shape[-2:]) if self.u.numel() else "from first input"
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, hidden_channels={self.hidden_channels}, "
            f"bias={self.bias is not None}, input_size={size}"
        )
