"""The paper scale of every experiment as a plan: jobs, optimizer steps and GPU-hours.

Reads each experiment's sweeps at ``--scale paper`` (the same configs `robustlab experiment
NAME --scale paper` would train), counts each run's optimizer steps the way the training loop
does (ceil(N / batch) batches per epoch, the last one filled; subsets train full/N times
longer), and multiplies by the seconds per step measured on one H200 with the fast path
(bf16 + channels_last + CUDA graphs; benchmarks/RESULTS.md). Nothing is trained.

    python benchmarks/paper_plan.py            # markdown table for docs/experiments.md

The training-set sizes are the datasets' published ones (CIFAR-10/100: 50,000, MNIST: 60,000),
so no data is needed. Runs on subsets smaller than the batch size take more, smaller steps;
their hours are upper bounds (a step of fewer images is not slower than a full one).
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np

import robustlab.experiments.data_scaling as data_scaling
from robustlab.experiments import get_experiment
from robustlab.experiments.data_scaling import SCALES as DATA_SCALING_SCALES

# Seconds per optimizer step of 256 images on one H200, fast path: the s/epoch of 176 steps
# (45k images) in benchmarks/RESULTS.md divided by 176.
SECONDS_PER_STEP = {
    "simpleconvnet": 0.535 / 176,
    "lipconvnet-cpl": 2.883 / 176,
    "lipconvnet-aol": 5.002 / 176,
    "lipmlp-aol": 1.069 / 176,
}
# Not measured on a GPU: the one-architecture net (lipconvnet-cpl at width 128) from its CPU cost
# relative to width 64 (forward + backward, batch 16, one thread: 16.5 s against 2.61 s, x6.3).
ESTIMATED = {("lipconvnet-cpl", 128): 6.3 * SECONDS_PER_STEP["lipconvnet-cpl"]}
SMOOTHING_ESTIMATE_S = 28.0  # 10,000 test images x 1000 noisy copies, bf16 (14.0 s per 5,000 measured)
FACTS = {"cifar10": (50_000, 10), "cifar100": (50_000, 100), "mnist": (60_000, 10)}
JOBS = [
    ("lr_search", "cifar10"),
    ("data_scaling", "cifar10"),
    ("data_scaling", "mnist"),
    ("data_scaling", "cifar100"),
    ("compute_scaling", "cifar10"),
    ("pca", "cifar10"),
    ("robust_overfitting", "cifar10"),
    ("one_architecture", "cifar10"),
    ("extra_data", "cifar10"),
]


def known_sizes(setup) -> tuple[int, int]:
    full, classes = FACTS[setup.dataset]
    return full - setup.base_config({}).data.val_size, classes


def run_steps(config) -> int:
    """Optimizer steps of one run, as the training loop counts them."""
    full, _ = FACTS[config.data.name]
    full -= config.data.val_size
    n = config.data.subset_size or full
    n += max(config.data.extra_size, 0)
    epochs = config.train.epochs * (full / n if config.data.subset_size and config.train.scale_epochs else 1)
    return max(1, math.ceil(epochs * math.ceil(n / config.train.batch_size) - 1e-9))


def step_seconds(config) -> tuple[float, bool]:
    """(seconds per step, measured?) of the config's model at its width."""
    key = (config.model.name, config.model.kwargs.get("width"))
    if key in ESTIMATED:
        return ESTIMATED[key], False
    return SECONDS_PER_STEP[config.model.name], True


def plan(generated: Path) -> list[dict]:
    rows = []
    for name, dataset in JOBS:
        overrides = [f"data.extra_path={generated}"] if name == "extra_data" else []
        setup = get_experiment(name).setup("paper", dataset, overrides)
        points = [point for sweep in get_experiment(name).sweeps(setup) for point in sweep.points()]
        seconds, measured, small = 0.0, True, 0
        for point in points:
            per_step, known = step_seconds(point.config)
            steps = run_steps(point.config)
            seconds += steps * per_step + (SMOOTHING_ESTIMATE_S if point.config.eval.smoothing_samples else 0)
            measured &= known
            small += (point.config.data.subset_size or 10**9) < point.config.train.batch_size
        longest = max(run_steps(p.config) * step_seconds(p.config)[0] for p in points)
        notes = []
        if small:
            notes.append(f"{small} runs on subsets < batch: upper bound")
        if not measured:
            notes.append("width-128 LipConvNet: CPU-ratio estimate")
        rows.append(
            {
                "experiment": name,
                "dataset": dataset,
                "jobs": len(points),
                "GPU-hours": seconds / 3600,
                "longest job (h)": longest / 3600,
                "notes": "; ".join(notes),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    data_scaling.dataset_facts = known_sizes  # published sizes: no dataset files needed
    with tempfile.TemporaryDirectory() as folder:
        generated = Path(folder) / "edm-1m-labels.npz"  # extra_data counts the generated images' labels
        np.savez(generated, label=np.zeros(1_000_000, np.int64), image=np.zeros((1, 32, 32, 3), np.uint8))
        rows = plan(generated)
    print("| experiment | dataset | jobs | GPU-hours | longest job (h) | notes |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['experiment']} | {r['dataset']} | {r['jobs']} | {r['GPU-hours']:.1f} | "
            f"{r['longest job (h)']:.1f} | {r['notes']} |"
        )
    total = sum(r["GPU-hours"] for r in rows)
    print(f"| **all** | | {sum(r['jobs'] for r in rows)} | **{total:.0f}** | | |")
    assert DATA_SCALING_SCALES["paper"]["epochs"] == 3000  # the plan is the paper's protocol


if __name__ == "__main__":
    main()
