"""1-Lipschitz layer families and the LAYER_FAMILIES registry.

Every layer is a ``LipschitzLayer`` (``base.py``): a new family is one file with its
layers plus one ``_register`` line below (CONTRIBUTING.md, "Adding a layer family").
A family gives two factories, so that any family plugs into any architecture:
``conv(channels, kernel_size=3, *, input_size=None)`` (channels -> channels, 'same' size;
``input_size`` (H, W) lets CPL size its power-iteration vector up front, and LOT export for it) and
``linear(in_features, out_features, bias=True)``. Residual and orthogonal layers map a
space to itself; for in != out their linear factory wraps the square layer between
ZeroChannelConcatenation and FirstChannels, both 1-Lipschitz.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from robustlab.nn.blocks import FirstChannels, ZeroChannelConcatenation
from robustlab.nn.lipschitz import aoc, aol, bcop, bro, cpl, lot, orthogonal, sandwich, sll, soc
from robustlab.nn.lipschitz.aoc import AOCConv2d
from robustlab.nn.lipschitz.aol import AOLConv2d, AOLLinear
from robustlab.nn.lipschitz.base import LipschitzLayer, NormReport, configure_model_eval, lipschitz_layers
from robustlab.nn.lipschitz.bcop import BCOPConv2d, BjorckLinear
from robustlab.nn.lipschitz.bro import BROConv2d, BROLinear
from robustlab.nn.lipschitz.cpl import CPLConv2d, CPLLinear
from robustlab.nn.lipschitz.lot import LOTConv2d, LOTLinear
from robustlab.nn.lipschitz.orthogonal import CayleyConv2d, OrthogonalLinear
from robustlab.nn.lipschitz.residual import ResidualLipschitz
from robustlab.nn.lipschitz.sandwich import SandwichConv2d, SandwichLinear
from robustlab.nn.lipschitz.sll import SLLConv2d, SLLLinear
from robustlab.nn.lipschitz.soc import SOCConv2d
from robustlab.registry import Registry

__all__ = [
    "LAYER_FAMILIES",
    "AOCConv2d",
    "AOLConv2d",
    "AOLLinear",
    "BCOPConv2d",
    "BROConv2d",
    "BROLinear",
    "BjorckLinear",
    "CPLConv2d",
    "CPLLinear",
    "CayleyConv2d",
    "LOTConv2d",
    "LOTLinear",
    "LayerFamily",
    "LipschitzLayer",
    "NormReport",
    "OrthogonalLinear",
    "ResidualLipschitz",
    "SLLConv2d",
    "SLLLinear",
    "SOCConv2d",
    "SandwichConv2d",
    "SandwichLinear",
    "configure_model_eval",
    "lipschitz_layers",
]


@dataclass(frozen=True)
class LayerFamily:
    name: str
    description: str
    conv: Callable[..., nn.Module]
    linear: Callable[..., nn.Module]
    # the lr this family trains at, relative to AOL's and CPL's (the presets'): measured on
    # digits, the family file's ``LR_SCALE``; applied when a preset's model is swapped
    # (``train.optim.lr_for_swapped_model``)
    lr_scale: float = 1.0


LAYER_FAMILIES: Registry[LayerFamily] = Registry("layer family")


def _square_linear(make: Callable[[int, bool], nn.Module]) -> Callable[..., nn.Module]:
    """Turns a features -> features layer, ``make(features, bias)``, into an in -> out one
    (see module docstring)."""

    def linear(in_features: int, out_features: int, bias: bool = True) -> nn.Module:
        width = max(in_features, out_features)
        layers: list[nn.Module] = [] if in_features == width else [ZeroChannelConcatenation(width)]
        layers.append(make(width, bias))
        if out_features < width:
            layers.append(FirstChannels(out_features))
        return layers[0] if len(layers) == 1 else nn.Sequential(*layers)

    return linear


def _register(
    name: str,
    description: str,
    conv: Callable[..., nn.Module],
    linear: Callable[..., nn.Module],
    lr_scale: float = 1.0,
) -> None:
    LAYER_FAMILIES.add(name, LayerFamily(name, description, conv, linear, lr_scale))


_register(
    "aol",
    "almost-orthogonal layers: weights rescaled by d_i = (sum_j |P^T P|_ij)^-1/2",
    conv=lambda channels, kernel_size=3, *, input_size=None: AOLConv2d(channels, channels, kernel_size),
    linear=lambda in_features, out_features, bias=True: AOLLinear(in_features, out_features, bias),
    lr_scale=aol.LR_SCALE,
)
_register(
    "cpl",
    "convex potential layers: x - 2/sigma^2 W^T relu(Wx + b)",
    conv=lambda channels, kernel_size=3, *, input_size=None: CPLConv2d(channels, kernel_size, input_size=input_size),
    linear=_square_linear(lambda width, bias: CPLLinear(width, bias=bias)),
    lr_scale=cpl.LR_SCALE,
)
_register(
    "sll",
    "SDP-based Lipschitz layers: x - 2 W T^-1 relu(W^T x + b)",
    conv=lambda channels, kernel_size=3, *, input_size=None: SLLConv2d(channels, kernel_size),
    linear=_square_linear(lambda width, bias: SLLLinear(width, bias=bias)),
    lr_scale=sll.LR_SCALE,
)
_register(
    "soc",
    "skew orthogonal convolutions (Taylor series of exp), orthogonal dense layers",
    conv=lambda channels, kernel_size=3, *, input_size=None: SOCConv2d(channels, kernel_size),
    linear=lambda in_features, out_features, bias=True: OrthogonalLinear(in_features, out_features, bias),
    lr_scale=soc.LR_SCALE,
)
_register(
    "orthogonal",
    "exactly orthogonal layers: Cayley convolutions (circular padding), orthogonal dense layers",
    conv=lambda channels, kernel_size=3, *, input_size=None: CayleyConv2d(channels, kernel_size),
    linear=lambda in_features, out_features, bias=True: OrthogonalLinear(in_features, out_features, bias),
    lr_scale=orthogonal.LR_SCALE,
)
_register(
    "bcop",
    "block convolution orthogonal parametrization (Björck-orthonormalised projectors), Björck dense layers",
    conv=lambda channels, kernel_size=3, *, input_size=None: BCOPConv2d(
        channels, channels, kernel_size, input_size=input_size
    ),
    linear=lambda in_features, out_features, bias=True: BjorckLinear(in_features, out_features, bias),
    lr_scale=bcop.LR_SCALE,
)
_register(
    "lot",
    "layer-wise orthogonal training: V (V^H V)^-1/2 per frequency by Newton-Schulz (circular padding)",
    conv=lambda channels, kernel_size=3, *, input_size=None: LOTConv2d(channels, kernel_size, input_size=input_size),
    linear=lambda in_features, out_features, bias=True: LOTLinear(in_features, out_features, bias),
    lr_scale=lot.LR_SCALE,
)
_register(
    "aoc",
    "adaptive orthogonal convolutions (orthogonium, stride 1): reflectors and 2x2 block convolutions, Björck dense",
    conv=lambda channels, kernel_size=3, *, input_size=None: AOCConv2d(
        channels, channels, kernel_size, input_size=input_size
    ),
    linear=lambda in_features, out_features, bias=True: BjorckLinear(in_features, out_features, bias, iterations=12),
    lr_scale=aoc.LR_SCALE,
)
_register(
    "sandwich",
    "sandwich layers: sqrt2 A^T Psi relu(sqrt2 Psi^-1 B x + b), [A B] a Cayley transform (conv: per frequency, circular)",
    conv=lambda channels, kernel_size=3, *, input_size=None: SandwichConv2d(
        channels, channels, kernel_size, input_size=input_size
    ),
    linear=lambda in_features, out_features, bias=True: SandwichLinear(in_features, out_features, bias),
    lr_scale=sandwich.LR_SCALE,
)
_register(
    "bro",
    "block reflector orthogonal layers: W = I - 2 V (V^T V)^-1 V^T (conv: per frequency, zero padding)",
    conv=lambda channels, kernel_size=3, *, input_size=None: BROConv2d(
        channels, channels, kernel_size, input_size=input_size
    ),
    linear=lambda in_features, out_features, bias=True: BROLinear(in_features, out_features, bias),
    lr_scale=bro.LR_SCALE,
)
