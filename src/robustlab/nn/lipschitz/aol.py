"""AOL, almost-orthogonal layers (Prach & Lampert, 2022).

Each input channel i of the weight is rescaled by d_i = (sum_j |P^T P|_ij + 1e-6)^(-1/2),
which makes P diag(d) 1-Lipschitz without any iteration. For a dense weight
P^T P = W^T W; for a convolution, the kernel of P^T P is the convolution of K^T with
itself (padding k-1), and the sum runs over its channels and spatial offsets. The bound
holds on the infinite plane, hence also with zero (or circular) padding and any stride.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.types import Device

from robustlab.nn.lipschitz.base import (
    EvalCache,
    LanczosOptions,
    LipschitzLayer,
    NormReport,
    PaddingMode,
    TensorFactory,
    check_channels,
    conv_fft_bound,
    dense_norm_report,
    pair,
    plain_linear,
    same_padding,
    with_weights,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack


# The lr this family trains at relative to AOL's (LayerFamily.lr_scale), measured with
# benchmarks/family_lr.py (digits, lipconvnet width 32 depth 2, 5 epochs, test accuracy):
# lr 0.3 (the presets'): 82.5% test accuracy, 0.1: 83.9%, 0.03: 80.6%.
LR_SCALE = 1.0

AOL_EPS = 1e-6


def aol_dense_rescaling(weight: Tensor) -> Tensor:
    """d (in_features,) for a dense weight (out_features, in_features)."""
    return (_AbsGramRowSums.apply(weight) + AOL_EPS).rsqrt()


# ``symmetric_gram`` halves W's columns while there are at least twice this many.
GRAM_HALVING_MIN = 256


def symmetric_gram(weight: Tensor) -> Tensor:
    """W^T W from the products of its upper block triangle, halving W's columns recursively:
    3/4 of a full product's multiply-adds at one halving, 5/8 at two (syrk, which torch does
    not expose). 3072 x 3072 on one Xeon core: 0.353 -> 0.252 s. Exactly symmetric."""
    columns = weight.shape[1]
    if columns < 2 * GRAM_HALVING_MIN:
        return weight.mT @ weight
    half = columns // 2
    left, right = weight[:, :half], weight[:, half:]
    gram = weight.new_empty(columns, columns)
    gram[:half, :half] = symmetric_gram(left)
    gram[half:, half:] = symmetric_gram(right)
    gram[:half, half:] = left.mT @ right
    gram[half:, :half] = gram[:half, half:].mT
    return gram


class _AbsGramRowSums(torch.autograd.Function):
    """r_i = sum_j |W^T W|_ij, with a backward of one matrix product instead of autograd's two.

    With G = W^T W and s = sign(G): dL/dG_kl = g_k s_kl, and since G is symmetric,
    dL/dW = W (dL/dG + dL/dG^T) = W (s * (g 1^T + 1 g^T)). On AOL-MLP (3072 x 3072 weights)
    the rescaling was 3 of its step's ~3.3 n^3 multiply-adds per layer, now 2.
    """

    @staticmethod
    def forward(ctx: Any, weight: Tensor) -> Tensor:
        gram = symmetric_gram(weight)
        ctx.save_for_backward(weight, gram)
        return gram.abs().sum(dim=1)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        weight, gram = ctx.saved_tensors
        return weight @ (gram.sign() * (grad[:, None] + grad[None, :])).to(weight.dtype)


def aol_conv_rescaling(kernel: Tensor) -> Tensor:
    """d (in_channels,) for a kernel (out_channels, in_channels, kh, kw)."""
    return (conv_gram_row_sums(kernel) + AOL_EPS).rsqrt()


def conv_gram_row_sums(kernel: Tensor, form: str | None = None) -> Tensor:
    """sum_j |P^T P|_ij (in_channels,) for the convolution P with ``kernel`` on the infinite plane.

    Two forms compute it, equal up to rounding: ``"products"`` (below) and ``"convolution"``
    (the reference code's one self-convolution). ``form=None`` picks the faster for the
    kernel's shape and device (``gram_row_sums_form``).
    """
    form = form or gram_row_sums_form(kernel)
    if form == "convolution":
        return gram_row_sums_by_convolution(kernel)
    if form != "products":
        raise ValueError(f"conv_gram_row_sums: form must be 'products' or 'convolution', got '{form}'")
    return gram_row_sums_by_products(kernel)


# Below this many multiply-adds of the products form (in_channels^2 * out * taps) the
# self-convolution is faster on a CPU: one call against ~13 small products and their Python
# overhead. Measured forward + backward (benchmarks/aol_rescaling.py, one thread, Xeon with
# AMX): 3x3 kernels with 16 channels 5.3x, 32 2.3x, 64 1.2x faster as a convolution; 128 1.3x,
# 256 1.9x, 512 2.5x faster as products; a 1x1 kernel (one product) 3.1x faster as products.
CONVOLUTION_BELOW = 64 * 64 * 64 * 9 * 2


def gram_row_sums_form(kernel: Tensor) -> str:
    """The faster form of ``conv_gram_row_sums`` for this kernel (benchmarks/aol_rescaling.py).

    On the GPU the products form stays (not re-measured here; eager steps there are
    launch-bound and run from CUDA graphs, docs/performance.md)."""
    out_channels, in_channels, kh, kw = kernel.shape
    small = in_channels**2 * out_channels * kh * kw < CONVOLUTION_BELOW
    if kernel.device.type == "cpu" and kh * kw > 1 and small:
        return "convolution"
    return "products"


def gram_row_sums_by_convolution(kernel: Tensor) -> Tensor:
    """The kernel of P^T P as the self-convolution of K^T (padding k-1), its |.| summed."""
    kh, kw = kernel.shape[-2:]
    transposed = kernel.transpose(0, 1)
    return F.conv2d(transposed, transposed, padding=(kh - 1, kw - 1)).abs().sum(dim=(1, 2, 3))


def gram_row_sums_by_products(kernel: Tensor) -> Tensor:
    """sum_j |P^T P|_ij from the overlap products of the kernel's taps.

    Their maximum bounds ||P||^2 (Gershgorin), for zero or circular padding and any image size.
    The kernel of P^T P (the self-convolution of K^T, padding k-1) has at offset s the
    entries G_s[i, j] = sum_o sum_p K[o, i, p] K[o, j, p + s], p over the positions where
    both taps exist. So G_s is one matrix product of the two overlapping slices of K, with
    no padded zeros multiplied, and G_{-s} = G_s^T: half of the offsets give all the
    absolute row sums (row sums of |G_s| plus column sums for s != 0). Equal to the
    self-convolution up to rounding, at about 1/5.6 of its multiplications for k=3.
    """
    in_channels, kh, kw = kernel.shape[1:]
    taps = kernel.permute(2, 3, 0, 1)  # (kh, kw, out, in): rows of the products are (position, out)
    row_sums = kernel.new_zeros(in_channels)
    for sh in range(kh):
        for sw in range(-kw + 1, kw):
            if sh == 0 and sw < 0:
                continue  # the transpose of offset (0, -sw)
            left = taps[: kh - sh, max(0, -sw) : kw - max(0, sw)].reshape(-1, in_channels)
            right = taps[sh:, max(0, sw) : kw - max(0, -sw)].reshape(-1, in_channels)
            gram = (left.t() @ right).abs()
            row_sums = row_sums + gram.sum(dim=1)
            if sh or sw:
                row_sums = row_sums + gram.sum(dim=0)
    return row_sums


class AOLLinear(LipschitzLayer):
    """Like ``nn.Linear``, 1-Lipschitz: y = W diag(d) x + b."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        factory = TensorFactory(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self._cache = EvalCache()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.in_features == self.out_features:
            nn.init.eye_(self.weight)  # AOL starts as the identity map
        else:
            nn.init.orthogonal_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def rescaling(self) -> Tensor:
        if self.training:
            return aol_dense_rescaling(self.weight)
        return self._cache.get((self.weight,), lambda: aol_dense_rescaling(self.weight), module=self)

    def effective_weight(self) -> Tensor:
        return self.weight * self.rescaling()

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.effective_weight(), self.bias)

    def export(self) -> nn.Module:
        return plain_linear(self.effective_weight(), self.bias)

    def norm_report(self, inputs: Tensor, **lanczos: Unpack[LanczosOptions]) -> NormReport:
        return dense_norm_report(self.effective_weight())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class AOLConv2d(LipschitzLayer):
    """Like ``nn.Conv2d``, 1-Lipschitz: the kernel's input channels are rescaled by d.

    ``padding`` defaults to k // 2 (the output keeps the input size); only zero and
    circular padding keep the bound (reflection would copy pixels).
    """

    affine = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | None = None,
        bias: bool = True,
        padding_mode: PaddingMode = "zeros",
        device: Device = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if padding_mode not in ("zeros", "circular"):
            raise ValueError(
                f"AOLConv2d: padding_mode must be 'zeros' or 'circular' (1-Lipschitz), got {padding_mode!r}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.padding = same_padding(self.kernel_size) if padding is None else pair_or_zero(padding)
        self.padding_mode = padding_mode
        factory = TensorFactory(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self._cache = EvalCache()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.in_channels == self.out_channels:
            nn.init.dirac_(self.weight)  # AOL starts as the identity map
        else:
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def rescaling(self) -> Tensor:
        if self.training:
            return aol_conv_rescaling(self.weight)
        return self._cache.get((self.weight,), lambda: aol_conv_rescaling(self.weight), module=self)

    def effective_weight(self) -> Tensor:
        return self.weight * self.rescaling().view(1, -1, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        check_channels(x, self.in_channels, "AOLConv2d")
        weight = self.effective_weight()
        if self.padding_mode == "circular":
            ph, pw = self.padding
            x = F.pad(x, (pw, pw, ph, ph), mode="circular")
            return F.conv2d(x, weight, self.bias, self.stride)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding)

    def export(self) -> nn.Module:
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            self.stride,
            self.padding,
            bias=self.bias is not None,
            padding_mode=self.padding_mode,
        )
        return with_weights(conv, self.effective_weight(), self.bias)

    def norm_report(self, inputs: Tensor, **lanczos: Unpack[LanczosOptions]) -> NormReport:
        """Lanczos on the Jacobian, and the rigorous FFT bound (see ``conv_norm_upper_bound``)."""
        report = super().norm_report(inputs, **lanczos)
        return report._replace(upper_bound=conv_fft_bound(self.effective_weight(), inputs.shape[-2:]))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, bias={self.bias is not None}, padding_mode={self.padding_mode}"
        )


def pair_or_zero(value: int | tuple[int, int]) -> tuple[int, int]:
    size = (value, value) if isinstance(value, int) else tuple(value)
    if len(size) != 2 or not all(isinstance(s, int) and s >= 0 for s in size):
        raise ValueError(f"padding must be a non-negative int or a pair of them, got {value!r}")
    return size
