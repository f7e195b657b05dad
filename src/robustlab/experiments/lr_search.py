"""Learning-rate search (paper Section 4): the one hyperparameter the paper tunes.

For each recipe, train with several peak learning rates (a log-spaced grid, or log-uniform
random draws) for a short budget (the paper: 100 epochs; scaled down with the scale) on a
validation split (CIFAR-10: the reference code's 45k/5k), and choose the lr with the highest
mean validation CRA at 36/255 over the seeds (validation accuracy for standard nets, which
certify nothing; the smoothed classifier's estimate for a smoothing base net). A best lr at the
edge of the grid widens it by itself: one more grid step beyond that edge, up to ``widen`` times
(``run_experiment`` trains the new points as they appear). The choice is stored in the run store,
``choices/lr-<dataset>-<scale>-<recipe>.json``, once every run of the recipe has finished; the other
experiments train with it when given ``--param lr=searched`` (``reproduce`` gives it to every
experiment, and searches every recipe and dataset they train).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from robustlab.config import PAPER_EPS, ConfigError
from robustlab.experiments.choices import LrChoice, store_choice
from robustlab.experiments.claims import FAILS, HOLDS, Verdict
from robustlab.experiments.experiment import EXPERIMENTS, Experiment, Report, Setup, searched_recipe_jobs
from robustlab.experiments.parts import Part
from robustlab.experiments.readout import Results, accuracy_percent, cra_percent, metric_panels, seed_mean_table
from robustlab.experiments.recipes import DEMO_CONFIG
from robustlab.experiments.sweep import Sweep, SweepRow, collect
from robustlab.report.plots import plot_panels

SCALES = {
    "smoke": {
        "dataset": "digits",
        "preset": "digits",
        "recipes": ("tiny-lipmlp", "tiny-convnet", "tiny-smoothing"),  # every recipe the smoke experiments train
        "lr_min": 0.03,
        "lr_max": 1.0,
        "lr_count": 3,
        "sampling": "grid",
        "widen": 2,  # grid steps a search may add beyond an edge its best lr sits at
        "epochs": 1,
        "seeds": (0,),
        "val_size": 287,
    },
    "demo": {
        "dataset": "digits",
        "preset": "digits",
        "recipes": ("tiny-lipmlp", "tiny-convnet", "tiny-smoothing", "tiny-lipmlp-wide", "tiny-lipconvnet-cpl"),
        "lr_min": 0.01,
        "lr_max": 3.1623,
        "lr_count": 6,
        "sampling": "grid",
        "widen": 2,  # grid steps a search may add beyond an edge its best lr sits at
        "epochs": 25,  # the demo experiments' own budget: their runs are short enough
        "seeds": (0, 1),
        "val_size": 287,  # 20% of the 1,437 training digits
        "config": DEMO_CONFIG,
    },
    "small": {
        "dataset": "cifar10",
        "recipes": ("small-lipmlp", "small-convnet", "small-smoothing", "small-lipconvnet-cpl", "small-convnet-cpl"),
        "lr_min": 0.01,
        "lr_max": 3.1623,
        "lr_count": 6,
        "sampling": "grid",
        "widen": 2,  # grid steps a search may add beyond an edge its best lr sits at
        "epochs": 10,
        "seeds": (0, 1, 2),
        "val_size": 5000,
        "config": {"data.split": "reference"},  # the reference code's 5,000 validation images
    },
    "paper": {
        "dataset": "cifar10",
        "recipes": ("lipconvnet-cpl", "lipmlp-aol", "simpleconvnet", "smoothing", "wide-lipconvnet-cpl"),
        "lr_min": 0.01,
        "lr_max": 3.1623,
        "lr_count": 6,
        "sampling": "grid",
        "widen": 2,  # grid steps a search may add beyond an edge its best lr sits at
        "epochs": 100,
        "seeds": (0,),
        "val_size": 5000,
        "config": {"data.split": "reference"},
    },
}


def learning_rates(params: dict) -> list[float]:
    """The searched peak lrs: ``lr_count`` log-spaced from ``lr_min`` to ``lr_max`` (``grid``), or as
    many log-uniform draws (``random``, seeded by the first seed), to three significant digits."""
    low, high, count = float(params["lr_min"]), float(params["lr_max"]), int(params["lr_count"])
    if not 0 < low <= high or count < 1:
        raise ConfigError(f"lr search: need 0 < lr_min <= lr_max and lr_count >= 1, got {low}, {high}, {count}")
    if params["sampling"] == "grid":
        values = np.geomspace(low, high, count)
    elif params["sampling"] == "random":
        rng = np.random.default_rng(params["seeds"][0])
        values = np.exp(rng.uniform(math.log(low), math.log(high), count))
    else:
        raise ConfigError(f"--param sampling={params['sampling']}: choose grid or random")
    return sorted({float(f"{v:.3g}") for v in values})


def sweeps(setup: Setup) -> list[Sweep]:
    return [recipe_sweep(setup, name, searched_rates(setup, name)) for name in setup.params["recipes"]]


def recipe_sweep(setup: Setup, name: str, rates: list[float]) -> Sweep:
    params = setup.params
    settings = {"data.val_size": params["val_size"], "train.epochs": params["epochs"], "train.scale_epochs": False}
    base = setup.base_config({**setup.recipe(name), **settings})
    setup.lr_sources[name] = "lr_search grid"
    grid = {"optim.lr": rates, "seed": list(params["seeds"])}
    return Sweep(name=setup.slug(name), label=name, recipe=name, base=base, grid=grid)


def searched_rates(setup: Setup, name: str) -> list[float]:
    """The grid of ``learning_rates``, widened by one grid step beyond an edge each time every run
    has finished and the best lr lies on that edge (at most ``widen`` steps in all)."""
    rates = learning_rates(setup.params)
    for _ in range(int(setup.params["widen"]) if setup.store is not None and len(rates) > 1 else 0):
        rows = collect(recipe_sweep(setup, name, rates), setup.store)  # type: ignore[arg-type]
        if any(row.results is None for row in rows):
            break
        best = choose_lr(rows, setup, name).lr
        ratio = rates[1] / rates[0]
        if best == rates[0]:
            rates = [_three_digits(rates[0] / ratio), *rates]
        elif best == rates[-1]:
            rates = [*rates, _three_digits(rates[-1] * ratio)]
        else:
            break
    return rates


def _three_digits(value: float) -> float:
    return float(f"{value:.3g}")


def selection_metric(rows: list[SweepRow]) -> str:
    """Validation CRA at 36/255 where the nets certify, else validation accuracy."""
    return "CRA 36/255" if any(cra_percent(scored(r)) is not None for r in rows) else "accuracy"


def scored(row: SweepRow) -> Results | None:
    """What a run is judged by: a smoothing base net's smoothed estimate, else its certified evaluation."""
    return row.results.smoothing if row.results is not None and row.results.smoothing is not None else row.results


