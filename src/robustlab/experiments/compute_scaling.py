"""Compute scaling (paper Section 5.1, Figure 5): accuracy and CRA vs training epochs.

The training set stays fixed (the full split, or a subset of ``size`` images) and only
the number of epochs grows. The paper finds that more compute helps far less than more
data, and that the curves flatten.
"""

from __future__ import annotations

from pathlib import Path

from robustlab.experiments.experiment import EXPERIMENTS, Experiment, Report, Setup, metric_panels, seed_mean_table
from robustlab.experiments.recipes import recipe
from robustlab.experiments.sweep import Sweep, SweepRow
from robustlab.report.plots import plot_panels

SCALES = {
    "smoke": {
        "dataset": "digits",
        "preset": "digits",
        "size": 0,
        "epochs": (1, 2),
        "seeds": (0,),
        "recipes": ("tiny-lipmlp",),
    },
    "small": {"dataset": "cifar10", "size": 0, "epochs": (1, 2, 4, 8), "seeds": (0,), "recipes": ("small-lipmlp",)},
    "paper": {
        "dataset": "cifar10",
        "size": 0,
        "epochs": (10, 30, 100, 300, 1000, 3000),
        "seeds": (0,),
        "recipes": ("lipconvnet-cpl", "lipmlp-aol"),
    },
}  # size 0: the whole training split


def sweeps(setup: Setup) -> list[Sweep]:
    params = setup.params
    subset = {"data.subset_size": params["size"]} if params["size"] else {}
    return [
        Sweep(
            name=setup.slug(name),
            label=name,
            base=setup.base_config({**recipe(name), **subset, "train.scale_epochs": False}),
            grid={"train.epochs": [float(e) for e in params["epochs"]], "seed": list(params["seeds"])},
        )
        for name in params["recipes"]
    ]


def report(rows: list[SweepRow], setup: Setup, out_dir: Path) -> Report:
    table = seed_mean_table(rows, "epochs", lambda config: config.train.epochs)
    figure = plot_panels(
        metric_panels(table, "epochs"),
        out_dir / f"{setup.slug()}.png",
        xlabel="training epochs",
        logx=True,
        title=f"Compute scaling on {setup.dataset} ({setup.scale})",
    )
    return Report(
        "compute_scaling",
        f"Accuracy and CRA vs training epochs ({setup.dataset})",
        list(table[0]) if table else [],
        table,
        [],
        [figure],
    )


EXPERIMENTS.add(
    "compute_scaling",
    Experiment(
        name="compute_scaling",
        summary="Section 5.1, Figure 5: accuracy and CRA vs training epochs at a fixed training set",
        scales=SCALES,
        sweeps=sweeps,
        report=report,
    ),
)
