"""Robust overfitting (paper Section 5.3, Figure 4).

1-Lipschitz nets can fit the training set robustly: train without augmentation, with
offset sqrt(2) (a margin asking for radius 1) and for very long, then compare the CRA
curves (CRA against eps up to 1) on the training and the evaluation set. The paper: an
AOL MLP gets almost perfect training CRA even at eps=1, but the test CRA is much lower.
"""

from __future__ import annotations

import math
from pathlib import Path

from robustlab.certify.results import eps_label
from robustlab.config import DEFAULT_EPS, PAPER_EPS
from robustlab.experiments.experiment import (
    EXPERIMENTS,
    Experiment,
    Report,
    Setup,
    accuracy_percent,
    cra_curve_percent,
    cra_percent,
    training_set_evaluation,
)
from robustlab.experiments.recipes import recipe
from robustlab.experiments.sweep import Sweep, SweepRow
from robustlab.report.plots import Curve, Panel, plot_panels
from robustlab.runs.store import Run

TABLE_EPS = (*DEFAULT_EPS[:3], 0.5, 1.0)  # 36/255, 72/255, 108/255, 0.5, 1
CURVE_EPS = sorted({*TABLE_EPS, *(k / 20 for k in range(1, 21))})  # certified at all of these
SETTINGS = {
    "augment.crop_padding": 0,
    "augment.flip": False,
    "augment.cutout": 0,
    "loss.offset": math.sqrt(2),
    "train.scale_epochs": False,
    "eval.eps": CURVE_EPS,
}

SCALES = {
    "smoke": {"dataset": "digits", "preset": "digits", "epochs": 3, "recipes": ("tiny-lipmlp",)},
    "small": {"dataset": "cifar10", "epochs": 20, "recipes": ("small-lipmlp",)},
    "paper": {"dataset": "cifar10", "epochs": 3000, "recipes": ("lipmlp-aol", "lipconvnet-cpl")},
}


def sweeps(setup: Setup) -> list[Sweep]:
    epochs = setup.params["epochs"]
    return [
        Sweep(
            name=setup.slug(name),
            label=name,
            base=setup.base_config(
                {**recipe(name), **SETTINGS, "train.epochs": epochs, "train.eval_every": max(1, int(epochs) // 10)}
            ),
        )
        for name in setup.params["recipes"]
    ]


def report(rows: list[SweepRow], setup: Setup, out_dir: Path) -> Report:
    columns = ["model", "split", "accuracy", *[f"CRA {eps_label(e)}" for e in TABLE_EPS]]
    table, curves, epoch_curves = [], [], []
    for row in rows:
        for split, results in (("train", training_set_evaluation(row)), ("eval", row.results)):
            line = {"model": row.label, "split": split, "accuracy": accuracy_percent(results)}
            table.append(line | {f"CRA {eps_label(e)}": cra_percent(results, e) for e in TABLE_EPS})
            curve = cra_curve_percent(results)
            if curve:
                curves.append(Curve(f"{row.label} {split}", *curve, dashed=split == "eval"))
        epoch_curves += _epoch_curves(row)
    figures = [
        plot_panels(
            [Panel("CRA (%)", curves)],
            out_dir / f"{setup.slug()}.png",
            xlabel="perturbation radius eps (L2)",
            title=f"Robust overfitting on {setup.dataset} ({setup.scale})",
        )
    ]
    if epoch_curves:
        figures.append(
            plot_panels(
                [Panel("CRA at 36/255 (%)", epoch_curves)],
                out_dir / f"{setup.slug('epochs')}.png",
                xlabel="epoch",
                title="CRA on the evaluation split during training",
            )
        )
    notes = [
        "no augmentation, offset sqrt(2); 'train' certifies the very images the model was fit on, "
        "'eval' the evaluation split."
    ]
    return Report(
        "robust_overfitting",
        f"Train vs evaluation CRA after robust overfitting ({setup.dataset})",
        columns,
        table,
        notes,
        figures,
    )


def _epoch_curves(row: SweepRow) -> list[Curve]:
    """CRA at 36/255 over epochs, from the evaluations logged in metrics.jsonl (``eval_every``)."""
    if row.results is None or row.run is None:
        return []
    key = f"{row.results.eval_split}_cra_{eps_label(PAPER_EPS)}"
    points = [(m["epoch"], 100 * m[key]) for m in Run(row.run).metrics() if key in m]
    final = cra_percent(row.results)
    if points and final is not None:
        points.append((row.results.epochs, final))
    return [Curve(row.label, [x for x, _ in points], [y for _, y in points])] if points else []


EXPERIMENTS.add(
    "robust_overfitting",
    Experiment(
        name="robust_overfitting",
        summary="Section 5.3, Figure 4: 1-Lipschitz nets fit the training set robustly but do not generalize",
        scales=SCALES,
        sweeps=sweeps,
        report=report,
    ),
)
