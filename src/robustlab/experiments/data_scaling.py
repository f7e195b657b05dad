"""Data scaling (paper Section 5.1, Figures 1 and 2).

Train on class-balanced subsets of growing size N; ``train.scale_epochs`` trains each
for ``epochs * full / N`` epochs, so every size gets the same number of steps. Report
accuracy (all nets) and CRA at 36/255 (1-Lipschitz nets) against N on a log axis, and
the least-squares slope of CRA against log2 N: "doubling the data adds about X% CRA"
(the paper: about 5% on CIFAR-10).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustlab.data.datasets import load_dataset
from robustlab.experiments.experiment import (
    EXPERIMENTS, Experiment, Report, Setup, accuracy, cra, mean_over_seeds,
)
from robustlab.experiments.recipes import recipe
from robustlab.experiments.sweep import Sweep, SweepRow
from robustlab.report.plots import Curve, Panel, plot_panels

PAPER_SIZES = (48, 97, 195, 390, 781, 1562, 3125, 6250, 12500, 25000, 50000)
EPS = 36 / 255

SCALES = {
    "smoke": {"dataset": "digits", "sizes": (48, 97), "epochs": 2, "seeds": (0,),
              "recipes": ("tiny-lipmlp", "tiny-mlp")},
    "demo": {"dataset": "digits", "sizes": PAPER_SIZES, "epochs": 60, "seeds": (0,),
             "recipes": ("tiny-lipmlp", "tiny-mlp")},
    "small": {"dataset": "cifar10", "sizes": PAPER_SIZES, "epochs": 8, "seeds": (0,),
              "recipes": ("lipconvnet-cpl", "simpleconvnet")},
    "paper": {"dataset": "cifar10", "sizes": PAPER_SIZES, "epochs": 3000, "seeds": (0,),
              "recipes": ("lipconvnet-cpl", "lipmlp-aol", "simpleconvnet")},
}


def training_set_size(setup: Setup, val_size: int = 0) -> int:
    """Images in the training split of the setup's dataset (the cap on subset sizes)."""
    config = setup.base_config({})
    data = load_dataset(config.data.name, config.data.data_dir, config.data.download)
    return len(data.y_train) - config.data.val_size


def capped_sizes(sizes, full: int) -> list[int]:
    """The sizes below ``full``, then ``full`` itself if any size reached it."""
    below = sorted({int(n) for n in sizes if n < full})
    return below + [full] if any(n >= full for n in sizes) else below


def sweeps(setup: Setup) -> list[Sweep]:
    params = setup.params
    sizes = capped_sizes(params["sizes"], training_set_size(setup))
    return [
        Sweep(
            name=f"data_scaling-{setup.dataset}-{name}",
            base=setup.base_config({**recipe(name), "train.epochs": params["epochs"],
                                    "train.scale_epochs": True}),
            grid={"data.subset_size": sizes, "seed": list(params["seeds"])},
        )
        for name in params["recipes"]
    ]


def doubling_gain(sizes, values) -> float:
    """Percentage points gained per doubling of N: the slope of a line fit on log2 N."""
    slope, _ = np.polyfit(np.log2(np.asarray(sizes, float)), np.asarray(values, float), 1)
    return float(slope)


def scaling_table(rows: list[SweepRow]) -> list[dict]:
    """One row per (model, N), averaged over seeds, sorted by model then N."""
    groups: dict[tuple[str, int], list[SweepRow]] = {}
    for row in rows:
        groups.setdefault((row.config.model.name, row.config.data.subset_size), []).append(row)
    return [
        {"model": model, "N": size, "seeds": len(group),
         "accuracy": mean_over_seeds([accuracy(r.results) for r in group]),
         "CRA": mean_over_seeds([cra(r.results, EPS) for r in group])}
        for (model, size), group in sorted(groups.items())
    ]


def report(rows: list[SweepRow], setup: Setup, out_dir: Path) -> Report:
    table = scaling_table(rows)
    models = list(dict.fromkeys(r["model"] for r in table))
    series = {m: [r for r in table if r["model"] == m] for m in models}
    acc_curves = [Curve(m, [r["N"] for r in s], [r["accuracy"] for r in s]) for m, s in series.items()]
    cra_curves = [Curve(m, [r["N"] for r in s if r["CRA"] is not None],
                        [r["CRA"] for r in s if r["CRA"] is not None]) for m, s in series.items()]
    cra_curves = [c for c in cra_curves if c.x]
    notes = []
    for curve in cra_curves:
        if len(curve.x) >= 2:
            gain = doubling_gain(curve.x, curve.y)
            notes.append(f"{curve.label}: doubling the training data adds {gain:.1f}% CRA at "
                         f"eps=36/255 (line fit of CRA on log2 N, N={min(curve.x)}..{max(curve.x)}).")
    figure = plot_panels(
        [Panel("test accuracy (%)", acc_curves), Panel("CRA at 36/255 (%)", cra_curves)],
        out_dir / f"data_scaling-{setup.dataset}.png",
        xlabel="training-set size N", logx=True,
        title=f"Data scaling on {setup.dataset} ({setup.scale})",
    )
    return Report("data_scaling", f"Accuracy and CRA vs training-set size ({setup.dataset})",
                  ["model", "N", "seeds", "accuracy", "CRA"], table, notes, [figure])


EXPERIMENTS.add("data_scaling", Experiment(
    name="data_scaling",
    summary="Section 5.1, Figures 1-2: accuracy and CRA vs training-set size (same steps per size)",
    scales=SCALES, sweeps=sweeps, report=report,
))
