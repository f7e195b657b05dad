"""Adversarial attacks in the L2 norm, and the soundness check of certificates built on them.

Images are in the [0, 1] pixel scale, as the models take them (a model centres its own
inputs), so an attack radius is a certified radius without conversion. Attacks find
counterexamples; they never prove robustness. ``check_soundness`` attacks every certified
point at its own certified radius: a prediction that flips there means the certificate is
wrong (for instance a model whose claimed Lipschitz constant is false).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from robustlab.certify.evaluate import Certificates, _as_pixel_tensor, _to_float, precision_copy
from robustlab.certify.margins import margins
from robustlab.progress import progress_bar
from robustlab.registry import Registry

ATTACKS: Registry[Callable] = Registry("attack")


class AttackUnavailableError(ValueError):
    """An attack whose optional package is not installed (the user can choose another)."""


def ensure_available(name: str) -> Callable:
    """The attack ``name``, or a clear error before any work is done if it cannot run here."""
    attack = ATTACKS.get(name)
    if name == "autoattack":
        _import_autoattack()
    return attack


def _import_autoattack() -> Callable[[nn.Module, torch.Tensor, torch.Tensor, float, str], torch.Tensor]:
    """``run(model, x, y, eps, version)``: L2 AutoAttack's adversarial ``x``, from the authors' git
    package ``autoattack`` if installed, else PyPI's ``pyautoattack`` (the same attacks, packaged with
    another signature: keyword-only options, ``device``, ``batch_size``)."""
    try:
        from autoattack import AutoAttack

        def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, version: str) -> torch.Tensor:
            adversary = AutoAttack(model, norm="L2", eps=eps, version=version, verbose=False)
            return adversary.run_standard_evaluation(x, y, bs=len(x))

        return run
    except ImportError:
        pass
    try:
        from pyautoattack import AutoAttack as PyPIAutoAttack
    except ImportError:
        raise AttackUnavailableError(
            "the attack 'autoattack' needs AutoAttack, which is not installed; install it with "
            "`pip install 'robustlab[attacks]'` (PyPI's pyautoattack) or "
            "`pip install git+https://github.com/fra31/auto-attack`, or use --attack pgd"
        ) from None

    def run_pypi(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, version: str) -> torch.Tensor:
        adversary = PyPIAutoAttack(model, norm="L2", eps=eps, version=version, device=x.device)
        adversary.verbose = False
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=len(x))  # and the labels it predicts
        return x_adv

    return run_pypi


@ATTACKS.register("pgd")
def pgd_l2(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float | torch.Tensor,
    steps: int = 50,
    step_size: float | torch.Tensor | None = None,
    restarts: int = 1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Untargeted L2 PGD that minimises the margin ``z_y - max_{j != y} z_j``.

    ``eps`` is one radius or one per sample. The first restart starts at ``x`` (exact for
    locally linear models), later ones at random points of the ball; each takes ``steps`` normalised-gradient steps whose size decays from
    ``step_size`` (default ``4 * eps / steps``) to 0 on a cosine, and projects onto the
    ball and the [0, 1] box after every step. Returns, per sample, the point of lowest
    margin seen, so the result is never weaker than the clean input.
    """
    if steps < 1 or restarts < 1:
        raise ValueError(f"PGD needs steps >= 1 and restarts >= 1, got steps={steps}, restarts={restarts}")
    radius = _per_sample(eps, x)
    base_step = _per_sample(4 * radius.flatten() / steps if step_size is None else step_size, x)
    with torch.no_grad():
        best_x, best_margin = x, margins(model(x), y)
    for restart in range(restarts):
        delta = _random_in_ball(x, radius, generator) if restart else torch.zeros_like(x)
        delta = _project(x, delta, radius)
        for step in range(steps + 1):
            delta.requires_grad_(True)
            margin = margins(model(x + delta), y)
            with torch.no_grad():  # torch.where, not boolean indexing: no host sync per step
                better = margin < best_margin
                best_x = torch.where(better.view(-1, *([1] * (x.ndim - 1))), x + delta, best_x)
                best_margin = torch.where(better, margin, best_margin)
            if step == steps:
                break
            (grad,) = torch.autograd.grad(margin.sum(), delta)
            size = base_step * (1 + math.cos(math.pi * step / steps)) / 2
            with torch.no_grad():
                delta = _project(x, delta - size * _unit(grad), radius)
    return best_x.detach()


