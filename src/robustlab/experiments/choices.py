"""Choices an experiment stores for others to use: the learning rate a search picked.

A choice is a small JSON file in the run store, ``choices/lr-<dataset>-<scale>-<recipe>.json``,
written atomically by ``robustlab experiment lr_search`` once every run of a recipe has
finished, and read when an experiment is given ``--param lr=searched``. It moves with the store.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from robustlab.config import ConfigError
from robustlab.files import atomic_write_json

CHOICES = "choices"  # folder of the run store that holds the stored choices


@dataclass
class LrChoice:
    """A stored outcome of the search for one recipe, dataset and scale."""

    recipe: str
    dataset: str
    scale: str
    lr: float
    metric: str  # what chose it: "CRA 36/255" (validation) or "accuracy"
    value: float  # its mean over the seeds, in percent
    searched: list[float]
    seeds: int
    epochs: float
    at_edge: bool  # the best lr is the smallest or largest searched: the range may be too narrow


def choice_path(root: str | Path, dataset: str, scale: str, recipe_name: str) -> Path:
    dataset = Path(dataset).stem if dataset.endswith(".npz") else dataset
    return Path(root) / CHOICES / f"lr-{dataset}-{scale}-{recipe_name}.json"


def store_choice(root: str | Path, choice: LrChoice) -> Path:
    path = choice_path(root, choice.dataset, choice.scale, choice.recipe)
    atomic_write_json(path, asdict(choice))
    return path


def read_choice(root: str | Path, dataset: str, scale: str, recipe_name: str) -> LrChoice:
    """The stored choice for ``recipe_name`` on ``dataset`` at ``scale``; a clear error when there is none."""
    path = choice_path(root, dataset, scale, recipe_name)
    if not path.exists():
        raise ConfigError(
            f"--param lr=searched: no learning-rate search of {recipe_name} on {dataset} at scale {scale} in "
            f"{root}; run `robustlab experiment lr_search --scale {scale} --dataset {dataset} --param "
            f"recipes={recipe_name}` with the same --runs-root first"
        )
    return LrChoice(**json.loads(path.read_text()))
