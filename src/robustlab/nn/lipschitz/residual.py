"""The residual form y = x - up(s * relu(down(x) + b)) shared by CPL and SLL.

``up`` is the adjoint of ``down`` and s > 0 the normaliser (CPL: 2 / sigma^2, SLL: 2 / t
per hidden unit). The Jacobian is I - up(s * D * down(.)) with D diagonal in [0, 1]; it is
symmetric, and its norm is largest when every unit is active (D = I), where it is
max(1, lambda_max(A) - 1) for A = up(s * down(.)). ``norm_report`` computes exactly that.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.nn.lipschitz.base import (
    LipschitzLayer,
    NormReport,
    check_channels,
    plain_linear,
    top_eigenpair,
    with_weights,
)


class ResidualSubtract(nn.Module):
    """y = x - branch(x): the exported form of a residual layer."""

    def __init__(self, branch: nn.Module):
        super().__init__()
        self.branch = branch

    def forward(self, x: Tensor) -> Tensor:
        return x - self.branch(x)


class ResidualLipschitz(LipschitzLayer):
    """y = x - up(scale * relu(down(x) + bias)) with ``up`` the adjoint of ``down``."""

    weight: Tensor
    bias: Tensor | None

    def down(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def up(self, z: Tensor, weight: Tensor | None = None) -> Tensor:
        """The adjoint of ``down``, with ``weight`` in place of ``self.weight`` when given."""
        raise NotImplementedError

    def scale(self) -> Tensor:
        """The normaliser: a scalar, or one value per hidden unit (cached in eval mode)."""
        raise NotImplementedError

    def preactivation(self, x: Tensor) -> Tensor:
        return self.down(x, self.bias)

    def scaled_weight(self) -> Tensor:
        """W with the normaliser s folded into its hidden units: ``up(s * z) == up(z, scaled_weight())``.

        Scaling the small weight instead of the activations saves two passes over the
        activations per layer (the product and, in the backward pass, its reduction).
        """
        return self.weight * self.scale().reshape(-1, *[1] * (self.weight.dim() - 1))

    def forward(self, x: Tensor) -> Tensor:
        return x - self.up(F.relu(self.preactivation(x)), self.scaled_weight())

    def export(self) -> nn.Module:
        return ResidualSubtract(nn.Sequential(self._plain_down(), nn.ReLU(), self._plain_up()))

    def _plain_down(self) -> nn.Module:
        raise NotImplementedError

    def _plain_up(self) -> nn.Module:
        raise NotImplementedError

    @torch.no_grad()
    def norm_report(
        self, inputs: Tensor, *, max_steps: int = 300, restarts: int = 2, generator: torch.Generator | None = None
    ) -> NormReport:
        """max(1, lambda_max(A) - 1), A the operator with every unit active: by ``eigvalsh``
        of the explicit matrix (dense), by restarted Lanczos (conv)."""
        if self.weight.dim() == 2:
            weight = self.weight.double()
            matrix = weight.t() @ (self.scale().double().view(-1, 1) * weight)
            top = float(torch.linalg.eigvalsh(matrix)[-1])
            method = "residual (eigvalsh)"
        else:
            scaled_weight = self.scaled_weight()

            def all_active(v: Tensor) -> Tensor:  # the forward pass's operator with every unit active
                return self.up(self.down(v), scaled_weight)

            shape = inputs[:1].shape
            starts = [torch.randn(shape, generator=generator).to(inputs) for _ in range(restarts)]
            top = max(float(top_eigenpair(all_active, start, max_steps).value) for start in starts)
            method = "residual (lanczos)"
        return NormReport(method, max(1.0, top - 1.0), None)


class DenseResidual(ResidualLipschitz):
    """``down`` = W (hidden_features x features), ``up`` = W^T."""

    features: int
    hidden_features: int

    def down(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        return F.linear(x, self.weight, bias)

    def up(self, z: Tensor, weight: Tensor | None = None) -> Tensor:
        return F.linear(z, (self.weight if weight is None else weight).t())

    def forward(self, x: Tensor) -> Tensor:
        check_channels(x, self.features, type(self).__name__)
        return super().forward(x)

    def _plain_down(self) -> nn.Module:
        return plain_linear(self.weight, self.bias)

    def _plain_up(self) -> nn.Module:
        return plain_linear(self.scaled_weight().t())

    def extra_repr(self) -> str:
        return f"features={self.features}, hidden_features={self.hidden_features}, bias={self.bias is not None}"


# Images of at most this many pixels take float64 CPU convolutions as one matrix product over
# the whole batch (``conv2d_float64``). conv2d's float64 CPU kernel multiplies image by image,
# re-reading the whole weight for each (1024 x 9216 for LipConvNet-64's 2x2 layers):
# 0.48 -> 0.115 s per 100 images of 1024 x 2 x 2; equal (0.158 vs 0.162 s) at 512 x 4 x 4.
# Larger images take ``row_tap_conv``: 2.2-3.1x faster than conv2d from 4x4 to 32x32
# (500 images, 16-128 channels, one Xeon core; docs/performance.md).
GEMM_CONV_PIXELS = 4
ROW_TAP_CHUNK_BYTES = 4 * 2**20


def conv2d_float64(x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int]) -> Tensor:
    """F.conv2d ('same', stride 1), faster for float64 on the CPU (certification): one GEMM
    over the batch on tiny images, else ``row_tap_conv``. Equal up to float64 rounding: each
    output is the same inner product of length in * kh * kw, summed in another order (the
    certificate's rounding allowance, ``certify.evaluate.float_error_slack``, covers any order)."""
    batch, _, height, width = x.shape
    kernel_size = tuple(weight.shape[-2:])
    if (
        x.dtype != torch.float64
        or x.device.type != "cpu"
        or tuple(padding) != (kernel_size[0] // 2, kernel_size[1] // 2)
    ):
        return F.conv2d(x, weight, bias, padding=padding)
    if height * width > GEMM_CONV_PIXELS:
        tracked = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
        return F.conv2d(x, weight, bias, padding=padding) if tracked else row_tap_conv(x, weight, bias)
    columns = F.unfold(x, kernel_size, padding=padding)  # (N, in * kh * kw, H * W)
    rows = columns.transpose(1, 2).reshape(batch * height * width, -1)
    flat = weight.reshape(weight.shape[0], -1).t()
    out = rows @ flat if bias is None else torch.addmm(bias, rows, flat)
    return out.view(batch, height, width, -1).permute(0, 3, 1, 2)


def row_tap_conv(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The 'same' convolution as kh batched GEMMs, one per kernel row, in channels-last layout.

    The kw horizontal shifts of the zero-padded image sit side by side, (n, H + kh - 1, W,
    kw * in), so kernel row i reads the contiguous window of rows i .. i + H - 1 of each
    image: a strided view, no copy; im2col would copy all kh * kw shifts. Images go in
    chunks whose shifted copy fits in ``ROW_TAP_CHUNK_BYTES``: built and read while in the
    cache, which makes it 2.4x faster on 32 x 32 images than one pass over 500. The result is
    channels-last (a permuted view), which the next convolution's padded copy reads in order.
    Without gradients (it writes into its output).
    """
    batch, channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    taps = weight.permute(2, 3, 1, 0).reshape(kh, kw * channels, out_channels)
    pixels, rows = height * width, (height + kh - 1) * width
    chunk = max(1, ROW_TAP_CHUNK_BYTES // (rows * kw * channels * x.element_size()))
    out = x.new_empty(batch, pixels, out_channels)
    for start in range(0, batch, chunk):
        images = x[start : start + chunk]
        padded = x.new_zeros(len(images), height + kh - 1, width + kw - 1, channels)
        padded[:, kh // 2 : kh // 2 + height, kw // 2 : kw // 2 + width] = images.permute(0, 2, 3, 1)
        shifted = torch.cat([padded[:, :, j : j + width] for j in range(kw)], dim=3).view(len(images), rows, -1)
        part = out[start : start + chunk]
        torch.bmm(shifted[:, :pixels], taps[0].expand(len(images), -1, -1), out=part)
        for i in range(1, kh):
            part.baddbmm_(shifted[:, i * width : i * width + pixels], taps[i].expand(len(images), -1, -1))
    if bias is not None:
        out += bias
    return out.view(batch, height, width, out_channels).permute(0, 3, 1, 2)


class ConvResidual(ResidualLipschitz):
    """``down`` = the 'same' convolution with W, ``up`` = its transpose (the exact adjoint for odd kernels)."""

    kernel_size: tuple[int, int]
    padding: tuple[int, int]

    def down(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        return conv2d_float64(x, self.weight, bias, self.padding)

    def up(self, z: Tensor, weight: Tensor | None = None) -> Tensor:
        weight = self.weight if weight is None else weight
        if z.dtype == torch.float64 and z.device.type == "cpu":
            # The same map as a convolution with the adjoint kernel (odd kernel, stride 1, 'same'
            # padding): float64 conv_transpose2d has no fast CPU kernel, conv2d is 1.4-1.9x faster
            # (certification runs in float64; benchmarks/certify_speed.py).
            return conv2d_float64(z, weight.transpose(0, 1).flip(-2, -1).contiguous(), None, self.padding)
        return F.conv_transpose2d(z, weight, padding=self.padding)

    def _plain_down(self) -> nn.Module:
        hidden, channels = self.weight.shape[:2]
        conv = nn.Conv2d(channels, hidden, self.kernel_size, padding=self.padding, bias=self.bias is not None)
        return with_weights(conv, self.weight, self.bias)

    def _plain_up(self) -> nn.Module:
        hidden, channels = self.weight.shape[:2]
        conv = nn.ConvTranspose2d(hidden, channels, self.kernel_size, padding=self.padding, bias=False)
        return with_weights(conv, self.scaled_weight())