@ATTACKS.register("autoattack")
def autoattack_l2(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float | torch.Tensor,
    version: str = "standard",
    buckets: int = 8,
) -> torch.Tensor:
    """AutoAttack (Croce & Hein 2020) in the L2 norm, if ``autoattack`` or ``pyautoattack`` is installed.

    AutoAttack takes one radius per call; per-sample radii are grouped into ``buckets``
    by size and each group is attacked at its smallest radius, which is at most every
    member's own radius, so a counterexample it finds is a real one.
    """
    run = _import_autoattack()
    model32 = _Float32Inputs(model, x.dtype)  # AutoAttack's code makes float32 tensors of its own
    radius = _per_sample(eps, x).flatten()
    adversarial = x.clone()
    for group in torch.argsort(radius).tensor_split(buckets):
        if len(group) == 0 or radius[group].min() <= 0:
            continue
        found = run(model32, x[group].float(), y[group], radius[group].min().item(), version)
        adversarial[group] = found.to(x.dtype)
    return adversarial


class _Float32Inputs(nn.Module):
    """``model`` (e.g. the float64 copy certification uses) taking and giving float32 tensors.

    A counterexample is still judged on ``model`` itself, after ``check_soundness`` pulls the
    float32 point back into its ball."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype)).float()


def check_soundness(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    certificates: Certificates,
    attack: str = "pgd",
    batch_size: int = 500,
    device: torch.device | str = "cpu",
    progress: bool = False,
    **attack_options: object,
) -> dict[str, Any]:
    """Attack every certified point at its certified radius; any flip is a counterexample.

    The attack runs on the same float64 copy of the model that certification used, and a
    flip is judged there, so rounding in a lower precision cannot fake a counterexample.
    Also reports the largest observed ``margin drop / (sqrt(2) * |delta|)``, which cannot
    exceed the Lipschitz constant of a model that really has it.
    """
    if certificates.radii is None:
        raise ValueError("the model has no Lipschitz constant, so there are no certificates to check")
    attack_fn = ensure_available(attack)
    net = precision_copy(model, torch.float64, device)
    images = _as_pixel_tensor(images)
    certified = torch.nonzero(certificates.radii > 0).flatten()
    counterexamples, worst_ratio = [], 0.0
    batches = certified.split(batch_size)
    for index in progress_bar(batches, f"attack ({attack})", "batch", progress):
        x = _to_float(images[index], torch.float64, device)
        y = certificates.labels[index].to(device)
        radius = certificates.radii[index].to(device)
        x_adv = _inside_ball(x, attack_fn(net, x, y, radius, **attack_options), radius)
        with torch.no_grad():
            clean, attacked = net(x), net(x_adv)
        distance = (x_adv - x).flatten(1).norm(dim=1)
        drop = margins(clean, y) - margins(attacked, y)
        moved = distance > 0
        if moved.any():
            worst_ratio = max(worst_ratio, (drop[moved] / (math.sqrt(2) * distance[moved])).max().item())
        for i in torch.nonzero(attacked.argmax(dim=1) != y).flatten().tolist():
            counterexamples.append(
                {
                    "index": int(index[i]),
                    "label": int(y[i]),
                    "adversarial_prediction": int(attacked[i].argmax()),
                    "certified_radius": radius[i].item(),
                    "distance": distance[i].item(),
                }
            )
    return {
        "attack": attack,
        "checked": len(certified),
        "counterexamples": counterexamples,
        "sound": not counterexamples,
        "max_margin_drop_ratio": worst_ratio,
        "lipschitz_constant": certificates.lipschitz,
    }


def _per_sample(value: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A scalar or (N,) value as an (N, 1, 1, ...) tensor that broadcasts against ``x``."""
    value = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    return value.expand(len(x)).reshape(len(x), *([1] * (x.ndim - 1)))


def _unit(v: torch.Tensor) -> torch.Tensor:
    norms = v.flatten(1).norm(dim=1).clamp_min(1e-30)
    return v / norms.reshape(len(v), *([1] * (v.ndim - 1)))


def _random_in_ball(x: torch.Tensor, radius: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    direction = _unit(torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device))
    scale = torch.rand(len(x), generator=generator, dtype=x.dtype, device=x.device)
    return direction * radius * scale.reshape(radius.shape)


def _project(x: torch.Tensor, delta: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Onto the L2 ball, then the [0, 1] box; clamping can only shorten delta, as x is in the box."""
    norms = delta.flatten(1).norm(dim=1).reshape(radius.shape)
    shrink = (radius * (1 - 4 * torch.finfo(x.dtype).eps) / norms.clamp_min(1e-30)).clamp(max=1)
    return (x + delta * shrink).clamp(0, 1) - x


def _inside_ball(x: torch.Tensor, x_adv: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Pull an attack's output back into the ball it was given (attacks in lower precision round)."""
    radius = radius.reshape(len(x), *([1] * (x.ndim - 1)))
    return (x + _project(x, x_adv.to(x.dtype) - x, radius)).detach()
