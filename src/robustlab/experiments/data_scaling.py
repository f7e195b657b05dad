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
import torch

from robustlab.config import PAPER_EPS
from robustlab.data.datasets import load_dataset
from robustlab.experiments.experiment import (
    EXPERIMENTS,
    Experiment,
    Report,
    Setup,
    metric_panels,
    run_experiment,
    seed_mean_table,
)
from robustlab.experiments.recipes import recipe
from robustlab.experiments.sweep import Sweep, SweepRow
from robustlab.report.plots import Panel, plot_panels
from robustlab.runs.store import RunStore

PAPER_SIZES = (48, 97, 195, 390, 781, 1562, 3125, 6250, 12500, 25000, 50000)

SCALES = {
    "smoke": {
        "dataset": "digits",
        "preset": "digits",
        "sizes": (48, 97),
        "epochs": 2,
        "seeds": (0,),
        "eps": (PAPER_EPS,),
        "recipes": ("tiny-lipmlp", "tiny-convnet"),
    },
    # The miniature: no augmentation (8x8 digits leave little room for crops); batches of
    # 25 keep the steps per size within 4% of each other down to N=48 and leave no last
    # batch of one image (BatchNorm cannot train on one).
    "demo": {
        "dataset": "digits",
        "preset": "digits",
        "sizes": PAPER_SIZES,
        "epochs": 25,
        "seeds": (0, 1, 2),
        "eps": (PAPER_EPS,),
        "recipes": ("tiny-lipmlp", "tiny-convnet"),
        "config": {"train.batch_size": 25, "train.checkpoint_every": 50, "augment.crop_padding": 0},
    },
    # 20 epochs: at 2 the runs are so short that every size is compute-bound and CRA does not
    # grow with N (docs/experiments.md has the MNIST measurement)
    "small": {
        "dataset": "cifar10",
        "sizes": PAPER_SIZES,
        "epochs": 20,
        "seeds": (0,),
        "eps": (PAPER_EPS,),
        "recipes": ("small-lipmlp", "small-convnet"),
    },
    "paper": {
        "dataset": "cifar10",
        "sizes": PAPER_SIZES,
        "epochs": 3000,
        "seeds": (0,),
        "eps": (PAPER_EPS,),
        "recipes": ("lipconvnet-cpl", "lipmlp-aol", "simpleconvnet"),
    },
}


def training_set_size(setup: Setup) -> int:
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
            name=setup.slug(name),
            label=name,
            base=setup.base_config({**recipe(name), "train.epochs": params["epochs"], "train.scale_epochs": True}),
            grid={"data.subset_size": sizes, "seed": list(params["seeds"])},
        )
        for name in params["recipes"]
    ]


def doubling_gain(sizes, values) -> float:
    """Percentage points gained per doubling of N: the slope of a line fit on log2 N."""
    slope, _ = np.polyfit(np.log2(np.asarray(sizes, float)), np.asarray(values, float), 1)
    return float(slope)


def doubling_notes(panels: list[Panel], detail: str = "") -> list[str]:
    """One note per curve of the CRA panels (all panels after the accuracy one): the gain per doubling."""
    return [
        f"{curve.label}: doubling the training data adds {doubling_gain(curve.x, curve.y):.1f}% "
        f"{panel.ylabel.removesuffix(' (%)')} (line fit on log2 N, N={min(curve.x)}..{max(curve.x)}{detail})."
        for panel in panels[1:]
        for curve in panel.curves
        if len(curve.x) >= 2
    ]


def report(rows: list[SweepRow], setup: Setup, out_dir: Path) -> Report:
    table = seed_mean_table(rows, "N", lambda config: config.data.subset_size, setup.params["eps"])
    panels = metric_panels(table, "N")
    notes = doubling_notes(panels)
    name = "demo.png" if setup.scale == "demo" else f"{setup.slug()}.png"
    figure = plot_panels(
        panels,
        out_dir / name,
        xlabel="training-set size N",
        logx=True,
        title=f"Data scaling on {setup.dataset} ({setup.scale})",
    )
    return Report(
        "data_scaling",
        f"Accuracy and CRA vs training-set size ({setup.dataset})",
        list(table[0]) if table else [],
        table,
        notes,
        [figure],
    )


def run_demo(
    out_dir: str | Path = "robustlab-demo",
    dataset: str | None = None,
    device: str | None = None,
    sizes: tuple[int, ...] | None = None,
    epochs: float | None = None,
    seeds: tuple[int, ...] | None = None,
    overrides: list[str] | None = None,
    progress: bool = True,
) -> Report:
    """The paper's central result in miniature: data_scaling at the demo scale.

    Trains a small 1-Lipschitz MLP and a standard MLP on growing class-balanced subsets
    of the built-in digits (no download, minutes on a CPU), certifies the Lipschitz one
    and writes ``demo.png`` and ``table.json``/``table.md`` into ``out_dir``, whose
    ``runs/`` folder is the run store (a second call reuses the finished runs).
    """
    setup = EXPERIMENTS.get("data_scaling").setup("demo", dataset, overrides, sizes=sizes, epochs=epochs, seeds=seeds)
    out_dir = Path(out_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny nets: one thread is as fast, and never stalls on busy cores
    try:
        _, report = run_experiment(setup, RunStore(out_dir / "runs"), out_dir=out_dir, device=device, progress=progress)
    finally:
        torch.set_num_threads(threads)
    assert report is not None  # written unless it is a dry run
    return report


EXPERIMENTS.add(
    "data_scaling",
    Experiment(
        name="data_scaling",
        summary="Section 5.1, Figures 1-2: accuracy and CRA vs training-set size (same steps per size)",
        scales=SCALES,
        sweeps=sweeps,
        report=report,
    ),
)
