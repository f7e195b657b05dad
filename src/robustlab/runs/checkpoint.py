"""Checkpoints, RNG state and a run's model: what a run folder's weights files hold and how
to rebuild a model from them.

``model.pt`` and ``checkpoint.pt`` are dicts of tensors and plain data only (they load with
``weights_only=True``): ``architecture`` {name, input_shape, num_classes, mean, kwargs,
version} and ``model`` (the state dict); the checkpoint adds ``optimizer``, ``schedule``,
``state`` (a ``TrainState``) and ``rng``. Loading refuses weights whose architecture
version computes another function in this robustlab's model
(``robustlab.nn.models.architecture_change``).

Weights that travel: ``robustlab export`` writes one safetensors file holding the weights
and, in its metadata (JSON under ``robustlab.architecture``), the architecture record plus
the CPL power-iteration steps, so ``load_model(path)`` rebuilds the model without the run
folder. ``robustlab.form`` says which model the weights are of: ``model`` (the registered
network) or ``plain`` (its ``export_model`` copy of plain convolutions). A plain file also
holds the registered network's weights (``source.`` keys): loading exports them again, so
the plain model's Lipschitz constant and pairwise bounds are computed from weights, never
taken from a skeleton, and refuses plain weights that are not their export. Loading never unpickles:
safetensors holds only tensors and strings, and a ``model.pt`` is read with
``weights_only=True``.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from robustlab.config import ExperimentConfig
from robustlab.data.splits import PreparedData
from robustlab.errors import RobustlabError, one_line
from robustlab.files import atomic_open, atomic_torch_save, safe_torch_load
from robustlab.nn.export import export_model
from robustlab.nn.lipschitz import configure_model_eval
from robustlab.nn.models import (
    ARCHITECTURE_VERSION,
    ImageClassifier,
    architecture_change,
    create_model,
    legacy_kwargs,
)
from robustlab.registry import UnknownNameError
from robustlab.runs.store import Run


@dataclass
class TrainState:
    """Where a run stands; saved in the checkpoint."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    train_time_s: float = 0.0  # time spent training so far, over all resumptions
    history: dict = field(default_factory=dict)  # last epoch's training metrics


def model_architecture(config: ExperimentConfig, data: PreparedData) -> dict:
    """What it takes to rebuild the model without the data; saved with its weights."""
    return {
        "name": config.model.name,
        "input_shape": list(data.input_shape),
        "num_classes": data.num_classes,
        "mean": [float(m) for m in data.mean],
        "kwargs": dict(config.model.kwargs),
        "version": ARCHITECTURE_VERSION,
    }


def build_model(config: ExperimentConfig, data: PreparedData) -> nn.Module:
    """A fresh model for ``config`` on ``data`` (random weights)."""
    return create_from_architecture(model_architecture(config, data), config.eval.power_iterations)


def create_from_architecture(architecture: dict, power_iterations: int) -> ImageClassifier:
    """The model an ``architecture`` dict describes (random weights); CPL layers evaluate
    with ``power_iterations`` steps."""
    model = create_model(
        architecture["name"],
        tuple(architecture["input_shape"]),
        architecture["num_classes"],
        mean=torch.tensor(architecture["mean"], dtype=torch.float32),
        **{**legacy_kwargs(architecture["name"], architecture.get("version", 1)), **architecture["kwargs"]},
    )
    configure_model_eval(model, power_iterations=power_iterations)
    return model


def rng_states() -> dict:
    """The torch, CUDA, NumPy and Python generators' states, as tensors and plain data."""
    numpy_state = cast(tuple[Any, ...], np.random.get_state())  # legacy form: (name, keys, pos, ...)
    states = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(numpy_state[1].astype(np.int64)),
        "numpy_rest": [int(numpy_state[2]), int(numpy_state[3]), float(numpy_state[4])],
        "python": list(random.getstate()[1]),
        "python_gauss": random.getstate()[2],
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(("MT19937", states["numpy"].numpy().astype(np.uint32), *states["numpy_rest"]))
    random.setstate((3, tuple(states["python"]), states["python_gauss"]))
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: LRScheduler,
    state: TrainState,
    architecture: dict[str, Any],
) -> None:
    """Everything needed to continue, as tensors and plain data only (loads with weights_only=True)."""
    atomic_torch_save(
        {
            "architecture": architecture,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "state": asdict(state),
            "rng": rng_states(),
        },
        path,
    )


