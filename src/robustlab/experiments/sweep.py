"""Sweeps: a base config and a grid of overrides, trained through the one run store.

A sweep is a list of configs. Running it trains every config the store has not
finished yet, and resumes any whose training was interrupted, so a killed sweep
continues where it stopped. A run counts as done for a config when the store holds a
finished run whose config is equal up to the settings that only say where and how
fast it runs (device, checkpoint frequency, data folder, run name), trained by this
robustlab's architecture version (``RunStore.find``, ``result_key``).

How the points train (in this process, in K local worker processes, or as SLURM jobs) is
``robustlab.experiments.launch``; ``run_sweep`` takes its options.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from robustlab.config import ExperimentConfig, config_from_dict
from robustlab.experiments.launch import Execution, execute, point_states
from robustlab.progress import readable
from robustlab.runs.result_files import RunResults
from robustlab.runs.store import DONE, EXECUTION_KEYS, Run, RunStore, StoredRun, point_key, result_key

__all__ = ["EXECUTION_KEYS", "result_key"]  # where they lived before the store matched runs

Overrides = dict[str, Any]  # dotted config key -> value, e.g. {"data.subset_size": 390}
Grid = dict[str, list[Any]] | list[Overrides]


def expand_grid(grid: Grid) -> list[Overrides]:
    """A dict of value lists becomes its Cartesian product; a list of override sets stays."""
    if isinstance(grid, dict):
        keys = list(grid)
        return [dict(zip(keys, values)) for values in itertools.product(*grid.values())]
    return [dict(overrides) for overrides in grid]


def with_overrides(config: ExperimentConfig, overrides: Overrides) -> ExperimentConfig:
    """A copy of ``config`` with dotted-key values set, checked like ``--set`` overrides."""
    # JSON text is valid YAML, so values pass through the one override parser unchanged.
    texts = [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    return config_from_dict(config.to_dict(), texts)


@dataclass
class Sweep:
    """Every config of ``grid`` applied to ``base``; runs are named ``name``.

    ``label`` names the sweep in figures and tables (default: ``name``); ``recipe`` is the
    recipe (``recipes.RECIPE_SOURCES``) its runs train, which says whose searched lr they take.
    ``grid`` may be a function that returns it, called by ``points``: a grid that needs the data
    (the principal components of a training split) costs nothing to whom needs only the recipe.
    """

    name: str
    base: ExperimentConfig
    grid: Grid | Callable[[], Grid] = field(default_factory=list)
    label: str = ""
    recipe: str = ""

    def points(self) -> list[SweepPoint]:
        base = with_overrides(self.base, {"name": self.name})
        grid = self.grid() if callable(self.grid) else self.grid
        return [SweepPoint(o, with_overrides(base, o)) for o in expand_grid(grid or [{}])]


@dataclass
class SweepPoint:
    overrides: Overrides
    config: ExperimentConfig


@dataclass
class SweepRow:
    """One point of a sweep and what the store knows about it."""

    sweep: str
    label: str
    overrides: Overrides
    config: ExperimentConfig
    # done | trained | failed; dry run: resume | train; not finished elsewhere: queued | running | interrupted
    status: str
    run: str | None = None
    results: RunResults | None = None
    error: str | None = None  # why the point failed, in one line
    recipe: str = ""  # the sweep's recipe

    def to_dict(self) -> dict[str, Any]:
        return {
            "sweep": self.sweep,
            "label": self.label,
            "overrides": self.overrides,
            "status": self.status,
            "run": self.run,
            "results": None if self.results is None else self.results.to_dict(),
            "error": self.error,
        }


# ---------------------------------------------------------------------------------------
# Running


def collect(sweep: Sweep, store: RunStore) -> list[SweepRow]:
    """The sweep's points with the results the store already has; nothing is trained."""
    rows = []
    for point in sweep.points():
        row = SweepRow(
            sweep.name, sweep.label or sweep.name, point.overrides, point.config, "train", recipe=sweep.recipe
        )
        done = store.find_done(point.config)
        if done:
            row.status, row.run, row.results = DONE, done.path, _results(done)
        elif store.find_unfinished(point.config):
            row.status = "resume"
        rows.append(row)
    return rows


def run_sweep(
    sweep: Sweep, store: RunStore, execution: Execution | None = None, dry_run: bool = False
) -> list[SweepRow]:
    """Train every point of ``sweep`` not done in ``store``; return all points with results.

    ``execution`` says where and how the points train (device, progress, workers, GPUs per
    job, launcher: ``robustlab.experiments.launch``); its device does not change which runs
    count as done. With ``dry_run`` nothing is trained: the rows say which points would
    train or resume. A point that fails is returned with status ``failed`` and its
    ``error``, after the others have trained.
    """
    rows = collect(sweep, store)
    return rows if dry_run else train_rows(rows, store, execution)


def train_rows(rows: list[SweepRow], store: RunStore, execution: Execution | None = None) -> list[SweepRow]:
    """Train the points of ``rows`` that are not done (of one sweep or several at once), and
    update the rows: ``trained``, ``failed`` with its error, or where a submitted job stands."""
    todo = [row for row in rows if row.status != DONE]
    if not todo:
        return rows
    configs = [row.config for row in todo]
    labels = {point_key(row.config): f"{row.sweep} {_describe(row.overrides)}".strip() for row in todo}
    execute(configs, store, execution, labels)
    for row, state in zip(todo, point_states(configs, store)):
        if state["row"] is not None:
            row.status, row.run, row.results = "trained", state["row"].path, _results(state["row"])
        else:
            row.status, row.error = state["state"], state["error"]
    return rows


def _describe(overrides: Overrides) -> str:
    return " ".join(f"{key.rsplit('.', 1)[-1]}={readable(key, value)}" for key, value in overrides.items())


def _results(row: StoredRun) -> RunResults | None:
    if row.results is not None:
        return row.results
    try:  # the index keeps results, but the run folder is the source of truth
        return Run(row.path).load_results()
    except FileNotFoundError:
        return None
