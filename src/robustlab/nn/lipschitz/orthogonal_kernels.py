"""Pieces shared by the iteratively orthogonalised families (BCOP, AOC, LOT): Björck
orthonormalisation, block convolutions, frequency responses, and the guaranteed norm
bounds that make their certificates sound.

Soundness. Björck and Newton-Schulz are truncated iterations, so the matrices a layer
computes are only close to orthogonal. Every layer here, in evaluation mode, computes a
guaranteed float64 upper bound ``beta`` on the operator norm of exactly what it computes and
divides its operator by max(1, beta), so the evaluated layer is 1-Lipschitz whatever the
iterations reached (up to float64 rounding of the bound, about 1e-13 relative, far inside
certification's slack). Training mode uses the iterate as it is (no bound).

Bounds: ``fourier.spectral_norm_bound`` for matrices and frequency responses (Gershgorin
first, the exact float64 norm where that is loose), ``conv_norm_bound`` for explicit kernels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.types import Device

from robustlab.nn.lipschitz.aol import conv_gram_row_sums
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
    plain_linear,
    same_padding,
    spatial_size,
    with_weights,
)
from robustlab.nn.lipschitz.fourier import (
    CHEAP_BOUND_SLACK,
    divided_by_bound,
    kernel_response,
    spectral_norm_bound,
    within_one,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack


PADDING_MODES: tuple[PaddingMode, ...] = ("circular", "zeros")


def bjorck(matrix: Tensor, iterations: int) -> Tensor:
    """Björck-Bowie orthonormalisation (first order) of the last two dims: W <- 1.5 W - 0.5 W W^T W.

    Starts from W / s with s >= ||W||_2 guaranteed (the smaller of the Frobenius norm and the
    square root of Gershgorin's bound on the Gram matrix), so every singular value starts in
    (0, 1]. The iteration maps a singular value by 1.5 x - 0.5 x^3, which sends [0, 1] into
    itself and increases it towards 1: in exact arithmetic every iterate, truncated or not,
    has norm <= 1, and converges to the orthogonal polar factor (quadratically near 1,
    x1.5 per step while small). (BCOP's and orthogonium's code pre-scale by a power-iteration
    estimate of ||W||, which can fall below it.)
    """
    tall = matrix.shape[-2] >= matrix.shape[-1]
    w = matrix if tall else matrix.mT  # the Gram matrix on the smaller side
    gram = w.mT @ w
    trace = gram.diagonal(dim1=-2, dim2=-1).sum(-1)
    gershgorin = gram.abs().sum(-1).amax(-1)
    scale_sq = torch.minimum(trace, gershgorin).clamp_min(torch.finfo(w.dtype).tiny)[..., None, None]
    w, gram = w / scale_sq.sqrt(), gram / scale_sq
    for step in range(iterations):
        if step:
            gram = w.mT @ w
        w = 1.5 * w - 0.5 * (w @ gram)
    return w if tall else w.mT


def projector(basis: Tensor) -> Tensor:
    """V V^T for (batched) V with orthonormal columns: a symmetric projector (eigenvalues in [0, 1]
    when V has norm <= 1, as Björck iterates do)."""
    return basis @ basis.mT


def block_convolution(a: Tensor, b: Tensor) -> Tensor:
    """The kernel of conv_a(conv_b(x)): C_t = sum_{p+q=t} A_p B_q (matrix products over channels).

    ``a`` (o, m, a1, a2) and ``b`` (m, i, b1, b2) in F.conv2d's layout; C is (o, i, a1+b1-1, a2+b2-1).
    One conv2d: B's input channels are the batch, A flipped is the filter, padded to full size.
    """
    a1, a2 = a.shape[-2:]
    c = F.conv2d(b.transpose(0, 1), a.flip(-2, -1), padding=(a1 - 1, a2 - 1))
    return c.transpose(0, 1)


@torch.no_grad()
def conv_norm_bound(kernel: Tensor, size: tuple[int, int] | None, padding_mode: PaddingMode) -> float:
    """A guaranteed upper bound on the norm of the stride-1 'same' convolution
    with ``kernel`` and ``padding_mode`` on ``size`` images.

    First AOL's bound (the largest absolute row sum of the Gram kernel, valid on any image
    size); if it leaves more than ``CHEAP_BOUND_SLACK`` above 1, the per-frequency bound at
    ``size``: exact for circular padding; for zero padding the circular convolution on the
    (H + kh - 1) x (W + kw - 1) grid, of which the zero-padded one is a restriction.
    """
    kernel = kernel.double()
    cheap = float(conv_gram_row_sums(kernel).amax().sqrt())
    if cheap <= 1 + CHEAP_BOUND_SLACK or size is None:
        return cheap
    kh, kw = kernel.shape[-2:]
    grid = size if padding_mode == "circular" else (size[0] + kh - 1, size[1] + kw - 1)
    return min(cheap, spectral_norm_bound(kernel_response(kernel, grid, correlation=True), CHEAP_BOUND_SLACK))


def check_padding_mode(padding_mode: str, layer: str) -> PaddingMode:
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"{layer}: padding_mode must be 'circular' or 'zeros', got {padding_mode!r}")
    return padding_mode


class ExplicitKernelConv(LipschitzLayer):
    """A stride-1 'same' convolution whose kernel ``kernel()`` is built from (nearly) orthogonal
    matrices; BCOP and AOC differ only in how they build it.

    Evaluation mode divides the kernel by max(1, ``conv_norm_bound``) and caches it until the
    parameters change. The bound needs the image size only when AOL's size-free bound is not
    tight (an unconverged orthogonalisation): each input's; ``export`` uses ``input_size``
    (given here, or the first input's).
    """

    affine = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        bias: bool,
        padding_mode: PaddingMode,
        input_size: int | tuple[int, int] | None,
        iterations: int,
        factory: TensorFactory,
    ):
        super().__init__()
        name = type(self).__name__
        if iterations < 0:
            raise ValueError(f"{name}: iterations must be >= 0, got {iterations}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.channels = max(in_channels, out_channels)  # the kernel is built square, then cut
        self.kernel_size = odd_kernel_size(kernel_size)
        self.padding = same_padding(self.kernel_size)
        self.padding_mode = check_padding_mode(padding_mode, name)
        self.input_size = None if input_size is None else pair(input_size, "input_size")
        self.iterations = iterations
        self.bias = nn.Parameter(torch.zeros(out_channels, **factory)) if bias else None
        self._cache = EvalCache()

    def square_kernel(self) -> Tensor:
        """The (channels, channels, kh, kw) kernel, built with gradients."""
        raise NotImplementedError

    def kernel_parameters(self) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def kernel(self) -> Tensor:
        return self.square_kernel()[: self.out_channels, : self.in_channels]

    def eval_kernel(self, size: tuple[int, int] | None = None) -> Tensor:
        """``kernel()`` / max(1, bound), cached until the parameters change."""
        size = size or self.input_size

        def bounded() -> Tensor:
            kernel = self.kernel()
            return divided_by_bound(kernel, conv_norm_bound(kernel, size, self.padding_mode))

        return self._cache.get(self.kernel_parameters(), bounded, extra=(size,), module=self)

    def forward(self, x: Tensor) -> Tensor:
        check_channels(x, self.in_channels, type(self).__name__)
        self.input_size = self.input_size or spatial_size(x)
        kernel = self.kernel() if self.training else self.eval_kernel(spatial_size(x))
        if self.padding_mode == "circular":
            ph, pw = self.padding
            return F.conv2d(F.pad(x, (pw, pw, ph, ph), mode="circular"), kernel, self.bias)
        return F.conv2d(x, kernel, self.bias, padding=self.padding)

    def export(self) -> nn.Module:
        """A plain ``nn.Conv2d`` with the evaluation-mode kernel (for ``input_size`` images)."""
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            padding=self.padding,
            bias=self.bias is not None,
            padding_mode=self.padding_mode,
        )
        return with_weights(conv, self.eval_kernel(), self.bias)

    def norm_report(self, inputs: Tensor, **lanczos: Unpack[LanczosOptions]) -> NormReport:
        """Lanczos on the Jacobian, and ``conv_norm_bound`` of the evaluation-mode kernel."""
        report = super().norm_report(inputs, **lanczos)
        size = spatial_size(inputs)
        return report._replace(upper_bound=float(conv_norm_bound(self.eval_kernel(size), size, self.padding_mode)))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, bias={self.bias is not None}, "
            f"padding_mode={self.padding_mode}, iterations={self.iterations}"
        )


class OrthogonalizedLinear(LipschitzLayer):
    """Like ``nn.Linear``: y = W x + b with W = ``orthogonal_weight()``, an iterative
    orthonormalisation of the free ``weight`` (orthonormal columns if out >= in, else rows).
    Evaluation mode divides W by max(1, ``spectral_norm_bound(W, CHEAP_BOUND_SLACK)``), cached."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        iterations: int,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if iterations < 0:
            raise ValueError(f"{type(self).__name__}: iterations must be >= 0, got {iterations}")
        self.in_features, self.out_features, self.iterations = in_features, out_features, iterations
        factory = TensorFactory(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self._cache = EvalCache()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.orthogonal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def orthogonal_weight(self) -> Tensor:
        raise NotImplementedError

    def eval_weight(self) -> Tensor:
        def bounded() -> Tensor:
            return within_one(self.orthogonal_weight(), CHEAP_BOUND_SLACK)

        return self._cache.get((self.weight,), bounded, module=self)

    def effective_weight(self) -> Tensor:
        return self.orthogonal_weight() if self.training else self.eval_weight()

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.effective_weight(), self.bias)

    def export(self) -> nn.Module:
        return plain_linear(self.eval_weight(), self.bias)

    def norm_report(self, inputs: Tensor, **lanczos: Unpack[LanczosOptions]) -> NormReport:
        return dense_norm_report(self.eval_weight())

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"iterations={self.iterations}"
        )
