"""The functions ``hubconf.py`` gives torch.hub: one per registered model."""

from __future__ import annotations

import hashlib
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustlab.nn.models import MODELS, create_model
from robustlab.runs.checkpoint import load_model


def entry_point(name: str) -> Callable[..., nn.Module]:
    """``torch.hub.load(..., name_with_underscores, weights=PATH_OR_URL)`` for the registered model ``name``."""

    def load(
        weights: str | None = None,
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        device: str = "cpu",
        **kwargs: Any,  # create_model's: mean and the model's own keyword arguments
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


def load_weights(weights: str, device: str = "cpu") -> nn.Module:
    """``torch.hub.load(..., "load_weights", weights=PATH_OR_URL)``: whatever model the file
    (from `robustlab export`) holds, rebuilt from its own architecture record, in eval mode."""
    return load_model(fetch(weights), device)


def entry_points() -> dict[str, Callable[..., nn.Module]]:
    """One entry per registered model (``lipconvnet_cpl``, ...) and ``load_weights`` for any file."""
    return {"load_weights": load_weights} | {name.replace("-", "_"): entry_point(name) for name in MODELS.names()}


def fetch(path_or_url: str | Path) -> Path:
    """A local weights file: ``path_or_url`` itself, or a URL downloaded once into torch.hub's cache."""
    text = str(path_or_url)
    if urllib.parse.urlparse(text).scheme not in ("http", "https", "file"):
        return Path(text).expanduser()
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    # named by the URL's hash too: two URLs of files called model.safetensors must not share a cache entry
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    target = folder / f"{digest}-{Path(urllib.parse.urlparse(text).path).name}"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(text, str(target), progress=False)
    return target
