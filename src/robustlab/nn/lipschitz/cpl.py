"""CPL, convex potential layers (Meunier et al., 2022): y = x - (2 / sigma^2) W^T relu(W x + b).

sigma is the spectral norm of W (dense) or of the convolution operator (conv). The
Jacobian is I - (2 / sigma^2) W^T D W with D diagonal in [0, 1], whose eigenvalues lie in
[1 - 2 ||W||^2 / sigma^2, 1]: the layer is 1-Lipschitz whenever sigma >= ||W||.

sigma, by mode:
- training: one power-iteration step per forward on the stored vector ``u`` (a buffer,
  saved in the state dict; updated without gradients), then sigma = ||W u|| with
  gradients through W, as in the reference code.
- evaluation: computed without gradients and cached until the weights change.
  Dense: the exact spectral norm (``torch.linalg.matrix_norm(ord=2)``). Conv: restarted
  Lanczos on W^T W (see ``top_eigenpair``) started from the stored vector, for up to
  ``eval_iterations`` operator applications, stopping once the estimate changes by less
  than 1e-6 relative between 50-step cycles; then multiplied by (1 + ``EVAL_SAFETY``) =
  1.001. Lanczos, like power iteration, approaches sigma from below; the safety factor
  turns the converged estimate (residual error ~1e-6) into an upper one, at the price of a
  0.2% smaller step size than the training estimate. The stored vector is not changed.
  If Lanczos has not converged within ``eval_iterations`` steps, sigma is the rigorous
  (looser) FFT bound ``conv_norm_upper_bound`` instead, with a warning.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn

from robustlab.nn.lipschitz.base import (
    EvalCache,
    check_channels,
    conv_norm_upper_bound,
    normalize,
    odd_kernel_size,
    pair,
    same_padding,
    spatial_size,
    top_eigenpair,
)
from robustlab.nn.lipschitz.residual import ConvResidual, DenseResidual, ResidualLipschitz

# The lr this family trains at relative to AOL's (LayerFamily.lr_scale), measured with
# benchmarks/family_lr.py (digits, lipconvnet width 32 depth 2, 5 epochs, test accuracy):
# lr 0.3 (the presets'): 84.2%, 0.1: 85.0%, 0.03: 83.3%.
LR_SCALE = 1.0

EVAL_SAFETY = 1e-3


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
        if self.eval_iterations > 0:
            top = top_eigenpair(self._gram, self.u, max_steps=self.eval_iterations)
            if top.converged:
                return top.value.clamp_min(0).sqrt() * (1 + EVAL_SAFETY)
        # An unconverged estimate can be far below sigma (then the layer is not 1-Lipschitz
        # and certificates are wrong); the FFT bound is never below it.
        warnings.warn(
            f"CPLConv2d: {self.eval_iterations} Lanczos steps did not converge on the spectral norm; "
            "using a rigorous but looser bound (lower accuracy and radii). Raise eval_iterations "
            "(config eval.power_iterations) to 1000 for the tight value.",
            stacklevel=2,
        )
        return conv_norm_upper_bound(self.weight, self.u.shape[-2:])

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
