"""Export a trained model to plain torch modules with identical outputs.

Every ``LipschitzLayer`` is replaced by what its ``export()`` returns (plain ``nn.Conv2d``,
``nn.Linear``, ... with the eval-mode normaliser folded into the weights; see each family,
and docs/layers.md); everything else (blocks, activations, BatchNorm, plain layers) is
copied. The export uses the evaluation-mode normalisers, so it matches ``model.eval()``;
the result is in eval mode and holds no parameters that require gradients. Plain layers
bring no bound of their own, so the exported network keeps the original's Lipschitz
constant frozen as a number (``builder_lipschitz``): LiResNet's is computed from its
weights, and would otherwise be lost.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from robustlab.nn.lipschitz import LipschitzLayer


@torch.no_grad()
def export_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` made of plain modules, with the same eval-mode outputs."""
    was_training = model.training
    model.eval()
    try:
        exported = _export(model)
        if getattr(model, "builder_lipschitz", None) is not None:
            exported.builder_lipschitz = model.lipschitz_constant
    finally:
        model.train(was_training)
    exported.eval()
    for parameter in exported.parameters():
        parameter.requires_grad_(False)
    return exported


def _export(module: nn.Module) -> nn.Module:
    if isinstance(module, LipschitzLayer):
        return module.export()
    clone = copy.copy(module)  # shallow: the children are replaced below
    clone._modules = {name: _export(child) if child is not None else None for name, child in module._modules.items()}
    clone._parameters = {name: _detached(p) for name, p in module._parameters.items()}
    clone._buffers = {name: b.clone() if b is not None else None for name, b in module._buffers.items()}
    return clone


def _detached(parameter):
    return None if parameter is None else nn.Parameter(parameter.detach().clone(), requires_grad=False)
