"""Compute scaling (paper Section 5.1, Figure 5): accuracy and CRA vs training epochs.

The training set stays fixed (the full split, or a subset of ``size`` images) and only
the number of epochs grows. The paper finds that more compute helps far less than more
data, and that the curves flatten.
"""

from __future__ import annotations

from pathlib import Path

from robustlab.experiments.claims import CANNOT, FAILS, HOLDS, Verdict, fits_of
from robustlab.experiments.data_scaling import CRA_36, scaling_report, scaling_table
from robustlab.experiments.experiment import EXPERIMENTS, Experiment, Report, Setup
from robustlab.experiments.parts import Part, one_job
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


def claims(report: Report, others: dict[str, Report]) -> list[Verdict]:
    """Figure 5: a doubling of the epochs adds less CRA than a doubling of the data (the data
    scaling report of the same reproduction and dataset)."""
    data = others.get("data_scaling")
    by_data = fits_of(data, CRA_36) if data is not None else {}
    verdicts = []
    for label, fit in fits_of(report, CRA_36).items():
        other = by_data.get(label)
        if other is None or fit["status"] != "ok" or other["status"] != "ok":
            ours, verdict = "no unflagged fit of both the epochs and the data sweep of this net", CANNOT
        else:
            (low, high), (data_low, data_high) = fit["ci95"]["slope"], other["ci95"]["slope"]
            ours = (
                f"{fit['params']['slope']:+.1f} per doubling of epochs (95% CI {low:+.1f} to {high:+.1f}) against "
                f"{other['params']['slope']:+.1f} per doubling of N (95% CI {data_low:+.1f} to {data_high:+.1f})"
            )
            verdict = HOLDS if high < data_low else FAILS if low >= data_high else CANNOT
        claim = f"{label}: more compute helps much less than more data"
        rule = (
            "holds if the 95% CI of CRA gained per doubling of epochs lies below that per doubling of N, does not "
            "hold if it lies at or above it; cannot tell if they overlap or a fit is missing or flagged"
        )
        verdicts.append(Verdict(claim, "much less than per doubling of data (Figure 5)", ours, verdict, rule))
    return verdicts


# The sections of the paper this experiment makes in `robustlab reproduce`, and its jobs per scale.
PARTS = [
    Part(
        "figure-5",
        "Figure 5: compute scaling (Section 5.1)",
        [
            "Training longer on the same data also helps, but much less than more data, and the curves flatten "
            "with growing compute."
        ],
        one_job("compute_scaling", "cifar10"),
        order=50,
    ),
]


EXPERIMENTS.add(
    "compute_scaling",
    Experiment(
        name="compute_scaling",
        summary="Section 5.1, Figure 5: accuracy and CRA vs training epochs at a fixed training set",
        scales=SCALES,
        sweeps=sweeps,
        report=report,
        claims=claims,
        parts=PARTS,
    ),
)