def choose_lr(rows: list[SweepRow], setup: Setup, recipe_name: str) -> LrChoice:
    """The lr of ``rows`` (one recipe's finished runs) with the best mean over seeds."""
    metric = selection_metric(rows)
    read = (
        (lambda r: cra_percent(scored(r), PAPER_EPS))
        if metric != "accuracy"
        else (lambda r: accuracy_percent(scored(r)))
    )
    by_lr: dict[float, list[float]] = {}
    for row in rows:
        value = read(row)
        if value is not None:
            by_lr.setdefault(row.config.optim.lr, []).append(value)
    if not by_lr:
        raise ValueError(f"no finished runs of {recipe_name} to choose a learning rate from")
    means = {lr: float(np.mean(values)) for lr, values in by_lr.items()}
    best = max(sorted(means), key=lambda lr: means[lr])  # ties: the smallest lr
    searched = sorted(means)
    return LrChoice(
        recipe_name,
        setup.dataset,
        setup.scale,
        best,
        metric,
        means[best],
        searched,
        max(len(v) for v in by_lr.values()),
        float(rows[0].config.train.epochs),
        len(searched) > 1 and best in (searched[0], searched[-1]),
    )


def report(rows: list[SweepRow], setup: Setup, out_dir: Path) -> Report:
    table = [line | {"chosen": ""} for line in seed_mean_table(rows, "lr", lambda config: config.optim.lr)]
    notes = []
    for name in setup.params["recipes"]:
        runs = [r for r in rows if r.label == name]
        rates = searched_rates(setup, name)
        expected = len(rates) * len(setup.params["seeds"])
        if not runs:
            continue
        choice = choose_lr(runs, setup, name)
        for line in table:
            if line["model"] == name:
                line["chosen"] = "yes" if line["lr"] == choice.lr else ""
        text = (
            f"{name}: chosen peak lr {choice.lr:g} (validation {choice.metric} {choice.value:.1f}%, mean of "
            f"{choice.seeds} seed(s), {choice.epochs:g} epochs)"
        )
        widened = len(rates) - len(learning_rates(setup.params))
        if widened:
            text += f"; the grid was widened by {widened} step(s) beyond its edge ({rates[0]:g} to {rates[-1]:g})"
        if choice.at_edge:
            text += "; the best lr is still at the edge of the searched range (raise --param widen, or lr_min / lr_max)"
        if len(runs) < expected or setup.store is None:
            text += f"; not stored: {len(runs)} of {expected} runs finished"
        else:
            path = store_choice(setup.store.root, choice)
            text += f"; stored for --param lr=searched ({path.relative_to(setup.store.root)})"
        notes.append(text + ".")
    panels = metric_panels(table, "lr")
    figure = plot_panels(
        panels,
        out_dir / f"{setup.slug()}.png",
        xlabel="peak learning rate",
        logx=True,
        title=f"Learning-rate search on {setup.dataset} ({setup.scale}): validation split",
    )
    title = f"Validation accuracy and CRA vs peak learning rate ({setup.dataset})"
    return Report("lr_search", title, list(table[0]) if table else [], table, notes, [figure])


