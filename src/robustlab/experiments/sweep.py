"""Sweeps: a base config and a grid of overrides, trained through the one run store.

A sweep is a list of configs. Running it trains every config the store has not
finished yet, and resumes any whose training was interrupted, so a killed sweep
continues where it stopped. A run counts as done for a config when the store holds a
finished run whose config is equal up to the settings that only say where and how
fast it runs (device, checkpoint frequency, data folder, run name), trained by this
robustlab's architecture version (``robustlab.nn.models.ARCHITECTURE_VERSION``).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustlab.config import SPEED_OPTIONS, ConfigError, ExperimentConfig, config_from_dict
from robustlab.nn.models import ARCHITECTURE_VERSION
from robustlab.progress import Progress
from robustlab.runs.results import RunResults
from robustlab.runs.store import Run, RunStore, StoredRun
from robustlab.train.loop import train

Overrides = dict[str, Any]  # dotted config key -> value, e.g. {"data.subset_size": 390}
Grid = dict[str, list[Any]] | list[Overrides]

DONE = "done"
# Keys that change where or how fast a run executes, never its result. (The speed options
# run other kernels, so the last digits may differ, as they do between devices;
# train.precision changes the arithmetic itself and stays part of a run's identity.)
EXECUTION_KEYS = (
    "name",
    "train.device",
    "train.checkpoint_every",
    "train.log_to",
    "data.data_dir",
    "data.download",
    *(f"train.{option}" for option in SPEED_OPTIONS),
)


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

    ``label`` names the sweep in figures and tables (default: ``name``).
    """

    name: str
    base: ExperimentConfig
    grid: Grid = field(default_factory=list)
    label: str = ""

    def points(self) -> list[SweepPoint]:
        base = with_overrides(self.base, {"name": self.name})
        return [SweepPoint(o, with_overrides(base, o)) for o in expand_grid(self.grid or [{}])]


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
    status: str  # done | trained | resume | train (the last two: dry run, not yet run)
    run: str | None = None
    results: RunResults | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "sweep": self.sweep,
            "label": self.label,
            "overrides": self.overrides,
            "status": self.status,
            "run": self.run,
            "results": None if self.results is None else self.results.to_dict(),
        }


# ---------------------------------------------------------------------------------------
# Matching configs against the store


def result_key(config: ExperimentConfig | dict[str, Any]) -> dict[str, Any]:
    """The config as plain data without the execution-only keys."""
    data = json.loads(json.dumps(config.to_dict() if isinstance(config, ExperimentConfig) else config))
    for dotted in EXECUTION_KEYS:
        *sections, last = dotted.split(".")
        node = data
        for section in sections:
            node = node.get(section, {})
        node.pop(last, None)
    return data


def find_runs(store: RunStore, config: ExperimentConfig, status: str | None = None) -> list[StoredRun]:
    """Store rows (oldest first) of runs with the same result-relevant config."""
    key = result_key(config)
    candidates = store.query(status=status, **{"model.name": config.model.name, "data.name": config.data.name})
    return [row for row in candidates if _stored_result_key(row.config) == key and _current_architecture(row)]


def _stored_result_key(stored: dict[str, Any]) -> dict[str, Any] | None:
    # Parsed again so that a config key added since the run was stored takes its default:
    # a new option whose default keeps the old behaviour leaves finished runs matched.
    try:
        return result_key(config_from_dict(stored))
    except ConfigError:  # written by a robustlab with other config keys: not comparable
        return None


def _current_architecture(row: StoredRun) -> bool:
    # A finished run of an older architecture version measured another function; an
    # unfinished one is left to resuming, which refuses weights that no longer fit.
    version = row.results.architecture_version if row.results else 1
    return row.status != DONE or version == ARCHITECTURE_VERSION


def find_done(store: RunStore, config: ExperimentConfig) -> StoredRun | None:
    done = find_runs(store, config, status=DONE)
    return done[-1] if done else None


def find_unfinished(store: RunStore, config: ExperimentConfig) -> StoredRun | None:
    """The newest interrupted run of this config that left a checkpoint to resume from."""
    for row in reversed(find_runs(store, config)):
        if row.status != DONE and Run(row.path).checkpoint_path.exists():
            return row
    return None


# ---------------------------------------------------------------------------------------
# Running


def collect(sweep: Sweep, store: RunStore) -> list[SweepRow]:
    """The sweep's points with the results the store already has; nothing is trained."""
    rows = []
    for point in sweep.points():
        row = SweepRow(sweep.name, sweep.label or sweep.name, point.overrides, point.config, "train")
        done = find_done(store, point.config)
        if done:
            row.status, row.run, row.results = DONE, done.path, _results(done)
        elif find_unfinished(store, point.config):
            row.status = "resume"
        rows.append(row)
    return rows


def run_sweep(
    sweep: Sweep,
    store: RunStore,
    device: str | None = None,
    progress: bool = True,
    dry_run: bool = False,
) -> list[SweepRow]:
    """Train every point of ``sweep`` not done in ``store``; return all points with results.

    ``device`` overrides ``train.device`` (it does not change which runs count as done).
    With ``dry_run`` nothing is trained: the rows say which points would train or resume.
    """
    rows = collect(sweep, store)
    todo = [row for row in rows if row.status != DONE]
    if dry_run or not todo:
        return rows

    with Progress(len(todo), sweep.name, "run", progress) as bar:
        for done, row in enumerate(todo, 1):
            bar.set_postfix(text=_describe(row.overrides))
            unfinished = find_unfinished(store, row.config)
            if unfinished:  # continues with the config saved in the run folder (its device too)
                run = train(None, run_dir=unfinished.path, store=store, resume=True, progress=progress)
            else:
                config = row.config if device is None else with_overrides(row.config, {"train.device": device})
                run = train(config, store=store, progress=progress)
            row.status, row.run, row.results = "trained", str(Path(run.path).resolve()), run.load_results()
            bar.update()
            bar.line(f"run {done}/{len(todo)} {_describe(row.overrides)}: {_outcome(row.results)}")
    return rows


def _outcome(results: RunResults) -> str:
    """Accuracy and the first CRA of a finished run, for its progress line."""
    text = f"accuracy {results.accuracy:.3f}"
    if results.cra and results.lipschitz_constant is not None:
        first = results.cra[0]
        text += f", CRA {first.label} {first.cra:.3f}"
    return text


def _results(row: StoredRun) -> RunResults | None:
    if row.results is not None:
        return row.results
    try:  # the index keeps results, but the run folder is the source of truth
        return Run(row.path).load_results()
    except FileNotFoundError:
        return None


def _describe(overrides: Overrides) -> str:
    return " ".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in overrides.items())
