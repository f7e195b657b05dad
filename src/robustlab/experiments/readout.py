"""Reading a sweep's results: percentages per run, means and sds over seeds, panels and fits.

Results are a run's ``RunResults``, the ``EvalResult`` of certifying its training images, or a
smoothing estimate; they hold fractions, reports show percentages. Every experiment reads its
rows through these helpers, so a column means the same in every table.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from robustlab.config import PAPER_EPS, ExperimentConfig
from robustlab.experiments.sweep import SweepRow
from robustlab.files import read_json
from robustlab.records import EvalResult, SmoothingResult, eps_label
from robustlab.report.plots import Curve, Panel
from robustlab.report.tables import SD
from robustlab.runs.result_files import RunResults
from robustlab.runs.store import Run

if TYPE_CHECKING:
    from robustlab.report.scaling_law import Fit

Results = RunResults | EvalResult | SmoothingResult


def accuracy_percent(results: Results | None) -> float | None:
    return None if results is None else 100 * results.accuracy


def cra_percent(results: Results | None, eps: float = PAPER_EPS) -> float | None:
    """Certified robust accuracy in percent at radius ``eps``; None for standard nets."""
    value = None if results is None else results.cra_at(eps)
    return None if value is None else 100 * value


def radii_certified_at(rows: list[SweepRow]) -> list[float]:
    """The eps grid of a sweep: every radius its finished runs were certified at, sorted (not the
    per-image certified radii of ``certify.margins``)."""
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
    # torch and the data: only to certify, not where the experiments list their sweeps
    from robustlab.certify.evaluate import evaluate
    from robustlab.data.splits import prepare_data
    from robustlab.runs.checkpoint import load_run_model
    from robustlab.runtime import resolve_device

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
    from robustlab.report.scaling_law import fit_scaling  # SciPy: only when a report is written

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
                    best = fit.x_for(target)[0]
                    reach = None if fit.contradiction(best, target) else best  # no curve towards a refuted x
                if kind == "line" or fit.status == "ok":  # a flagged sigmoid is told, not drawn
                    panel.curves.append(fit_curve(fit, label, reach))
    return panels, notes, fits
