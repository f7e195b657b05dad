"""Pieces shared by the 1-Lipschitz layer families.

Every family turns its free parameters into a constrained operator with a *normaliser*
computed from the weights (AOL's rescaling d, CPL's 2/sigma^2, SLL's T^-1, SOC's kernel
scale, the Cayley transform). In training mode the normaliser is recomputed (with
gradients) on every forward. In evaluation mode it is computed once, without gradients,
and cached until the weights change, because certification runs many eval batches
through fixed weights. Gradients with respect to the *input* are exact either way; in eval
mode the weights receive gradients only through the paths that do not go through the
cached normaliser.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def weights_key(*tensors: Tensor) -> tuple:
    """Changes whenever any tensor is modified in place (optimizer step, load_state_dict)
    or replaced (``.to(device)``, ``.double()``): version counter, storage, dtype, device."""
    return tuple((t._version, t.data_ptr(), t.dtype, t.device, tuple(t.shape)) for t in tensors)


class EvalCache:
    """A value derived from some weights, kept until the weights change.

    A plain attribute (not a buffer): it is never saved in the state dict, and a copied
    module gets new storage, hence a new key, and recomputes.
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value = None

    def get(self, tensors: tuple[Tensor, ...], compute: Callable[[], object], extra: tuple = ()):
        key = weights_key(*tensors) + extra
        if key != self.key:
            # inference_mode(False): a value first computed under inference_mode must stay
            # usable later by code that records autograd graphs (attacks, verification).
            with torch.inference_mode(False), torch.no_grad():
                self.value = compute()
            self.key = key
        return self.value

    def clear(self) -> None:
        self.key, self.value = None, None


def normalize(v: Tensor, eps: float = 1e-12) -> Tensor:
    return v / v.norm().clamp_min(eps)


def pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    size = (value, value) if isinstance(value, int) else tuple(value)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return size


def odd_kernel_size(kernel_size: int | tuple[int, int]) -> tuple[int, int]:
    """Odd kernels with 'same' zero padding make conv_transpose2d the exact adjoint of conv2d."""
    size = pair(kernel_size, "kernel_size")
    if any(k % 2 == 0 for k in size):
        raise ValueError(
            f"kernel_size must be odd (padding keeps the size and the transpose exact), got {kernel_size!r}"
        )
    return size


def check_channels(x: Tensor, channels: int, layer: str) -> None:
    if x.dim() < 2 or x.shape[1] != channels:
        raise ValueError(f"{layer} expects inputs of shape (batch, {channels}, ...), got {tuple(x.shape)}")


class ResidualLipschitz(nn.Module):
    """y = x - up(scale * relu(down(x) + bias)) with ``up`` the adjoint of ``down``.

    CPL (scale = 2 / sigma^2) and SLL (scale = 2 / T, per hidden unit) share this form.
    The Jacobian is I - up(scale * D * down(.)) with D in [0, 1]; its norm is largest when
    every unit is active, which is what ``verify`` checks.
    """

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

    def extra_repr(self) -> str:
        return f"features={self.features}, hidden_features={self.hidden_features}, bias={self.bias is not None}"


class ConvResidual(ResidualLipschitz):
    """``down`` = the 'same' convolution with W, ``up`` = its transpose (the exact adjoint for odd kernels)."""

    padding: tuple[int, int]

    def down(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        return F.conv2d(x, self.weight, bias, padding=self.padding)

    def up(self, z: Tensor, weight: Tensor | None = None) -> Tensor:
        return F.conv_transpose2d(z, self.weight if weight is None else weight, padding=self.padding)


class Eigenpair(NamedTuple):
    value: Tensor
    vector: Tensor
    converged: bool  # False: ``max_steps`` ran out first, and ``value`` may be far too low


def top_eigenpair(
    matvec: Callable[[Tensor], Tensor], start: Tensor, max_steps: int = 1000, cycle: int = 50, rtol: float = 1e-6
) -> Eigenpair:
    """Largest eigenvalue and its vector of a symmetric PSD operator (e.g. v -> W^T W v).

    Restarted Lanczos with full reorthogonalisation: cycles of ``cycle`` steps, each
    restarted from the previous top Ritz vector, until the estimate changes by at most
    ``rtol`` (relative) or ``max_steps`` matvecs are spent. Ritz values never exceed the
    true eigenvalue; on the clustered spectra of convolutions Lanczos reaches 1e-6 in about
    100 steps where power iteration is still 1e-5 short after 1000.
    """
    if max_steps < 1:
        raise ValueError(f"top_eigenpair needs max_steps >= 1, got {max_steps}")
    vector = normalize(start)
    estimate, steps, converged = None, 0, False
    while steps < max_steps and not converged:
        size = min(cycle, max_steps - steps)
        value, vector = _lanczos_cycle(matvec, vector, size)
        steps += size
        converged = estimate is not None and bool(abs(value - estimate) <= rtol * abs(value))  # one sync per cycle
        estimate = value
    return Eigenpair(estimate, vector, converged)


def conv_norm_upper_bound(kernel: Tensor, size: Sequence[int]) -> Tensor:
    """A rigorous upper bound on the spectral norm of the zero- or circular-padded 'same'
    convolution with ``kernel`` (out, in, kh, kw) on (H, W) images.

    The convolution is a restriction of a circular convolution on the (H + kh - 1) x
    (W + kw - 1) grid, which the 2-D DFT turns into one (out x in) matrix per frequency;
    its norm is the largest of theirs. Loose on tiny images, tight on large ones.
    """
    kh, kw = kernel.shape[-2:]
    grid = (size[0] + kh - 1, size[1] + kw - 1)
    response = torch.fft.rfft2(kernel, s=grid).permute(2, 3, 0, 1)  # (H', W' // 2 + 1, out, in)
    return torch.linalg.matrix_norm(response, ord=2).amax()


def _lanczos_cycle(matvec: Callable[[Tensor], Tensor], start: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    shape = start.shape
    steps = max(1, min(steps, start.numel()))
    basis = start.new_zeros(steps, start.numel())
    basis[0] = start.flatten()
    alphas, betas = [], []
    for j in range(steps):
        z = matvec(basis[j].view(shape)).flatten()
        alphas.append(basis[j] @ z)
        scale = z.norm()
        for _ in range(2):  # twice is enough to keep the basis orthogonal in float32
            z = z - (basis[: j + 1] @ z) @ basis[: j + 1]
        beta = z.norm()
        # An invariant subspace was found (e.g. the identity map): what is left of z is
        # rounding noise, and a basis built from it would be meaningless.
        if j + 1 == steps or beta <= 1e-5 * scale:
            break
        betas.append(beta)
        basis[j + 1] = z / beta
    size = len(alphas)
    tridiagonal = torch.diag(torch.stack(alphas).double())
    if betas:
        off = torch.stack(betas).double()
        tridiagonal = tridiagonal + torch.diag(off, 1) + torch.diag(off, -1)
    values, vectors = torch.linalg.eigh(tridiagonal)
    top = vectors[:, -1].to(basis.dtype)
    return values[-1].to(basis.dtype), normalize(top @ basis[:size]).view(shape)
