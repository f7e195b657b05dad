"""Training losses, found by name through ``LOSSES``.

Both losses are ``T * CE((z - u * onehot(y)) / T, y)``:

* ``offset_ce`` (OffsetCrossEntropy, Prach & Lampert 2022): the offset ``u`` asks for a
  logit margin, which for a 1-Lipschitz network is a certified radius; the temperature
  ``T`` sets how sharply the loss saturates once the margin is reached.
* ``ce``: plain cross-entropy with a temperature and no offset. SimpleConvNet's recipe,
  ``CE(z / 8) * 8``, is ``ce`` with ``temperature: 8``.

Multiplying by ``T`` keeps the gradient scale comparable across temperatures, so one peak
learning rate works for a range of them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from robustlab.config import PAPER_EPS, LossConfig
from robustlab.registry import Registry

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


@LOSSES.register("offset_ce")
def _offset_ce(config: LossConfig) -> nn.Module:
    return OffsetCrossEntropy(config.offset, config.temperature)


@LOSSES.register("ce")
def _ce(config: LossConfig) -> nn.Module:
    return OffsetCrossEntropy(offset=0.0, temperature=config.temperature)


def build_loss(config: LossConfig) -> nn.Module:
    return LOSSES.get(config.name)(config)