REFERENCE_LRS = {"lipconvnet-cpl": 1.0, "lipmlp-aol": 0.1, "simpleconvnet": 0.1, "smoothing": 0.3}
CHOSEN, MODEL, LR = "chosen", "model", "lr"  # table columns


def claims(report: Report, others: dict[str, Report]) -> list[Verdict]:
    """Section 4: the peak lr is the one hyperparameter tuned, by validation CRA; a search is only
    conclusive when its choice lies inside the searched grid."""
    verdicts = []
    for row in report.rows:
        if row.get(CHOSEN) != "yes":
            continue
        lrs = sorted(line[LR] for line in report.rows if line[MODEL] == row[MODEL])
        inside = lrs[0] < row[LR] < lrs[-1]
        reference = REFERENCE_LRS.get(row[MODEL])
        paper = f"reference code: {reference:g}" if reference is not None else "tuned on validation CRA (Section 4)"
        metric = "CRA 36/255" if row.get("CRA 36/255") is not None else "accuracy"
        ours = f"{row[LR]:g} (validation {metric} {row[metric]:.1f}%; searched {lrs[0]:g} to {lrs[-1]:g})"
        rule = "holds if the chosen lr lies strictly inside the searched grid, does not hold at its edge"
        claim = f"{row[MODEL]}: the validation {metric} peaks inside the searched lrs"
        verdicts.append(Verdict(claim, paper, ours, HOLDS if inside else FAILS, rule))
    return verdicts


# The sections of the paper this experiment makes in `robustlab reproduce`, and its jobs per scale.
PARTS = [
    Part(
        "lr-search",
        "Learning-rate search (Section 4)",
        [
            "The only tuned hyperparameter is the peak learning rate: models are trained with several learning "
            "rates for 100 epochs, and the one with the highest certified robust accuracy on a validation set "
            "is kept (the reference code's choices: CPL ConvNet 1.0, AOL MLP 0.1, SimpleConvNet 0.1)."
        ],
        searched_recipe_jobs,
        order=0,
    ),
]


EXPERIMENTS.add(
    "lr_search",
    Experiment(
        name="lr_search",
        summary="Section 4: peak learning rate chosen by validation CRA from short runs (--param lr=searched uses it)",
        scales=SCALES,
        sweeps=sweeps,
        report=report,
        claims=claims,
        parts=PARTS,
    ),
)