def save_model(path: str | Path, model: nn.Module, architecture: dict[str, Any]) -> None:
    """The final weights (``model.pt``): the checkpoint without the training state."""
    atomic_torch_save({"architecture": architecture, "model": model.state_dict()}, path)


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: LRScheduler,
    device: torch.device,
) -> TrainState:
    """Restore model, optimizer, schedule and RNG states from ``path``; returns where the run stood."""
    checkpoint = safe_torch_load(path, map_location=device)
    load_weights(model, checkpoint, path)
    optimizer.load_state_dict(checkpoint["optimizer"])
    schedule.load_state_dict(checkpoint["schedule"])
    set_rng_states(_to_cpu(checkpoint["rng"]))
    return TrainState(**checkpoint["state"])


def _to_cpu(states: dict) -> dict:
    return {
        k: (v.cpu() if torch.is_tensor(v) else [t.cpu() for t in v] if k == "cuda" else v) for k, v in states.items()
    }


def load_weights(model: nn.Module, checkpoint: dict[str, Any], path: str | Path) -> None:
    """Load a weights file's state dict into ``model``, refusing weights of another architecture."""
    change = architecture_change(model, checkpoint["architecture"].get("version", 1))
    if change:
        raise ValueError(f"{path} does not fit this robustlab's model: {change}. Train the run again.")
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        raise ValueError(f"{path} does not fit the model: {str(error).splitlines()[0]} ...") from None


def load_run_model(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[ImageClassifier, ExperimentConfig]:
    """The run's model in eval mode (final weights, or the latest checkpoint) and its config."""
    model, config, _ = _load_run(run_dir, device)
    return model, config


def _load_run(run_dir: str | Path, device: str | torch.device) -> tuple[ImageClassifier, ExperimentConfig, dict]:
    """``load_run_model``'s model and config, and the architecture record its weights were saved with."""
    run = Run(run_dir)
    config = run.load_config()
    path = run.model_path if run.model_path.exists() else run.checkpoint_path
    if not path.exists():
        raise FileNotFoundError(
            f"{run.path} has neither model.pt nor checkpoint.pt: training has not saved weights yet"
        )
    checkpoint = safe_torch_load(path, map_location=device)
    architecture = checkpoint.get("architecture") if isinstance(checkpoint, dict) else None
    if architecture is None or "model" not in checkpoint:
        raise ValueError(f"{path} is not a robustlab weights file (no architecture and model entries)")
    if architecture["name"] != config.model.name or architecture["kwargs"] != config.model.kwargs:
        raise ValueError(
            f"{path} holds weights of a '{architecture['name']}' model {architecture['kwargs'] or ''}, but the "
            f"run's config.yaml describes '{config.model.name}' {config.model.kwargs or ''}; "
            "the weights file belongs to another run"
        )
    model = create_from_architecture(architecture, config.eval.power_iterations).to(device)
    load_weights(model, checkpoint, path)
    return model.eval(), config, architecture


# ---------------------------------------------------------------------------------------
# Weights that travel: one safetensors file, loaded without the run folder

FORMS = ("model", "plain")
SOURCE = "source."  # a plain file's copy of the registered network's weights


class WeightsError(RobustlabError, ValueError):
    """A weights file that cannot be loaded here; the message says why."""


def architecture_record(model: ImageClassifier, config: ExperimentConfig) -> dict:
    """What rebuilds a run's ``model`` without the run: its architecture and CPL power-iteration steps."""
    return {
        "name": config.model.name,
        "input_shape": list(model.input_shape),
        "num_classes": model.num_classes,
        "mean": [float(m) for m in model.input_mean()],
        "kwargs": dict(config.model.kwargs),
        "version": ARCHITECTURE_VERSION,
        "power_iterations": config.eval.power_iterations,
    }


def save_safetensors(path: str | Path, model: nn.Module, architecture: dict, form: str = "model") -> Path:
    """Write ``model``'s weights (``plain``: its ``export_model`` copy's, and its own as
    ``source.*``) and ``architecture`` record to ``path`` (atomically)."""
    from safetensors.torch import save

    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
    state = model.state_dict()
    if form == "plain":
        state = {**export_model(model).state_dict(), **{SOURCE + key: value for key, value in state.items()}}
    # clone: safetensors refuses tensors that share storage, and state dicts may hold views
    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in state.items()}
    metadata = {"format": "pt", "robustlab.architecture": json.dumps(architecture), "robustlab.form": form}
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        handle.write(save(tensors, metadata=metadata))
    return path


