"""Checks that a network is 1-Lipschitz: per-layer operator norms and a network lower bound.

Per layer (each module the forward pass runs through, taken whole if it is a known layer):
- ``analytic``: parameter-free blocks that are 1-Lipschitz by construction (MaxMin,
  FirstChannels, PixelUnshuffle, ...): 1; BatchNorm in eval mode: max |gamma / std|.
- ``svd``: dense layers, the exact spectral norm of the effective weight.
- ``residual``: CPL/SLL layers y = x - up(s * relu(down(x) + b)). Their Jacobian norm is at
  most max(1, lambda_max(A) - 1) for A = up(s * down(.)) (all units active is the worst
  case); lambda_max by eigvalsh (dense) or restarted Lanczos (conv).
- ``lanczos``: everything else (convolutions, SOC, Cayley, unknown modules): the largest
  singular value of the Jacobian J at the layer's actual inputs, by restarted Lanczos on
  J^T J through jvp/vjp from random starts; the maximum over inputs and restarts (one of
  each for the affine convolutions, whose Jacobian does not depend on the input).
  For plain and AOL convolutions with zero or circular padding, ``upper_bound`` also gives
  the FFT bound: the layer is a restriction of a circular convolution on an
  (H + k - 1) x (W + k - 1) grid, whose norm is the largest norm of the per-frequency
  (out x in) matrices, so this bound is rigorous (up to float rounding).

Lanczos and power iteration approach the norm from below, so ``norm`` is an estimate
(converged to ~1e-6) and ``ok`` means norm <= 1 + tolerance; ``upper_bound``, where
given, is a proof. For the whole network, gradient ascent on ||g(x) - g(x')|| / ||x - x'||
gives an empirical *lower* bound on its Lipschitz constant, and the product of the
per-layer norms an estimate of the upper bound (valid for sequential networks).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from robustlab.nn.activations import GroupSort, MaxMin
from robustlab.nn.blocks import (
    CenterInputs,
    FirstChannels,
    Flatten,
    GlobalMaxPool,
    PixelUnshuffle,
    ZeroChannelConcatenation,
    ZeroPad,
)
from robustlab.nn.lipschitz import AOLConv2d, AOLLinear, CayleyConv2d, OrthogonalLinear, ResidualLipschitz, SOCConv2d
from robustlab.nn.lipschitz.base import conv_norm_upper_bound, top_eigenpair
from robustlab.progress import progress_bar

ONE_LIPSCHITZ_BLOCKS = (
    MaxMin,
    GroupSort,
    FirstChannels,
    ZeroChannelConcatenation,
    PixelUnshuffle,
    GlobalMaxPool,
    CenterInputs,
    Flatten,
    ZeroPad,
    nn.ReLU,
    nn.Identity,
    nn.Dropout,
)
LINEAR_LAYERS = (AOLConv2d, SOCConv2d, CayleyConv2d, nn.Conv2d)  # affine maps: the Jacobian is constant
KNOWN_LAYERS = (
    ResidualLipschitz,
    AOLLinear,
    OrthogonalLinear,
    nn.Linear,
    nn.BatchNorm2d,
    *LINEAR_LAYERS,
    *ONE_LIPSCHITZ_BLOCKS,
)


def verify_model(
    model: nn.Module,
    input_shape: Sequence[int],
    tolerance: float = 1e-4,
    *,
    max_steps: int = 300,
    restarts: int = 2,
    points: int = 2,
    attack_steps: int = 20,
    attack_restarts: int = 4,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Per-layer norm estimates and a network lower bound; ``report["ok"]`` if all <= 1 + tolerance.

    ``model`` is checked in eval mode (its mode is restored afterwards); ``input_shape`` is
    (C, H, W); random inputs are uniform in [0, 1] like images.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    shape = tuple(int(s) for s in input_shape)
    was_training = model.training
    model.eval()
    try:
        generator = torch.Generator().manual_seed(seed)
        units = _units(model)
        inputs = _record_inputs(model, units, _random_images(points, shape, model, generator))
        layers = []
        for name, module in progress_bar(units, "verify layers", "layer", progress):
            if name not in inputs:
                continue  # not on the forward path
            row = {
                "name": name,
                "type": type(module).__name__,
                **_layer_norm(module, inputs[name], max_steps, restarts, generator),
            }
            row["ok"] = bool(row["norm"] <= 1 + tolerance)
            layers.append(row)
        lower = network_lower_bound(model, shape, attack_steps, attack_restarts, seed, progress)
    finally:
        model.train(was_training)
    product = math.prod(row["norm"] for row in layers)
    return {
        "ok": all(row["ok"] for row in layers) and lower <= 1 + tolerance,
        "tolerance": tolerance,
        "input_shape": list(shape),
        "claimed_lipschitz": getattr(model, "lipschitz_constant", None),
        "layers": layers,
        "network": {"lower_bound": lower, "layer_product": product},
    }


# ---------------------------------------------------------------------------------------
# Which modules, and what they see


def _units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Known layers taken whole, other containers opened up to their leaves."""
    units, skip = [], ()
    for name, module in model.named_modules():
        if skip and name.startswith(skip):
            continue
        if isinstance(module, KNOWN_LAYERS) or not any(True for _ in module.children()):
            units.append((name or type(module).__name__, module))
            skip = tuple(s for s in (*skip, f"{name}.") if name)
    return units


