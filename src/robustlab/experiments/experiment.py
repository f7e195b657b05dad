"""What an experiment is, and the two things one does with it: run it, and report it.

An ``Experiment`` turns a ``Setup`` (scale, dataset, ``--set`` overrides and the
scale's parameters) into sweeps, and turns the sweep rows the store holds into a
``Report`` (a figure, a table and notes). ``run_experiment`` trains what is missing and
reports; ``report_experiment`` only reads the store, so a figure can be redrawn at any
time, also while a sweep is still running (missing points are left out and counted).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from robustlab.certify.evaluate import evaluate
from robustlab.certify.results import EvalResult, eps_label
from robustlab.certify.smoothing.results import SmoothingResult
from robustlab.config import PAPER_EPS, ConfigError, ExperimentConfig, config_from_dict, load_config, parse_float
from robustlab.data.splits import prepare_data
from robustlab.errors import RobustlabError
from robustlab.experiments.choices import read_choice
from robustlab.experiments.launch import Execution
from robustlab.experiments.recipes import OFFSETS, recipe
from robustlab.experiments.sweep import Overrides, Sweep, SweepRow, collect, train_rows, with_overrides
from robustlab.files import read_json
from robustlab.registry import Registry
from robustlab.report.plots import Curve, Panel
from robustlab.report.scaling_law import Fit, fit_scaling
from robustlab.report.tables import SD, write_table
from robustlab.runs.checkpoint import load_run_model
from robustlab.runs.results import RunResults
from robustlab.runs.store import Run, RunStore
from robustlab.runtime import resolve_device


@dataclass
class Setup:
    """Everything that selects the configs of one experiment."""

    experiment: str
    scale: str
    dataset: str
    overrides: list[str] = field(default_factory=list)  # "key=value", applied to every run
    params: dict[str, Any] = field(default_factory=dict)  # the scale's parameters, as changed
    store: RunStore | None = None  # the run store (set by run/report_experiment): searched learning rates, costs

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
        if choice == "searched":
            if self.store is None:
                raise ConfigError("--param lr=searched reads the run store; call run_experiment or report_experiment")
            overrides["optim.lr"] = read_choice(self.store.root, self.dataset, self.scale, name).lr
        elif choice != "recipe":
            overrides["optim.lr"] = parse_float(choice, "--param lr ('recipe', 'searched' or a number)")
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
    ``Report`` without ``tables`` (written here, the same way for every experiment).
    """

    name: str
    summary: str  # what it reproduces, e.g. "Figure 1: ..."
    scales: dict[str, dict[str, Any]]
    sweeps: Callable[[Setup], list[Sweep]]
    report: Callable[[list[SweepRow], Setup, Path], Report]

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
    setup = replace(setup, store=store)
    rows = [row for sweep in experiment.sweeps(setup) for row in collect(sweep, store)]
    if dry_run:
        return rows, None
    execution = execution or Execution()
    rows = train_rows(rows, store, execution)
    if not execution.waits and any(row.status not in ("done", "trained", "failed") for row in rows):
        return rows, None  # submitted: the report comes once the jobs are done
    return rows, _write_report(experiment, rows, setup, _out_dir(out_dir, store, setup))


def report_experiment(setup: Setup, store: RunStore, out_dir: str | Path | None = None) -> Report:
    """The experiment's figure and table from the runs already in ``store``; trains nothing."""
    experiment = get_experiment(setup.experiment)
    setup = replace(setup, store=store)
    rows = [row for sweep in experiment.sweeps(setup) for row in collect(sweep, store)]
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
    report.notes += recipe_notes(done)
    if report.runs_missing:
        report.notes.append(
            f"{report.runs_missing} of {len(rows)} runs have no results yet (run `robustlab experiment` to train them)."
        )
    report.provenance = provenance(setup, done)
    report.tables = write_table(report.rows, out_dir / "table", report.columns, report.fit_notes + report.notes)
    return report


def recipe_notes(rows: list[SweepRow]) -> list[str]:
    """Which peak learning rate and which OffsetCrossEntropy offset each sweep trained with
    (one note for all sweeps when they agree)."""
    recipes: dict[str, str] = {}  # sweep label -> its recipe
    for label in dict.fromkeys(row.label for row in rows):
        configs = [row.config for row in rows if row.label == label]
        lrs = sorted({c.optim.lr for c in configs})
        text = f"peak lr {', '.join(f'{lr:g}' for lr in lrs)}"
        offsets = sorted({c.loss.offset for c in configs if c.loss.name == "offset_ce"})
        if offsets:
            text += ", OffsetCrossEntropy offset " + ", ".join(_offset_name(u) for u in offsets)
            text += f", temperature {configs[0].loss.temperature:g}"
        recipes[label] = text
    if len(recipes) > 2 and len(set(recipes.values())) == 1:
        return [f"every sweep: {next(iter(recipes.values()))}."]
    return [f"{label}: {text}." for label, text in recipes.items()]


