"""SLL, SDP-based Lipschitz layers (Araujo et al., 2023): y = x - 2 W T^-1 relu(W^T x + b).

Here W^T x are the hidden units (``down``) and T = diag(t) with
t_i = sum_j |W^T W|_ij q_j / q_i for learned q = exp(log_q) > 0. For any vector v,
v^T G v <= sum_ij |G_ij| |v_i||v_j| <= sum_i v_i^2 t_i (2ab <= a^2 r + b^2 / r with
r = q_j / q_i), so G = W^T W <= T, hence ||T^-1/2 W^T|| <= 1 and the Jacobian
I - 2 W T^-1 D W^T (D diagonal in [0, 1]) is symmetric with eigenvalues in [-1, 1].
For a convolution, G is the Gram kernel (as in AOL) and the sum also runs over spatial
offsets. No iterations; t is cached in eval mode until the weights change.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.types import Device

from robustlab.nn.lipschitz.base import EvalCache, TensorFactory, check_channels, odd_kernel_size, same_padding
from robustlab.nn.lipschitz.residual import ConvResidual, DenseResidual, ResidualLipschitz

# The lr this family trains at relative to AOL's (LayerFamily.lr_scale), measured with
# benchmarks/family_lr.py (digits, lipconvnet width 32 depth 2, 5 epochs, test accuracy):
# lr 0.3: 76.4%, 0.1: 38.3%, 0.03: 16.1%.
LR_SCALE = 1.0

SLL_EPS = 1e-6


def _t_from_gram(abs_gram_sums: Tensor, log_q: Tensor) -> Tensor:
    """t_i = sum_j |G_ij| q_j / q_i, from |G| summed over offsets (hidden, hidden)."""
    q = log_q.exp()
    return (abs_gram_sums * q.view(1, -1)).sum(dim=1) / q + SLL_EPS


def sll_dense_t(weight: Tensor, log_q: Tensor) -> Tensor:
    """weight: (hidden, features); returns t (hidden,)."""
    return _t_from_gram((weight @ weight.t()).abs(), log_q)


def sll_conv_t(kernel: Tensor, log_q: Tensor) -> Tensor:
    """kernel: (hidden, channels, kh, kw); returns t (hidden,)."""
    kh, kw = kernel.shape[-2:]
    gram = F.conv2d(kernel, kernel, padding=(kh - 1, kw - 1))  # (hidden, hidden, 2kh-1, 2kw-1)
    return _t_from_gram(gram.abs().sum(dim=(2, 3)), log_q)


class _SLL(ResidualLipschitz):
    log_q: nn.Parameter
    _cache: EvalCache

    def _t(self) -> Tensor:
        raise NotImplementedError

    def scale(self) -> Tensor:
        t = self._t() if self.training else self._cache.get((self.weight, self.log_q), self._t)
        return 2 / t

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.weight)
        nn.init.normal_(self.log_q)
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            nn.init.uniform_(self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))


class SLLLinear(_SLL, DenseResidual):
    """Dense SLL: maps ``features`` to ``features`` through ``hidden_features`` units."""

    def __init__(
        self,
        features: int,
        hidden_features: int | None = None,
        bias: bool = True,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.features = features
        self.hidden_features = hidden_features or features
        factory = TensorFactory(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(self.hidden_features, features, **factory))
        self.bias = nn.Parameter(torch.empty(self.hidden_features, **factory)) if bias else None
        self.log_q = nn.Parameter(torch.empty(self.hidden_features, **factory))
        self._cache = EvalCache()
        self.reset_parameters()

    def _t(self) -> Tensor:
        return sll_dense_t(self.weight, self.log_q)


class SLLConv2d(_SLL, ConvResidual):
    """Convolutional SLL (kernel ``kernel_size``, 'same' zero padding, stride 1)."""

    def __init__(
        self,
        channels: int,
        kernel_size: int | tuple[int, int] = 3,
        hidden_channels: int | None = None,
        bias: bool = True,
        device: Device = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        self.channels = channels
        self.hidden_channels = hidden_channels or channels
        self.kernel_size = odd_kernel_size(kernel_size)
        self.padding = same_padding(self.kernel_size)
        factory = TensorFactory(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(self.hidden_channels, channels, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(self.hidden_channels, **factory)) if bias else None
        self.log_q = nn.Parameter(torch.empty(self.hidden_channels, **factory))
        self._cache = EvalCache()
        self.reset_parameters()

    def _t(self) -> Tensor:
        return sll_conv_t(self.weight, self.log_q)

    def forward(self, x: Tensor) -> Tensor:
        check_channels(x, self.channels, "SLLConv2d")
        return super().forward(x)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, hidden_channels={self.hidden_channels}, "
            f"bias={self.bias is not None}"
        )
