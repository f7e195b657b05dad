"""What an experiment is, and the two things one does with it: run it, and report it.

An ``Experiment`` turns a ``Setup`` (scale, dataset, ``--set`` overrides and the
scale's parameters) into sweeps, and turns the sweep rows the store holds into a
``Report`` (a figure, a table and notes). ``run_experiment`` trains what is missing and
reports; ``report_experiment`` only reads the store, so a figure can be redrawn at any
time, also while a sweep is still running (missing points are left out and counted).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from robustlab.config import ConfigError, ExperimentConfig, config_from_dict, load_config, parse_float
from robustlab.errors import RobustlabError
from robustlab.experiments.choices import choice_path, read_choice
from robustlab.experiments.launch import Execution
from robustlab.experiments.parts import MINIATURES, Job, Part
from robustlab.experiments.recipes import OFFSETS, recipe
from robustlab.experiments.sweep import Overrides, Sweep, SweepRow, collect, train_rows, with_overrides
from robustlab.registry import Registry
from robustlab.report.tables import write_table
from robustlab.runs.store import RunStore, point_key


@dataclass
class Setup:
    """Everything that selects the configs of one experiment."""

    experiment: str
    scale: str
    dataset: str
    overrides: list[str] = field(default_factory=list)  # "key=value", applied to every run
    params: dict[str, Any] = field(default_factory=dict)  # the scale's parameters, as changed
    store: RunStore | None = None  # the run store (set by run/report_experiment): searched learning rates, costs
    planning: bool = False  # a dry run's plan: a searched lr not chosen yet is pending, not an error
    lr_sources: dict[str, str] = field(default_factory=dict)  # recipe -> where its peak lr came from

    def lr_source(self, recipe_name: str) -> str:
        return self.lr_sources.get(recipe_name, "recipe")

    def slug(self, *parts: str) -> str:
        """A run, figure or folder name: ``experiment-dataset-parts``; an .npz path counts by its stem,
        so that a dataset given by path does not put slashes into file names."""
        dataset = Path(self.dataset).stem if self.dataset.endswith(".npz") else self.dataset
        return "-".join([self.experiment, dataset, *parts])

    def base_config(self, settings: Overrides) -> ExperimentConfig:
        """The scale's preset (or the defaults), the dataset, the scale's ``config`` overrides,
        the experiment's ``settings``, then the user's ``--set`` overrides, in this order."""
        preset = load_config(self.params.get("preset"))
        config = with_overrides(preset, {"data.name": self.dataset, **self.params.get("config", {}), **settings})
        return config_from_dict(config.to_dict(), self.overrides)

    def recipe(self, name: str) -> Overrides:
        """Recipe ``name`` on this dataset, with the peak lr the ``lr`` parameter names (the
        recipe's, a searched one or a number) and the offset the ``offset`` parameter names."""
        overrides = recipe(name, self.dataset)
        choice = str(self.params.get("lr", "recipe"))
        source = f"recipe ({name}'s preset)"
        if choice == "searched":
            root = self.store.root if self.store else None
            if root is not None and choice_path(root, self.dataset, self.scale, name).exists():
                overrides["optim.lr"] = read_choice(root, self.dataset, self.scale, name).lr
                source = "searched"
            elif self.planning:  # the recipe's lr stands in until the search has chosen
                source = "searched (pending: the lr_search of this recipe chooses it)"
            elif root is None:
                raise ConfigError("--param lr=searched reads the run store; call run_experiment or report_experiment")
            else:
                read_choice(root, self.dataset, self.scale, name)  # raises: says which search to run
        elif choice != "recipe":
            overrides["optim.lr"] = parse_float(choice, "--param lr ('recipe', 'searched' or a number)")
            source = "--param lr"
        self.lr_sources[name] = source
        offset = str(self.params.get("offset", "reference"))
        if overrides["loss.name"] == "offset_ce":
            if offset not in OFFSETS:
                raise ConfigError(f"--param offset={offset}: choose one of: {', '.join(OFFSETS)}")
            overrides["loss.offset"] = OFFSETS[offset]
        return overrides


@dataclass
class Report:
    experiment: str
    title: str
    columns: list[str]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    tables: dict[str, Path] = field(default_factory=dict)
    runs_done: int = 0
    runs_missing: int = 0
    fits: list[dict[str, Any]] = field(default_factory=list)  # scaling-law fits (scaling_law.Fit.to_dict)
    fit_notes: list[str] = field(default_factory=list)  # the fits in words
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "title": self.title,
            "columns": self.columns,
            "rows": self.rows,
            "notes": self.notes,
            "figures": [str(p) for p in self.figures],
            "tables": {k: str(v) for k, v in self.tables.items()},
            "runs_done": self.runs_done,
            "runs_missing": self.runs_missing,
            "fits": self.fits,
            "fit_notes": self.fit_notes,
            "provenance": self.provenance,
        }


