"""Circular convolutions in the Fourier domain, shared by the layers parameterised there
(Cayley, Sandwich, BRO).

A circular convolution on (H, W) images is diagonalised by the 2-D DFT: it multiplies each
frequency w of the input by one (out x in) complex matrix R(w), its *response*. Because the
kernel is real, R(-w) = conj(R(w)), so the rfft2 half of the grid (H, W // 2 + 1) holds
every matrix, and any map that commutes with complex conjugation (a Cayley transform, a
block reflector) turns a real kernel's response into the response of a real operator.

The operator norm of the real map x -> irfft2(R rfft2(x)) is at most max_w ||R(w)||: by
Parseval, ||y||^2 is the energy of the full spectrum, the mirrored half repeats the
stored half's norms, and where irfft2 folds a self-conjugate column (w = 0, W/2) it
averages conjugate pairs, which never adds energy. ``spectral_norm_bound`` computes that
maximum (Gershgorin's bound first, the exact float64 eigenvalue where that is loose): the
guaranteed bound of what a Fourier-domain layer computes, up to float64 rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.nn.lipschitz.base import EvalCache, spatial_size

# Gershgorin bounds above 1 + this are replaced by the exact norm: dividing a layer by the
# cheap bound costs at most this much of its scale, and the exact norm is expensive.
CHEAP_BOUND_SLACK = 1e-4


def complex_dtype(like: Tensor) -> torch.dtype:
    return torch.complex128 if like.dtype == torch.float64 else torch.complex64


def _phases(length: int, kernel: int, frequencies: int, like: Tensor, sign: float) -> Tensor:
    """exp(sign 2 pi i f s / length) for frequencies f and kernel offsets s centred at 0."""
    f = torch.arange(frequencies, device=like.device, dtype=torch.float64)
    s = torch.arange(kernel, device=like.device, dtype=torch.float64) - kernel // 2
    return torch.exp(sign * 2j * torch.pi * torch.outer(f, s) / length).to(complex_dtype(like))


def kernel_response(kernel: Tensor, size: tuple[int, int], *, correlation: bool = False) -> Tensor:
    """R(w) of the circular convolution with ``kernel`` (out, in, kh, kw), its middle tap at
    offset 0, on (H, W) images: (H, W // 2 + 1, out, in) complex. ``correlation=True`` gives
    the cross-correlation instead (what ``F.conv2d`` with circular padding computes).

    Summed tap by tap (not an rfft2 of the zero-padded kernel), so that a kernel larger than
    the image wraps around, as a circular convolution does.
    """
    (height, width), (kh, kw) = size, kernel.shape[-2:]
    sign = 1.0 if correlation else -1.0
    phases_h = _phases(height, kh, height, kernel, sign)
    phases_w = _phases(width, kw, width // 2 + 1, kernel, sign)
    return torch.einsum("oiab,ha,wb->hwoi", kernel.to(phases_h.dtype), phases_h, phases_w)


def apply_response(response: Tensor, x: Tensor) -> Tensor:
    """irfft2(R rfft2(x)): (B, in, H, W) -> (B, out, H, W), in the dtype of ``x``."""
    size = spatial_size(x)
    x_hat = torch.fft.rfft2(x.to(response.real.dtype))
    y_hat = torch.einsum("hwoi,bihw->bohw", response, x_hat)
    return torch.fft.irfft2(y_hat, s=size).to(x.dtype)


@torch.no_grad()
def spectral_norm_bound(matrices: Tensor, slack: float = 0.0) -> float:
    """A guaranteed upper bound on max ||R||_2 over a batch of (real or complex) matrices
    (..., m, n), e.g. the responses of ``apply_response``; exact unless within ``slack`` of 1.

    In float64, on the smaller Gram matrix G: Gershgorin's ||R||^2 <= max_i sum_j |G_ij| (one
    product; tight, up to rounding, for orthogonal matrices) when it is at most 1 + ``slack``;
    otherwise the largest eigenvalue of G (``eigvalsh``, backward stable: exact up to a relative
    ~1e-13 here, and cheaper than an SVD of large complex matrices). ``slack=0`` divides no
    layer by more than its norm; the iterated families accept ``CHEAP_BOUND_SLACK`` to skip
    the eigenvalues of their many nearly orthogonal matrices.
    """
    gram = _gram(matrices)
    cheap = gram.abs().sum(-1).amax()
    if cheap <= (1 + slack) ** 2:
        return float(cheap.sqrt())
    return float(torch.linalg.eigvalsh(gram)[..., -1].amax().clamp_min(0).sqrt())


@torch.no_grad()
def exact_spectral_norm(matrices: Tensor) -> float:
    """max ||R||_2 over a batch of matrices, in float64: ``spectral_norm_bound`` without the
    Gershgorin shortcut, for layers whose bound is a certificate's constant (LiResNet)."""
    return float(torch.linalg.eigvalsh(_gram(matrices))[..., -1].amax().clamp_min(0).sqrt())


