"""Checks that a network is 1-Lipschitz (or within the bound it claims): per-layer operator
norms and a network lower bound.

Two modes. The default is fast (under a minute for the paper's LipConvNet on a CPU): layers with at
most ``EXACT_PARAMETERS`` parameters get the methods below; a larger affine layer gets the
Lanczos estimate of its norm from one start, without an upper bound. ``exact=True``
(``robustlab verify --exact``) gives every layer the methods below, at any size.

Per layer (each module the forward pass runs through, taken whole if it is a known layer):
- a ``LipschitzLayer`` (every layer family) reports its own norm through
  ``norm_report`` (exact SVD for dense layers, the all-units-active operator for residual
  layers, Lanczos plus an FFT upper bound for AOL convolutions, Lanczos on the Jacobian by
  default; see the families) and is checked against its own ``lipschitz_bound()`` (1 for
  the 1-Lipschitz families; computed from the weights, and above 1, for LiResNet's layers);
- ``analytic``: parameter-free blocks that are 1-Lipschitz by construction (MaxMin,
  FirstChannels, PixelUnshuffle, ...): 1; BatchNorm in eval mode: max |gamma / std|;
- ``svd``: ``nn.Linear``, the exact spectral norm of the weight;
- ``lanczos``: ``nn.Conv2d`` and unknown modules: the largest singular value of the
  Jacobian J at the layer's actual inputs, by restarted Lanczos on J^T J through jvp/vjp
  from random starts; the maximum over inputs and restarts (one of each for a
  convolution, whose Jacobian does not depend on the input). A plain convolution with zero
  or circular padding also gets the FFT bound as ``upper_bound``: the layer is a
  restriction of a circular convolution on an (H + k - 1) x (W + k - 1) grid, whose norm is
  the largest norm of the per-frequency (out x in) matrices, so this bound is rigorous (up
  to float rounding).

Lanczos and power iteration approach the norm from below, so ``norm`` is an estimate
(converged to ~1e-6) and ``ok`` means norm <= bound * (1 + tolerance); ``upper_bound``,
where given, is a proof. For the whole network, gradient ascent on
||g(x) - g(x')|| / ||x - x'|| gives an empirical *lower* bound on its Lipschitz constant,
and the product of the per-layer norms an estimate of the upper bound (valid for
sequential networks).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
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
from robustlab.nn.lipschitz import LipschitzLayer, NormReport
from robustlab.nn.lipschitz.base import conv_fft_bound, dense_norm_report, jacobian_norm_report
from robustlab.progress import Progress, progress_bar

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
KNOWN_LAYERS = (LipschitzLayer, nn.Linear, nn.Conv2d, nn.BatchNorm2d, *ONE_LIPSCHITZ_BLOCKS)


# The fast default (under a minute for the paper's LipConvNet on a CPU) and the thorough check. Fast:
# a layer with at most EXACT_PARAMETERS parameters gets its family's exact report (SVD, FFT
# upper bound, ...); a larger one the Lanczos estimate of its Jacobian norm at one input from
# one start (a lower estimate, converged to ~1e-6 on these spectra within 60 steps), and the
# network bound a shorter ascent. Exact: every layer's own report, more starts and steps.
EXACT_PARAMETERS = 2**17
FAST = {"max_steps": 60, "restarts": 1, "points": 1, "attack_steps": 10, "attack_restarts": 2}
EXACT = {"max_steps": 300, "restarts": 2, "points": 2, "attack_steps": 20, "attack_restarts": 4}


def verify_model(
    model: nn.Module,
    input_shape: Sequence[int],
    tolerance: float = 1e-4,
    *,
    exact: bool = False,
    max_steps: int | None = None,
    restarts: int | None = None,
    points: int | None = None,
    attack_steps: int | None = None,
    attack_restarts: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Per-layer norm estimates and a network lower bound; ``report["ok"]`` if all <= 1 + tolerance.

    ``model`` is checked in eval mode (its mode is restored afterwards); ``input_shape`` is
    (C, H, W); random inputs are uniform in [0, 1] like images. The default is the fast check
    (``FAST``: under a minute for LipConvNet); ``exact=True`` gives every layer its family's exact method and rigorous
    upper bounds (SVD, FFT), at any size (minutes for the 1024-channel layers of LipConvNet on a
    CPU). ``None`` settings take the mode's value. With ``progress``, one line per layer.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    settings = dict(EXACT if exact else FAST)
    given = dict(
        max_steps=max_steps,
        restarts=restarts,
        points=points,
        attack_steps=attack_steps,
        attack_restarts=attack_restarts,
    )
    settings.update({key: value for key, value in given.items() if value is not None})
    shape = tuple(int(s) for s in input_shape)
    was_training = model.training
    model.eval()
    try:
        generator = torch.Generator().manual_seed(seed)
        units = _units(model)
        layers = []
        mode = "exact" if exact else f"fast (layers over {EXACT_PARAMETERS} parameters: Lanczos; exact=True for all)"
        with Progress(len(units), "verify", "layer", progress) as bar:
            bar.line(f"{len(units)} layers, {mode}; first a forward pass to record each layer's inputs")
            images = _random_images(settings["points"], shape, model, generator)
            inputs = _record_inputs(model, units, images)
            for name, module in units:
                bar.update()
                if name not in inputs:
                    continue  # not on the forward path
                started = time.perf_counter()
                thorough = exact or _parameter_count(module) <= EXACT_PARAMETERS
                report = _layer_norm(
                    module, inputs[name], settings["max_steps"], settings["restarts"], generator, thorough
                )
                bound = module.lipschitz_bound() if isinstance(module, LipschitzLayer) else 1.0
                row = {"name": name, "type": type(module).__name__, **report._asdict(), "claimed": bound}
                layers.append({**row, "ok": bool(report.norm <= bound * (1 + tolerance))})
                if report.method != "analytic":
                    seconds = time.perf_counter() - started
                    bar.line(f"layer {name} ({row['type']}): {report.method} norm {report.norm:.6f} in {seconds:.1f}s")
            steps, pairs = settings["attack_steps"], settings["attack_restarts"]
            bar.line(f"network lower bound: gradient ascent, {steps} steps from {pairs} pairs of images")
            lower = network_lower_bound(model, shape, steps, pairs, seed, progress)
            bar.line(f"network lower bound: {lower:.6f}")
        claimed = getattr(model, "lipschitz_constant", None)
    finally:
        model.train(was_training)
    product = math.prod(row["norm"] for row in layers)
    network_ok = lower <= (1.0 if claimed is None else claimed) * (1 + tolerance)
    return {
        "ok": all(row["ok"] for row in layers) and network_ok,
        "tolerance": tolerance,
        "exact": exact,
        "input_shape": list(shape),
        "claimed_lipschitz": claimed,
        "layers": layers,
        "network": {"lower_bound": lower, "layer_product": product},
    }


def _parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------
# Which modules, and what they see


def _units(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Known layers taken whole, other containers opened up to their leaves."""
    units: list[tuple[str, nn.Module]] = []
    skip: tuple[str, ...] = ()
    for name, module in model.named_modules():
        if skip and name.startswith(skip):
            continue
        if isinstance(module, KNOWN_LAYERS) or not any(True for _ in module.children()):
            units.append((name or type(module).__name__, module))
            skip = tuple(s for s in (*skip, f"{name}.") if name)
    return units


