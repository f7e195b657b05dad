"""What an experiment (or the whole paper) will cost before it runs: every job, its budget and lr.

A plan lists each run a sweep would train, with what a reviewer checks before paying for it:
the recipe, dataset, subset size and seed; the budget (epochs, optimizer steps and images
processed, counted exactly as ``train.loop.training_steps`` counts them); the peak lr and where it
comes from (``searched``: the lr search's choice, and the search jobs it waits for); and the
GPU-hours, from the seconds per optimizer step measured in ``benchmarks/RESULTS.md`` on
``GPU``. Nothing is trained and no dataset file is read for the datasets of ``PUBLISHED``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from robustlab.config import ExperimentConfig
from robustlab.experiments.sweep import SweepRow
from robustlab.runs.store import RunStore

if TYPE_CHECKING:
    from robustlab.experiments.experiment import Setup

# Published training-set sizes and classes: sweeps of these datasets (and their plans) read no files.
# digits: built in, split 1437/360 (data.datasets.digits), so a status at smoke scale loads no scikit-learn
PUBLISHED = {"cifar10": (50_000, 10), "cifar100": (50_000, 100), "mnist": (60_000, 10), "digits": (1437, 10)}

GPU = "NVIDIA H200"
# Seconds per optimizer step of 256 images on one H200, fast path (bf16 + channels_last + CUDA
# graphs): benchmarks/RESULTS.md's s/epoch of 176 steps (45,000 images) divided by 176.
SECONDS_PER_STEP = {
    "simpleconvnet": 0.535 / 176,
    "lipconvnet-cpl": 2.883 / 176,
    "lipconvnet-aol": 5.002 / 176,
    "lipmlp-aol": 1.069 / 176,
}
MEASURED_BATCH = 256
# Not measured on a GPU: the one-architecture net (lipconvnet-cpl at width 128), from its CPU cost
# relative to width 64 (forward + backward, batch 16, one thread: 16.5 s against 2.61 s, x6.3).
ESTIMATED = {("lipconvnet-cpl", 128): 6.3 * SECONDS_PER_STEP["lipconvnet-cpl"]}
# The smoothing estimate: 5,000 images x 1,000 noisy copies in 14.0 s (bf16, RESULTS.md).
SMOOTHING_SECONDS_PER_SAMPLE = 14.0 / (5000 * 1000)
TEST_IMAGES = {"cifar10": 10_000, "cifar100": 10_000, "mnist": 10_000}

COLUMNS = (
    "id",
    "experiment",
    "recipe",
    "dataset",
    "subset_size",
    "extra_size",
    "seed",
    "epochs",
    "steps",
    "images",
    "lr",
    "lr_source",
    "depends_on",
    "gpu_hours",
    "status",
)


def job_id(row: SweepRow) -> str:
    """A job's name in a plan: its sweep and the values its grid point sets."""
    return " ".join([row.sweep, *(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in row.overrides.items())])


def training_size(config: ExperimentConfig, full_size: int) -> int:
    """Images a run trains on: the subset (or the whole split) plus the generated ones."""
    return (config.data.subset_size or full_size) + max(config.data.extra_size, 0)


def budget(config: ExperimentConfig, full_size: int) -> tuple[float, int, int]:
    """(epochs over the set it trains on, optimizer steps, images processed) of one run."""
    # the loop's own count, so a plan never disagrees with training; imported here because
    # the training engine imports torch, which the modules that import this one do without
    from robustlab.train.loop import training_steps

    size = training_size(config, full_size)
    steps = training_steps(config, size, full_size)
    per_step = min(config.train.batch_size, size)  # the loader fills a pass's last batch
    return steps * per_step / size, steps, steps * per_step


def step_seconds(config: ExperimentConfig) -> float | None:
    """Seconds per optimizer step of the config's model on ``GPU``; None where not measured."""
    key = (config.model.name, config.model.kwargs.get("width"))
    if key in ESTIMATED:
        return ESTIMATED[key]
    if config.model.kwargs or config.data.name not in TEST_IMAGES:
        return None  # measured at the presets' sizes, on CIFAR-10's 32x32 images only
    return SECONDS_PER_STEP.get(config.model.name)


