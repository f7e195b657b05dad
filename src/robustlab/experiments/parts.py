"""The sections of the paper that `robustlab reproduce` lays out, as the experiments declare them.

Each experiment module declares the ``Part`` s it makes (``Experiment.parts``): the section's
title, what the paper reports, its jobs at each scale (which experiment on which dataset with
which parameters) and what a scale cannot show. ``paper_parts`` walks the experiment registry
and orders them as the paper does (``experiment.paper_parts``), so adding an experiment adds its
section without editing ``reproduce``. Every job after the lr search trains with the searched lrs
(``SEARCHED``), and the lr search's own jobs cover every recipe and dataset those jobs train
(``experiment.searched_recipe_jobs``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MINIATURES = ("smoke", "demo")  # built-in digits on a CPU: tiny nets, run on one thread
MINIATURE = "miniature"  # a caveat for both miniature scales
SEARCHED = {"lr": "searched"}  # every experiment after the lr search trains with its choices


@dataclass
class Job:
    """One experiment of a part: its name, dataset (None: the scale's default) and parameters."""

    experiment: str
    dataset: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def command(self, scale: str, runs_root: Path, overrides: list[str]) -> str:
        words = ["robustlab experiment", self.experiment, f"--scale {scale}"]
        words += [f"--dataset {self.dataset}"] if self.dataset else []
        words += [f"--param {k}={param_text(v)}" for k, v in self.params.items()]
        words += [f"--set '{o}'" for o in overrides] + [f"--runs-root {runs_root}"]
        return " ".join(words)


@dataclass
class Part:
    id: str
    title: str
    paper: list[str]  # what the paper reports, in its words
    jobs: Callable[[str], list[Job]]  # the experiments at a scale
    caveat: dict[str, str] = field(default_factory=dict)  # scale (or MINIATURE): what it cannot show there
    order: int = 0  # where the paper has it

    def caveat_at(self, scale: str) -> str | None:
        return self.caveat.get(scale) or (self.caveat.get(MINIATURE) if scale in MINIATURES else None)


def param_text(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def one_job(experiment: str, dataset: str | None = None, **params: object) -> Callable[[str], list[Job]]:
    """One job with the searched lrs: at the miniature scales on the scale's dataset, else on ``dataset``."""
    return lambda scale: [Job(experiment, None if scale in MINIATURES else dataset, {**SEARCHED, **params})]
