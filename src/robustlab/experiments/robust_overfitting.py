"""Robust overfitting (paper Section 5.3, Figure 4).

1-Lipschitz nets can fit the training set robustly: train without augmentation, with
offset sqrt(2) (a margin asking for radius 1) and for very long, then compare the CRA
curves (CRA against eps up to 1) on the training and the evaluation set. The paper: an
AOL MLP gets almost perfect training CRA even at eps=1, but the test CRA is much lower.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from robustlab.config import PAPER_EPS
from robustlab.experiments.claims import CANNOT, FAILS, HOLDS, Verdict, difference_rule, difference_verdict
from robustlab.experiments.experiment import EXPERIMENTS, Experiment, Report, Setup
from robustlab.experiments.parts import Part, one_job
from robustlab.experiments.readout import (
    Results,
    cra_percent,
    mean_over_seeds,
    result_readers,
    sd_over_seeds,
    training_set_evaluation,
)
from robustlab.experiments.sweep import Sweep, SweepRow
from robustlab.records import eps_label
from robustlab.report.plots import Curve, Panel, plot_panels
from robustlab.report.tables import SD
from robustlab.runs.store import Run

TABLE_EPS = (36 / 255, 72 / 255, 108 / 255, 0.5, 1.0)
CURVE_EPS = sorted({*TABLE_EPS, *(k / 20 for k in range(1, 21))})  # certified at all of these
SETTINGS = {
    "augment.crop_padding": 0,
    "augment.flip": False,
    "augment.cutout": 0,
    "loss.offset": math.sqrt(2),
    "train.scale_epochs": False,
    "eval.eps": CURVE_EPS,
    "eval.train_set": True,
}

SCALES = {
    "smoke": {"dataset": "digits", "preset": "digits", "epochs": 3, "seeds": (0,), "recipes": ("tiny-lipmlp",)},
    # 150 of the digits, 800 epochs of a wider MLP: the miniature of fitting CIFAR-10 for 3000 epochs
    "demo": {
        "dataset": "digits",
        "preset": "digits",
        "epochs": 800,
        "seeds": (0, 1),
        "recipes": ("tiny-lipmlp-wide",),
        "config": {"train.batch_size": 25, "train.checkpoint_every": 100, "data.subset_size": 150},
    },
    "small": {"dataset": "cifar10", "epochs": 20, "seeds": (0,), "recipes": ("small-lipmlp",)},
    "paper": {"dataset": "cifar10", "epochs": 3000, "seeds": (0,), "recipes": ("lipmlp-aol", "lipconvnet-cpl")},
}


def sweeps(setup: Setup) -> list[Sweep]:
    epochs = setup.params["epochs"]
    return [
        Sweep(
            name=setup.slug(name),
            label=name,
            recipe=name,
            base=setup.base_config(
                {
                    **setup.recipe(name),
                    **SETTINGS,
                    "train.epochs": epochs,
                    "train.eval_every": max(1, int(epochs) // 10),
                }
            ),
            grid={"seed": list(setup.params["seeds"])},
        )
        for name in setup.params["recipes"]
    ]


def report(rows: list[SweepRow], setup: Setup, out_dir: Path) -> Report:
    readers = result_readers(TABLE_EPS)
    columns = ["model", "split", "seeds", *[c for name in readers for c in (name, name + SD)]]
    table, curves, epoch_curves = [], [], []
    for label in dict.fromkeys(r.label for r in rows):
        group = [r for r in rows if r.label == label]
        for split, results_of in (("train", training_set_evaluation), ("eval", lambda r: r.results)):
            results = [results_of(r) for r in group]
            line = {"model": label, "split": split, "seeds": len(group)}
            for name, read in readers.items():
                values = [read(x) for x in results]
                line[name], line[name + SD] = mean_over_seeds(values), sd_over_seeds(values)
            table.append(line)
            curves += _radius_curve(f"{label} {split}", results, dashed=split == "eval", colour=label)
        epoch_curves += _epoch_curves(label, group)
    figures = [
        plot_panels(
            [Panel("CRA (%)", curves)],
            out_dir / f"{setup.slug()}.png",
            xlabel="perturbation radius eps (L2)",
            title=f"Robust overfitting on {setup.dataset} ({setup.scale}): training images solid, evaluation dashed",
        )
    ]
    if epoch_curves:
        figures.append(
            plot_panels(
                [Panel("CRA at 36/255 (%)", epoch_curves)],
                out_dir / f"{setup.slug('epochs')}.png",
                xlabel="epoch",
                title="CRA during training: training batches (solid) and evaluation split (dashed)",
            )
        )
    notes = [
        "no augmentation, offset sqrt(2); 'train' certifies the very images the model was fit on, "
        "'eval' the evaluation split; mean ± sd over seeds.",
        "paper (CIFAR-10, 3000 epochs, Figure 4): the AOL MLP reaches almost 100% training CRA even at eps = 1; "
        "the test CRA is much lower at every radius.",
    ]
    return Report(
        "robust_overfitting",
        f"Train vs evaluation CRA after robust overfitting ({setup.dataset})",
        columns,
        table,
        notes,
        figures,
    )


def _radius_curve(label: str, results: list[Results], dashed: bool, colour: str) -> list[Curve]:
    """CRA against every certified radius, mean over seeds with a band of one sd."""
    radii = sorted({round(p.eps, 12) for r in results for p in r.cra or []})
    if not radii:
        return []
    values = np.array([[cra_percent(r, e) for e in radii] for r in results], dtype=float)
    mean = values.mean(axis=0)
    band = (mean - values.std(axis=0), mean + values.std(axis=0)) if len(results) > 1 else None
    return [Curve(label, radii, mean.tolist(), dashed=dashed, band=band, markers=False, colour=colour)]


def _epoch_curves(label: str, group: list[SweepRow]) -> list[Curve]:
    """CRA at 36/255 over epochs: on the training batches of each epoch (``train_cra`` in
    metrics.jsonl; no augmentation here, so these are the training images as the net changes)
    and on the evaluation split (``eval_every``), averaged over seeds."""
    curves = []
    for kind, dashed in (("train", False), ("eval", True)):
        series: dict[float, list[float]] = {}
        for row in group:
            split = row.results.eval_split if row.results else "test"
            key = "train_cra" if kind == "train" else f"{split}_cra_{eps_label(PAPER_EPS)}"
            for m in Run(str(row.run)).metrics():
                if key in m and m.get(key) is not None:
                    series.setdefault(m["epoch"], []).append(100 * m[key])
        if series:
            epochs = sorted(series)
            mean = [float(np.mean(series[e])) for e in epochs]
            errors = [sd_over_seeds(series[e]) for e in epochs]
            curves.append(Curve(f"{label} {kind}", epochs, mean, dashed=dashed, yerr=errors, colour=label))
    return curves


MODEL, SPLIT, TRAIN, EVAL = "model", "split", "train", "eval"  # table columns and split names
GAP = 10.0  # points by which training CRA must exceed the evaluation CRA to count as overfitting


def claims(report: Report, others: dict[str, Report]) -> list[Verdict]:
    """Figure 4: the training images' CRA lies far above the evaluation CRA at every radius; the
    AOL MLP's almost 100% even at eps = 1."""
    verdicts = []
    by = {(row[MODEL], row[SPLIT]): row for row in report.rows}
    for model in dict.fromkeys(row[MODEL] for row in report.rows):
        train, test = by.get((model, TRAIN), {}), by.get((model, EVAL), {})
        radii = [name for name in result_readers(TABLE_EPS) if name.startswith("CRA ")]
        results = [
            difference_verdict(train.get(c), train.get(c + SD), test.get(c), test.get(c + SD), GAP) for c in radii
        ]
        verdict = HOLDS if all(v == HOLDS for v in results) else FAILS if FAILS in results else CANNOT
        ours = ", ".join(
            f"{c.removeprefix('CRA ')}: {train[c]:.1f}% / {test[c]:.1f}%"
            for c in radii
            if train.get(c) is not None and test.get(c) is not None
        )
        claim = f"{model}: training-image CRA far above the evaluation CRA at every radius (train / eval)"
        rule = difference_rule(GAP) + ", at every radius; does not hold if it fails at one"
        verdicts.append(Verdict(claim, "far above at every radius (Figure 4)", ours or "n/a", verdict, rule))
        at_one = train.get("CRA 1")
        if "lipmlp" in model and at_one is not None:
            verdict = HOLDS if at_one >= 95 else FAILS if at_one < 90 else CANNOT
            rule = "holds if the training images' CRA at 1 is at least 95%, does not hold below 90%"
            claim = f"{model}: the AOL MLP fits its training images robustly even at eps = 1"
            verdicts.append(Verdict(claim, "almost 100% (Figure 4)", f"{at_one:.1f}%", verdict, rule))
    return verdicts


# The sections of the paper this experiment makes in `robustlab reproduce`, and its jobs per scale.
PARTS = [
    Part(
        "figure-4",
        "Figure 4: robust overfitting (Section 5.3)",
        [
            "Without augmentation, with offset sqrt(2) and 3000 epochs, a CPL ConvNet and an AOL MLP fit the "
            "CIFAR-10 training set robustly (the MLP almost perfectly even at eps = 1), but the test CRA is much "
            "lower at every radius: capacity is not the bottleneck."
        ],
        one_job("robust_overfitting", "cifar10"),
        {
            "demo": "demo: 150 digits and 800 epochs of an AOL MLP (width 256, depth 5) in place of CIFAR-10 and 3000 epochs."
        },
        order=40,
    ),
]


EXPERIMENTS.add(
    "robust_overfitting",
    Experiment(
        name="robust_overfitting",
        summary="Section 5.3, Figure 4: 1-Lipschitz nets fit the training set robustly but do not generalize",
        scales=SCALES,
        sweeps=sweeps,
        report=report,
        claims=claims,
        parts=PARTS,
    ),
)