def gpu_hours(config: ExperimentConfig, steps: int) -> float | None:
    """Hours on ``GPU``: the steps (a step of fewer than 256 images counted as a full one, an upper
    bound) and the smoothing estimate over the test set; None for models not measured there."""
    per_step = step_seconds(config)
    if per_step is None:
        return None
    seconds = steps * per_step * max(1.0, config.train.batch_size / MEASURED_BATCH)
    samples = config.eval.smoothing_samples or 0
    seconds += samples * TEST_IMAGES.get(config.data.name, 10_000) * SMOOTHING_SECONDS_PER_SAMPLE
    return seconds / 3600


def split_size(config: ExperimentConfig) -> int:
    """Images in the config's training split (before a subset), from the published size where known."""
    if config.data.name in PUBLISHED:
        size = PUBLISHED[config.data.name][0]
    else:
        size = _loaded_size(config.data.name, config.data.data_dir, config.data.download)
    return size - config.data.val_size


@functools.lru_cache(maxsize=16)
def _loaded_size(name: str, data_dir: str | None, download: bool) -> int:
    from robustlab.data.datasets import load_dataset  # NumPy: only for a dataset whose size is not published

    return len(load_dataset(name, data_dir, download).y_train)


def plan_experiment(setup: Setup, store: RunStore, searches: dict[str, list[str]] | None = None) -> list[dict]:
    """Every job of one experiment (``run_experiment`` with ``dry_run``), as ``plan_jobs`` lists
    them; the lr-search jobs a searched lr waits for are the ones ``search_jobs`` names unless
    ``searches`` (recipe -> job ids) is given."""
    from robustlab.experiments.experiment import run_experiment

    setup = replace(setup, planning=True, lr_sources={})
    rows, _ = run_experiment(setup, store, dry_run=True)
    if searches is None:
        searched = {r.recipe for r in rows if setup.lr_source(r.recipe).startswith("searched")}
        searches = {name: search_jobs(setup, store, name) for name in searched}
    return plan_jobs(setup.experiment, setup.dataset, rows, setup.lr_sources, searches)


def search_jobs(setup: Setup, store: RunStore, recipe_name: str) -> list[str]:
    """Ids of the lr-search jobs whose choice ``recipe_name`` takes at the setup's scale and dataset."""
    from robustlab.experiments.experiment import get_experiment, sweep_rows

    search = get_experiment("lr_search")
    searching = search.setup(setup.scale, setup.dataset, setup.overrides, recipes=(recipe_name,))
    searching = replace(searching, store=store, planning=True)
    return [job_id(row) for row in sweep_rows(search, searching, store)]


def plan_jobs(
    experiment: str,
    dataset: str,
    rows: Sequence[SweepRow],
    lr_sources: dict[str, str],
    searches: dict[str, list[str]] | None = None,
) -> list[dict[str, Any]]:
    """One plan entry per sweep row. ``lr_sources`` says where each recipe's lr came from
    (``Setup.lr_sources``); ``searches`` maps a recipe to the ids of the lr-search jobs whose
    choice it waits for."""
    jobs = []
    for row in rows:
        config = row.config
        full_size = split_size(config)
        epochs, steps, images = budget(config, full_size)
        source = lr_sources.get(row.recipe, "recipe")
        depends = (searches or {}).get(row.recipe, []) if source.startswith("searched") else []
        jobs.append(
            {
                "id": job_id(row),
                "experiment": experiment,
                "recipe": row.recipe,
                "dataset": dataset,
                "subset_size": config.data.subset_size or full_size,
                "extra_size": config.data.extra_size,
                "seed": config.seed,
                "epochs": round(epochs, 4),
                "steps": steps,
                "images": images,
                "lr": config.optim.lr,
                "lr_source": source,
                "depends_on": depends,
                "gpu_hours": gpu_hours(config, steps),
                "status": row.status,
            }
        )
    return jobs


def totals(jobs: Sequence[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Jobs and GPU-hours per value of ``key`` (e.g. the section), then for all of them."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        groups.setdefault(str(job[key]), []).append(job)
    lines = [_total(name, group, key) for name, group in groups.items()]
    return [*lines, _total("all", list(jobs), key)]


def _total(name: str, group: list[dict[str, Any]], key: str) -> dict[str, Any]:
    hours = [job["gpu_hours"] for job in group if job["gpu_hours"] is not None]
    unmeasured = sum(job["gpu_hours"] is None for job in group)
    return {
        key: name,
        "jobs": len(group),
        "to train": sum(job["status"] != "done" for job in group),
        f"GPU-hours ({GPU})": round(sum(hours), 1) if hours else None,
        "longest job (h)": round(max(hours), 1) if hours else None,
        "jobs without a GPU speed": unmeasured,
    }
