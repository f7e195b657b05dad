"""Export a trained model to plain torch modules with identical outputs.

- AOLConv2d / AOLLinear -> nn.Conv2d / nn.Linear with the rescaled weight W diag(d).
- OrthogonalLinear -> nn.Linear with the orthogonal matrix.
- CPL / SLL residual layers -> ``ResidualSubtract(Sequential(conv/linear, ReLU,
  conv_transpose/linear))``: y = x - up(relu(down(x))), the normaliser (2 / sigma^2 or
  2 / t) folded into ``up``'s weight.
- SOCConv2d -> ``TaylorSeriesConv``: the truncated series sum_j L^j x / j! of one plain
  nn.Conv2d holding the scaled skew kernel (a single composed kernel would differ at the
  borders, because zero padding does not compose).
- LiResNet's layers (``bounded.py``) -> nn.Conv2d / nn.Linear with the effective weight
  (I + W for a residual block, unit rows for the head). The exported network cannot
  compute its bound from plain layers, so it keeps the original's, frozen as a number.
- CayleyConv2d is kept as it is (a frequency-domain operator; its eval-mode frequency
  response is computed once and cached).
Everything else (blocks, activations, BatchNorm, plain layers) is copied. The export uses
the evaluation-mode normalisers, so it matches ``model.eval()``; the result is in eval mode
and holds no parameters that require gradients.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from robustlab.nn.lipschitz import AOLConv2d, AOLLinear, CayleyConv2d, OrthogonalLinear, ResidualLipschitz, SOCConv2d
from robustlab.nn.lipschitz.bounded import BOUNDED_LAYERS, bounded_layers
from robustlab.nn.lipschitz.soc import taylor_exp_conv


class ResidualSubtract(nn.Module):
    """y = x - branch(x)."""

    def __init__(self, branch: nn.Module):
        super().__init__()
        self.branch = branch

    def forward(self, x: Tensor) -> Tensor:
        return x - self.branch(x)


class TaylorSeriesConv(nn.Module):
    """y = sum_{j<=terms} conv^j(x) / j! + bias, with ``conv`` a plain bias-free nn.Conv2d."""

    def __init__(self, conv: nn.Conv2d, terms: int, bias: Tensor | None):
        super().__init__()
        self.conv, self.terms = conv, terms
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        y = taylor_exp_conv(x, self.conv.weight, self.terms, self.conv.padding)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"terms={self.terms}"


@torch.no_grad()
def export_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` made of plain modules, with the same eval-mode outputs."""
    was_training = model.training
    model.eval()
    try:
        exported = _export(model)
        if bounded_layers(model) and getattr(model, "builder_lipschitz", None) is not None:
            exported.builder_lipschitz = model.lipschitz_constant  # its layers no longer bring their own
    finally:
        model.train(was_training)
    exported.eval()
    for parameter in exported.parameters():
        parameter.requires_grad_(False)
    return exported


def _export(module: nn.Module) -> nn.Module:
    plain = _plain(module)
    if plain is not None:
        return plain
    clone = copy.copy(module)  # shallow: the children are replaced below
    clone._modules = {name: _export(child) if child is not None else None for name, child in module._modules.items()}
    clone._parameters = {name: _detached(p) for name, p in module._parameters.items()}
    clone._buffers = {name: b.clone() if b is not None else None for name, b in module._buffers.items()}
    return clone


def _detached(parameter):
    return None if parameter is None else nn.Parameter(parameter.detach().clone(), requires_grad=False)


def _plain(module: nn.Module) -> nn.Module | None:
    if isinstance(module, BOUNDED_LAYERS):
        return module.export()
    if isinstance(module, AOLConv2d):
        conv = nn.Conv2d(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            module.stride,
            module.padding,
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
        )
        return _filled(conv, module.effective_weight(), module.bias)
    if isinstance(module, (AOLLinear, OrthogonalLinear)):
        weight = module.effective_weight()
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=module.bias is not None)
        return _filled(linear, weight, module.bias)
    if isinstance(module, ResidualLipschitz):
        return _residual(module)
    if isinstance(module, SOCConv2d):
        kernel = module.scaled_kernel()
        conv = nn.Conv2d(module.channels, module.channels, module.kernel_size, padding=module.padding, bias=False)
        return TaylorSeriesConv(_filled(conv, kernel, None), module.eval_terms, module.bias)
    if isinstance(module, CayleyConv2d):
        return copy.deepcopy(module)
    return None


def _filled(layer: nn.Module, weight: Tensor, bias: Tensor | None) -> nn.Module:
    layer = layer.to(device=weight.device, dtype=weight.dtype)
    layer.weight.copy_(weight)
    if bias is not None:
        layer.bias.copy_(bias)
    return layer


def _residual(module: ResidualLipschitz) -> ResidualSubtract:
    weight, bias, scaled = module.weight, module.bias, module.scaled_weight()
    hidden, features = weight.shape[:2]
    if weight.dim() == 2:
        down = _filled(nn.Linear(features, hidden, bias=bias is not None), weight, bias)
        up = _filled(nn.Linear(hidden, features, bias=False), scaled.t(), None)
    else:
        kernel_size, padding = tuple(weight.shape[-2:]), module.padding
        down = _filled(nn.Conv2d(features, hidden, kernel_size, padding=padding, bias=bias is not None), weight, bias)
        up = _filled(nn.ConvTranspose2d(hidden, features, kernel_size, padding=padding, bias=False), scaled, None)
    return ResidualSubtract(nn.Sequential(down, nn.ReLU(), up))
