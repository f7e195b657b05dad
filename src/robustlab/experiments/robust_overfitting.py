"""Robust overfitting (paper Section 5.3, Figure 4).

1-Lipschitz nets can fit the training set robustly: train without augmentation, with
offset sqrt(2) (a margin asking for radius 1) and for very long, then compare the CRA
curves (CRA against eps up to 1) on the training and the evaluation set. The paper: an
AOL MLP gets almost perfect training CRA even at eps=1, but the test CRA is much lower.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from robustlab.certify.evaluate import eps_label
from robustlab.experiments.experiment import (
    EXPERIMENTS, Experiment, Report, Setup, accuracy, cra, cra_curve,
)
from robustlab.experiments.recipes import recipe
from robustlab.experiments.sweep import Sweep, SweepRow
from robustlab.report.plots import Curve, Panel, plot_panels
from robustlab.runs.store import Run

TABLE_EPS = (36 / 255, 72 / 255, 108 / 255, 0.5, 1.0)
SETTINGS = {
    "augment.crop_padding": 0, "augment.flip": False, "augment.cutout": 0,
    "loss.offset": math.sqrt(2), "train.scale_epochs": False,
    "eval.eps": list(TABLE_EPS),
}

SCALES = {
    "smoke": {"dataset": "digits", "epochs": 3, "recipes": ("tiny-lipmlp",)},
    "small": {"dataset": "cifar10", "epochs": 100, "recipes": ("lipmlp-aol",)},
    "paper": {"dataset": "cifar10", "epochs": 3000, "recipes": ("lipmlp-aol", "lipconvnet-cpl")},
}


def sweeps(setup: Setup) -> list[Sweep]:
    epochs = setup.params["epochs"]
    return [
        Sweep(
            name=f"robust_overfitting-{setup.dataset}-{name}", label=name,
            base=setup.base_config({**recipe(name), **SETTINGS, "train.epochs": epochs,
                                    "train.eval_every": max(1, int(epochs) // 10)}),
        )
        for name in setup.params["recipes"]
    ]


def train_split_results(row: SweepRow) -> dict[str, Any]:
    """Certified evaluation of the training set: from results.json, else computed once and
    kept in the run folder as ``train_eval.json``."""
    if (row.results.get("train") or {}).get("curve"):
        return row.results["train"]
    run = Run(row.run)
    cached = run.path / "train_eval.json"
    if cached.exists():
        return json.loads(cached.read_text())
    from robustlab.certify.evaluate import evaluate
    from robustlab.data.splits import prepare_data
    from robustlab.train.loop import load_run_model

    model, config = load_run_model(run.path)
    data = prepare_data(config.data)
    result = evaluate(model, data.x_train, data.y_train, eps=config.eval.eps,
                      batch_size=config.eval.batch_size, num_classes=data.num_classes)
    run.write_json(cached.name, result)
    return result


def report(rows: list[SweepRow], setup: Setup, out_dir: Path) -> Report:
    columns = ["model", "split", "accuracy", *[f"CRA {eps_label(e)}" for e in TABLE_EPS]]
    table, curves, epoch_curves = [], [], []
    for row in rows:
        results = {"train": train_split_results(row), "eval": row.results.get("eval")}
        for split in ("train", "eval"):
            line = {"model": row.label, "split": split, "accuracy": accuracy(results, split)}
            table.append(line | {f"CRA {eps_label(e)}": cra(results, e, split) for e in TABLE_EPS})
            curve = cra_curve(results, split)
            if curve:
                curves.append(Curve(f"{row.label} {split}", *curve, dashed=split == "eval"))
        epoch_curves += _epoch_curves(row)
    figures = [plot_panels([Panel("CRA (%)", curves)], out_dir / f"robust_overfitting-{setup.dataset}.png",
                           xlabel="perturbation radius eps (L2)",
                           title=f"Robust overfitting on {setup.dataset} ({setup.scale})")]
    if epoch_curves:
        figures.append(plot_panels([Panel("eval CRA at 36/255 (%)", epoch_curves)],
                                   out_dir / f"robust_overfitting-{setup.dataset}-epochs.png",
                                   xlabel="epoch", title="CRA during training"))
    notes = ["no augmentation, offset sqrt(2); 'train' is the very training set the model was fit on."]
    return Report("robust_overfitting", f"Train vs evaluation CRA after robust overfitting ({setup.dataset})",
                  columns, table, notes, figures)


def _epoch_curves(row: SweepRow) -> list[Curve]:
    """CRA at 36/255 over epochs, from the evaluations logged in metrics.jsonl (if any)."""
    points = []
    for record in Run(row.run).metrics():
        value = cra({"eval": record.get("eval")}, 36 / 255) if "epoch" in record else None
        if value is not None:
            points.append((record["epoch"], value))
    return [Curve(f"{row.label} eval", *zip(*points))] if points else []


EXPERIMENTS.add("robust_overfitting", Experiment(
    name="robust_overfitting",
    summary="Section 5.3, Figure 4: 1-Lipschitz nets fit the training set robustly but do not generalize",
    scales=SCALES, sweeps=sweeps, report=report,
))