def _random_images(count: int, shape: tuple[int, ...], model: nn.Module, generator: torch.Generator) -> Tensor:
    reference = next(iter(model.parameters()), None)
    if reference is None:
        reference = next(iter(model.buffers()), torch.zeros(()))
    images = torch.rand(count, *shape, generator=generator)
    return images.to(device=reference.device, dtype=reference.dtype if reference.is_floating_point() else torch.float32)


@torch.no_grad()
def _record_inputs(model: nn.Module, units: list[tuple[str, nn.Module]], images: Tensor) -> dict[str, Tensor]:
    inputs: dict[str, Tensor] = {}
    hooks = [module.register_forward_hook(_recorder(inputs, name)) for name, module in units]
    try:
        model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return inputs


def _recorder(inputs: dict[str, Tensor], name: str):
    def hook(module, args, output):
        inputs.setdefault(name, args[0].detach())

    return hook


# ---------------------------------------------------------------------------------------
# Per-layer norms


def _layer_norm(
    module: nn.Module, x: Tensor, max_steps: int, restarts: int, generator: torch.Generator
) -> dict[str, Any]:
    if isinstance(module, ONE_LIPSCHITZ_BLOCKS):
        return {"method": "analytic", "norm": 1.0, "upper_bound": 1.0}
    if isinstance(module, nn.BatchNorm2d):
        norm = _batchnorm_norm(module)
        return {"method": "analytic", "norm": norm, "upper_bound": norm}
    if isinstance(module, ResidualLipschitz):
        return _residual_norm(module, x[:1], max_steps, restarts, generator)
    if isinstance(module, (AOLLinear, OrthogonalLinear, nn.Linear)):
        weight = module.effective_weight() if hasattr(module, "effective_weight") else module.weight
        norm = _spectral_norm(weight.detach())
        return {"method": "svd", "norm": norm, "upper_bound": norm}
    if isinstance(module, LINEAR_LAYERS):  # a linear map: one input point and one Krylov space suffice
        x, restarts = x[:1], 1
    norm = max(_jacobian_norm(module, point, max_steps, generator) for point in x.split(1) for _ in range(restarts))
    return {"method": "lanczos", "norm": norm, "upper_bound": _conv_fft_bound(module, x.shape[-2:])}


def _spectral_norm(matrix: Tensor) -> float:
    return float(torch.linalg.matrix_norm(matrix.double(), ord=2))


