"""Checkpoints, RNG state and a run's model: what a run folder's weights files hold and how
to rebuild a model from them.

``model.pt`` and ``checkpoint.pt`` are dicts of tensors and plain data only (they load with
``weights_only=True``): ``architecture`` {name, input_shape, num_classes, mean, kwargs,
version} and ``model`` (the state dict); the checkpoint adds ``optimizer``, ``schedule``,
``state`` (a ``TrainState``) and ``rng``. Loading refuses weights whose architecture
version computes another function in this robustlab's model
(``robustlab.nn.models.architecture_change``).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robustlab.config import ExperimentConfig
from robustlab.data.splits import PreparedData
from robustlab.files import atomic_torch_save, safe_torch_load
from robustlab.nn.lipschitz import configure_eval
from robustlab.nn.models import ARCHITECTURE_VERSION, architecture_change, create_model
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


def create_from_architecture(architecture: dict, power_iterations: int) -> nn.Module:
    """The model an ``architecture`` dict describes (random weights); CPL layers evaluate
    with ``power_iterations`` steps."""
    model = create_model(
        architecture["name"],
        tuple(architecture["input_shape"]),
        architecture["num_classes"],
        mean=torch.tensor(architecture["mean"], dtype=torch.float32),
        **architecture["kwargs"],
    )
    return configure_eval(model, power_iterations=power_iterations)


def rng_states() -> dict:
    """The torch, CUDA, NumPy and Python generators' states, as tensors and plain data."""
    numpy_state = np.random.get_state()
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


def save_checkpoint(path, model, optimizer, schedule, state: TrainState, architecture: dict) -> None:
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


def save_model(path, model: nn.Module, architecture: dict) -> None:
    """The final weights (``model.pt``): the checkpoint without the training state."""
    atomic_torch_save({"architecture": architecture, "model": model.state_dict()}, path)


def load_checkpoint(path, model, optimizer, schedule, device) -> TrainState:
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


def load_weights(model: nn.Module, checkpoint: dict, path) -> None:
    """Load a weights file's state dict into ``model``, refusing weights of another architecture."""
    change = architecture_change(model, checkpoint["architecture"].get("version", 1))
    if change:
        raise ValueError(f"{path} does not fit this robustlab's model: {change}. Train the run again.")
    try:
        model.load_state_dict(checkpoint["model"])
    except RuntimeError as error:
        raise ValueError(f"{path} does not fit the model: {str(error).splitlines()[0]} ...") from None


def load_run_model(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, ExperimentConfig]:
    """The run's model in eval mode (final weights, or the latest checkpoint) and its config."""
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
    return model.eval(), config
