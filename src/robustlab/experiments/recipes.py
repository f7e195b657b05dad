"""The training recipes the experiments share, as named override sets.

A recipe is a model with the loss and peak learning rate that go with it (the paper's
reference code: lr 1.0 for the CPL ConvNet, 0.1 for the AOL MLP and the SimpleConvNet).
Experiments refer to recipes by name, so the same model is trained the same way in
every experiment; an experiment's ``--set`` overrides still apply on top.
"""

from __future__ import annotations

import math

from robustlab.experiments.sweep import Overrides

OFFSET_CE = {"loss.name": "offset_ce", "loss.offset": math.sqrt(2) * 36 / 255, "loss.temperature": 0.25}

RECIPES: dict[str, Overrides] = {
    # The paper's models (CIFAR-sized inputs).
    "lipconvnet-cpl": {"model.name": "lipconvnet-cpl", "optim.lr": 1.0, **OFFSET_CE},
    "lipconvnet-aol": {"model.name": "lipconvnet-aol", "optim.lr": 0.1, **OFFSET_CE},
    "lipmlp-aol": {"model.name": "lipmlp-aol", "optim.lr": 0.1, **OFFSET_CE},
    "simpleconvnet": {"model.name": "simpleconvnet", "optim.lr": 0.1, "loss.name": "ce",
                      "loss.temperature": 8.0},  # CE(z / 8) * 8
    # Mid-size nets for the `small` scales: minutes per run on a GPU, feasible on a CPU.
    "small-lipmlp": {"model.name": "lipmlp-aol", "model.kwargs": {"width": 512, "depth": 3},
                     "optim.lr": 0.1, **OFFSET_CE},
    "small-convnet": {"model.name": "simpleconvnet", "model.kwargs": {"width": 16}, "optim.lr": 0.1,
                      "loss.name": "ce", "loss.temperature": 8.0},
    # Miniatures for tiny images (the built-in 8x8 digits) and quick CPU runs.
    "tiny-lipmlp": {"model.name": "lipmlp-aol", "model.kwargs": {"width": 128, "depth": 3},
                    "optim.lr": 0.1, **OFFSET_CE},
    "tiny-convnet": {"model.name": "simpleconvnet", "model.kwargs": {"width": 8}, "optim.lr": 0.1,
                     "loss.name": "ce", "loss.temperature": 8.0},
}


def recipe(name: str) -> Overrides:
    try:
        return dict(RECIPES[name])
    except KeyError:
        raise ValueError(f"unknown recipe '{name}'; recipes: {', '.join(RECIPES)}") from None
