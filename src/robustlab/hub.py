"""The functions ``hubconf.py`` gives torch.hub: one per registered model."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from robustlab.nn.models import MODELS, create_model
from robustlab.runs.weights import fetch, load_model


def entry_point(name: str) -> Callable[..., nn.Module]:
    """``torch.hub.load(..., name_with_underscores, weights=PATH_OR_URL)`` for the registered model ``name``."""

    def load(
        weights: str | None = None,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        device: str = "cpu",
        **kwargs,
    ) -> nn.Module:
        if weights is not None:
            return load_model(fetch(weights), device, expected_name=name)
        return create_model(name, input_shape, num_classes, **kwargs).to(device)

    load.__name__ = name.replace("-", "_")
    load.__doc__ = (
        f"robustlab's '{name}': with weights=PATH_OR_URL (from `robustlab export`) that model in eval mode; "
        "without, a new one for images of input_shape (C, H, W) and num_classes."
    )
    return load


def entry_points() -> dict[str, Callable[..., nn.Module]]:
    return {name.replace("-", "_"): entry_point(name) for name in MODELS.names()}
