"""The model zoo: one registry, ``create_model(name, input_shape, num_classes, mean)``.

Every model is an ``ImageClassifier``: ``CenterInputs(mean)`` followed by the body, with
``lipschitz_constant`` (1.0 for 1-Lipschitz networks, None for standard ones, computed
from the weights for LiResNet), ``margin_lipschitz()``, ``input_shape`` and
``num_classes``. Lipschitz architectures take a layer family (``lipconvnet-cpl``,
``convnet-m-sll``, ``lipmlp-aol``, ...), see ``LAYER_FAMILIES``; ``liresnet`` is the
residual network of Hu et al. (2023) whose bound moves with its weights.

Other input sizes than 32x32: LipConvNet and ConvNet halve the resolution in each of
``blocks`` blocks (default: enough blocks to reach 1x1, at most 5, e.g. 3 for 8x8 digits)
and zero-pad the image up to a multiple of 2**blocks first (MNIST 28x28 -> 32x32); zero
padding is an isometry. SimpleConvNet skips the pools that would go below 1x1.
"""

from __future__ import annotations

import fnmatch
import inspect
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from robustlab.nn.activations import MaxMin
from robustlab.nn.blocks import (
    CenterInputs,
    FirstChannels,
    Flatten,
    GlobalMaxPool,
    PixelUnshuffle,
    ZeroChannelConcatenation,
    ZeroPad,
)
from robustlab.nn.lipschitz import LAYER_FAMILIES, LayerFamily
from robustlab.nn.lipschitz.base import layers_lipschitz_bound, lipschitz_layers
from robustlab.nn.lipschitz.bounded import BoundedConv2d, BoundedLinear, LiResConv2d, NormalizedLinear
from robustlab.records import ARCHITECTURE_VERSION
from robustlab.registry import Registry

# A builder returns the body's layers and the Lipschitz bound of all but its Lipschitz layers,
# which bring their own (``ImageClassifier.lipschitz_constant``); None: a standard network.
Builder = Callable[..., tuple[list[nn.Module], float | None]]
MODELS: Registry[Builder] = Registry("model")
CONVNET_WIDTHS = {"xs": 16, "s": 32, "m": 64, "l": 128}

# ARCHITECTURE_VERSION (robustlab.records, which the store reads without torch) is saved with
# the weights. Bumped when a layer starts to compute another function from the same weights;
# each change names the layer, so weights of models without it stay valid.
ARCHITECTURE_CHANGES: dict[int, tuple[type[nn.Module], str]] = {
    2: (MaxMin, "MaxMin pairs adjacent channels (version 1 paired the first and second half)"),
}
# Changes that add layers rather than change one: weights saved before them still load, into
# the model built with the keyword arguments that leave the new layers out (``legacy_kwargs``).
# Version 3: LipConvNet gained the reference code's 1x1 conv + MaxMin after the zero-channel
# concatenation (16 convolutions, as SPEC.md and berndprach/IntriguingProperties).
LEGACY_KWARGS: dict[int, dict[str, dict[str, object]]] = {3: {"lipconvnet-": {"stem": False}}}


def legacy_kwargs(name: str, saved_version: int) -> dict[str, object]:
    """The keyword arguments that rebuild model ``name`` as architecture ``saved_version`` built it."""
    kwargs: dict[str, object] = {}
    for version, by_prefix in LEGACY_KWARGS.items():
        if saved_version < version:
            for prefix, values in by_prefix.items():
                kwargs |= values if name.lower().startswith(prefix) else {}
    return kwargs


