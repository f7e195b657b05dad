"""The training recipes the experiments share, as named override sets.

A recipe is a model with the loss and peak learning rate that go with it, read from the
shipped presets (the paper's reference code: lr 1.0 for the CPL ConvNet, 0.1 for the AOL
MLP and the SimpleConvNet), so `robustlab train --config PRESET` and every experiment train
the same model the same way; an experiment's ``--set`` overrides still apply on top.
"""

from __future__ import annotations

from robustlab.config import load_config
from robustlab.experiments.sweep import Overrides


def _from_preset(preset: str, **model_kwargs) -> Overrides:
    """Model, loss and optimisation recipe of a shipped preset: the presets are the one place
    they are set (peak lr, and the reference code's momentum cycling and per-batch draws)."""
    config = load_config(preset)
    return {
        "model.name": config.model.name,
        "model.kwargs": {**config.model.kwargs, **model_kwargs},
        "optim.lr": config.optim.lr,
        "optim.cycle_momentum": config.optim.cycle_momentum,
        "augment.per_batch": config.augment.per_batch,
        "loss.name": config.loss.name,
        "loss.offset": config.loss.offset,
        "loss.temperature": config.loss.temperature,
    }


RECIPES: dict[str, Overrides] = {
    # The paper's models (CIFAR-sized inputs).
    "lipconvnet-cpl": _from_preset("cpl-lcn"),
    "lipconvnet-aol": _from_preset("aol-lcn"),
    "lipmlp-aol": _from_preset("aol-mlp"),
    "simpleconvnet": _from_preset("simpleconvnet"),  # CE(z / 8) * 8
    # Mid-size nets for the `small` scales: minutes per run on a GPU, feasible on a CPU.
    "small-lipmlp": _from_preset("aol-mlp", width=512, depth=3),
    "small-convnet": _from_preset("simpleconvnet", width=16),
    # Miniatures for tiny images (the built-in 8x8 digits) and quick CPU runs.
    "tiny-lipmlp": _from_preset("aol-mlp", width=128, depth=3),
    "tiny-convnet": _from_preset("simpleconvnet", width=8),
}

# The paper's robust loss, OffsetCrossEntropy(sqrt(2) * 36/255, temperature 1/4)
OFFSET_CE = {key: value for key, value in RECIPES["lipconvnet-cpl"].items() if key.startswith("loss.")}


def recipe(name: str) -> Overrides:
    try:
        return dict(RECIPES[name])
    except KeyError:
        raise ValueError(f"unknown recipe '{name}'; recipes: {', '.join(RECIPES)}") from None
