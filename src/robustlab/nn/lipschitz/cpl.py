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
  2. where its cost is within ``SHIFT_TEST_COST``: a certified shift test. Restarted Lanczos in float32 from the stored vector (fast) gives
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

# The lr this family trains at relative to AOL's (LayerFamily.lr_scale), measured with
# benchmarks/family_lr.py (digits, lipconvnet width 32 depth 2, 5 epochs, test accuracy):
# lr 0.3 (the presets'): 84.2%, 0.1: 85.0%, 0.03: 83.3%.
LR_SCALE = 1.0

# The shift test factors W^T W in blocks of kh - 1 image rows (m = (kh - 1) W channels
# unknowns each, nb blocks): about 2.3 nb m^3 flops, ~1 s per 1e10 on one core. Layers above
# this many nb m^3 keep the per-frequency bound.
SHIFT_TEST_COST = 2e10
SHIFT_STEPS = (1e-5, 1e-4, 1e-3)  # c = theta * (1 + delta), tried in this order
FREQUENCY_BOUND_SLACK = 1e-10  # exact_spectral_norm's float64 eigenvalues, with a wide margin
UNIT_ROUNDOFF = 2.0**-53


def gamma(n: int) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative error of an n-term float64 sum."""
    return n * UNIT_ROUNDOFF / (1 - n * UNIT_ROUNDOFF)


class ConvGram:
    """W^T W for the zero-padded 'same' convolution with ``kernel`` (out, in, kh, kw) on
    ``size`` images, in blocks of ``rows`` = kh - 1 image rows (pixel-major, channels inner).

    Input pixel p meets input pixel q in W^T W through every output pixel r (in the image)
    that reads p with tap t and q with tap s: r = p - o_t = q - o_s for the taps' offsets o.
    So block (p, q) is the sum of W_t^T W_s over the tap pairs with q = p - o_t + o_s and
    p - o_t in the image, and pixels more than kh - 1 rows apart never meet: with blocks of
    kh - 1 rows, only neighbouring blocks couple (a block-tridiagonal matrix).
    """

    def __init__(self, kernel: Tensor, size: tuple[int, int]):
        out_channels, self.channels, kh, kw = kernel.shape
        self.size, self.rows = size, max(1, kh - 1)
        self.blocks = math.ceil(size[0] / self.rows)
        self.offsets = [(i - kh // 2, j - kw // 2) for i in range(kh) for j in range(kw)]
        taps = kernel.reshape(out_channels, self.channels, kh * kw)
        self.products = torch.einsum("oat,obs->tsab", taps, taps)  # W_t^T W_s: (taps, taps, in, in)
        self.terms = out_channels * (kh * kw) ** 2  # products summed into one entry, at most
        self._blocks: dict[tuple, Tensor] = {}

    def block_size(self, index: int) -> int:
        return (min(self.size[0], (index + 1) * self.rows) - index * self.rows) * self.size[1] * self.channels

    def block(self, i: int, j: int) -> Tensor:
        """Rows of image-row block i against columns of block j: (m_i, m_j). Blocks away
        from the top and bottom edges repeat (the operator is shift-invariant there): one
        computation per distinct (distance to the edges, offset, sizes)."""
        height = self.size[0]
        first_i, first_j, reach = i * self.rows, j * self.rows, 2 * self.rows + 1
        rows_i, rows_j = min(height, first_i + self.rows) - first_i, min(height, first_j + self.rows) - first_j
        key = (min(first_i, reach), min(height - first_i, reach), j - i, rows_i, rows_j)
        if key not in self._blocks:
            self._blocks[key] = self._block(i, j)
        return self._blocks[key]

    def _block(self, i: int, j: int) -> Tensor:
        height, width = self.size
        first_i, first_j = i * self.rows, j * self.rows
        rows_i, rows_j = min(height, first_i + self.rows) - first_i, min(height, first_j + self.rows) - first_j
        device = self.products.device
        y = torch.arange(first_i, first_i + rows_i, device=device).view(-1, 1).expand(rows_i, width).flatten()
        x = torch.arange(width, device=device).repeat(rows_i)
        block = self.products.new_zeros(rows_i * width, self.channels, rows_j * width, self.channels)
        for t, (ty, tx) in enumerate(self.offsets):
            ry, rx = y - ty, x - tx  # the output pixel that reads p with tap t
            reads = (ry >= 0) & (ry < height) & (rx >= 0) & (rx < width)
            for s, (sy, sx) in enumerate(self.offsets):
                qy, qx = ry + sy, rx + sx
                valid = reads & (qy >= first_j) & (qy < first_j + rows_j) & (qx >= 0) & (qx < width)
                if valid.any():
                    p = valid.nonzero().flatten()
                    q = (qy[valid] - first_j) * width + qx[valid]
                    block[p, :, q, :] += self.products[t, s]
        return block.reshape(rows_i * width * self.channels, rows_j * width * self.channels)

    def matrix(self) -> Tensor:
        """The whole (n, n) matrix (tests and small layers)."""
        return torch.cat([torch.cat([self.block(i, j) for j in range(self.blocks)], 1) for i in range(self.blocks)])


def shift_test(gram: ConvGram, bound: float, kernel: Tensor) -> bool:
    """True only if lambda_max of the exact W^T W is at most ``bound`` (a proof).

    ``gram`` is computed in float64. Each entry is a sum of at most ``gram.terms``
    products, so it errs by at most gamma_terms times the same sum of absolute values;
    those sums form |W|^T |W|, whose Frobenius norm is at most its trace
    ||W||_F^2 <= H W ||kernel||_F^2: ||E||_2 <= gamma_terms H W ||kernel||_F^2. A float64
    Cholesky factorisation of X = c' I - W^T W that runs to completion proves
    lambda_min(X) >= -gamma_{n+1} / (1 - gamma_{n+1}) tr(X) (Demmel 1989; the bound holds
    for any order of the inner products, so for blocked factorisations too; taken 8x here
    for safety), and forming the diagonal of X errs by at most u c' per entry. With c' =
    ``bound`` minus these allowances, success proves bound I - W^T W >= 0.

    X is block tridiagonal (``ConvGram``): block Cholesky, L_kk = chol(X_kk - L_k,k-1
    L_k,k-1^T), L_k+1,k = X_k+1,k L_kk^-T, never forming the zero blocks.
    """
    n = gram.channels * gram.size[0] * gram.size[1]
    gram_error = gamma(gram.terms) * gram.size[0] * gram.size[1] * float(kernel.double().pow(2).sum()) * (1 + 1e-6)
    cholesky_error = (8 * gamma(n + 1) / (1 - gamma(n + 1)) * n + 2 * UNIT_ROUNDOFF) * bound * (1 + 1e-6)
    shifted = bound - gram_error - cholesky_error
    if shifted <= 0:
        return False
    below: Tensor | None = None  # L_k,k-1
    for k in range(gram.blocks):
        diagonal = -gram.block(k, k)
        diagonal.diagonal().add_(shifted)
        if below is not None:
            diagonal -= below @ below.T
        factor, info = torch.linalg.cholesky_ex(diagonal)
        if int(info):
            return False
        if k + 1 < gram.blocks:
            coupling = -gram.block(k + 1, k)
            below = torch.linalg.solve_triangular(factor, coupling.T, upper=False).T
    return True


def certified_conv_sigma(kernel: Tensor, size: tuple[int, int], theta: Callable[[], float | None]) -> float:
    """A guaranteed upper bound on the norm of the zero-padded 'same' convolution with
    ``kernel`` on ``size`` images (float64): sqrt(c) for the first c = theta (1 + delta)
    that ``shift_test`` proves, where its cost is within ``SHIFT_TEST_COST``; otherwise,
    or when none passes, the per-frequency bound. ``theta()`` estimates the squared norm
    (None: no estimate).
    """
    kernel = kernel.detach().double()
    gram = ConvGram(kernel, size)
    cost = gram.blocks * gram.block_size(0) ** 3
    if cost <= SHIFT_TEST_COST:
        estimate = theta()
        if estimate is not None and estimate > 0:
            for delta in SHIFT_STEPS:
                bound = estimate * (1 + delta)
                if shift_test(gram, bound, kernel):
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
        height, width = self.u.shape[-2:]
        sigma = certified_conv_sigma(self.weight, (height, width), self._lanczos_estimate)
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