class ImageClassifier(nn.Sequential):
    """``CenterInputs`` then the body; takes pixel-scale images (B, C, H, W) in [0, 1].

    ``builder_lipschitz`` is the builder's bound for everything but the Lipschitz layers
    (1.0 for the 1-Lipschitz architectures; None for a standard network, which certifies
    nothing); each ``LipschitzLayer`` brings its own bound (see ``lipschitz_constant``).
    """

    def __init__(
        self,
        layers: Sequence[nn.Module],
        input_shape: tuple[int, int, int],
        num_classes: int,
        lipschitz_constant: float | None,
    ):
        super().__init__(*layers)
        self.input_shape = (*input_shape,)  # a tuple also when a caller passed a list
        self.num_classes = num_classes
        self.builder_lipschitz = lipschitz_constant

    @property
    def lipschitz_constant(self) -> float | None:
        """The network's L2 Lipschitz bound, which certificates use: the builder's bound times
        the product of the Lipschitz layers' own bounds (all 1 for the 1-Lipschitz families,
        computed from the weights for LiResNet's)."""
        if self.builder_lipschitz is None:
            return None
        return self.builder_lipschitz * layers_lipschitz_bound(self)

    def margin_lipschitz(self, estimate: bool = False) -> Tensor | None:
        """K (classes x classes): logit i - logit j changes by at most K_ij ||x - x'||.

        With a ``NormalizedLinear`` last layer (LiResNet), K_ij = (bound of everything
        before it) * ||w_i - w_j||, which is at most sqrt(2) * ``lipschitz_constant`` and
        often well below; otherwise sqrt(2) * ``lipschitz_constant`` off the diagonal. None
        for a standard network.

        Default: the guaranteed bound in float64, for certificates. ``estimate=True``: the
        cheap training estimate (power iteration) with gradients, for EMMA and the
        training CRA; it can be slightly below the bound and never certifies anything.
        """
        if self.builder_lipschitz is None:
            return None
        head = self[-1]
        if not isinstance(head, NormalizedLinear):
            reference = next(self.buffers())
            dtype = reference.dtype if estimate else torch.float64
            others = 1 - torch.eye(self.num_classes, dtype=dtype, device=reference.device)
            return math.sqrt(2) * self.builder_lipschitz * layers_lipschitz_bound(self) * others
        body = [m for m in lipschitz_layers(self) if m is not head]
        if estimate:
            return self.builder_lipschitz * math.prod(m.lipschitz_estimate() for m in body) * head.pair_norms()
        return self.builder_lipschitz * math.prod(m.lipschitz_bound() for m in body) * head.pair_norms(exact=True)

    def input_mean(self) -> Tensor:
        """The per-channel mean the first module (``CenterInputs``) subtracts, shape (C,)."""
        center = self[0]
        assert isinstance(center, CenterInputs), "an ImageClassifier starts with CenterInputs"
        return center.mean.flatten()


