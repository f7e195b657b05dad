"""The training recipes the experiments share, as named override sets.

A recipe is a model with the loss and peak learning rate that go with it, read from the
shipped presets (the paper's reference code: lr 1.0 for the CPL ConvNet, 0.1 for the AOL
MLP and the SimpleConvNet, 0.3 for the smoothing base net), so `robustlab train --config
PRESET` and every experiment train the same model the same way; an experiment's ``--set``
overrides still apply on top. A dataset with its own preset (``cpl-lcn-mnist``, ...) brings its
augmentation along: no horizontal flips on MNIST, whose digits are not mirror-symmetric.
"""

from __future__ import annotations

import math

from robustlab.config import load_config, preset_names
from robustlab.experiments.sweep import Overrides

SMOOTHING_SAMPLES = 1000  # the paper's smoothing estimate: 1000 noisy copies per image

# name: (preset, model kwargs, further overrides)
RECIPE_SOURCES: dict[str, tuple[str, dict, Overrides]] = {
    # The paper's models (CIFAR-sized inputs).
    "lipconvnet-cpl": ("cpl-lcn", {}, {}),
    "lipconvnet-aol": ("aol-lcn", {}, {}),
    "lipmlp-aol": ("aol-mlp", {}, {}),
    "simpleconvnet": ("simpleconvnet", {}, {}),  # CE(z / 8) * 8
    # The randomized-smoothing base net (SimpleConvNet + Gaussian noise 1/8), estimated after training
    "smoothing": ("smoothing", {}, {"eval.smoothing_samples": SMOOTHING_SAMPLES}),
    # Mid-size nets for the `small` scales: minutes per run on a GPU, feasible on a CPU.
    "small-lipmlp": ("aol-mlp", {"width": 512, "depth": 3}, {}),
    "small-convnet": ("simpleconvnet", {"width": 16}, {}),
    "small-smoothing": ("smoothing", {"width": 16}, {"eval.smoothing_samples": SMOOTHING_SAMPLES}),
    # Miniatures for tiny images (the built-in 8x8 digits) and quick CPU runs.
    "tiny-lipmlp": ("aol-mlp", {"width": 128, "depth": 3}, {}),
    "tiny-lipmlp-wide": ("aol-mlp", {"width": 256, "depth": 5}, {}),  # the demo's robust overfitting
    "tiny-convnet": ("simpleconvnet", {"width": 8}, {}),
    "tiny-smoothing": ("smoothing", {"width": 8}, {"eval.smoothing_samples": SMOOTHING_SAMPLES}),
    # The one-architecture candidates (docs/experiments.md): the paper's CPL LipConvNet, and the
    # ConvNet of [31] with CPL layers and global max pooling, at the sizes each scale affords.
    "wide-lipconvnet-cpl": ("cpl-lcn", {"width": 128}, {}),
    "small-lipconvnet-cpl": ("cpl-lcn", {"width": 16}, {}),
    "small-convnet-cpl": ("cpl-lcn", {}, {"model.name": "convnet-xs-cpl"}),
    "tiny-lipconvnet-cpl": ("cpl-lcn", {"width": 16}, {}),
}

# OffsetCrossEntropy's offset u, by name: the paper's text says 1/4, the reference code (and
# SPEC) sqrt(2) * 36/255, which asks every training point for a margin of radius 36/255.
OFFSETS = {"reference": math.sqrt(2) * 36 / 255, "paper-text": 0.25}

# The demo scale's training settings (built-in 8x8 digits): no crops (they leave little room),
# batches of 25 keep the steps per size within a few percent of each other down to N = 44 and
# leave no last batch of one image (BatchNorm cannot train on one).
DEMO_CONFIG: Overrides = {"train.batch_size": 25, "train.checkpoint_every": 50, "augment.crop_padding": 0}


def recipe(name: str, dataset: str | None = None) -> Overrides:
    """The overrides of recipe ``name``; with ``dataset``, that dataset's augmentation too."""
    try:
        preset, model_kwargs, extra = RECIPE_SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown recipe '{name}'; recipes: {', '.join(RECIPE_SOURCES)}") from None
    config = load_config(preset)
    overrides = {
        "model.name": config.model.name,
        "model.kwargs": {**config.model.kwargs, **model_kwargs},
        "optim.lr": config.optim.lr,
        "optim.cycle_momentum": config.optim.cycle_momentum,
        "augment.per_batch": config.augment.per_batch,
        "augment.noise_std": config.augment.noise_std,
        "loss.name": config.loss.name,
        "loss.offset": config.loss.offset,
        "loss.temperature": config.loss.temperature,
        **extra,
    }
    family = {"smoothing": "simpleconvnet"}.get(preset, preset)  # smoothing's presets are simpleconvnet's
    if dataset and f"{family}-{dataset}" in preset_names():
        augment = load_config(f"{family}-{dataset}").augment
        overrides |= {"augment.flip": augment.flip, "augment.crop_padding": augment.crop_padding}
        overrides |= {"augment.cutout": augment.cutout}
    return overrides
