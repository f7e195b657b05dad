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
  Conv (``certified_conv_sigma``): proofs in float64, tried in this order:
  1. where the shift test (b) costs at most ``SHIFT_TEST_COST``: restarted Lanczos in
     float32 from the stored vector (fast) gives theta ~ ||W||^2 and its vector; sigma =
     sqrt(c) for the first c = theta (1 + delta), delta in ``SHIFT_STEPS``, that one of two
     tests proves (then sigma is within 5e-6 of ||W||; the previous estimate, a converged
     Lanczos value times 1.001, was not a proof):
     a. on images of at least ``TEMPLE_MIN_SIZE`` a side, Temple's inequality
        (``temple_test``): a bound on the second eigenvalue of W^T W from the circular
        convolution on a slightly larger torus (``torus_second_eigenvalue``), and the
        Lanczos vector's residual, computed in float64, prove ||W||^2 <= c wherever that
        bound lies below theta. Two float64 convolutions of one image and P Q small SVDs:
        0.03 s on a 32x32x16 layer where the shift test takes 0.56 s;
     b. else the certified shift test, a float64 Cholesky factorisation of c I - W^T W,
        with the rounding of the Gram matrix and of the factorisation itself (Demmel's
        bound: a completed Cholesky of X proves lambda_min(X) >= -gamma_{n+1} / (1 -
        gamma_{n+1}) tr(X)) subtracted from c first.
  2. above ``SHIFT_TEST_COST`` and within ``COLUMN_TEST_COST``: the shift test on the
     column-Fourier operator C, which is zero-padded along rows but circular along columns
     with period P = W + kw // 2. W is a compression of C (embed the image with kw // 2
     zero columns, apply C, keep the first W output columns: every tap that wraps around
     reads a zero column), so ||W|| <= ||C||, and the DFT along
     columns splits C into P one-dimensional zero-padded convolutions C_f along rows with
     complex (out, in) taps (``column_taps``): ||C|| = max_f ||C_f||. Each C_f^H C_f is
     block banded with blocks of one row x in channels, so the test costs about
     (P / 2 + 1) H in^3 complex flops (times a constant) instead of H (W in)^3:
     cheap for the wide layers of LipConvNet-64, tight where W is large (the embedding
     adds kw // 2 of W + kw // 2 columns), looser on tiny images;
  3. the per-frequency bound: the zero-padded convolution is a restriction of a circular
     one on the (H + kh - 1) x (W + kw - 1) grid, whose norm is the largest norm of its
     per-frequency matrices (``exact_spectral_norm``, eigenvalues exact to ~1e-13);
     tight on large images (0.1% on 32x32 at initialisation), loose on tiny ones (50%
     on 2x2), used where nothing else proves a bound.
  The stored vector is not changed. If Lanczos has not converged within
  ``eval_iterations`` steps, the per-frequency bound is used alone, with a warning.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.types import Device

from robustlab.nn.lipschitz.base import (
    Eigenpair,
    EvalCache,
    TensorFactory,
    check_channels,
    normalize,
    odd_kernel_size,
    pair,
    same_padding,
    spatial_size,
    top_eigenpair,
)
from robustlab.nn.lipschitz.bounded import frequency_matrices
from robustlab.nn.lipschitz.cholesky import factor_in_place, subtract_lower_product
from robustlab.nn.lipschitz.fourier import exact_spectral_norm
from robustlab.nn.lipschitz.residual import ConvResidual, DenseResidual, ResidualLipschitz, conv2d_float64

# The lr this family trains at relative to AOL's (LayerFamily.lr_scale), measured with
# benchmarks/family_lr.py (digits, lipconvnet width 32 depth 2, 5 epochs, test accuracy):
# lr 0.3 (the presets'): 84.2%, 0.1: 85.0%, 0.03: 83.3%.
LR_SCALE = 1.0

# The shift test factors W^T W in blocks of one image row (m = W channels unknowns each,
# nb = H blocks, kh - 1 coupled either side): about (kh - 1)(kh + 2) / 2 nb m^3 flops. Layers
# above this many nb m^3 take the column-Fourier test. 3.75e10 makes the 2x2 and 4x4 layers of
# LipConvNet-64 (1.7e10, 3.4e10) exact, where the column-Fourier test is 22% and 5% loose
# (benchmarks/cpl_bounds.py); its 8x8 layers (6.9e10) take the column test.
SHIFT_TEST_COST = 3.75e10
# The column-Fourier test (``column_test_cost``, in the same units; a complex flop counts 4):
# layers above this many keep the per-frequency bound.
COLUMN_TEST_COST = 5e10
SHIFT_STEPS = (1e-5, 1e-4, 1e-3)  # c = theta * (1 + delta), tried in this order
# Temple's inequality (``temple_test``) needs a bound on lambda_2 below ||W||^2: the torus's
# lies 1.0%, 3.5% and 10.7% below on the 32x32, 16x16 and 8x8 layers of the trained width-16
# LipConvNet, but 5.6% above on its 4x4 layers. One 32x32 layer needs the period one larger
# (0.3% above at H + 1, 0.4% below at H + 2). Only layers the shift test would prove try it:
# on the wider ones, which take the column-Fourier test, the torus's top eigenvalue is double
# at initialisation (a frequency and its conjugate), and Temple cost LipConvNet-64 0.35-0.7 s
# a layer for nothing (10 images: 31.7 -> 34.9 s).
TEMPLE_MIN_SIZE = 8
TEMPLE_PERIODS = (0, 1)  # rows and columns beyond the smallest period, tried in this order
TEMPLE_PERIOD_REACH = 0.01  # the next period is tried only if the bound is at most 1% too high
FREQUENCY_BOUND_SLACK = 1e-10  # exact_spectral_norm's float64 eigenvalues, with a wide margin
UNIT_ROUNDOFF = 2.0**-53


def gamma(n: int) -> float:
    """Higham's gamma_n = n u / (1 - n u): the relative error of an n-term float64 sum."""
    return n * UNIT_ROUNDOFF / (1 - n * UNIT_ROUNDOFF)


class ConvGram:
    """W^T W for the zero-padded 'same' convolution with ``kernel`` (out, in, kh, kw) on
    ``size`` images, in blocks of one image row (pixel-major, channels inner).

    Input pixel p meets input pixel q in W^T W through every output pixel r (in the image)
    that reads p with tap t and q with tap s: r = p - o_t = q - o_s for the taps' offsets o.
    So block (p, q) is the sum of W_t^T W_s over the tap pairs with q = p - o_t + o_s and
    p - o_t in the image, and rows more than kh - 1 apart never meet: the matrix is block
    banded, ``reach`` = kh - 1 blocks either side of the diagonal.
    """

    def __init__(self, kernel: Tensor, size: tuple[int, int]):
        out_channels, self.channels, kh, kw = kernel.shape
        self.size, self.blocks, self.reach = size, size[0], kh - 1
        self.offsets = [(i - kh // 2, j - kw // 2) for i in range(kh) for j in range(kw)]
        self.taps = kernel.reshape(out_channels, self.channels, kh * kw)  # complex from ``column_taps``
        self.terms = out_channels * (kh * kw) ** 2  # products summed into one entry, at most
        self._products: dict[tuple[int, int], Tensor] = {}
        self._blocks: dict[tuple, Tensor] = {}

    def product(self, t: int, s: int) -> Tensor:
        """W_t^H W_s (in, in), computed when a block first needs it: tap pairs farther apart
        than the image never meet, and W_s^H W_t is its conjugate transpose (a view). On the
        2x2 layers of LipConvNet-64 (1024 channels) this is 29 of the 81 products, else 45."""
        if (s, t) in self._products:
            return self._products[s, t].mH
        if (t, s) not in self._products:
            self._products[t, s] = self.taps[:, :, t].mH @ self.taps[:, :, s]
        return self._products[t, s]

    def block(self, i: int, j: int) -> Tensor:
        """Image row i against image row j: (m, m) with m = width x channels. Blocks farther
        than ``reach`` from the image's top and bottom edges repeat (the operator is
        shift-invariant there): one computation per distinct (distance to the edges, offset)."""
        height, edge = self.size[0], self.reach + 1
        key = (min(i, edge), min(height - i, edge), j - i)
        if key not in self._blocks:
            self._blocks[key] = self._block(i, j)
        return self._blocks[key]

    def _block(self, i: int, j: int) -> Tensor:
        """Each tap pair (t, s) that links image rows i and j adds W_t^H W_s along one diagonal
        of the (column, column) grid: input column x meets column x + sx - tx, for the x whose
        output column x - tx and whose partner lie in the image. Added through a strided view."""
        height, width = self.size
        block = self.taps.new_zeros(width, self.channels, width, self.channels)
        for t, (ty, tx) in enumerate(self.offsets):
            if not 0 <= i - ty < height:  # the output row that reads row i with tap t
                continue
            for s, (sy, sx) in enumerate(self.offsets):
                shift = sx - tx
                first, stop = max(0, tx, -shift), min(width, width + tx, width - shift)
                if i - ty + sy != j or first >= stop:
                    continue
                diagonal = torch.diagonal(block, offset=shift, dim1=0, dim2=2)  # (in, in, W - |shift|)
                start = max(0, -shift)  # the diagonal's first entry is column x = start
                diagonal[..., first - start : stop - start] += self.product(t, s).unsqueeze(-1)
        return block.reshape(width * self.channels, width * self.channels)

    def matrix(self) -> Tensor:
        """The whole (n, n) matrix (tests and small layers)."""
        return torch.cat([torch.cat([self.block(i, j) for j in range(self.blocks)], 1) for i in range(self.blocks)])


def shift_test(gram: ConvGram, bound: float, kernel: Tensor) -> bool:
    """True only if lambda_max of the exact W^H W is at most ``bound`` (a proof), for the
    convolution W with ``kernel`` (real, or complex from ``column_taps``).

    ``gram`` is computed in float64 (complex128). Each entry is a sum of at most
    ``gram.terms`` products, so it errs by at most gamma_terms (real; complex products and
    sums: sqrt(2) gamma_{terms + 2}, taken 8 gamma_{terms + 2} so that a BLAS that forms
    complex products another way stays covered) times the same sum of
    absolute values; those sums form |W|^T |W|, whose Frobenius norm is at most its trace
    ||W||_F^2 <= H W ||kernel||_F^2: ||E||_2 <= gamma H W ||kernel||_F^2. A float64
    Cholesky factorisation of X = c' I - W^H W that runs to completion proves
    lambda_min(X) >= -gamma_{n+1} / (1 - gamma_{n+1}) tr(X) (Demmel 1989; the bound holds
    for any order of the inner products, so for blocked factorisations too; taken 8x here
    for safety, 32x for complex arithmetic, whose operations err by at most ~4x a real
    one's), and forming the diagonal of X errs by at most u c' per entry. With c' =
    ``bound`` minus these allowances, success proves bound I - W^H W >= 0.

    X is block banded (``ConvGram``, one image row a block, ``reach`` blocks either side):
    block Cholesky, L_kk = chol(X_kk - sum_j L_kj L_kj^H), L_ik = (X_ik - sum_j L_ij L_kj^H)
    L_kk^-H for the j < k within reach of both, never forming the zero blocks, the diagonal
    blocks' products and factors by ``cholesky`` (recursive, at GEMM speed). (Blocks of
    kh - 1 rows would make it block tridiagonal, with 1.75x the flops: their coupling blocks
    are a quarter zero.)
    """
    n = gram.channels * gram.size[0] * gram.size[1]
    is_complex = kernel.is_complex()
    kernel_energy = float(kernel.detach().to(torch.complex128 if is_complex else torch.float64).abs().pow(2).sum())
    entry_error = 8 * gamma(gram.terms + 2) if is_complex else gamma(gram.terms)
    gram_error = entry_error * gram.size[0] * gram.size[1] * kernel_energy * (1 + 1e-6)
    safety = 32 if is_complex else 8
    cholesky_error = (safety * gamma(n + 1) / (1 - gamma(n + 1)) * n + 2 * UNIT_ROUNDOFF) * bound * (1 + 1e-6)
    shifted = bound - gram_error - cholesky_error
    if shifted <= 0:
        return False
    reach = gram.reach
    below: dict[tuple[int, int], Tensor] = {}  # L_ij for 0 < i - j <= reach
    for k in range(gram.blocks):
        factor = -gram.block(k, k)
        earlier = [below[k, j] for j in range(max(0, k - reach), k)]
        if earlier:  # one symmetric product of the earlier columns side by side: half a GEMM
            subtract_lower_product(factor, torch.cat(earlier, dim=1))
        factor.diagonal().add_(shifted)
        if not factor_in_place(factor):
            return False
        for i in range(k + 1, min(gram.blocks, k + reach + 1)):
            coupling = _negated_update(
                gram.block(i, k), [(below[i, j], below[k, j]) for j in range(max(0, i - reach), k)]
            )
            below[i, k] = torch.linalg.solve_triangular(factor, coupling.mH, upper=False).mH
        for i in range(k - reach + 1, k + 1):
            below.pop((i, k - reach), None)  # no later step reaches back to column k - reach
    return True


def _negated_update(block: Tensor, terms: list[tuple[Tensor, Tensor]]) -> Tensor:
    """-block - sum of a b^H over ``terms``: X's block less the factor's earlier columns, the
    first product fused with the negation (one pass over the block fewer)."""
    if not terms:
        return -block
    (a, b), *rest = terms
    result = torch.addmm(block, a, b.mH, beta=-1, alpha=-1)
    for a, b in rest:
        result.addmm_(a, b.mH, alpha=-1)
    return result


def torus_second_eigenvalue(kernel: Tensor, periods: tuple[int, int]) -> float:
    """A guaranteed upper bound on lambda_2(W^T W), the second largest eigenvalue (counted
    with multiplicity) of the zero-padded 'same' convolution W with real ``kernel`` on H x W
    images, from the ``periods`` P >= H + kh // 2, Q >= W + kw // 2 (any such).

    W is a compression of the circular convolution C on the P x Q torus (``column_period``'s
    argument along both axes): W = R C E with E the embedding and R the restriction, so
    W^T W <= E^T C^T C E, and by Weyl's monotonicity and Cauchy's interlacing lambda_i(W^T W)
    <= lambda_i(C^T C) for every i. C^T C's eigenvalues are those of D_f^H D_f over the P Q
    frequencies f, D_f = sum_o K_o exp(2 pi i f . o): the squared singular values of the D_f,
    all of them in one multiset.

    Rounding: the phase f . o mod P Q is an exact integer, its angle errs by at most 3 u
    relative (pi, the division, the product), so cos and sin by at most 24 u; the real and
    imaginary parts of an entry of D_f, sums of kh kw products, then by (24 u + gamma_{kh kw})
    sum_o |K_o| <= eps sqrt(kh kw) ||K_o||_2 (taken eps = (48 + 4 kh kw) u, twice that), and
    ||computed D_f - D_f||_2 <= ||.||_F <= sqrt(2) eps sqrt(kh kw) ||K||_F. LAPACK's singular
    values err by at most ``FREQUENCY_BOUND_SLACK`` of the largest (as ``exact_spectral_norm``).
    """
    kernel = kernel.detach().to("cpu", torch.float64)
    out_channels, in_channels, kh, kw = kernel.shape
    half = periods[1] // 2 + 1  # column frequencies 0..Q // 2: the others are conjugates
    rows = torch.arange(periods[0])[:, None, None, None] * (torch.arange(kh) - kh // 2)[:, None] * periods[1]
    columns = torch.arange(half)[None, :, None, None] * (torch.arange(kw) - kw // 2) * periods[0]
    phase = (rows + columns) % (periods[0] * periods[1])  # (P, Q // 2 + 1, kh, kw), exact integers
    angle = (phase.double() * (2 * math.pi / (periods[0] * periods[1]))).reshape(-1, kh * kw)
    taps = kernel.reshape(out_channels * in_channels, kh * kw).t()
    real, imaginary = torch.cos(angle) @ taps, torch.sin(angle) @ taps  # (P (Q // 2 + 1), out * in)
    values = torch.linalg.svdvals(torch.complex(real, imaginary).view(-1, out_channels, in_channels))
    # D_(-f) is conj(D_f), of the same singular values: column frequencies strictly between 0 and
    # Q / 2 stand for their conjugates too; 0 and Q / 2 have theirs in the same column.
    paired = (torch.arange(half) > 0) & (2 * torch.arange(half) != periods[1])
    counts = (1 + paired.long()).repeat(periods[0]).repeat_interleave(values.shape[-1])
    order = values.flatten().argsort(descending=True)
    second = float(values.flatten()[order][int((counts[order].cumsum(0) >= 2).nonzero()[0])])
    eps = (48 + 4 * kh * kw) * UNIT_ROUNDOFF
    tap_error = math.sqrt(2) * eps * math.sqrt(kh * kw) * math.sqrt(float(kernel.pow(2).sum())) * (1 + 1e-6)
    largest = float(values.max())
    return (second + tap_error + FREQUENCY_BOUND_SLACK * largest) ** 2 * (1 + 4 * UNIT_ROUNDOFF)


def temple_test(kernel: Tensor, vector: Tensor, second: float, bound: float) -> bool:
    """True only if lambda_max(W^T W) <= ``bound`` (a proof), for the zero-padded 'same'
    convolution W with ``kernel``, given ``second`` >= lambda_2(W^T W)
    (``torus_second_eigenvalue``) and any nonzero ``vector`` v (1, in, H, W).

    Temple's inequality: with S = W^T W - second I, whose eigenvalues but the largest, s_1,
    are <= 0, and d = bound - second > 0, the form f(v) = ||S v||^2 - d v^T S v = sum_i
    a_i^2 s_i (s_i - d) (a_i: v's coordinates in S's eigenvectors) is >= 0 for every v when
    s_1 > d (each term is then >= 0). So f(v) < 0 for one v proves s_1 <= d, that is
    lambda_max <= bound. For the Lanczos vector, with Rayleigh quotient rho and residual
    e, this holds once bound > rho + e^2 / (rho - second): a 1% gap between lambda_1 and
    second makes a float32 vector's e ~ 1e-6 rho cost 1e-10 of the bound. Cost: two float64
    convolutions of one image, where the shift test factors an H W in dimensional matrix.

    Rounding, float64 on the CPU, conv2d_float64's GEMMs (any summation order): with A =
    sum_o ||K_o||_F >= || |W| ||_2 >= ||W||_2 and m the terms of an output (in kh kw, out kh
    kw), ||y - W v|| <= gamma_m A ||v|| and ||z - W^T W v|| <= (gamma_m1 + gamma_m2 +
    gamma_m1 gamma_m2) A^2 ||v||, taken 8x as the shift test's; forming r = z - second v
    errs by at most 3 u (||z|| + second ||v||); each norm by gamma_{n+2} relative. The
    scalar comparison rounds each step outward (``_below``, ``_above``).
    """
    kernel = kernel.detach().to("cpu", torch.float64)
    out_channels, in_channels, kh, kw = kernel.shape
    padding = (kh // 2, kw // 2)
    v = vector.detach().to("cpu", torch.float64).reshape(1, in_channels, *vector.shape[-2:])
    y = conv2d_float64(v, kernel, None, padding)  # W v
    z = conv2d_float64(y, kernel.transpose(0, 1).flip(-2, -1).contiguous(), None, padding)  # W^T W v
    r = z - second * v
    entries = max(v.numel(), y.numel()) + 2
    grow, shrink = 1 + gamma(entries), 1 - gamma(entries)
    norm_v, norm_y, norm_z, norm_r = (float(t.norm()) for t in (v, y, z, r))
    if norm_v == 0 or not math.isfinite(norm_r) or bound <= second:
        return False
    gamma_in, gamma_out = gamma(in_channels * kh * kw), gamma(out_channels * kh * kw)
    spread = float(kernel.pow(2).sum(dim=(0, 1)).sqrt().sum()) * (1 + 1e-6)  # A
    v_high = _above(norm_v * grow)
    y_error = 8 * gamma_in * spread * v_high
    z_error = 8 * (gamma_in + gamma_out + gamma_in * gamma_out) * spread**2 * v_high
    r_error = 8 * 3 * UNIT_ROUNDOFF * (norm_z * grow + second * v_high)
    residual_high = _above(_above(norm_r * grow) + z_error + r_error)
    wv_low = _below(_below(norm_y * shrink) - y_error)
    if wv_low <= 0:
        return False
    rayleigh_low = _below(_below(wv_low * wv_low) - _above(second * _above(v_high * v_high)))
    if rayleigh_low <= 0:
        return False
    return _above(residual_high * residual_high) < _below(_below(bound - second) * rayleigh_low)


def _above(value: float) -> float:
    """An upper bound on the exact result of the float64 operation that gave ``value``."""
    return value + 4 * UNIT_ROUNDOFF * abs(value) + 1e-300


def _below(value: float) -> float:
    """A lower bound on the exact result of the float64 operation that gave ``value``."""
    return value - 4 * UNIT_ROUNDOFF * abs(value) - 1e-300


def column_period(kernel_size: tuple[int, int], size: tuple[int, int]) -> int:
    """The smallest column period P of a circular convolution that the zero-padded one on
    ``size`` images compresses: taps reach kw // 2 columns either side, so kw // 2 zero
    columns absorb every wrap-around (columns -1..-kw//2 are P-1..P-kw//2 >= W)."""
    return size[1] + kernel_size[1] // 2


def column_taps(kernel: Tensor, period: int) -> tuple[Tensor, float]:
    """Per column frequency f = 0..P // 2 (the others are the conjugates), the complex taps
    A_t(f) = sum_s K[:, :, t, s] exp(2 pi i f o_s / P) of the 1-D row convolution C_f,
    as (F, out, in, kh, 1) complex128, and e: ||C_f - computed C_f|| <= e for every f.

    The phase f o_s mod P is an exact integer; the angle 2 pi j / P errs by ~2 u relative,
    cos and sin by ~1 ulp, so each twiddle factor by at most 16 u; each computed tap entry
    then errs by at most (16 u + gamma_{kw+1}) sum_s |K_ts| <= eps sqrt(kw) ||K_t||_F
    (taken eps = (64 + 4 kw) u), and a 1-D convolution's norm is at most the sum of its
    taps' norms: e = eps sqrt(kw) sum_t ||K_t||_F <= eps sqrt(kh kw) ||K||_F.
    """
    kernel = kernel.detach().double()
    kh, kw = kernel.shape[-2:]
    offsets = torch.arange(kw, device=kernel.device) - kw // 2
    frequencies = torch.arange(period // 2 + 1, device=kernel.device)
    phase = (frequencies[:, None] * offsets[None, :]) % period  # exact integers in [0, P)
    angle = phase.double() * (2 * math.pi / period)
    twiddle = torch.polar(torch.ones_like(angle), angle)  # (F, kw)
    taps = torch.einsum("oits,fs->foit", kernel.to(torch.complex128), twiddle).unsqueeze(-1)
    eps = (64 + 4 * kw) * UNIT_ROUNDOFF
    error = eps * math.sqrt(kh * kw) * math.sqrt(float(kernel.pow(2).sum())) * (1 + 1e-6)
    return taps, error


def column_test_cost(kernel_size: tuple[int, int], channels: int, size: tuple[int, int]) -> float:
    """nb m^3 of the column-Fourier test summed over its frequencies, a complex flop as 4."""
    frequencies = column_period(kernel_size, size) // 2 + 1
    return 4.0 * frequencies * size[0] * channels**3


def column_shift_test(taps: Tensor, height: int, bound: float) -> bool:
    """True only if every computed C_f (``column_taps``) has ||C_f||^2 <= ``bound``."""
    return all(shift_test(ConvGram(tap, (height, 1)), bound, tap) for tap in taps)


def planned_proof(kernel_size: tuple[int, int], channels: int, size: tuple[int, int]) -> str:
    """Which proof ``certified_conv_sigma`` tries for this shape: "matrix" (1x1 kernels:
    exact), "exact" (2-D shift test), "column" (column-Fourier shift test) or "frequency"."""
    if kernel_size == (1, 1):
        return "matrix"
    if size[0] * (size[1] * channels) ** 3 <= SHIFT_TEST_COST:
        return "exact"
    if column_test_cost(kernel_size, channels, size) <= COLUMN_TEST_COST:
        return "column"
    return "frequency"


def certified_conv_sigma(
    kernel: Tensor,
    size: tuple[int, int],
    lanczos: Callable[[], Eigenpair | None],
    column_theta: Callable[[int], float | None] | None = None,
) -> float:
    """A guaranteed upper bound on the norm of the zero-padded 'same' convolution with
    ``kernel`` on ``size`` images (float64), by the first proof that applies (see the
    module docstring): where the exact shift test's cost is within ``SHIFT_TEST_COST``,
    sqrt(c) for the first c = theta (1 + delta) that Temple's inequality (images of at least
    ``TEMPLE_MIN_SIZE`` a side) or the shift test proves; else the column-Fourier test where
    within ``COLUMN_TEST_COST``; else, or when no delta passes, the per-frequency bound.
    ``lanczos()`` estimates ||W||^2 and its vector, ``column_theta(P)`` ||C||^2 for column
    period P (None: no estimate).
    """
    kernel = kernel.detach().double()
    kernel_size = (kernel.shape[2], kernel.shape[3])
    proof = planned_proof(kernel_size, kernel.shape[1], size)
    top = lanczos() if proof == "exact" else None
    if top is not None and top.value > 0:
        estimate = float(top.value)
        second = temple_second_bound(kernel, size, estimate) if min(size) >= TEMPLE_MIN_SIZE else None
        gram = ConvGram(kernel, size)
        for delta in SHIFT_STEPS:
            bound = estimate * (1 + delta)
            if (second is not None and temple_test(kernel, top.vector, second, bound)) or shift_test(
                gram, bound, kernel
            ):
                return math.sqrt(bound) * (1 + 2 * UNIT_ROUNDOFF)  # sqrt rounds to nearest
    if proof == "column" and column_theta is not None:
        period = column_period(kernel_size, size)
        column_estimate = column_theta(period)
        if column_estimate is not None and column_estimate > 0:
            taps, tap_error = column_taps(kernel, period)
            for delta in SHIFT_STEPS:
                bound = column_estimate * (1 + delta)
                if column_shift_test(taps, size[0], bound):
                    # ||W|| <= ||C|| <= sqrt(bound) + tap_error; each float op rounds once
                    return (math.sqrt(bound) + tap_error) * (1 + 4 * UNIT_ROUNDOFF)
    return exact_spectral_norm(frequency_matrices(kernel, size)) * (1 + FREQUENCY_BOUND_SLACK)


def temple_second_bound(kernel: Tensor, size: tuple[int, int], estimate: float) -> float | None:
    """The first of the torus bounds on lambda_2 (``torus_second_eigenvalue``, periods
    ``TEMPLE_PERIODS`` beyond the smallest) that lies below ``estimate`` (Temple's
    inequality needs the Rayleigh quotient above it), or None."""
    kh, kw = kernel.shape[-2:]
    for extra in TEMPLE_PERIODS:
        second = torus_second_eigenvalue(kernel, (size[0] + kh // 2 + extra, size[1] + kw // 2 + extra))
        if second < estimate:
            return second
        if second > estimate * (1 + TEMPLE_PERIOD_REACH):
            return None  # another period moves it by less (0.3-0.9% on the trained layers)
    return None


# Proved sigmas of this process, by a SHA-256 of everything they depend on (``proof_key``):
# certification works on a fresh float64 copy per ``evaluate`` call, whose EvalCache is empty,
# and the proofs take most of its time on LipConvNet-64. The key hashes the weights' values
# (never a version counter or storage address: issue 23 item 3).
PROVED_SIGMAS: dict[bytes, float] = {}
PROVED_SIGMAS_LIMIT = 1024


def proof_key(kernel: Tensor, start: Tensor, settings: tuple) -> bytes:
    """SHA-256 of the float64 kernel's and start vector's values, shapes and ``settings``."""
    digest = hashlib.sha256(repr((tuple(kernel.shape), tuple(start.shape), settings)).encode())
    for tensor in (kernel, start):
        digest.update(tensor.detach().to("cpu", torch.float64).contiguous().numpy().tobytes())
    return digest.digest()


def _conv_gram(v: Tensor, weight: Tensor, padding: tuple[int, int]) -> Tensor:
    return F.conv_transpose2d(F.conv2d(v, weight, padding=padding), weight, padding=padding)


def column_circular_conv(v: Tensor, weight: Tensor, padding: tuple[int, int]) -> Tensor:
    """C v: the convolution zero-padded along rows, circular along columns (v's width is
    the period)."""
    return F.conv2d(F.pad(v, (padding[1], padding[1], 0, 0), mode="circular"), weight, padding=(padding[0], 0))


def _column_gram(v: Tensor, weight: Tensor, padding: tuple[int, int]) -> Tensor:
    # C^T is the same kind of convolution with the flipped, transposed kernel
    adjoint = weight.transpose(0, 1).flip(2, 3)
    return column_circular_conv(column_circular_conv(v, weight, padding), adjoint, padding)


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

    def configure_eval(self, *, power_iterations: int | None = None, **settings: Any) -> None:
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
        device: Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.features = features
        self.hidden_features = hidden_features or features
        self.eval_iterations = eval_iterations
        factory = TensorFactory(device=device, dtype=dtype)
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
        device: Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.hidden_channels = hidden_channels or channels
        self.kernel_size = odd_kernel_size(kernel_size)
        self.padding = same_padding(self.kernel_size)
        self.eval_iterations = eval_iterations
        factory = TensorFactory(device=device, dtype=dtype)
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
        settings = (
            self.eval_iterations,
            SHIFT_TEST_COST,
            COLUMN_TEST_COST,
            SHIFT_STEPS,
            TEMPLE_MIN_SIZE,
            TEMPLE_PERIODS,
            TEMPLE_PERIOD_REACH,
        )
        key = proof_key(self.weight, self.u, settings)
        sigma = PROVED_SIGMAS.get(key)
        if sigma is None:
            sigma = certified_conv_sigma(self.weight, (height, width), self._lanczos, self._column_estimate)
            if len(PROVED_SIGMAS) >= PROVED_SIGMAS_LIMIT:
                PROVED_SIGMAS.clear()
            PROVED_SIGMAS[key] = sigma
        return rounded_up(sigma, self.weight.dtype, self.weight.device)

    def _lanczos(self) -> Eigenpair | None:
        """||W||^2 and its vector by restarted Lanczos in float32 from the stored vector: only
        the candidate that Temple's inequality or the shift test then proves or rejects, so
        float32 is enough."""
        if self.eval_iterations > 0:
            weight = self.weight.detach().float()
            start = self.u.detach().float()
            top = top_eigenpair(lambda v: _conv_gram(v, weight, self.padding), start, max_steps=self.eval_iterations)
            if top.converged:
                return top
        # An unconverged estimate can be far below sigma: the per-frequency bound is then
        # the only proof, and it is loose on small images.
        warnings.warn(
            f"CPLConv2d: {self.eval_iterations} Lanczos steps did not converge on the spectral norm; "
            "using a rigorous but looser bound (lower accuracy and radii). Raise eval_iterations "
            "(config eval.power_iterations) to 1000 for the tight value.",
            stacklevel=2,
        )
        return None

    def _column_estimate(self, period: int) -> float | None:
        """||C||^2 of the column-circular operator (period ``period``) by float32 Lanczos,
        from the stored vector padded with zero columns."""
        if self.eval_iterations > 0:
            weight = self.weight.detach().float()
            start = F.pad(self.u.detach().float(), (0, period - self.u.shape[-1]))
            top = top_eigenpair(lambda v: _column_gram(v, weight, self.padding), start, max_steps=self.eval_iterations)
            if top.converged:
                return float(top.value)
        warnings.warn(
            f"CPLConv2d: {self.eval_iterations} Lanczos steps did not converge on the column-Fourier norm; "
            "using a rigorous but looser bound (lower accuracy and radii). Raise eval_iterations.",
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

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
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
