"""Weights that travel: one safetensors file holds a model's weights and its architecture record.

The record (safetensors metadata, JSON under ``robustlab.architecture``) is what
``create_model`` needs (name, kwargs, input_shape, num_classes, mean) plus the
architecture version and the CPL power-iteration steps, so ``load_model(path)`` rebuilds
the model without the run folder. ``robustlab.form`` says which model the weights are of:
``model`` (the registered network) or ``plain`` (its ``export_model`` copy of plain
convolutions, rebuilt by exporting the registered network and loading the plain weights).

Loading never unpickles: safetensors holds only tensors and strings, and a ``.pt`` file
is read with ``weights_only=True``. Weights of another model, or of an architecture
version that computes another function here, are refused with the reason.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustlab.errors import RobustlabError
from robustlab.nn.models import ARCHITECTURE_VERSION, ImageClassifier, architecture_change, create_model
from robustlab.registry import UnknownNameError
from robustlab.runs.store import atomic_open, safe_torch_load

FORMS = ("model", "plain")


class WeightsError(RobustlabError, ValueError):
    """A weights file that cannot be loaded here; the message says why and what would fit."""


def architecture_record(model: ImageClassifier, name: str, kwargs: dict[str, Any], power_iterations: int) -> dict:
    """What rebuilds ``model`` (the registered model ``name`` built with ``kwargs``) without its run."""
    return {
        "name": name,
        "kwargs": dict(kwargs),
        "input_shape": list(model.input_shape),
        "num_classes": model.num_classes,
        "mean": [float(m) for m in model[0].mean.flatten()],  # CenterInputs is the first layer
        "version": ARCHITECTURE_VERSION,
        "power_iterations": power_iterations,
    }


def save_safetensors(path: str | Path, model: nn.Module, architecture: dict, form: str = "model") -> Path:
    """Write ``model``'s weights and ``architecture`` record to ``path`` (atomically)."""
    from safetensors.torch import save

    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
    # clone: safetensors refuses tensors that share storage, and state dicts may hold views
    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in model.state_dict().items()}
    metadata = {"format": "pt", "robustlab.architecture": json.dumps(architecture), "robustlab.form": form}
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        handle.write(save(tensors, metadata=metadata))
    return path


def read_weights(path: str | Path) -> tuple[dict, dict[str, torch.Tensor], str]:
    """(architecture record, state dict, form) of a safetensors file or a robustlab ``model.pt``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist (or is not a file)")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    saved = safe_torch_load(path)
    if not isinstance(saved, dict) or "architecture" not in saved or "model" not in saved:
        raise WeightsError(f"{path} is not a robustlab weights file (no architecture and model entries)")
    return saved["architecture"], saved["model"], "model"


def _read_safetensors(path: Path) -> tuple[dict, dict[str, torch.Tensor], str]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as error:
        raise WeightsError(f"{path}: not a readable safetensors file ({error})") from None
    if "robustlab.architecture" not in metadata:
        raise WeightsError(
            f"{path}: a safetensors file without robustlab's architecture record; "
            "write it with `robustlab export RUN --format safetensors`"
        )
    try:
        architecture = json.loads(metadata["robustlab.architecture"])
    except json.JSONDecodeError:
        raise WeightsError(f"{path}: its architecture record is not valid JSON") from None
    return architecture, tensors, metadata.get("robustlab.form", "model")


def load_model(
    path: str | Path, device: str | torch.device = "cpu", expected_name: str | None = None
) -> ImageClassifier | nn.Module:
    """The model a weights file describes, with its weights, in eval mode.

    ``path`` is a safetensors file from ``robustlab export`` or a run's ``model.pt``.
    ``expected_name`` (a registered model name) refuses weights of any other model.
    """
    architecture, state, form = read_weights(path)
    name = architecture.get("name", "?")
    if expected_name is not None and name.lower() != expected_name.lower():
        raise WeightsError(f"{path} holds weights of a '{name}' model, not of '{expected_name}'")
    model = _skeleton(architecture, Path(path))
    change = architecture_change(model, architecture.get("version", 1))
    if change:
        raise WeightsError(f"{path} does not fit this robustlab's '{name}' model: {change}. Train it again.")
    if form == "plain":
        model = _plain_skeleton(model)
    elif form != "model":
        raise WeightsError(f"{path}: unknown weights form {form!r}; this robustlab reads {', '.join(FORMS)}")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise WeightsError(f"{path} does not fit the '{name}' model it names: {str(error).splitlines()[0]}") from None
    return model.to(device).eval()


def _plain_skeleton(model: ImageClassifier) -> nn.Module:
    """The plain modules ``export_model`` makes of ``model``, whose weights are about to be replaced."""
    from robustlab.nn.export import export_model

    _set_power_iterations(model, 0)  # CPL: the cheap FFT bound, not 1000 Lanczos steps on random weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ... which warns that it is loose: irrelevant here
        return export_model(model)


def _set_power_iterations(model: nn.Module, steps: int) -> None:
    for module in model.modules():  # CPL layers: power-iteration steps when evaluating
        if hasattr(module, "eval_iterations"):
            module.eval_iterations = steps


def _skeleton(architecture: dict, path: Path) -> ImageClassifier:
    """The registered model of the record, with random weights."""
    try:
        model = create_model(
            architecture["name"],
            tuple(architecture["input_shape"]),
            architecture["num_classes"],
            mean=architecture["mean"],
            **architecture.get("kwargs", {}),
        )
    except (UnknownNameError, ValueError) as error:  # a model this robustlab does not have, or bad arguments
        raise WeightsError(f"{path}: cannot build its model: {error}") from None
    except KeyError as error:
        raise WeightsError(f"{path}: the architecture record has no {error}") from None
    _set_power_iterations(model, architecture.get("power_iterations", 1000))
    return model


def export_run(run_dir: str | Path, out: str | Path | None = None, plain: bool = False) -> Path:
    """Write a run's model (or with ``plain`` its ``export_model`` copy) as a safetensors file
    that ``load_model`` reads without the run; default: ``RUN/model.safetensors`` (``model-plain``)."""
    from robustlab.train.loop import load_run_model

    model, config = load_run_model(run_dir)
    architecture = architecture_record(model, config.model.name, config.model.kwargs, config.eval.power_iterations)
    if plain:
        from robustlab.nn.export import export_model

        model = export_model(model)
    out = Path(out) if out else Path(run_dir) / ("model-plain.safetensors" if plain else "model.safetensors")
    return save_safetensors(out, model, architecture, "plain" if plain else "model")


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