@dataclass
class Experiment:
    """One experiment of the paper: its scales, how to build its sweeps, how to report them.

    ``scales`` maps each scale to its parameters: a ``dataset`` default, optionally a
    ``preset`` to start from and ``config`` overrides, and the experiment's own ones;
    ``sweeps(setup)`` returns the sweeps; ``report(rows, setup, out_dir)`` returns a
    ``Report`` without ``tables`` (written here, the same way for every experiment);
    ``claims(report, others)`` the paper's claims it tests, as ``claims.Verdict`` s computed from
    the report (``others``: the reports of the same reproduction and dataset, by experiment name).
    """

    name: str
    summary: str  # what it reproduces, e.g. "Figure 1: ..."
    scales: dict[str, dict[str, Any]]
    sweeps: Callable[[Setup], list[Sweep]]
    report: Callable[[list[SweepRow], Setup, Path], Report]
    claims: Callable[[Report, dict[str, Report]], list[Any]] = lambda report, others: []
    parts: list[Part] = field(default_factory=list)  # the sections of the paper it makes in `reproduce`

    def setup(
        self, scale: str = "small", dataset: str | None = None, overrides: list[str] | None = None, **params: Any
    ) -> Setup:
        if scale not in self.scales:
            raise ConfigError(
                f"experiment '{self.name}' has no scale '{scale}'; choose one of: {', '.join(self.scales)}"
            )
        defaults = self.parameters(scale)
        chosen = {**defaults, **{k: v for k, v in params.items() if v is not None}}
        unknown = sorted(set(chosen) - set(defaults))
        if unknown:
            raise ConfigError(
                f"experiment '{self.name}' has no parameter '{unknown[0]}'; "
                f"its parameters: {', '.join(sorted(defaults))}"
            )
        return Setup(self.name, scale, dataset or chosen["dataset"], list(overrides or []), chosen)

    def parameters(self, scale: str) -> dict[str, Any]:
        """The scale's parameters with their defaults, including those every experiment has."""
        return {**COMMON_PARAMS, **self.scales[scale]}


# Parameters of every experiment: the peak lr ("recipe": the recipe's; "searched": the one
# `robustlab experiment lr_search` stored for the recipe, dataset and scale; or a number), and
# OffsetCrossEntropy's offset by name (recipes.OFFSETS).
COMMON_PARAMS: dict[str, Any] = {"lr": "recipe", "offset": "reference"}


EXPERIMENTS: Registry[Experiment] = Registry("experiment")


def get_experiment(name: str) -> Experiment:
    # Importing this module imported its package first, and the package registers every experiment.
    return EXPERIMENTS.get(name)


# The sections of the paper, walked from the registry (``robustlab reproduce``)


def paper_parts() -> list[Part]:
    """Every registered experiment's parts, in the paper's order."""
    parts = [part for name in EXPERIMENTS.names() for part in EXPERIMENTS.get(name).parts]
    return sorted(parts, key=lambda part: part.order)


def searched_recipe_jobs(scale: str) -> list[Job]:
    """One lr search per dataset that a later part trains on, over every recipe trained there."""
    needed: dict[str | None, list[str]] = {}
    for part in paper_parts():
        for job in part.jobs(scale) if part.jobs is not searched_recipe_jobs else []:
            needed.setdefault(job.dataset, []).extend(job_recipes(job, scale))
    return [Job("lr_search", dataset, {"recipes": list(dict.fromkeys(names))}) for dataset, names in needed.items()]


def job_recipes(job: Job, scale: str) -> list[str]:
    """The recipes whose runs ``job`` trains (its sweeps', planned without a run store)."""
    experiment = get_experiment(job.experiment)
    setup = experiment.setup(scale, job.dataset, [], **{**job.params, "lr": "recipe"})
    return [sweep.recipe for sweep in experiment.sweeps(replace(setup, planning=True)) if sweep.recipe]


def run_experiment(
    setup: Setup,
    store: RunStore,
    out_dir: str | Path | None = None,
    execution: Execution | None = None,
    dry_run: bool = False,
) -> tuple[list[SweepRow], Report | None]:
    """Train every run of the experiment not in ``store`` yet, then write its report.

    With ``dry_run`` nothing is trained and no report is written: the rows say what
    would train (``train``), resume (``resume``) or is already there (``done``).
    ``execution`` says where and how the runs train (``robustlab.experiments.launch``):
    the points of all the experiment's sweeps share the workers. Failed points are rows with status ``failed`` and their ``error``; the report
    leaves them out. With a launcher that does not wait, no report is written while runs are left.
    """
    experiment = get_experiment(setup.experiment)
    setup = replace(setup, store=store, planning=setup.planning or dry_run)
    rows = sweep_rows(experiment, setup, store)
    if dry_run:
        return rows, None
    execution = execution or Execution()
    from robustlab.runtime import torch_threads  # torch: only once runs train, not to list a sweep's points

    with torch_threads(1 if setup.scale in MINIATURES else None):  # tiny nets: one thread is faster
        rows = train_rows(rows, store, execution)
        if not execution.waits and any(row.status not in ("done", "trained", "failed") for row in rows):
            return rows, None  # submitted: the report comes once the jobs are done
        # Sweeps may grow with their results (a learning-rate search whose best lr lies at the edge of
        # its grid widens it): train the new points until the sweeps stand still.
        tried = {point_key(row.config) for row in rows}
        while fresh := [row for row in sweep_rows(experiment, setup, store) if point_key(row.config) not in tried]:
            rows += train_rows(fresh, store, execution)
            tried |= {point_key(row.config) for row in fresh}
    return rows, _write_report(experiment, rows, setup, _out_dir(out_dir, store, setup))