def _random_images(count: int, shape: tuple[int, ...], model: nn.Module, generator: torch.Generator) -> Tensor:
    reference: Tensor | None = next(iter(model.parameters()), None)
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


def _recorder(inputs: dict[str, Tensor], name: str) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
    def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> None:
        inputs.setdefault(name, args[0].detach())

    return hook


# ---------------------------------------------------------------------------------------
# Per-layer norms


def _layer_norm(
    module: nn.Module, x: Tensor, max_steps: int, restarts: int, generator: torch.Generator, thorough: bool = True
) -> NormReport:
    if isinstance(module, LipschitzLayer):
        if not thorough and module.affine:  # a linear map: the Lanczos estimate of its norm, no upper bound
            return jacobian_norm_report(module, x, max_steps=max_steps, generator=generator, affine=True)
        return module.norm_report(x, max_steps=max_steps, restarts=restarts, generator=generator)
    if isinstance(module, ONE_LIPSCHITZ_BLOCKS):
        return NormReport("analytic", 1.0, 1.0)
    if isinstance(module, nn.BatchNorm2d):
        norm = _batchnorm_norm(module)
        return NormReport("analytic", norm, norm)
    if isinstance(module, nn.Linear) and thorough:
        return dense_norm_report(module.weight)
    if isinstance(module, (nn.Conv2d, nn.Linear)):  # a linear map: one input point and one Krylov space suffice
        report = jacobian_norm_report(module, x, max_steps=max_steps, generator=generator, affine=True)
        if thorough and isinstance(module, nn.Conv2d):
            return report._replace(upper_bound=_conv_fft_bound(module, x.shape[-2:]))
        return report
    return jacobian_norm_report(module, x, max_steps=max_steps, restarts=restarts, generator=generator)


def _batchnorm_norm(module: nn.BatchNorm2d) -> float:
    if module.running_var is None:
        raise ValueError("BatchNorm2d without running statistics has no fixed Lipschitz constant")
    scale = (module.running_var + module.eps).rsqrt()
    if module.weight is not None:
        scale = scale * module.weight.abs()
    return float(scale.detach().max())


def _conv_fft_bound(module: nn.Conv2d, size: Sequence[int]) -> float | None:
    """Rigorous bound for zero/circular padded plain convolutions (see module docstring)."""
    plain = type(module) is nn.Conv2d and module.groups == 1 and module.dilation == (1, 1)
    if not plain or module.padding_mode not in ("zeros", "circular"):
        return None
    return conv_fft_bound(module.weight, size)


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