def export_run(run_dir: str | Path, out: str | Path | None = None, plain: bool = False) -> Path:
    """Write a run's model (with ``plain`` its ``export_model`` copy) as a safetensors file that
    ``load_model`` reads without the run; default ``RUN/model.safetensors`` (``model-plain...``)."""
    model, config, saved = _load_run(run_dir, "cpu")
    # the version the weights were saved by: an older one's model is rebuilt with its legacy
    # arguments (``legacy_kwargs``), and so must the exported file's be
    architecture = architecture_record(model, config) | {"version": saved.get("version", 1)}
    out = Path(out) if out else Path(run_dir) / ("model-plain.safetensors" if plain else "model.safetensors")
    return save_safetensors(out, model, architecture, "plain" if plain else "model")


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


def load_model(path: str | Path, device: str | torch.device = "cpu", expected_name: str | None = None) -> nn.Module:
    """The model a weights file describes, with its weights, in eval mode.

    ``path`` is a safetensors file from ``robustlab export`` or a run's ``model.pt``;
    ``expected_name`` (a registered model name) refuses weights of any other model.
    """
    architecture, state, form = read_weights(path)
    check_architecture(path, architecture)
    name = architecture["name"]
    if expected_name is not None and name.lower() != expected_name.lower():
        raise WeightsError(
            f"{path} holds weights of a '{name}' model, not of '{expected_name}' "
            f"(its torch.hub entry is '{name.replace('-', '_')}'; 'load_weights' loads any robustlab file)"
        )
    if form not in FORMS:
        raise WeightsError(f"{path}: unknown weights form {form!r}; this robustlab reads {', '.join(FORMS)}")
    try:
        _check_model_size(path, architecture, state)
        model = create_from_architecture(architecture, architecture.get("power_iterations", 1000))
    except (UnknownNameError, ValueError, TypeError) as error:  # a model this robustlab lacks, or bad arguments
        raise WeightsError(f"{path}: cannot build its model: {one_line(error)}") from None
    change = architecture_change(model, architecture.get("version", 1))
    if change:
        raise WeightsError(f"{path} does not fit this robustlab's '{name}' model: {change}. Train it again.")
    plain = {key: value for key, value in state.items() if not key.startswith(SOURCE)}
    if form == "plain":
        state = {key[len(SOURCE) :]: value for key, value in state.items() if key.startswith(SOURCE)}
        if not state:
            raise WeightsError(
                f"{path}: a plain file without the weights it was exported from (an older robustlab's), "
                "so its Lipschitz bound cannot be computed; export the run again"
            )
    load_weights(model, {"architecture": {"version": ARCHITECTURE_VERSION}, "model": state}, path)  # checked above
    loaded = _exported_as_saved(model, plain, path) if form == "plain" else model
    return loaded.to(device).eval()