def sweep_rows(experiment: Experiment, setup: Setup, store: RunStore) -> list[SweepRow]:
    """The rows of every sweep of the experiment, with what the store holds of them."""
    return [row for sweep in experiment.sweeps(setup) for row in collect(sweep, store)]


def report_experiment(setup: Setup, store: RunStore, out_dir: str | Path | None = None) -> Report:
    """The experiment's figure and table from the runs already in ``store``; trains nothing."""
    experiment = get_experiment(setup.experiment)
    setup = replace(setup, store=store)
    rows = sweep_rows(experiment, setup, store)
    if not any(row.results is not None for row in rows):  # an empty figure would look like a result
        raise RobustlabError(
            f"no finished runs of {setup.experiment} (scale {setup.scale}, {setup.dataset}) in {store.root} "
            f"(0 of {len(rows)}); train them with `robustlab experiment {setup.experiment} --scale {setup.scale}`, "
            "or give the --runs-root that holds them"
        )
    return _write_report(experiment, rows, setup, _out_dir(out_dir, store, setup))


def _out_dir(out_dir: str | Path | None, store: RunStore, setup: Setup) -> Path:
    default = store.root / "reports" / setup.slug(setup.scale)
    path = Path(out_dir) if out_dir else default
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_report(experiment: Experiment, rows: list[SweepRow], setup: Setup, out_dir: Path) -> Report:
    done = [row for row in rows if row.results is not None]
    report = experiment.report(done, setup, out_dir)
    report.runs_done, report.runs_missing = len(done), len(rows) - len(done)
    report.notes += recipe_notes(done, setup.lr_sources)
    if report.runs_missing:
        report.notes.append(
            f"{report.runs_missing} of {len(rows)} runs have no results yet (run `robustlab experiment` to train them)."
        )
    report.provenance = provenance(setup, done)
    notes = report.fit_notes + report.notes
    report.tables = write_table(report.rows, out_dir / "table", report.columns, notes, report.fits)
    return report


def recipe_notes(rows: list[SweepRow], lr_sources: dict[str, str] | None = None) -> list[str]:
    """Which peak learning rate (and where it came from: ``Setup.lr_sources`` by recipe) and which
    OffsetCrossEntropy offset each sweep trained with (one note for all sweeps when they agree)."""
    recipes: dict[str, str] = {}  # sweep label -> its recipe
    for label in dict.fromkeys(row.label for row in rows):
        configs = [row.config for row in rows if row.label == label]
        lrs = sorted({c.optim.lr for c in configs})
        text = f"peak lr {', '.join(f'{lr:g}' for lr in lrs)}"
        recipe_name = next(row.recipe for row in rows if row.label == label)
        if lr_sources and recipe_name in lr_sources:
            text += f" ({lr_sources[recipe_name]})"
        offsets = sorted({c.loss.offset for c in configs if c.loss.name == "offset_ce"})
        if offsets:
            text += ", OffsetCrossEntropy offset " + ", ".join(_offset_name(u) for u in offsets)
            text += f", temperature {configs[0].loss.temperature:g}"
        recipes[label] = text
    if len(recipes) > 2 and len(set(recipes.values())) == 1:
        return [f"every sweep: {next(iter(recipes.values()))}."]
    return [f"{label}: {text}." for label, text in recipes.items()]


def _offset_name(offset: float) -> str:
    named = {
        "reference": "sqrt(2)*36/255, the paper's reference code (berndprach/IntriguingProperties)",
        "paper-text": "1/4, the paper's text",
    }
    for name, value in OFFSETS.items():
        if math.isclose(offset, value):
            return f"{offset:.4g} ('{name}': {named[name]})"
    return f"{offset:.4g}" + (" (sqrt(2): robust overfitting)" if math.isclose(offset, math.sqrt(2)) else "")


def provenance(setup: Setup, rows: list[SweepRow]) -> dict[str, Any]:
    """What produced a report: the setup and what the finished runs say about where they ran."""
    results = [row.results for row in rows if row.results is not None]
    return {
        "experiment": setup.experiment,
        "scale": setup.scale,
        "dataset": setup.dataset,
        "params": {k: v for k, v in setup.params.items() if k not in ("config", "dataset")},
        "overrides": setup.overrides,
        "devices": sorted({r.device for r in results}),
        "torch": sorted({r.torch_version for r in results}),
        "train_hours": sum(r.train_time_s for r in results) / 3600,
    }
