"""Robust and non-robust features (paper Section 5.2, Table 1, Figure 3).

Project training and evaluation images onto subsets of the principal components of the
training split (``data.pca_components``), map them back to image space and train
unchanged standard and 1-Lipschitz models. The paper's point: components that hold a
tiny share of the variance (e.g. 512-3071 of CIFAR-10's 3072, about 2%) still give a
standard net high accuracy, but no robust classifier can use them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robustlab.data.pca import fit_pca
from robustlab.data.splits import prepare_data
from robustlab.experiments.experiment import (
    EXPERIMENTS,
    Experiment,
    Report,
    Setup,
    accuracy_percent,
    cra_percent,
    mean_over_seeds,
    training_set_evaluation,
)
from robustlab.experiments.recipes import recipe
from robustlab.experiments.sweep import Sweep, SweepRow
from robustlab.report.plots import plot_bars

ALL = "all"  # the reference row: no projection
CIFAR_DIM = 3072

SCALES = {
    "smoke": {
        "dataset": "digits",
        "preset": "digits",
        "epochs": 2,
        "seeds": (0,),
        "recipes": ("tiny-convnet", "tiny-lipmlp"),
    },
    "small": {"dataset": "cifar10", "epochs": 2, "seeds": (0,), "recipes": ("small-convnet", "small-lipmlp")},
    "paper": {"dataset": "cifar10", "epochs": 3000, "seeds": (0,), "recipes": ("simpleconvnet", "lipconvnet-cpl")},
}


def component_subsets(dim: int) -> list[str]:
    """The paper's CIFAR-10 subsets (0-15, 0-511, 512-3071, 2048-3071, 0-15 + 512-3071),
    with the boundaries scaled from 3072 to ``dim`` components (0-based, inclusive)."""
    first = max(1, round(16 * dim / CIFAR_DIM))
    middle = round(512 * dim / CIFAR_DIM)
    last_third = round(2048 * dim / CIFAR_DIM)
    return [
        f"0-{first - 1}",
        f"0-{middle - 1}",
        f"{middle}-{dim - 1}",
        f"{last_third}-{dim - 1}",
        f"0-{first - 1},{middle}-{dim - 1}",
    ]


def _training_split(setup: Setup):
    """The training split whose components ``prepare_data`` projects onto (no subset, no extra)."""
    data = setup.base_config({}).data
    return prepare_data(dataclasses.replace(data, subset_size=None, extra_path=None, extra_size=0, pca_components=None))


def input_dim(setup: Setup) -> int:
    channels, height, width = _training_split(setup).input_shape
    return channels * height * width


def explained_variances(setup: Setup) -> dict[str, float]:
    """Share of the training split's variance (in %) that each component subset holds."""
    pca = fit_pca(_training_split(setup).x_train)
    return {spec: 100 * pca.explained_variance(spec) for spec in component_subsets(pca.dim)}


def sweeps(setup: Setup) -> list[Sweep]:
    params = setup.params
    subsets = [None, *component_subsets(input_dim(setup))]
    return [
        Sweep(
            name=setup.slug(name),
            label=name,
            base=setup.base_config({**recipe(name), "train.epochs": params["epochs"]}),
            grid={"data.pca_components": subsets, "seed": list(params["seeds"])},
        )
        for name in params["recipes"]
    ]


def report(rows: list[SweepRow], setup: Setup, out_dir: Path) -> Report:
    variance = {ALL: 100.0, **explained_variances(setup)}
    columns = ["components", "variance (%)"]
    table: list[dict[str, Any]] = [{"components": spec, "variance (%)": share} for spec, share in variance.items()]
    for name in setup.params["recipes"]:
        runs = [r for r in rows if r.label == name]
        metrics = [
            ("train acc", lambda r: accuracy_percent(training_set_evaluation(r))),
            ("acc", lambda r: accuracy_percent(r.results)),
        ]
        if any(r.results is not None and r.results.lipschitz_constant is not None for r in runs):
            metrics += [
                ("train CRA", lambda r: cra_percent(training_set_evaluation(r))),
                ("CRA", lambda r: cra_percent(r.results)),
            ]
        for metric, read in metrics:
            column = f"{name} {metric}"
            columns.append(column)
            for line in table:
                group = [r for r in runs if (r.config.data.pca_components or ALL) == line["components"]]
                line[column] = mean_over_seeds([read(r) for r in group])
    series: dict[str, Sequence[float | None]] = {"variance (%)": [line["variance (%)"] for line in table]}
    series |= {c: [line[c] for line in table] for c in columns[2:] if "train" not in c}
    figure = plot_bars(
        [line["components"] for line in table],
        series,
        out_dir / f"{setup.slug()}.png",
        ylabel="%",
        title=f"Principal-component subsets of {setup.dataset} ({setup.scale})",
    )
    notes = [
        "components: 0-based inclusive ranges of principal components of the training split, "
        "largest variance first; acc/CRA on the evaluation split, CRA at 36/255."
    ]
    return Report("pca", f"Training on principal-component subsets ({setup.dataset})", columns, table, notes, [figure])


EXPERIMENTS.add(
    "pca",
    Experiment(
        name="pca",
        summary="Section 5.2, Table 1 and Figure 3: standard vs 1-Lipschitz nets on principal-component subsets",
        scales=SCALES,
        sweeps=sweeps,
        report=report,
    ),
)