def create_model(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    mean: Sequence[float] | Tensor | None = None,
    **kwargs: object,
) -> ImageClassifier:
    """Builds the registered model ``name`` for images of ``input_shape`` (C, H, W)."""
    builder = MODELS.get(name)
    shape = _check_input_shape(input_shape)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    mean = torch.zeros(shape[0]) if mean is None else torch.as_tensor(mean, dtype=torch.float32).flatten()
    if mean.numel() != shape[0]:
        raise ValueError(f"mean has {mean.numel()} values but the images have {shape[0]} channels")
    _check_kwargs(name, builder, kwargs)
    body, lipschitz = builder(shape, num_classes, **kwargs)
    return ImageClassifier([CenterInputs(mean), *body], shape, num_classes, lipschitz)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style wildcard, e.g. ``list_models("lipconvnet-*")``."""
    return fnmatch.filter(MODELS.names(), pattern.lower())


def architecture_change(model: nn.Module, saved_version: int) -> str | None:
    """Why weights saved by architecture ``saved_version`` would compute another function in
    ``model`` (built by this version), or None when they fit."""
    if saved_version > ARCHITECTURE_VERSION:
        return f"they were saved by a newer robustlab (architecture version {saved_version}, this one builds {ARCHITECTURE_VERSION})"
    for version in range(saved_version + 1, ARCHITECTURE_VERSION + 1):
        if version not in ARCHITECTURE_CHANGES:  # a change legacy_kwargs rebuilds
            continue
        layer, change = ARCHITECTURE_CHANGES[version]
        if any(isinstance(module, layer) for module in model.modules()):
            return f"since architecture version {version}, {change}; they were saved by version {saved_version}"
    return None


def model_kwargs(name: str) -> dict[str, object]:
    """The keyword arguments model ``name`` accepts, with their defaults."""
    parameters = list(inspect.signature(MODELS.get(name)).parameters.values())[2:]
    return {p.name: p.default for p in parameters if p.kind == p.KEYWORD_ONLY}


def _check_kwargs(name: str, builder: Builder, kwargs: dict) -> None:
    accepted = model_kwargs(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        known = ", ".join(f"{k}={v!r}" for k, v in accepted.items()) or "none"
        raise ValueError(f"model '{name}' has no argument {unknown[0]!r}; it accepts: {known}")
    for key, value in kwargs.items():
        default = accepted[key]
        wrong_type = isinstance(default, bool) != isinstance(value, bool) or (
            isinstance(default, int) and not isinstance(value, int)
        )
        if wrong_type and default is not None:
            raise ValueError(f"model '{name}': {key} must be {type(default).__name__} like {default!r}, got {value!r}")


def _check_input_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"input_shape must be (channels, height, width) of positive ints, got {input_shape!r}")
    return shape


def _positive(name: str, **values: int) -> None:
    for key, value in values.items():
        if value is not None and value < 1:
            raise ValueError(f"model '{name}': {key} must be >= 1, got {value}")


# ---------------------------------------------------------------------------------------
# Standard network


@MODELS.register("simpleconvnet")
def simple_conv_net(
    input_shape: tuple[int, int, int], num_classes: int, *, width: int = 64
) -> tuple[list[nn.Module], None]:
    """The standard net of "94% on CIFAR-10 in 94 seconds": 8 conv-BN-ReLU, 3 max pools."""
    _positive("simpleconvnet", width=width)
    channels, height, image_width = input_shape
    plan = [
        (width, False),
        (width, False),
        (2 * width, True),
        (2 * width, False),
        (4 * width, True),
        (4 * width, False),
        (8 * width, True),
        (8 * width, False),
    ]
    layers: list[nn.Module] = []
    size = min(height, image_width)
    for out_channels, pool in plan:
        layers.append(nn.Conv2d(channels, out_channels, 3, padding=1, bias=False))
        if pool and size >= 2:  # pool before BatchNorm, skipped once the image is 1 pixel
            layers.append(nn.MaxPool2d(2))
            size //= 2
        layers += [nn.BatchNorm2d(out_channels), nn.ReLU()]
        channels = out_channels
    layers += [GlobalMaxPool(), Flatten(), nn.Linear(channels, num_classes, bias=False)]
    return layers, None


# ---------------------------------------------------------------------------------------
# 1-Lipschitz networks


def _downsampling_plan(
    name: str, input_shape: tuple[int, int, int], width: int, blocks: int | None
) -> tuple[int, list[nn.Module], tuple[int, int]]:
    """Blocks, the layers that pad and widen the input, and the padded image size."""
    channels, height, image_width = input_shape
    if blocks is None:
        blocks = min(5, max(1, math.ceil(math.log2(max(height, image_width)))))
    _positive(name, blocks=blocks, width=width)
    if width % 2 or width < channels:
        raise ValueError(f"model '{name}': width must be even and >= the {channels} input channels, got {width}")
    step = 2**blocks
    padded = (math.ceil(height / step) * step, math.ceil(image_width / step) * step)
    layers: list[nn.Module] = []
    if padded != (height, image_width):
        layers.append(ZeroPad(*padded))
    if width > channels:
        layers.append(ZeroChannelConcatenation(width))
    return blocks, layers, padded


def _downsample(channels: int) -> list[nn.Module]:
    """Keep half the channels, then trade resolution for channels: c -> 2c, size / 2."""
    return [FirstChannels(channels // 2), PixelUnshuffle(2)]


def lip_conv_net(
    input_shape: tuple[int, int, int],
    num_classes: int,
    family: str,
    *,
    width: int = 64,
    blocks: int | None = None,
    depth: int = 3,
    kernel_size: int = 3,
    stem: bool = True,
) -> tuple[list[nn.Module], float]:
    """LipConvNet as in the paper's reference code ('CPL-LCN'/'AOL-LCN'): after the zero-channel
    concatenation one 1x1 Lipschitz conv and MaxMin (``stem``; architecture version 3, absent in
    runs saved before it), then ``blocks`` of ``depth`` x [conv, MaxMin] and a downsampling."""
    name = f"lipconvnet-{family}"
    layer = LAYER_FAMILIES.get(family)
    _positive(name, depth=depth, kernel_size=kernel_size)
    blocks, layers, (height, image_width) = _downsampling_plan(name, input_shape, width, blocks)
    channels = width
    if stem:
        layers += [layer.conv(channels, 1, input_size=(height, image_width)), MaxMin()]
    for _ in range(blocks):
        for _ in range(depth):
            layers += [layer.conv(channels, kernel_size, input_size=(height, image_width)), MaxMin()]
        layers += _downsample(channels)
        channels, height, image_width = 2 * channels, height // 2, image_width // 2
    features = channels * height * image_width
    _check_enough(name, features, num_classes)
    layers += [Flatten(), layer.linear(features, features), FirstChannels(num_classes)]
    return layers, 1.0


def conv_net(
    input_shape: tuple[int, int, int],
    num_classes: int,
    family: str,
    size: str,
    *,
    width: int | None = None,
    blocks: int | None = None,
    depth: int = 5,
    kernel_size: int = 3,
) -> tuple[list[nn.Module], float]:
    """ConvNet of "1-Lipschitz layers compared" (sizes XS/S/M/L = width 16/32/64/128)."""
    name = f"convnet-{size}-{family}"
    layer = LAYER_FAMILIES.get(family)
    width = CONVNET_WIDTHS[size] if width is None else width
    _positive(name, depth=depth, kernel_size=kernel_size)
    blocks, layers, (height, image_width) = _downsampling_plan(name, input_shape, width, blocks)
    channels = width
    layers += [layer.conv(channels, 1, input_size=(height, image_width)), MaxMin()]
    for block in range(blocks):
        k = 1 if block == blocks - 1 else kernel_size
        for _ in range(depth):
            layers += [layer.conv(channels, k, input_size=(height, image_width)), MaxMin()]
        layers += _downsample(channels)
        channels, height, image_width = 2 * channels, height // 2, image_width // 2
    _check_enough(name, channels, num_classes)
    layers += [GlobalMaxPool(), layer.conv(channels, 1, input_size=(1, 1)), Flatten(), FirstChannels(num_classes)]
    return layers, 1.0


def lip_mlp(
    input_shape: tuple[int, int, int],
    num_classes: int,
    family: str,
    *,
    depth: int = 7,
    width: int | None = None,
    bias: bool = False,
) -> tuple[list[nn.Module], float]:
    """MLP: flatten, depth x [Lipschitz linear, MaxMin], Lipschitz linear, FirstChannels."""
    name = f"lipmlp-{family}"
    layer = LAYER_FAMILIES.get(family)
    features = math.prod(input_shape)
    width = features if width is None else width
    _positive(name, depth=depth, width=width)
    if width % 2:
        raise ValueError(f"model '{name}': width must be even for MaxMin, got {width} (give width=...)")
    _check_enough(name, width, num_classes)
    layers: list[nn.Module] = [Flatten()]
    for i in range(depth):
        layers += [layer.linear(features if i == 0 else width, width, bias), MaxMin()]
    layers += [layer.linear(width, width, bias), FirstChannels(num_classes)]
    return layers, 1.0


# ---------------------------------------------------------------------------------------
# A network whose bound is computed from its weights

NECK_PATCH = 4  # the neck turns non-overlapping 4x4 patches into vectors, as the reference's


@MODELS.register("liresnet")
def li_res_net(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    width: int = 64,
    depth: int = 12,
    features: int = 512,
    kernel_size: int = 3,
) -> tuple[list[nn.Module], float]:
    """LiResNet (Hu et al., NeurIPS 2023), sized for small images.

    Stem: images of side >= 16 are first halved by PixelUnshuffle(2) (MNIST 28 -> 14, CIFAR
    32 -> 16; the reference uses a stride-2 convolution), then a 3x3 ``BoundedConv2d`` to
    ``width`` channels and MaxMin. Body: ``depth`` x [``LiResConv2d`` (x + conv(x)), MaxMin]
    at that resolution. Neck: zero-pad to a multiple of 4, PixelUnshuffle(4) and a 1x1
    ``BoundedConv2d`` back to ``width`` channels (together: a conv with 4x4 kernel and
    stride 4), MaxMin, flatten, ``BoundedLinear`` to ``features``, MaxMin. Head:
    ``NormalizedLinear`` (unit-norm rows). The bound is the product of the layers' own.
    """
    _positive("liresnet", width=width, depth=depth, features=features, kernel_size=kernel_size)
    if width % 2 or features % 2:
        raise ValueError(f"model 'liresnet': width and features must be even for MaxMin, got {width} and {features}")
    channels, height, image_width = input_shape
    layers: list[nn.Module] = []
    if min(height, image_width) >= 16:
        layers += _padded_to(2, height, image_width) + [PixelUnshuffle(2)]
        channels, height, image_width = 4 * channels, math.ceil(height / 2), math.ceil(image_width / 2)
    size = (height, image_width)
    layers += [BoundedConv2d(channels, width, kernel_size, input_size=size), MaxMin()]
    for _ in range(depth):
        layers += [LiResConv2d(width, kernel_size, input_size=size), MaxMin()]
    layers += _padded_to(NECK_PATCH, height, image_width)
    patches = math.ceil(height / NECK_PATCH) * math.ceil(image_width / NECK_PATCH)
    layers += [PixelUnshuffle(NECK_PATCH), BoundedConv2d(width * NECK_PATCH**2, width, 1), MaxMin(), Flatten()]
    layers += [BoundedLinear(width * patches, features), MaxMin(), NormalizedLinear(features, num_classes)]
    return layers, 1.0


def _padded_to(multiple: int, height: int, width: int) -> list[nn.Module]:
    """ZeroPad up to the next multiple of ``multiple`` (an isometry), if needed."""
    padded = (math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple)
    return [] if padded == (height, width) else [ZeroPad(*padded)]


def _check_enough(name: str, features: int, num_classes: int) -> None:
    if features < num_classes:
        raise ValueError(
            f"model '{name}' ends with {features} features, fewer than the {num_classes} classes; increase width"
        )


def _bind(builder: Builder, **fixed: str) -> Builder:
    """``builder`` with ``family`` (and ``size``) fixed, keeping its keyword-only signature."""

    def build(
        input_shape: tuple[int, int, int], num_classes: int, **kwargs: object
    ) -> tuple[list[nn.Module], float | None]:
        return builder(input_shape, num_classes, **fixed, **kwargs)

    signature = inspect.signature(builder)
    kept = [p for p in signature.parameters.values() if p.name not in fixed]
    build.__signature__ = signature.replace(parameters=kept)  # type: ignore[attr-defined]  # what inspect reads
    build.__doc__ = builder.__doc__
    return build


def _register_lipschitz_models(name: str, family: LayerFamily) -> None:
    MODELS.add(f"lipconvnet-{name}", _bind(lip_conv_net, family=name))
    MODELS.add(f"lipmlp-{name}", _bind(lip_mlp, family=name))
    for size in CONVNET_WIDTHS:
        MODELS.add(f"convnet-{size}-{name}", _bind(conv_net, family=name, size=size))


LAYER_FAMILIES.on_add(_register_lipschitz_models)  # every family, also those registered later


def model_lr_scale(name: str) -> float:
    """The ``lr_scale`` of the layer family the registered model ``name`` is built of
    (``lipconvnet-soc`` -> soc's); 1 for models of no family (liresnet, simpleconvnet)."""
    family = name.lower().rsplit("-", 1)[-1]
    return LAYER_FAMILIES.get(family).lr_scale if family in LAYER_FAMILIES and name.lower() in MODELS else 1.0
