"""Training losses, found by name through ``LOSSES`` (``build_loss(config, model)``).

The first two are ``T * CE((z - u * onehot(y)) / T, y)``:

* ``offset_ce`` (OffsetCrossEntropy, Prach & Lampert 2022): the offset ``u`` asks for a
  logit margin, which for a 1-Lipschitz network is a certified radius; the temperature
  ``T`` sets how sharply the loss saturates once the margin is reached.
* ``ce``: plain cross-entropy with a temperature and no offset. SimpleConvNet's recipe,
  ``CE(z / 8) * 8``, is ``ce`` with ``temperature: 8``.

Multiplying by ``T`` keeps the gradient scale comparable across temperatures, so one peak
learning rate works for a range of them.

* ``emma`` (efficient margin maximisation, Hu et al. 2023, the loss LiResNet trains with):
  every other class j is moved to where it could be after a perturbation of radius eps_j,
  z'_j = z_j + eps_j K_yj, with K the model's pairwise Lipschitz bounds
  (``margin_lipschitz(estimate=True)``, with gradients, so the loss also pulls the
  network's bound down) and eps_j = clip((z_y - z_j) / K_yj, 0.01 eps, eps) held constant
  (no gradient): the radius at which j would catch up with y, at most the training radius
  eps. Then ``T * CE(z' / T, y)``. Every threatening class is penalised at once, each at
  its own distance; the 0.01 eps floor (as the reference code) keeps a small pull on the
  bound of misclassified points.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.config import PAPER_EPS, ConfigError, LossConfig
from robustlab.registry import Registry

EMMA_FLOOR = 0.01  # eps_j >= EMMA_FLOOR * eps, as the reference code

LOSSES: Registry = Registry("loss")


class OffsetCrossEntropy(nn.Module):
    """``T * CE((z - offset * onehot(y)) / T, y)``, averaged over the batch."""

    def __init__(self, offset: float = math.sqrt(2) * PAPER_EPS, temperature: float = 0.25):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"the loss temperature must be positive, got {temperature}")
        self.offset = float(offset)
        self.temperature = float(temperature)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.offset:
            target = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
            logits = logits - self.offset * target
        return self.temperature * F.cross_entropy(logits / self.temperature, labels)

    def extra_repr(self) -> str:
        return f"offset={self.offset:.4g}, temperature={self.temperature:.4g}"


class EMMA(nn.Module):
    """``T * CE(z' / T, y)`` with z'_j = z_j + eps_j K_yj (see the module docstring).

    ``pair_bounds()`` returns K (classes x classes, zero diagonal) with gradients; it is
    called on every forward, as the bounds change with the weights.
    """

    def __init__(self, pair_bounds: Callable[[], torch.Tensor], eps: float = PAPER_EPS, temperature: float = 1.0):
        super().__init__()
        if temperature <= 0 or eps <= 0:
            raise ValueError(f"EMMA needs a positive eps and temperature, got eps={eps}, temperature={temperature}")
        self.pair_bounds, self.eps, self.temperature = pair_bounds, float(eps), float(temperature)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        bounds = self.pair_bounds().to(logits.dtype)[labels]  # (B, classes): K_yj
        with torch.no_grad():
            gaps = logits.gather(1, labels[:, None]) - logits
            reach = torch.where(bounds > 0, gaps / bounds, torch.full_like(gaps, self.eps))
            radius = reach.clamp(EMMA_FLOOR * self.eps, self.eps)
        worst = logits + radius * bounds  # K_yy = 0: the true logit stays
        return self.temperature * F.cross_entropy(worst / self.temperature, labels)

    def extra_repr(self) -> str:
        return f"eps={self.eps:.4g}, temperature={self.temperature:.4g}"


@LOSSES.register("offset_ce")
def _offset_ce(config: LossConfig, model: nn.Module | None) -> nn.Module:
    return OffsetCrossEntropy(config.offset, config.temperature)


@LOSSES.register("ce")
def _ce(config: LossConfig, model: nn.Module | None) -> nn.Module:
    return OffsetCrossEntropy(offset=0.0, temperature=config.temperature)


@LOSSES.register("emma")
def _emma(config: LossConfig, model: nn.Module | None) -> nn.Module:
    margin_lipschitz = getattr(model, "margin_lipschitz", None)
    if margin_lipschitz is None or getattr(model, "lipschitz_constant", None) is None:
        name = type(model).__name__ if model is not None else "no model"
        raise ConfigError(
            f"loss 'emma' needs the pairwise Lipschitz bounds of a certifiable model (got {name}); "
            "use it with a Lipschitz network (e.g. model.name=liresnet), or choose loss.name=offset_ce"
        )
    return EMMA(lambda: margin_lipschitz(estimate=True), config.eps, config.temperature)


def build_loss(config: LossConfig, model: nn.Module | None = None) -> nn.Module:
    """The loss ``config`` names; ``emma`` reads the bounds of ``model`` (the plain model, not
    a DDP or compiled wrapper: they share its parameters)."""
    return LOSSES.get(config.name)(config, model)