def _offset_name(offset: float) -> str:
    named = {"reference": "sqrt(2)*36/255, the reference code's and SPEC's", "paper-text": "1/4, the paper's text"}
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


# ---------------------------------------------------------------------------------------
# Reading results (a run's RunResults, the EvalResult of certifying its training images, or a
# smoothing estimate) in one place; reports show percentages, the results hold fractions

Results = RunResults | EvalResult | SmoothingResult


def accuracy_percent(results: Results | None) -> float | None:
    return None if results is None else 100 * results.accuracy


def cra_percent(results: Results | None, eps: float = PAPER_EPS) -> float | None:
    """Certified robust accuracy in percent at radius ``eps``; None for standard nets."""
    value = None if results is None else results.cra_at(eps)
    return None if value is None else 100 * value


def cra_curve_percent(results: Results | None) -> tuple[list[float], list[float]] | None:
    """(radii, CRA in percent) at every radius the run was certified at; None for standard nets."""
    points = (results.cra if results is not None else None) or []
    return ([p.eps for p in points], [100 * p.cra for p in points]) if points else None


def certified_radii(rows: list[SweepRow]) -> list[float]:
    """Every radius the runs were certified at, sorted."""
    return sorted({round(p.eps, 12) for row in rows if row.results is not None for p in row.results.cra})


TRAIN_EVAL_FILE = "train_eval.json"


def training_set_evaluation(row: SweepRow) -> EvalResult:
    """Certified evaluation of the very images a run trained on (no augmentation).

    A run trained with ``eval.train_set`` has it in its results (computed where it trained);
    for others the final weights are loaded and certified once here, and the result is kept
    in the run folder.
    """
    if row.results is not None and row.results.train_eval is not None:
        return row.results.train_eval
    if row.run is None:
        raise ValueError(f"{row.sweep} {row.overrides}: the run has not been trained")
    run = Run(row.run)
    cached = run.path / TRAIN_EVAL_FILE
    if cached.exists():
        return EvalResult.from_dict(read_json(cached))
    device = resolve_device("auto")
    model, config = load_run_model(run.path, device)
    data = prepare_data(config.data)
    result = evaluate(
        model, data.x_train, data.y_train, config.eval.eps, config.eval.batch_size, device, data.num_classes
    )
    run.write_json(TRAIN_EVAL_FILE, result.to_dict())
    return result