def _gram(matrices: Tensor) -> Tensor:
    """The smaller Gram matrix of each matrix, in float64 (same largest eigenvalue either way)."""
    r = matrices.to(torch.complex128 if matrices.is_complex() else torch.float64)
    return r.mH @ r if r.shape[-1] <= r.shape[-2] else r @ r.mH


def within_one(matrices: Tensor, slack: float = 0.0) -> Tensor:
    """``matrices`` divided by their ``spectral_norm_bound`` where that exceeds 1: of norm <= 1 by
    a guaranteed bound, whatever the iteration or transform that made them reached."""
    return divided_by_bound(matrices, spectral_norm_bound(matrices, slack))


def divided_by_bound(operator: Tensor, bound: float) -> Tensor:
    """``operator`` (matrices, responses or a kernel) / ``bound`` where the bound exceeds 1."""
    # 4 ulps more, so that rounding the division in the layer's precision cannot end above 1
    return operator / (bound * (1 + 4 * torch.finfo(operator.real.dtype).eps)) if bound > 1 else operator


def cached_within_one(
    cache: EvalCache,
    weights: tuple[Tensor, ...],
    compute: Callable[[], Tensor],
    size: tuple[int, int] | None,
    module: nn.Module | None = None,
) -> Tensor:
    """``within_one(compute())``, kept in ``cache`` until ``weights`` or ``size`` change: what
    evaluation uses, 1-Lipschitz by a guaranteed bound rather than by trust in the transform
    (with ``module``: computed in float64, see ``EvalCache``)."""
    return cache.get(weights, lambda: within_one(compute()), extra=(size,), module=module)


def known_size(size: tuple[int, int] | None, layer: str) -> tuple[int, int]:
    """``size``, without which a layer parameterised per frequency of one image size cannot run."""
    if size is None:
        raise ValueError(f"{layer} needs the image size; give input_size or run one input first")
    return size


def check_size(size: tuple[int, int], expected: tuple[int, int] | None, layer: str) -> None:
    if expected is not None and size != expected:
        raise ValueError(
            f"{layer} was built for {expected} images, got {size}; "
            "give input_size when creating the layer, or use a separate layer per image size"
        )


class FourierConv2d(nn.Module):
    """A fixed circular convolution with a full-size real kernel, applied through the FFT: the
    exported form of a Fourier-domain layer (no parameters, plain real buffers).

    ``kernel`` is (out, in, H, W) with its tap (0, 0) at offset 0 (the irfft2 of a response).
    ``padding`` (ph, pw) zero-pads the input by that many pixels on each side before the
    circular convolution on the padded grid and crops them off afterwards (BRO).
    """

    kernel: Tensor  # buffers
    bias: Tensor | None

    def __init__(self, kernel: Tensor, bias: Tensor | None = None, padding: tuple[int, int] = (0, 0)):
        super().__init__()
        self.register_buffer("kernel", kernel.detach().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        ph, pw = padding
        self.padding = (ph, pw)

    @staticmethod
    def from_response(
        response: Tensor, grid: tuple[int, int], bias: Tensor | None = None, padding: tuple[int, int] = (0, 0)
    ) -> FourierConv2d:
        kernel = torch.fft.irfft2(response.permute(2, 3, 0, 1), s=grid)
        return FourierConv2d(kernel, bias, padding)

    def forward(self, x: Tensor) -> Tensor:
        (ph, pw), (height, width) = self.padding, self.kernel.shape[-2:]
        size = (height - 2 * ph, width - 2 * pw)
        if tuple(x.shape[-2:]) != size:
            raise ValueError(f"FourierConv2d was exported for {size} images, got {tuple(x.shape[-2:])}")
        response = torch.fft.rfft2(self.kernel).permute(2, 3, 0, 1)
        y = padded_apply(response, x, self.padding)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        out_channels, in_channels, height, width = self.kernel.shape
        return f"{in_channels}, {out_channels}, grid=({height}, {width}), padding={self.padding}"


def padded_apply(response: Tensor, x: Tensor, padding: tuple[int, int]) -> Tensor:
    """``apply_response`` on the input zero-padded by ``padding`` (ph, pw), cropped back."""
    ph, pw = padding
    grid = (x.shape[-2] + 2 * ph, x.shape[-1] + 2 * pw)
    if response.shape[0] != grid[0] or response.shape[1] != grid[1] // 2 + 1:
        raise ValueError(f"a response for a {tuple(response.shape[:2])} frequency grid cannot filter {grid} images")
    y = apply_response(response, F.pad(x, (pw, pw, ph, ph)) if ph or pw else x)
    return y[..., ph : y.shape[-2] - ph, pw : y.shape[-1] - pw]
