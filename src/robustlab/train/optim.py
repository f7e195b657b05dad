"""Optimizer and learning-rate schedule of the paper's recipe.

SGD with Nesterov momentum 0.9, no weight decay, and OneCycleLR over all training steps
with the configured lr as its peak. The schedule is stepped once per optimizer step, so a
run's lr curve depends only on its total number of steps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from robustlab.config import ExperimentConfig, OptimConfig
from robustlab.nn.models import model_lr_scale


def build_optimizer(params: Iterable[torch.nn.Parameter], config: OptimConfig) -> torch.optim.Optimizer:
    if config.lr <= 0:
        raise ValueError(f"optim.lr must be positive, got {config.lr}")
    if config.grad_clip is not None and not config.grad_clip > 0:
        raise ValueError(f"optim.grad_clip must be positive (or null: no clipping), got {config.grad_clip}")
    if config.name != "sgd":  # the config schema already restricts the choice
        raise ValueError(f"unknown optimizer '{config.name}'; known optimizers: sgd")
    params = list(params)
    on_cuda = bool(params) and all(p.is_cuda for p in params)
    return torch.optim.SGD(
        params,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov and config.momentum > 0,
        weight_decay=config.weight_decay,
        fused=True if on_cuda else None,  # one kernel for all parameters instead of several per group
    )


def build_schedule(optimizer: torch.optim.Optimizer, config: OptimConfig, total_steps: int) -> LRScheduler:
    if config.schedule == "constant":
        return LambdaLR(optimizer, lambda step: 1.0)
    # By default momentum stays at the recipe's 0.9; torch's OneCycleLR would cycle it in [0.85, 0.95],
    # which research code that builds the schedule with its defaults does without saying so.
    return OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=max(total_steps, 2), cycle_momentum=config.cycle_momentum
    )


def total_steps(epochs: float, batches_per_epoch: int) -> int:
    """Optimizer steps in ``epochs`` (fractional epochs end part-way through an epoch)."""
    if epochs <= 0:
        raise ValueError(f"train.epochs must be positive, got {epochs}")
    return max(1, math.ceil(epochs * batches_per_epoch - 1e-9))


def lr_for_swapped_model(config: ExperimentConfig, preset: ExperimentConfig) -> ExperimentConfig:
    """``config`` (a preset with overrides that swapped its model, not its lr) with the preset's
    lr moved to the new model's layer family: times ``model_lr_scale(new) / model_lr_scale(old)``.

    A preset's lr is tuned for its model; SOC, BCOP, ... diverge at AOL's lr (issue 23).
    Unchanged when the model is the preset's or the lr is not the preset's (set by hand).
    """
    if config.model.name == preset.model.name or config.optim.lr != preset.optim.lr:
        return config
    scale = model_lr_scale(config.model.name) / model_lr_scale(preset.model.name)
    return dataclasses.replace(config, optim=dataclasses.replace(config.optim, lr=config.optim.lr * scale))