def mean_over_seeds(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def sd_over_seeds(values: Sequence[float | None]) -> float | None:
    """Sample standard deviation (n - 1) over the seeds; None with fewer than two values."""
    present = [v for v in values if v is not None]
    return float(np.std(present, ddof=1)) if len(present) >= 2 else None


def result_readers(eps: Sequence[float]) -> dict[str, Callable[[Results | None], float | None]]:
    """Table column -> the value (percent) of one result: accuracy, then CRA at each radius."""
    readers: dict[str, Callable[[Results | None], float | None]] = {"accuracy": accuracy_percent}
    for e in eps:
        readers[cra_column(e)] = functools.partial(cra_percent, eps=e)
    return readers


def cra_column(eps: float) -> str:
    return f"CRA {eps_label(eps)}"


def seed_mean_table(
    rows: list[SweepRow],
    x_name: str,
    x_of: Callable[[ExperimentConfig], Any],
    eps: Sequence[float] = (PAPER_EPS,),
    metrics: dict[str, Callable[[SweepRow], float | None]] | None = None,
    results_of: Callable[[SweepRow], Results | None] = lambda row: row.results,
) -> list[dict[str, Any]]:
    """One table row per (sweep label, x): the mean and standard deviation over seeds of
    accuracy and CRA at each ``eps`` (read from ``results_of(row)``) and of any further
    ``metrics`` (name: the value of one run)."""

    def on_results(read: Callable[[Results | None], float | None]) -> Callable[[SweepRow], float | None]:
        return lambda row: read(results_of(row))

    readers = {name: on_results(read) for name, read in result_readers(eps).items()} | (metrics or {})
    groups: dict[tuple[str, Any], list[SweepRow]] = {}
    for row in rows:
        groups.setdefault((row.label, x_of(row.config)), []).append(row)
    table = []
    for (label, x), group in sorted(groups.items()):
        line: dict[str, Any] = {"model": label, x_name: x, "seeds": len(group)}
        for name, read in readers.items():
            values = [read(r) for r in group]
            line[name], line[name + SD] = mean_over_seeds(values), sd_over_seeds(values)
        table.append(line)
    return table


def metric_panels(
    table: list[dict[str, Any]], x_name: str, keys: Sequence[str] | None = None, dashed: Sequence[str] = ()
) -> list[Panel]:
    """One panel per metric (default: accuracy, then CRA at each radius) against ``x_name``:
    a curve per model with error bars of one standard deviation over seeds. A key
    ``"train accuracy"`` is drawn dashed into the ``accuracy`` panel when listed in ``dashed``."""
    models = list(dict.fromkeys(row["model"] for row in table))
    columns = list(table[0]) if table else []
    keys = keys or ["accuracy", *[c for c in columns if c.startswith("CRA ") and not c.endswith(SD)]]
    panels = []
    for key in keys:
        curves = []
        for extra in ["", *dashed]:
            column = f"{extra} {key}".strip()
            for model in models:
                points = [r for r in table if r["model"] == model and r.get(column) is not None]
                if points:
                    label = f"{model} ({extra})" if extra else model
                    xs, ys = [r[x_name] for r in points], [r[column] for r in points]
                    errors = [r.get(column + SD) for r in points]
                    curves.append(Curve(label, xs, ys, dashed=bool(extra), yerr=errors, colour=model))
        panels.append(Panel(f"{key} (%)", curves))
    return panels


# ---------------------------------------------------------------------------------------
# Scaling-law fits of a sweep


def observations(
    rows: list[SweepRow], x_of: Callable[[SweepRow], float], read: Callable[[SweepRow], float | None]
) -> tuple[list[float], list[float]]:
    """(x, value) of every finished run with a value: each seed is one observation."""
    pairs = [(x_of(r), read(r)) for r in rows]
    present = [(x, y) for x, y in pairs if y is not None]
    return [x for x, _ in present], [y for _, y in present]


EXTRAPOLATE_DOUBLINGS = 6  # a fit is drawn at most this many doublings beyond the measured range


def fit_curve(fit: Fit, label: str, up_to: float | None = None) -> Curve:
    """A usable fit drawn (a line dash-dotted, a sigmoid dotted) over the measured range. A fit that
    is not flagged also gets its 95% band and, when ``up_to`` lies beyond the range (at most
    ``EXTRAPOLATE_DOUBLINGS`` doublings), its extrapolation towards ``up_to``."""
    low, high = fit.x_range
    trusted = fit.status == "ok"
    end = high
    if trusted and up_to and math.isfinite(up_to) and up_to > high:
        end = min(up_to, high * 2**EXTRAPOLATE_DOUBLINGS)
    xs = np.geomspace(low, end, 60)
    name = f"{label}: {fit.kind} fit" + (", extrapolated" if end > high else "") + ("" if trusted else " (flagged)")
    return Curve(
        name,
        xs.tolist(),
        fit.predict(xs).tolist(),
        linestyle="-." if fit.kind == "line" else ":",
        band=fit.band(xs) if trusted else None,
        markers=False,
        colour=label,
    )


def fit_panels(
    panels: list[Panel],
    rows: list[SweepRow],
    x_of: Callable[[SweepRow], float],
    readers: dict[str, Callable[[SweepRow], float | None]],
    *,
    x_name: str,
    chance: float,
    target: float | None = None,
) -> tuple[list[Panel], list[str], list[dict[str, Any]]]:
    """Add the line fit in log2 x (and the sigmoid where it is determined) to each panel whose
    metric ``readers`` names, per sweep label; returns the panels, a note per fit and the fits
    as data. With ``target``, the x at which each CRA fit reaches it, drawn up to that x."""
    notes, fits = [], []
    for panel in panels:
        metric = panel.ylabel.removesuffix(" (%)")
        if metric not in readers:
            continue
        for label in dict.fromkeys(r.label for r in rows):
            xs, ys = observations([r for r in rows if r.label == label], x_of, readers[metric])
            for kind in ("line", "sigmoid") if ys else ():
                fit = fit_scaling(xs, ys, kind, metric=f"{label}, {metric}", x_name=x_name, chance=chance)
                fits.append(fit.to_dict())
                notes.append(fit.summary())
                if not fit.usable:
                    continue
                reach = None
                if target is not None and metric.startswith("CRA"):
                    notes.append(fit.target_summary(target))
                    reach = fit.x_for(target)[0]
                if kind == "line" or fit.status == "ok":  # a flagged sigmoid is told, not drawn
                    panel.curves.append(fit_curve(fit, label, reach))
    return panels, notes, fits
