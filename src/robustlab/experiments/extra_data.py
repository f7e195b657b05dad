"""Scaling with generated data (paper Section 5.1 and Section 9).

Add generated CIFAR-10-like images (an .npz with ``image`` uint8 NHWC and ``label``,
e.g. the published EDM samples; ``--set data.extra_path=FILE``) to the real training
set, from 30 up to 1,000,000 of them (capped at what the file holds), and report CRA
against the total training-set size. Every size trains for the same number of steps
(``epochs`` of the real training set; the epochs shrink as the set grows). The paper
finds that the data-scaling trend continues.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustlab.config import ConfigError
from robustlab.experiments.data_scaling import doubling_notes, training_set_size
from robustlab.experiments.experiment import (
    EXPERIMENTS,
    Experiment,
    Report,
    Setup,
    metric_panels,
    seed_mean_table,
)
from robustlab.experiments.recipes import recipe
from robustlab.experiments.sweep import Sweep, SweepRow
from robustlab.report.plots import plot_panels

PAPER_EXTRA = (0, 30, 100, 300, 1000, 3000, 10000, 30000, 100000, 300000, 1000000)

SCALES = {
    "smoke": {
        "dataset": "digits",
        "preset": "digits",
        "extra": (0, 30, 100),
        "epochs": 2,
        "seeds": (0,),
        "recipes": ("tiny-lipmlp",),
    },
    "small": {
        "dataset": "cifar10",
        "extra": PAPER_EXTRA,
        "epochs": 20,
        "seeds": (0,),  # see data_scaling
        "recipes": ("small-lipmlp",),
    },
    "paper": {
        "dataset": "cifar10",
        "extra": PAPER_EXTRA,
        "epochs": 3000,
        "seeds": (0,),
        "recipes": ("lipconvnet-cpl",),
    },
}


def generated_count(path: str) -> int:
    """How many images the generated-data file holds (reads only its labels)."""
    try:
        with np.load(Path(path).expanduser(), allow_pickle=False) as archive:
            return len(archive["label"])
    except (OSError, KeyError, ValueError) as error:
        raise ConfigError(
            f"data.extra_path={path}: cannot read the labels of this generated-data file "
            f"({error}); it must be an .npz with 'image' (uint8 NHWC) and 'label'"
        ) from None


def sweeps(setup: Setup) -> list[Sweep]:
    extra_path = setup.base_config({}).data.extra_path
    if not extra_path:
        raise ConfigError(
            "extra_data needs a file of generated images: add --set data.extra_path=FILE.npz "
            "(an .npz with 'image' uint8 NHWC and 'label', e.g. the EDM CIFAR-10 samples)"
        )
    available, real, epochs = generated_count(extra_path), training_set_size(setup), setup.params["epochs"]
    # The same number of steps for every size: the epochs shrink as the training set grows.
    grid = [
        {"data.extra_size": n, "train.epochs": epochs * real / (real + n), "seed": seed}
        for n in sorted({min(int(n), available) for n in setup.params["extra"]})
        for seed in setup.params["seeds"]
    ]
    return [
        Sweep(
            name=setup.slug(name),
            label=name,
            grid=grid,
            base=setup.base_config({**recipe(name), "train.scale_epochs": False}),
        )
        for name in setup.params["recipes"]
    ]


def report(rows: list[SweepRow], setup: Setup, out_dir: Path) -> Report:
    real = training_set_size(setup)
    table = seed_mean_table(rows, "extra", lambda config: config.data.extra_size)
    for line in table:
        line["N"] = real + line["extra"]
    panels = metric_panels(table, "N")
    notes = doubling_notes(panels, f", {real} real images")  # panels[1:]: none while no run is done
    figure = plot_panels(
        panels,
        out_dir / f"{setup.slug()}.png",
        xlabel="training-set size N (real + generated)",
        logx=True,
        title=f"Adding generated data to {setup.dataset} ({setup.scale})",
    )
    return Report(
        "extra_data",
        f"Accuracy and CRA vs real + generated training data ({setup.dataset})",
        list(table[0]) if table else [],
        table,
        notes,
        [figure],
    )


EXPERIMENTS.add(
    "extra_data",
    Experiment(
        name="extra_data",
        summary="Section 5.1 / 9: CRA vs training-set size with generated (EDM) images added",
        scales=SCALES,
        sweeps=sweeps,
        report=report,
    ),
)