def _batchnorm_norm(module: nn.BatchNorm2d) -> float:
    if module.running_var is None:
        raise ValueError("BatchNorm2d without running statistics has no fixed Lipschitz constant")
    scale = (module.running_var + module.eps).rsqrt()
    if module.weight is not None:
        scale = scale * module.weight.abs()
    return float(scale.detach().max())


@torch.no_grad()
def _residual_norm(module: ResidualLipschitz, x: Tensor, max_steps: int, restarts: int, generator) -> dict[str, Any]:
    scaled_weight = module.scaled_weight()

    def all_active(v: Tensor) -> Tensor:  # the forward pass's operator with every unit active
        return module.up(module.down(v), scaled_weight)

    if x.dim() == 2:  # dense: A is an explicit features x features matrix
        weight = module.weight.double()
        matrix = weight.t() @ (module.scale().double().view(-1, 1) * weight)
        top = float(torch.linalg.eigvalsh(matrix)[-1])
        method = "residual (eigvalsh)"
    else:
        starts = [torch.randn(x.shape, generator=generator).to(x) for _ in range(restarts)]
        top = max(float(top_eigenpair(all_active, start, max_steps).value) for start in starts)
        method = "residual (lanczos)"
    return {"method": method, "norm": max(1.0, top - 1.0), "upper_bound": None}


def _jacobian_norm(module: nn.Module, x: Tensor, max_steps: int, generator: torch.Generator) -> float:
    """Largest singular value of the Jacobian of ``module`` at ``x``."""
    _, vjp = torch.func.vjp(module, x)

    def gram(v: Tensor) -> Tensor:
        _, jv = torch.func.jvp(module, (x,), (v,))
        return vjp(jv)[0]

    start = torch.randn(x.shape, generator=generator).to(x)
    with torch.no_grad():
        top = top_eigenpair(gram, start, max_steps).value
    return float(top.clamp_min(0).sqrt())


@torch.no_grad()
def _conv_fft_bound(module: nn.Module, size: Sequence[int]) -> float | None:
    """Rigorous bound for zero/circular padded convolutions (see module docstring)."""
    if isinstance(module, AOLConv2d):
        kernel, mode = module.effective_weight(), module.padding_mode
    elif type(module) is nn.Conv2d and module.groups == 1 and module.dilation == (1, 1):
        kernel, mode = module.weight, module.padding_mode
    else:
        return None
    if mode not in ("zeros", "circular"):
        return None
    return float(conv_norm_upper_bound(kernel.double(), size))


# ---------------------------------------------------------------------------------------
# Whole network


def network_lower_bound(
    model: nn.Module,
    input_shape: Sequence[int],
    steps: int = 20,
    restarts: int = 4,
    seed: int = 0,
    progress: bool = False,
) -> float:
    """max ||g(x) - g(x')|| / ||x - x'|| found by gradient ascent from random pairs (eval mode)."""
    generator = torch.Generator().manual_seed(seed)
    x = _random_images(restarts, tuple(input_shape), model, generator)
    x_other = x + 1e-2 * torch.randn(x.shape, generator=generator).to(x)
    x.requires_grad_(True)
    x_other.requires_grad_(True)
    optimizer = torch.optim.Adam([x, x_other], lr=1e-2)
    best = torch.zeros((), device=x.device, dtype=x.dtype)
    for _ in progress_bar(range(max(1, steps)), "network lower bound", "step", progress):
        ratio = _ratios(model, x, x_other)
        best = torch.maximum(best, ratio.detach().max())
        optimizer.zero_grad(set_to_none=True)
        (-ratio.sum()).backward()
        optimizer.step()
    with torch.no_grad():
        best = torch.maximum(best, _ratios(model, x, x_other).max())
    return float(best)


def _ratios(model: nn.Module, x: Tensor, x_other: Tensor) -> Tensor:
    outputs = model(torch.cat((x, x_other)))
    out, out_other = outputs.chunk(2)
    numerator = (out - out_other).flatten(1).norm(dim=1)
    return numerator / (x - x_other).flatten(1).norm(dim=1).clamp_min(1e-12)
