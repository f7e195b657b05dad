"""Export a trained model to plain torch modules with identical outputs.

Every ``LipschitzLayer`` is replaced by what its ``export()`` returns (plain ``nn.Conv2d``,
``nn.Linear``, ... with the eval-mode normaliser folded into the weights; see each family,
and docs/layers.md); everything else (blocks, activations, BatchNorm, plain layers) is
copied. The export uses the evaluation-mode normalisers, so it matches ``model.eval()``;
the result is in eval mode and holds no parameters that require gradients.

Plain layers bring no bound of their own, so an exported ``ImageClassifier`` is an
``ExportedClassifier`` holding the original's certificate constants frozen: its
``lipschitz_constant`` and its pairwise ``margin_lipschitz()`` (LiResNet's are computed from
its weights, and would otherwise be lost). They are plain attributes, not weights: a plain
file is loaded by exporting the registered network its weights came from
(``runs.checkpoint.load_model``), so the constants always come from the weights.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from robustlab.nn.lipschitz import LipschitzLayer
from robustlab.nn.models import ImageClassifier


class ExportedClassifier(ImageClassifier):
    """An ``ImageClassifier`` of plain modules with the certificate constants of the model it
    was exported from (float64, guaranteed, as that model computed them)."""

    def __init__(
        self,
        layers: Sequence[nn.Module],
        input_shape: tuple[int, int, int],
        num_classes: int,
        lipschitz: float | None,
        margins: Tensor | None,
    ):
        super().__init__(layers, input_shape, num_classes, lipschitz)
        self.frozen_margins = margins

    @property
    def lipschitz_constant(self) -> float | None:
        return self.builder_lipschitz

    def margin_lipschitz(self, estimate: bool = False) -> Tensor | None:
        if self.frozen_margins is None:
            return None
        reference = next(self.buffers())  # CenterInputs' mean: the model's device
        return self.frozen_margins.to(device=reference.device)


@torch.no_grad()
def export_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` made of plain modules, with the same eval-mode outputs."""
    was_training = model.training
    model.eval()
    try:
        exported = _export(model)
        if isinstance(model, ImageClassifier):
            margins = model.margin_lipschitz()
            exported = ExportedClassifier(
                list(exported.children()),
                model.input_shape,
                model.num_classes,
                model.lipschitz_constant,
                None if margins is None else margins.detach().to("cpu", torch.float64).clone(),
            )
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


def _detached(parameter: nn.Parameter | None) -> nn.Parameter | None:
    return None if parameter is None else nn.Parameter(parameter.detach().clone(), requires_grad=False)
