"""Layers whose Lipschitz constant is bounded from their weights rather than fixed at 1:
the pieces of LiResNet (Hu et al., "Unlocking Deterministic Robustness Certification on
ImageNet", NeurIPS 2023).

- ``LiResConv2d``: the linear residual block y = x + conv_W(x) + b, computed as one
  convolution whose kernel is the identity (Dirac) kernel plus W.
- ``BoundedConv2d`` / ``BoundedLinear``: unconstrained convolution / dense layers (the stem
  and the neck), like ``nn.Conv2d`` / ``nn.Linear``.
- ``NormalizedLinear``: the last layer, whose rows are scaled to unit norm (last layer
  normalisation); logit i - logit j then moves by at most ||w_i - w_j|| <= 2 times the
  change of its input.

The guaranteed bound (``lipschitz_bound``, what certificates use). The zero-padded 'same'
convolution on H x W images is a restriction of the circular convolution on the
(H + kh - 1) x (W + kw - 1) grid (pad with zeros, convolve circularly, crop: both the
embedding and the crop have norm 1). The 2-D DFT turns that circular convolution into one
(out x in) matrix per frequency, so its norm is the largest of their norms, which float64
eigenvalues of their Gram matrices give to ~1e-13 relative (``fourier.exact_spectral_norm``).
This is applied to the whole block's kernel I + W: it
bounds the operator x + conv_W(x) itself, which is tighter than 1 + ||conv_W|| (by 3-15% per
block at init-like scales, see docs/layers.md) and exact on the circular embedding. A 1x1
convolution's norm is that of its (out x in) matrix at any size, a dense layer's that of
its weight. Nothing here is an iterate that could stop below the truth.

The training estimate (``lipschitz_estimate``, for EMMA and the training CRA): the same
quantity by power iteration, one step per training forward on stored vectors (one per
frequency), sigma = max_f ||D_f u_f|| with gradients through the kernel. It approaches the
bound from below and is never used for a certificate.
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
    dense_norm_report,
    jacobian_norm_report,
    odd_kernel_size,
    pair,
    plain_linear,
    with_weights,
)
from robustlab.nn.lipschitz.fourier import exact_spectral_norm

if TYPE_CHECKING:
    from typing_extensions import Unpack


WARMUP_STEPS = 50  # power-iteration steps at initialisation, so that training starts near the bound


def frequency_matrices(kernel: Tensor, size: tuple[int, int]) -> Tensor:
    """The (F, out, in) matrices whose largest norm bounds the 'same' zero-padded convolution
    with ``kernel`` (out, in, kh, kw) on ``size`` images (see the module docstring).

    Complex for kernels larger than 1x1 (half of the spectrum: the other half holds the
    conjugate matrices); a 1x1 kernel gives its one real matrix.
    """
    out_channels, in_channels, kh, kw = kernel.shape
    if kh == kw == 1:
        return kernel.reshape(1, out_channels, in_channels)
    grid = (size[0] + kh - 1, size[1] + kw - 1)
    response = torch.fft.rfft2(kernel, s=grid)  # (out, in, H', W' // 2 + 1)
    return response.permute(2, 3, 0, 1).reshape(-1, out_channels, in_channels)


def power_step(matrices: Tensor, vectors: Tensor) -> Tensor:
    """One power-iteration step per matrix: u <- D^H D u / ||D^H D u|| (rows of ``vectors``)."""
    images = (matrices @ vectors.unsqueeze(-1)).squeeze(-1)
    back = (matrices.mH @ images.unsqueeze(-1)).squeeze(-1)
    return back / back.norm(dim=-1, keepdim=True).clamp_min(1e-30)


def power_estimate(matrices: Tensor, vectors: Tensor) -> Tensor:
    """max_f ||D_f u_f|| for unit u_f: at most the largest norm, with gradients through D."""
    return (matrices @ vectors.unsqueeze(-1)).squeeze(-1).norm(dim=-1).amax()


class SpectralLayer(LipschitzLayer):
    """A linear (conv or dense) layer with a bias, whose norm is bounded through the
    matrices of ``frequency_matrices``.

    Subclasses give ``forward`` and ``export`` (and ``kernel()`` when the effective weight
    is not the parameter itself); ``input_size`` is
    the image size the bound is for (None for dense layers and 1x1 convolutions, whose norm
    does not depend on it). The power-iteration vectors are the buffer ``u``: (F, in, 2)
    holding complex vectors as (real, imaginary) pairs (a real buffer, so that ``.double()``
    and state dicts treat it as every other buffer), or (1, in) for one real matrix.
    """

    affine = True
    weight: Tensor
    bias: Tensor | None
    u: Tensor
    input_size: tuple[int, int] | None

    def reset_parameters(self) -> None:
        """torch's default for ``nn.Conv2d`` / ``nn.Linear`` weights, a zero bias, and
        power-iteration vectors that start near the top singular vectors."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self._init_vectors()

    def kernel(self, dtype: torch.dtype | None = None) -> Tensor:
        """The effective weight, computed in ``dtype`` (the parameters' by default)."""
        return self.weight.to(dtype or self.weight.dtype)

    def matrices(self, kernel: Tensor | None = None) -> Tensor:
        kernel = self.kernel() if kernel is None else kernel
        if kernel.dim() == 2:
            return kernel.unsqueeze(0)
        return frequency_matrices(kernel, self.input_size or (1, 1))

    def lipschitz_bound(self) -> float:
        """A guaranteed upper bound on the layer's L2 Lipschitz constant (float64, cached
        until the weights change)."""
        # From the float64 weights: the certified float64 model computes I + W without the
        # rounding a float32 kernel would have.
        bound = self._bound_cache.get(
            (self.weight,), lambda: exact_spectral_norm(self.matrices(self.kernel(torch.float64)))
        )
        return bound

    def lipschitz_estimate(self) -> Tensor:
        """The training estimate of the same norm, with gradients (never above the bound,
        up to rounding)."""
        return power_estimate(self.matrices(), self._vectors())

    def norm_report(self, inputs: Tensor, **lanczos: Unpack[LanczosOptions]) -> NormReport:
        """Dense: the exact norm. Convolutions: Lanczos on the Jacobian, and the bound."""
        if self.weight.dim() == 2:
            return dense_norm_report(self.kernel(torch.float64))
        report = jacobian_norm_report(self, inputs, affine=True, **lanczos)
        return report._replace(upper_bound=self.lipschitz_bound())

    @torch.no_grad()
    def update_vectors(self, steps: int = 1) -> None:
        matrices = self.matrices().detach()
        vectors = self._vectors()
        for _ in range(steps):
            vectors = power_step(matrices, vectors)
        self.u.copy_(torch.view_as_real(vectors) if vectors.is_complex() else vectors)

    def _vectors(self) -> Tensor:
        return torch.view_as_complex(self.u) if self.u.dim() == 3 else self.u

    def _init_vectors(self) -> None:
        with torch.no_grad():
            frequencies, in_features = self.matrices().shape[0], self.weight.shape[1]
            complex_ = self.u.dim() == 3
            shape = (frequencies, in_features, 2) if complex_ else (frequencies, in_features)
            self.u = torch.randn(shape, device=self.weight.device, dtype=self.weight.dtype)
            self.update_vectors(WARMUP_STEPS)

    def _register_vectors(self, complex_: bool) -> None:
        self.register_buffer("u", torch.empty(0, 0, 2) if complex_ else torch.empty(0, 0))
        self._bound_cache = EvalCache()

    def _train_step(self) -> None:
        if self.training:
            self.update_vectors()

    def _check_size(self, x: Tensor) -> None:
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(
                f"{type(self).__name__} bounds its norm for {self.input_size} images, got {tuple(x.shape[-2:])}; "
                "give the layer the input_size it will see"
            )