def _exported_as_saved(model: ImageClassifier, plain: dict[str, torch.Tensor], path: Path | str) -> nn.Module:
    """``export_model(model)``, with its certificate constants computed from ``model``'s
    weights, after checking that the file's plain weights are that export (equal up to a
    float32 rounding step: another machine's float64 arithmetic may round differently)."""
    exported = export_model(model)
    expected = exported.state_dict()
    mismatched = sorted(set(expected) ^ set(plain)) or [
        key
        for key, value in expected.items()
        if value.shape != plain[key].shape
        or not torch.allclose(plain[key].to(value.dtype), value, rtol=1e-6, atol=1e-7)
    ]
    if mismatched:
        raise WeightsError(
            f"{path}: its plain weights are not the export of the weights they came from ({mismatched[0]} differs); "
            "export the run again"
        )
    return exported


# What an architecture record may claim before anything is sized from it: far above every
# model robustlab trains (3 x 32 x 32 images, 100 classes), far below an allocation that hurts.
MAX_CHANNELS, MAX_IMAGE_SIDE, MAX_CLASSES, MAX_POWER_ITERATIONS = 64, 4096, 100_000, 100_000
WEIGHTS_SLACK = 2  # a model may need at most this many times the weights its file holds (+1 MB: buffers)


def check_architecture(path: str | Path, architecture: Any) -> None:
    """Refuse an architecture record whose fields have the wrong types or absurd sizes (a
    weights file is untrusted: its numbers must not size an allocation unchecked)."""

    def refuse(problem: str) -> WeightsError:
        return WeightsError(f"{path}: the architecture record {problem}; re-export the weights with robustlab")

    if not isinstance(architecture, dict):
        raise refuse(f"is a {type(architecture).__name__}, not a mapping")
    for key, kind in (("name", str), ("input_shape", list), ("num_classes", int), ("mean", list), ("kwargs", dict)):
        if key not in architecture:
            raise refuse(f"has no {key!r}")
        if not isinstance(architecture[key], kind) or isinstance(architecture[key], bool):
            raise refuse(f"has {key} = {str(architecture[key])[:40]!r}, not a {kind.__name__}")
    shape, classes, mean = architecture["input_shape"], architecture["num_classes"], architecture["mean"]
    limits = (MAX_CHANNELS, MAX_IMAGE_SIDE, MAX_IMAGE_SIDE)
    if len(shape) != 3 or not all(_whole(side) and 1 <= side <= top for side, top in zip(shape, limits)):
        raise refuse(
            f"has input_shape {str(shape)[:40]}; expected [channels <= {MAX_CHANNELS}, height, width <= {MAX_IMAGE_SIDE}]"
        )
    if not 2 <= classes <= MAX_CLASSES:
        raise refuse(f"has num_classes {classes}; expected 2 to {MAX_CLASSES}")
    if len(mean) != shape[0] or not all(isinstance(m, int | float) and math.isfinite(m) for m in mean):
        raise refuse(f"has mean {str(mean)[:40]}; expected {shape[0]} finite numbers")
    for key, top in (("version", 10**6), ("power_iterations", MAX_POWER_ITERATIONS)):
        if key in architecture and not (_whole(architecture[key]) and 0 <= architecture[key] <= top):
            raise refuse(f"has {key} {str(architecture[key])[:40]}; expected a whole number from 0 to {top}")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_model_size(path: str | Path, architecture: dict, state: dict[str, torch.Tensor]) -> None:
    """Refuse a record that describes a model much larger than the weights the file holds
    (its size is read from a skeleton on the meta device, which allocates nothing)."""
    try:
        with torch.device("meta"):
            skeleton = create_from_architecture(architecture, 0)
    except (NotImplementedError, RuntimeError):  # a layer that computes at build time: the range checks bound it
        return
    needed = sum(tensor.numel() * tensor.element_size() for tensor in skeleton.state_dict().values())
    held = sum(tensor.numel() * tensor.element_size() for tensor in state.values() if torch.is_tensor(tensor))
    if needed > WEIGHTS_SLACK * held + 2**20:
        raise WeightsError(
            f"{path}: the architecture record describes a model of {needed / 1e6:.3g} MB of weights, but the file "
            f"holds {held / 1e6:.3g} MB; the record does not belong to these weights"
        )
