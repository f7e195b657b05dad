"""Compute scaling (paper Section 5.1, Figure 5): accuracy and CRA vs training epochs.

The training set stays fixed (the full split, or a subset of ``size`` images) and only
the number of epochs grows. The paper finds that more compute helps far less than more
data, and that the curves flatten.
"""

from __future__ import annotations

from pathlib import Path

from robustlab.experiments.data_scaling import scaling_report, scaling_table
from robustlab.experiments.experiment import EXPERIMENTS, Experiment, Report, Setup
from robustlab.experiments.recipes import DEMO_CONFIG
from robustlab.experiments.sweep import Sweep, SweepRow

SCALES = {
    "smoke": {
        "dataset": "digits",
        "preset": "digits",
        "size": 0,
        "epochs": (1, 2),
        "seeds": (0,),
        "target": 90.0,
        "recipes": ("tiny-lipmlp",),
    },
    "demo": {
        "dataset": "digits",
        "preset": "digits",
        "size": 0,
        "epochs": (3, 6, 12, 25, 50, 100),
        "seeds": (0, 1, 2),
        "target": 97.0,
        "recipes": ("tiny-lipmlp",),
        "config": DEMO_CONFIG,
    },
    "small": {
        "dataset": "cifar10",
        "size": 0,
        "epochs": (1, 2, 4, 8, 16),
        "seeds": (0, 1, 2),
        "target": 60.0,
        "recipes": ("small-lipmlp",),
    },
    "paper": {
        "dataset": "cifar10",
        "size": 0,
        "epochs": (10, 30, 100, 300, 1000, 3000),
        "seeds": (0,),
        "target": 80.0,
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
            recipe=name,
            base=setup.base_config(
                {**setup.recipe(name), **subset, "train.scale_epochs": False, "eval.train_set": True}
            ),
            grid={"train.epochs": [float(e) for e in params["epochs"]], "seed": list(params["seeds"])},
        )
        for name in params["recipes"]
    ]


def report(rows: list[SweepRow], setup: Setup, out_dir: Path) -> Report:
    table, eps = scaling_table(rows, "epochs", lambda config: config.train.epochs)
    return scaling_report(
        "compute_scaling",
        f"Accuracy and CRA vs training epochs ({setup.dataset})",
        rows,
        setup,
        table,
        eps,
        x_name="epochs",
        x_of_row=lambda r: r.config.train.epochs,
        xlabel="training epochs",
        figure_title=f"Compute scaling on {setup.dataset}",
        figure_path=out_dir / f"{setup.slug()}.png",
        notes=[],
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
