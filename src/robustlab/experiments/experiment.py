"""What an experiment is, and the two things one does with it: run it, and report it.

An ``Experiment`` turns a ``Setup`` (scale, dataset, ``--set`` overrides and the
scale's parameters) into sweeps, and turns the sweep rows the store holds into a
``Report`` (a figure, a table and notes). ``run_experiment`` trains what is missing and
reports; ``report_experiment`` only reads the store, so a figure can be redrawn at any
time, also while a sweep is still running (missing points are left out and counted).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from robustlab.certify.evaluate import evaluate
from robustlab.certify.results import EvalResult, eps_label
from robustlab.config import PAPER_EPS, ConfigError, ExperimentConfig, config_from_dict, load_config
from robustlab.data.splits import prepare_data
from robustlab.errors import RobustlabError
from robustlab.experiments.launch import SubmititLauncher
from robustlab.experiments.sweep import Overrides, Sweep, SweepRow, collect, train_rows, with_overrides
from robustlab.files import read_json
from robustlab.registry import Registry
from robustlab.report.plots import Curve, Panel
from robustlab.report.tables import write_table
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
    store: RunStore | None = None  # the run store (set by run/report_experiment), for what experiments keep there

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
        chosen = {**self.scales[scale], **{k: v for k, v in params.items() if v is not None}}
        unknown = sorted(set(chosen) - set(self.scales[scale]))
        if unknown:
            raise ConfigError(
                f"experiment '{self.name}' has no parameter '{unknown[0]}'; "
                f"its parameters: {', '.join(sorted(self.scales[scale]))}"
            )
        return Setup(self.name, scale, dataset or chosen["dataset"], list(overrides or []), chosen)


EXPERIMENTS: Registry[Experiment] = Registry("experiment")


def get_experiment(name: str) -> Experiment:
    # Importing this module imported its package first, and the package registers every experiment.
    return EXPERIMENTS.get(name)


def run_experiment(
    setup: Setup,
    store: RunStore,
    out_dir: str | Path | None = None,
    device: str | None = None,
    dry_run: bool = False,
    progress: bool = True,
    workers: int = 1,
    gpus_per_job: int = 1,
    launcher: SubmititLauncher | None = None,
) -> tuple[list[SweepRow], Report | None]:
    """Train every run of the experiment not in ``store`` yet, then write its report.

    With ``dry_run`` nothing is trained and no report is written: the rows say what
    would train (``train``), resume (``resume``) or is already there (``done``).
    ``workers``, ``gpus_per_job`` and ``launcher`` say where the runs train
    (``robustlab.experiments.launch``): the points of all the experiment's sweeps share the
    workers. Failed points are rows with status ``failed`` and their ``error``; the report
    leaves them out. With a launcher that does not wait, no report is written either.
    """
    experiment = get_experiment(setup.experiment)
    setup = replace(setup, store=store)
    rows = [row for sweep in experiment.sweeps(setup) for row in collect(sweep, store)]
    if dry_run:
        return rows, None
    rows = train_rows(rows, store, device, progress, workers, gpus_per_job, launcher)
    if launcher is not None and not launcher.wait:
        return rows, None
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
    if report.runs_missing:
        report.notes.append(
            f"{report.runs_missing} of {len(rows)} runs have no results yet (run `robustlab experiment` to train them)."
        )
    report.tables = write_table(report.rows, out_dir / "table", report.columns, report.notes)
    return report


# ---------------------------------------------------------------------------------------
# Reading results (a run's RunResults, or the EvalResult of certifying its training set) in
# one place; reports show percentages, the results hold fractions

Results = RunResults | EvalResult


def accuracy_percent(results: Results | None) -> float | None:
    return None if results is None else 100 * results.accuracy


def cra_percent(results: Results | None, eps: float = PAPER_EPS) -> float | None:
    """Certified robust accuracy in percent at radius ``eps``; None for standard nets."""
    value = None if results is None else results.cra_at(eps)
    return None if value is None else 100 * value


def cra_curve_percent(results: Results | None) -> tuple[list[float], list[float]] | None:
    """(radii, CRA in percent) at every radius the run was certified at; None for standard nets."""
    points = [] if results is None else results.cra
    return ([p.eps for p in points], [100 * p.cra for p in points]) if points else None


TRAIN_EVAL_FILE = "train_eval.json"


def training_set_evaluation(row: SweepRow) -> EvalResult:
    """Certified evaluation of the very images a run trained on (no augmentation).

    results.json has only running training metrics of the last epoch, so this loads the
    final weights and certifies them once; the result is kept in the run folder.
    """
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


def cra_column(eps: float) -> str:
    return f"CRA {eps_label(eps)}"


def seed_mean_table(
    rows: list[SweepRow], x_name: str, x_of: Callable[[ExperimentConfig], Any], eps: Sequence[float] = (PAPER_EPS,)
) -> list[dict[str, Any]]:
    """One table row per (sweep label, x): accuracy and CRA (percent) at each ``eps``, averaged
    over seeds. Rows are dicts because their columns depend on ``x_name`` and ``eps``."""
    groups: dict[tuple[str, Any], list[SweepRow]] = {}
    for row in rows:
        groups.setdefault((row.label, x_of(row.config)), []).append(row)
    return [
        {
            "model": label,
            x_name: x,
            "seeds": len(group),
            "accuracy": mean_over_seeds([accuracy_percent(r.results) for r in group]),
            **{cra_column(e): mean_over_seeds([cra_percent(r.results, e) for r in group]) for e in eps},
        }
        for (label, x), group in sorted(groups.items())
    ]


def metric_panels(table: list[dict[str, Any]], x_name: str) -> list[Panel]:
    """Accuracy of every model, then CRA of the 1-Lipschitz ones at each radius, against ``x_name``."""
    models = list(dict.fromkeys(row["model"] for row in table))
    columns = [c for c in (table[0] if table else {}) if c.startswith("CRA ")]
    panels = []
    for key in ["accuracy", *columns]:
        curves = []
        for model in models:
            points = [(r[x_name], r[key]) for r in table if r["model"] == model and r[key] is not None]
            if points:
                curves.append(Curve(model, [x for x, _ in points], [y for _, y in points]))
        panels.append(Panel(f"{key} (%)", curves))
    return panels