class BoundedConv2d(SpectralLayer):
    """An unconstrained 'same' convolution (stride 1, zero padding, odd kernel), like
    ``nn.Conv2d``. ``input_size`` (H, W) is required unless the kernel is 1x1."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        *,
        input_size: int | tuple[int, int] | None = None,
        bias: bool = True,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        factory = TensorFactory(device=device, dtype=dtype)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = odd_kernel_size(kernel_size)
        self.padding = (self.kernel_size[0] // 2, self.kernel_size[1] // 2)
        one_by_one = self.kernel_size == (1, 1)
        if input_size is None and not one_by_one:
            raise ValueError(
                f"{type(self).__name__} with a {self.kernel_size} kernel needs input_size=(H, W): its norm "
                "depends on the image size"
            )
        self.input_size = None if input_size is None or one_by_one else pair(input_size, "input_size")
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self._register_vectors(complex_=not one_by_one)
        self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        check_channels(x, self.in_channels, type(self).__name__)
        self._check_size(x)
        self._train_step()
        return F.conv2d(x, self.kernel(), self.bias, padding=self.padding)

    def export(self) -> nn.Module:
        conv = nn.Conv2d(
            self.in_channels, self.out_channels, self.kernel_size, padding=self.padding, bias=self.bias is not None
        )
        return with_weights(conv, self.kernel(), self.bias)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"input_size={self.input_size}, bias={self.bias is not None}"
        )


class LiResConv2d(BoundedConv2d):
    """The linear residual block y = x + conv_W(x) + b (channels -> channels), one
    convolution with the kernel I + W (I: the Dirac kernel). W starts at zero: the block
    starts as the identity, with norm 1."""

    def __init__(
        self,
        channels: int,
        kernel_size: int | tuple[int, int] = 3,
        *,
        input_size: int | tuple[int, int] | None = None,
        bias: bool = True,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(channels, channels, kernel_size, input_size=input_size, bias=bias, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        self._init_vectors()

    def kernel(self, dtype: torch.dtype | None = None) -> Tensor:
        weight = super().kernel(dtype)
        (kh, kw), channels = self.kernel_size, self.in_channels
        identity = torch.eye(channels, device=weight.device, dtype=weight.dtype).view(channels, channels, 1, 1)
        return weight + F.pad(identity, (kw // 2, kw // 2, kh // 2, kh // 2))


class BoundedLinear(SpectralLayer):
    """An unconstrained dense layer, like ``nn.Linear``."""

    input_size = None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        factory = TensorFactory(device=device, dtype=dtype)
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self._register_vectors(complex_=False)
        self.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        check_channels(x, self.in_features, type(self).__name__)
        self._train_step()
        return F.linear(x, self.kernel(), self.bias)

    def export(self) -> nn.Module:
        return plain_linear(self.kernel(), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class NormalizedLinear(BoundedLinear):
    """The last layer: a dense layer whose rows are scaled to unit L2 norm, plus a bias.

    ``pair_norms()[i, j] = ||w_i - w_j||`` bounds how much logit i - logit j changes per
    unit change of the input (at most 2), cheaply and exactly; ``lipschitz_bound()`` is the
    spectral norm of the normalised weight (at most sqrt(classes)).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__(in_features, out_features, bias, device, dtype)
        self._pairs_cache = EvalCache()

    def kernel(self, dtype: torch.dtype | None = None) -> Tensor:
        return F.normalize(self.weight.to(dtype or self.weight.dtype), dim=1)

    def pair_norms(self, exact: bool = False) -> Tensor:
        """(classes, classes): ||w_i - w_j|| of the normalised rows.

        ``exact``: in float64 from the differences themselves, without gradients, cached
        (what certificates use). Otherwise from the Gram matrix, sqrt(2 - 2 w_i . w_j),
        with gradients (training; cancellation can cost ~1e-4 absolute in float32).
        """
        if exact:
            return self._pairs_cache.get((self.weight,), self._exact_pair_norms)
        rows = self.kernel()
        others = 1 - torch.eye(len(rows), device=rows.device, dtype=rows.dtype)
        return (2 - 2 * rows @ rows.t()).clamp_min(1e-12).sqrt() * others

    def _exact_pair_norms(self) -> Tensor:
        rows = self.kernel(torch.float64).unsqueeze(0)
        return torch.cdist(rows, rows, compute_mode="donot_use_mm_for_euclid_dist").squeeze(0)
