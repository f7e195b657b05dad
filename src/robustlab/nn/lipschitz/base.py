"""The Lipschitz layer protocol and the pieces the layer families share.

``LipschitzLayer`` is the one interface that verification (``nn/verify.py``), export
(``nn/export.py``), model building and certification use: a new family subclasses it in
one file and registers itself in ``LAYER_FAMILIES`` (``nn/lipschitz/__init__.py``), and
nothing central changes. See docs/layers.md ("The layer protocol").

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

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, NamedTuple, TypedDict, TypeVar, cast

import torch
from torch import Tensor, nn
from torch.types import Device

PlainLayer = TypeVar("PlainLayer", bound=nn.Module)
Value = TypeVar("Value")
# The paddings that keep a convolution 1-Lipschitz (reflection would copy pixels); a subset
# of what nn.Conv2d accepts, so a layer can hand its own to the plain module it exports.
PaddingMode = Literal["zeros", "circular"]


class TensorFactory(TypedDict):
    """Where and in which dtype a layer creates its parameters (``torch.empty(..., **factory)``)."""

    device: Device
    dtype: torch.dtype | None


class LanczosOptions(TypedDict, total=False):
    """The keywords of ``LipschitzLayer.norm_report`` that a family hands on to
    ``jacobian_norm_report`` unchanged."""

    max_steps: int
    restarts: int
    generator: torch.Generator | None


# ---------------------------------------------------------------------------------------
# The protocol


class NormReport(NamedTuple):
    """What a layer tells ``verify`` about its operator norm (its L2 Lipschitz constant)."""

    method: str  # how ``norm`` was found: "svd", "lanczos", "residual (eigvalsh)", ...
    norm: float  # exact, or an estimate from below (Lanczos, converged to ~1e-6)
    upper_bound: float | None  # a guaranteed bound (a proof, up to float rounding), or None


class LipschitzLayer(nn.Module):
    """Base class of every Lipschitz layer family.

    A family implements ``forward``, ``reset_parameters`` (called at the end of
    ``__init__``, as torch's own layers do) and ``export``; it overrides ``norm_report``,
    ``lipschitz_bound`` and ``configure_eval`` where it knows better than the defaults, and
    sets ``affine = True`` when the layer is an affine map. Verification, export and
    certification take a ``LipschitzLayer`` whole and look at nothing else in it.
    """

    affine: bool = False  # an affine map: its Jacobian is the same at every input

    def reset_parameters(self) -> None:
        """(Re)initialises every parameter."""
        raise NotImplementedError(f"{type(self).__name__} must implement reset_parameters()")

    def export(self) -> nn.Module:
        """Plain modules (``nn.Conv2d``, ``nn.Linear``, ... or a small helper holding plain
        tensors) with this layer's eval-mode outputs. ``export_model`` calls it in eval mode
        under ``torch.no_grad`` and then freezes the result."""
        raise NotImplementedError(f"{type(self).__name__} must implement export()")

    def lipschitz_bound(self) -> float:
        """A guaranteed upper bound on the L2 Lipschitz constant of the eval-mode layer.

        ``verify`` checks the measured norm against it, and a model's
        ``lipschitz_constant`` (hence every certificate) multiplies the bounds of its
        layers. 1 for the 1-Lipschitz families; a layer with a larger constant (a residual
        block x + f(x), ...) computes it from its weights, and must never return an
        estimate that can fall below the truth (a truncated power iteration).
        """
        return 1.0

    def lipschitz_estimate(self) -> Tensor | float:
        """A cheap estimate of the same constant for training losses that use it (EMMA), with
        gradients to the weights where it depends on them; never used for a certificate.
        Default: the bound itself (a constant)."""
        return self.lipschitz_bound()

    def norm_report(
        self, inputs: Tensor, *, max_steps: int = 300, restarts: int = 2, generator: torch.Generator | None = None
    ) -> NormReport:
        """The operator norm of the eval-mode layer around ``inputs`` (a batch of what it sees
        in the network). Default: the largest singular value of the Jacobian by restarted
        Lanczos on J^T J, the maximum over the inputs and ``restarts`` random starts (one of
        each for an affine layer), with no upper bound."""
        return jacobian_norm_report(
            self, inputs, max_steps=max_steps, restarts=restarts, generator=generator, affine=self.affine
        )

    def configure_eval(self, **settings: Any) -> None:
        """Takes the evaluation settings this layer uses (names of the config's ``eval``
        section, e.g. ``power_iterations``) and ignores the others."""


def lipschitz_layers(module: nn.Module) -> Iterator[LipschitzLayer]:
    """The Lipschitz layers in ``module``, each taken whole (none inside another one)."""
    if isinstance(module, LipschitzLayer):
        yield module
        return
    for child in module.children():
        yield from lipschitz_layers(child)


def layers_lipschitz_bound(model: nn.Module) -> float:
    """The product of the model's Lipschitz layers' bounds (an upper bound on the model's
    constant when the layers are composed in sequence and everything else is 1-Lipschitz)."""
    return math.prod(layer.lipschitz_bound() for layer in lipschitz_layers(model))


def configure_model_eval(model: nn.Module, **settings: Any) -> nn.Module:
    """Hands the evaluation ``settings`` to every Lipschitz layer of ``model``; returns ``model``."""
    for module in model.modules():
        if isinstance(module, LipschitzLayer):
            module.configure_eval(**settings)
    return model


def jacobian_norm_report(
    module: nn.Module,
    inputs: Tensor,
    *,
    max_steps: int = 300,
    restarts: int = 2,
    generator: torch.Generator | None = None,
    affine: bool = False,
) -> NormReport:
    """The largest Jacobian singular value of ``module`` over the batch ``inputs`` (see
    ``LipschitzLayer.norm_report``); any module, in its current mode."""
    if affine:  # one input point and one Krylov space suffice for a fixed linear map
        inputs, restarts = inputs[:1], 1
    norm = max(jacobian_norm(module, point, max_steps, generator) for point in inputs.split(1) for _ in range(restarts))
    return NormReport("lanczos", norm, None)


def jacobian_norm(module: nn.Module, x: Tensor, max_steps: int, generator: torch.Generator | None = None) -> float:
    """Largest singular value of the Jacobian of ``module`` at ``x``."""
    vjp = torch.func.vjp(module, x)[1]  # (output, vjp_fn) without has_aux

    def gram(v: Tensor) -> Tensor:
        jv = torch.func.jvp(module, (x,), (v,))[1]  # (output, jvp_out) without has_aux
        return vjp(jv)[0]

    start = torch.randn(x.shape, generator=generator).to(x)
    with torch.no_grad():
        top = top_eigenpair(gram, start, max_steps).value
    return float(top.clamp_min(0).sqrt())


def dense_norm_report(weight: Tensor) -> NormReport:
    """The exact spectral norm of a dense layer's (effective) weight."""
    norm = float(torch.linalg.matrix_norm(weight.detach().double(), ord=2))
    return NormReport("svd", norm, norm)


def conv_fft_bound(kernel: Tensor, size: Sequence[int]) -> float:
    """``conv_norm_upper_bound`` in float64, as a float: a proof for verification reports."""
    return float(conv_norm_upper_bound(kernel.detach().double(), size))


def with_weights(layer: PlainLayer, weight: Tensor, bias: Tensor | None = None) -> PlainLayer:
    """``layer`` (a new ``nn.Linear``, ``nn.Conv2d``, ...) holding copies of ``weight`` and
    ``bias``, on their device and in their dtype: the usual body of ``export``."""
    layer = layer.to(device=weight.device, dtype=weight.dtype)
    # Tensor casts: torch types a module's attributes as ``Tensor | Module`` (its __getattr__)
    with torch.no_grad():
        cast(Tensor, layer.weight).copy_(weight)
        if bias is not None:
            cast(Tensor, layer.bias).copy_(bias)
    return layer


def plain_linear(weight: Tensor, bias: Tensor | None = None) -> nn.Linear:
    """An ``nn.Linear`` computing x -> weight x + bias (copies): a dense layer's ``export``."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    return with_weights(linear, weight, bias)


# ---------------------------------------------------------------------------------------
# Shared numerics


def weights_key(*tensors: Tensor) -> tuple:
    """Changes whenever any tensor is modified in place (optimizer step, load_state_dict)
    or replaced (``.to(device)``, ``.double()``): version counter, storage, dtype, device.
    Writes through ``.data`` (``p.data.mul_(3)``) bump no version counter: ``EvalCache``
    therefore also compares the weights themselves."""
    return tuple((t._version, t.data_ptr(), t.dtype, t.device, tuple(t.shape)) for t in tensors)


class EvalCache:
    """A value derived from some weights, kept until the weights change.

    A hit needs the same ``weights_key`` *and* weights equal to a snapshot taken when the
    value was computed: the version counter misses writes through ``.data``, and a stale
    normaliser would decide a bound (one comparison of the weights per call, small next to
    the layer's own work). A plain attribute (not a buffer): it is never saved in the state
    dict, and a copied module gets new storage, hence a new key, and recomputes.

    ``module``: compute on float64 values of the module's parameters and buffers and round
    the tensors of the result once to the module's precision. A float32 model in eval mode
    then holds the normalisers of its float64 copy (the model ``evaluate`` certifies), not
    its own float32 iteration's, so the two differ by float32 rounding only (issue 23).
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: Any = None  # what ``compute`` returned; each cache holds one kind of value
        self.snapshot: tuple[Tensor, ...] = ()

    def get(
        self,
        tensors: tuple[Tensor, ...],
        compute: Callable[[], Value],
        extra: tuple = (),
        module: nn.Module | None = None,
    ) -> Value:
        key = weights_key(*tensors) + extra
        if key != self.key or not self._unchanged(tensors):
            # inference_mode(False): a value first computed under inference_mode must stay
            # usable later by code that records autograd graphs (attacks, verification).
            with torch.inference_mode(False), torch.no_grad():
                self.value = compute() if module is None else computed_in_float64(module, compute)
                self.snapshot = tuple(t.detach().clone() for t in tensors)
            self.key = key
        return self.value

    def _unchanged(self, tensors: tuple[Tensor, ...]) -> bool:
        return len(tensors) == len(self.snapshot) and all(
            torch.equal(t.detach(), saved) for t, saved in zip(tensors, self.snapshot, strict=True)
        )

    def clear(self) -> None:
        self.key, self.value, self.snapshot = None, None, ()


_COMPLEX_OF = {torch.float32: torch.complex64, torch.float64: torch.complex128, torch.float16: torch.complex32}


def computed_in_float64(module: nn.Module, compute: Callable[[], Value]) -> Value:
    """``compute()`` run with every parameter and buffer of ``module`` in float64 (complex128),
    its tensors rounded back to the module's precision; the module is left as it was (same
    storage, same version counters)."""
    tensors = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point() or t.is_complex()]
    low = [t for t in tensors if t.dtype not in (torch.float64, torch.complex128)]
    if not low:
        return compute()
    dtype = next((t.dtype for t in low if t.is_floating_point()), torch.float32)
    originals = [t.data for t in low]
    # outside any torch.func transform (a cache can fill inside one, e.g. a jvp in verify):
    # the value is a constant, and swapping ``.data`` of a tensor a transform wraps is refused
    with torch._C._DisableFuncTorch():
        try:
            for t, data in zip(low, originals, strict=True):
                t.data = data.to(torch.complex128 if data.is_complex() else torch.float64)
            value = compute()
        finally:
            for t, data in zip(low, originals, strict=True):
                t.data = data
    return _rounded(value, dtype)


def _rounded(value: Any, dtype: torch.dtype) -> Any:
    if torch.is_tensor(value):
        if value.dtype == torch.float64:
            return value.to(dtype)
        return value.to(_COMPLEX_OF.get(dtype, torch.complex64)) if value.dtype == torch.complex128 else value
    if isinstance(value, tuple):
        return tuple(_rounded(v, dtype) for v in value)
    return value


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


def same_padding(kernel_size: tuple[int, int]) -> tuple[int, int]:
    """k // 2 on each side: the padding that keeps the image size for odd kernels."""
    return kernel_size[0] // 2, kernel_size[1] // 2


def spatial_size(x: Tensor) -> tuple[int, int]:
    """(H, W) of images (..., H, W)."""
    height, width = x.shape[-2:]
    return height, width


def check_channels(x: Tensor, channels: int, layer: str) -> None:
    if x.dim() < 2 or x.shape[1] != channels:
        raise ValueError(f"{layer} expects inputs of shape (batch, {channels}, ...), got {tuple(x.shape)}")


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
    assert estimate is not None  # max_steps >= 1: the loop ran at least once
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
