#!/usr/bin/env python3
"""robustlab's speed benchmark: training, certification and smoothing throughput.

    python benchmarks/bench.py --device cuda --size full --data-dir DIR --append benchmarks/RESULTS.md

Jobs (``--jobs``, comma-separated):

- ``train``: seconds per epoch and images/s of the paper's four recipes (the presets
  simpleconvnet, cpl-lcn, aol-lcn, aol-mlp), trained by the training engine itself
  (``robustlab.train.loop.train``, so the numbers are what users get). Each run ends, as every
  run does, with the certified evaluation of its validation images; its images/s is the
  ``certify`` row (float64 copy of the model, CPL eval-mode power iteration included).
- ``smoothing``: the paper's smoothing estimate (``robustlab.certify.smoothing.estimate``) of
  the smoothing preset's base net, in float32, bfloat16 and bfloat16 with channels_last
  weights, as samples/s.
- ``syncs`` (CUDA only): host synchronisations per training step, counted with
  ``torch.cuda.set_sync_debug_mode`` over one epoch of each recipe.
- ``accuracy`` (long, for the GPU session): the accuracy rows of the targets table.

Timing: one warm-up epoch (cuDNN autotuning, torch.compile, allocator growth), then the
median of the timed epochs; one last untimed epoch carries the run's final checkpoint
write. CUDA is synchronised at every timing mark. ``--set key=value`` overrides every
training config, e.g. ``--set train.precision=bfloat16 --set train.channels_last=true``.

Data: CIFAR-10 from ``--data-dir`` (``cifar10.npz`` as assemble.py writes it, or the
official archive), else synthetic uint8 images of the same shape; the output says which.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustlab.certify import smoothing
from robustlab.cli.common import add_json_flag, add_overrides_flag, emit, format_table
from robustlab.config import PAPER_EPS, SPEED_OPTIONS, ConfigError, ExperimentConfig, load_config
from robustlab.data.datasets import DATASETS
from robustlab.data.splits import prepare_data
from robustlab.registry import UnknownNameError
from robustlab.runs.checkpoint import build_model, load_run_model
from robustlab.runtime import resolve_device
from robustlab.train.loop import train

REPO = Path(__file__).resolve().parents[1]
CIFAR_SHAPE = (32, 32, 3)
CIFAR_CLASSES = 10
WARMUP_EPOCHS = 1
JOBS = ("train", "smoothing", "syncs", "accuracy")
MAX_SYNCS_PER_STEP = 0.15  # the loop reads its statistics every 20 steps: .item() and .tolist(), 0.1 per step
COLUMNS = [
    "job",
    "model",
    "setting",
    "images",
    "seconds",
    "rate",
    "unit",
    "peak_gib",
    "result",
    "target",
    "reference",
    "meets",
]


# ---------------------------------------------------------------------------------------
# What is measured, and the targets of the issue (reference code on one H200 in brackets)


@dataclass(frozen=True)
class Recipe:
    preset: str
    model: str  # the preset's model, the row label
    target: str  # training speed, as the issue states it
    reference: str  # the reference code on one H200
    min_rate: float | None  # images/s the target implies for 45k images per epoch


TRAIN_RECIPES = (
    Recipe("simpleconvnet", "simpleconvnet", "<= 15 s / 24 epochs (0.625 s/epoch)", "5.75 s/epoch", 45_000 * 24 / 15),
    Recipe("cpl-lcn", "lipconvnet-cpl", "<= 2.5 s/epoch", "11.6 s/epoch", 45_000 / 2.5),
    Recipe("aol-lcn", "lipconvnet-aol", "-", "-", None),
    Recipe("aol-mlp", "lipmlp-aol", "<= 1.5 s/epoch", "9.1 s/epoch", 45_000 / 1.5),
)


@dataclass(frozen=True)
class AccuracyRun:
    preset: str
    overrides: tuple[str, ...]
    target: str
    reference: str
    min_accuracy: float | None = None
    min_cra: float | None = None
    max_seconds: float | None = None


ACCURACY_RUNS = (
    AccuracyRun("simpleconvnet", (), ">= 93.5% acc in <= 15 s", "93.6% in 138 s", 0.935, None, 15.0),
    AccuracyRun(
        "cpl-lcn",
        ("train.epochs=3", "optim.lr=1.0"),
        ">= 55.7% acc, >= 35.6% CRA",
        "55.7% / 35.6% (11.6 s/epoch)",
        0.557,
        0.356,
    ),
    AccuracyRun("aol-mlp", ("train.epochs=3", "optim.lr=0.1"), "-", "46.5% / 25.0% (9.1 s/epoch)"),
)
SMOOTHING_TARGET = ("5k x 1000 in <= 10 s", "~40 s", 5_000 * 1_000 / 10)
SMOOTHING_PRESET = "smoothing"
# The estimate's two precisions; bf16 with the model's weights in channels_last, which makes cuDNN
# run every convolution in NHWC (the tensor cores' layout); and that model under torch.compile
SMOOTHING_SETTINGS = ("float32", "bfloat16", "bfloat16 channels_last", "bfloat16 channels_last compile")
DEFAULT_SMOOTHING_SETTINGS = SMOOTHING_SETTINGS[:3]


@dataclass(frozen=True)
class Size:
    """How much work each job does. ``full`` is the paper's; the others shrink models and data."""

    train_images: int
    val_images: int
    timed_epochs: int
    batch_size: int | None = None  # None: the preset's (256)
    model_kwargs: dict[str, dict] = field(default_factory=dict)  # by model name; {} = the paper's
    accuracy_epochs: float | None = None  # None: the recipe's
    smoothing_images: int = 5_000
    smoothing_samples: int = 1_000
    smoothing_batch: int = 10_000


SIZES = {
    # CI: every row, tiny networks, a few seconds on a laptop CPU.
    "smoke": Size(
        128,
        32,
        1,
        batch_size=64,
        accuracy_epochs=1,
        model_kwargs={
            "simpleconvnet": {"width": 4},
            "lipconvnet-cpl": {"width": 4, "depth": 1},
            "lipconvnet-aol": {"width": 4, "depth": 1},
            "lipmlp-aol": {"width": 32, "depth": 2},
        },
        smoothing_images=4,
        smoothing_samples=50,
        smoothing_batch=100,
    ),
    # CPU: the real input shape and depth, narrower networks; indicative numbers in a minute.
    "small": Size(
        512,
        64,
        2,
        batch_size=128,
        accuracy_epochs=1,
        model_kwargs={
            "simpleconvnet": {"width": 16},
            "lipconvnet-cpl": {"width": 8},
            "lipconvnet-aol": {"width": 8},
            "lipmlp-aol": {"width": 512},
        },
        smoothing_images=16,
        smoothing_samples=100,
        smoothing_batch=800,
    ),
    # GPU: the paper's models on 45k training / 5k validation images.
    "full": Size(45_000, 5_000, 3),
}


# ---------------------------------------------------------------------------------------
# Setup shared by the jobs


@dataclass
class Bench:
    device: torch.device
    size_name: str
    size: Size
    data_overrides: list[str]
    data_source: str
    real_data: bool
    user_overrides: list[str]
    work: Path
    progress: bool
    torch_flags: list[str]  # global torch settings asked for with --tf32 / --cudnn-benchmark
    smoothing_train_epochs: float = 0  # 0: smooth an untrained base net
    smoothing_settings: list[str] = field(default_factory=lambda: list(DEFAULT_SMOOTHING_SETTINGS))

    @property
    def gpu_full(self) -> bool:
        """Only full-size runs on CUDA are compared with the targets (all of them are for one H200)."""
        return self.size_name == "full" and self.device.type == "cuda"

    def config(self, preset: str, extra: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
        """The preset at this size, on this data and device, with the user's ``--set`` last."""
        model = load_config(preset).model.name
        overrides = [
            *self.data_overrides,
            f"train.device={self.device}",
            "train.eval_every=0",
            "train.checkpoint_every=1000000",
        ]
        if self.size.batch_size:
            overrides.append(f"train.batch_size={self.size.batch_size}")
        for key, value in self.size.model_kwargs.get(model, {}).items():
            overrides.append(f"model.kwargs.{key}={value}")
        return load_config(preset, [*overrides, *extra, *self.user_overrides])

    def run_dir(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.work))


def prepare_inputs(args: argparse.Namespace, size: Size, work: Path) -> tuple[list[str], str, bool]:
    """Data overrides for every config, a description of the data, and whether it is real CIFAR-10."""
    if args.data_dir:
        data_dir = Path(args.data_dir).expanduser()
        found = DATASETS.get("cifar10").status(data_dir)  # "npz", "official" or "missing"
        if found == "missing":
            raise ValueError(
                f"--data-dir {data_dir} holds no CIFAR-10: expected cifar10.npz (as assemble.py writes it) or "
                "cifar10/cifar-10-python.tar.gz; leave --data-dir out to benchmark on synthetic data"
            )
        overrides = ["data.name=cifar10", f"data.data_dir={data_dir}", f"data.val_size={size.val_images}"]
        if size.train_images < 45_000:
            overrides += [f"data.subset_size={size.train_images}", "train.scale_epochs=false"]
        return overrides, f"CIFAR-10 ({found} in {data_dir})", True
    path = write_synthetic_cifar(work / "synthetic-cifar10.npz", size.train_images + size.val_images)
    overrides = [f"data.name={path}", f"data.val_size={size.val_images}"]
    return overrides, f"synthetic uint8 {CIFAR_SHAPE[0]}x{CIFAR_SHAPE[1]}x{CIFAR_SHAPE[2]} (random labels)", False


def write_synthetic_cifar(path: Path, n_train: int, n_test: int = 100, seed: int = 0) -> Path:
    """Random uint8 images and balanced labels of CIFAR-10's shape: speed does not depend on content."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        arrays[f"x_{split}"] = rng.integers(0, 256, (n, *CIFAR_SHAPE), dtype=np.uint8)
        arrays[f"y_{split}"] = rng.permutation(np.arange(n) % CIFAR_CLASSES).astype(np.int64)
    np.savez(path, **arrays)
    return path


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def setting(config: ExperimentConfig, bench: Bench) -> str:
    """How a training run was set up: precision, config speed options, global torch flags."""
    return " ".join(speed_options(config) + bench.torch_flags)


def speed_options(config: ExperimentConfig) -> list[str]:
    """The config's precision and the speed options it turns on."""
    return [config.train.precision] + [name for name in SPEED_OPTIONS if getattr(config.train, name)]


def row(job: str, model: str, **values: Any) -> dict[str, Any]:
    return {"job": job, "model": model, **{c: values.get(c) for c in COLUMNS[2:]}}


def verdict(met: bool | None) -> str:
    return "-" if met is None else ("yes" if met else "NO")


def status(bench: Bench, message: str) -> None:
    if bench.progress:
        print(f"bench: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# Jobs


def train_job(bench: Bench, models: set[str]) -> list[dict[str, Any]]:
    rows = []
    for recipe in TRAIN_RECIPES:
        if recipe.model not in models:
            continue
        epochs = WARMUP_EPOCHS + bench.size.timed_epochs + 1  # the last one writes the final checkpoint
        config = bench.config(recipe.preset, [f"train.epochs={epochs}"])
        status(bench, f"train {recipe.model} ({setting(config, bench)}), {epochs} epochs")
        marks: list[float] = []

        def mark(epoch: int, run) -> None:
            synchronize(bench.device)
            marks.append(time.perf_counter())

        reset_peak_memory(bench.device)
        start = time.perf_counter()
        run = train(config, run_dir=bench.run_dir(recipe.model), progress=bench.progress, on_epoch_end=mark)
        results = run.load_results()
        epoch_seconds = statistics.median(np.diff(marks)[: bench.size.timed_epochs].tolist())
        warmup_seconds = marks[WARMUP_EPOCHS - 1] - start  # data, model, compilation, autotuning
        rate = results.n_train / epoch_seconds
        met = rate >= recipe.min_rate if recipe.min_rate and bench.gpu_full else None
        rows.append(
            row(
                "train",
                recipe.model,
                setting=setting(config, bench),
                images=results.n_train,
                seconds=epoch_seconds,
                rate=rate,
                unit="img/s",
                peak_gib=peak_memory_gib(bench.device),
                result=f"s/epoch; warm-up {warmup_seconds:.1f} s",
                target=recipe.target,
                reference=recipe.reference,
                meets=verdict(met),
            )
        )
        rows.append(
            row(
                "certify",
                recipe.model,
                setting="float64" if results.lipschitz_constant else "float32",
                images=results.n_eval,
                seconds=results.eval_time_s,
                rate=results.n_eval / results.eval_time_s,
                unit="img/s",
                result="certified evaluation",
                target="-",
                reference="-",
                meets="-",
            )
        )
    return rows


def smoothing_job(bench: Bench, models: set[str]) -> list[dict[str, Any]]:
    config = bench.config(SMOOTHING_PRESET)
    if config.model.name not in models:
        return []
    data = prepare_data(config.data)
    if bench.smoothing_train_epochs:  # a real base classifier, so that accuracy and radii mean something
        base_config = bench.config(SMOOTHING_PRESET, [f"train.epochs={bench.smoothing_train_epochs}"])
        status(
            bench,
            f"train the smoothing base net ({setting(base_config, bench)}, {bench.smoothing_train_epochs:g} epochs)",
        )
        base = train(base_config, run_dir=bench.run_dir("smoothing-base"), progress=bench.progress)
        plain_model, _ = load_run_model(base.path, bench.device)
    else:  # untrained weights: the speed does not depend on them
        plain_model = build_model(config, data).to(bench.device).eval()
    n_images = min(bench.size.smoothing_images, len(data.y_eval))
    images, labels = data.x_eval[:n_images], data.y_eval[:n_images]
    samples = bench.size.smoothing_samples
    sigma = config.augment.noise_std
    text, reference, min_rate = SMOOTHING_TARGET
    rows = []
    first: tuple[str, list[int]] | None = None  # the first setting's smoothed predictions, to compare with
    for label in bench.smoothing_settings:
        precision, *options = label.split()
        model = plain_model.to(
            memory_format=torch.channels_last if "channels_last" in options else torch.contiguous_format
        )
        if "compile" in options:
            model = torch.compile(model)  # compiled by the warm-up below
        status(bench, f"smoothing estimate {config.model.name} ({label}), {n_images} images x {samples} samples")

        def estimate(count: int, progress: bool = False) -> smoothing.SmoothingResult:
            return smoothing.estimate(
                model,
                images[:count],
                labels[:count],
                sigma,
                samples,
                precision=precision,
                batch_size=bench.size.smoothing_batch,
                progress=progress,
            )

        estimate(min(n_images, max(1, bench.size.smoothing_batch // samples)))  # warm-up
        reset_peak_memory(bench.device)
        synchronize(bench.device)
        start = time.perf_counter()
        result = estimate(n_images, bench.progress)
        synchronize(bench.device)
        seconds = time.perf_counter() - start
        rate = n_images * samples / seconds
        met = rate >= min_rate if bench.gpu_full else None
        cra = result.cra_at(PAPER_EPS)
        predictions = [record["prediction"] for record in result.records]
        agreement = ""
        if first is None:
            first = (label, predictions)
        else:
            agreement = f", {np.mean(np.equal(predictions, first[1])):.1%} same predictions as {first[0]}"
        rows.append(
            row(
                "smoothing",
                config.model.name,
                setting=label,
                images=f"{n_images}x{samples}",
                seconds=seconds,
                rate=rate,
                unit="samples/s",
                peak_gib=peak_memory_gib(bench.device),
                result=f"estimate, sigma {sigma:g}, acc {result.accuracy:.1%}, CRA(36/255) {cra:.1%}{agreement}",
                target=text,
                reference=reference,
                meets=verdict(met),
            )
        )
    return rows


def syncs_job(bench: Bench, models: set[str]) -> list[dict[str, Any]]:
    """Host synchronisations per step over the second epoch of each recipe (CUDA only)."""
    rows = []
    for recipe in TRAIN_RECIPES:
        if recipe.model not in models:
            continue
        config = bench.config(recipe.preset, ["train.epochs=3"])
        status(bench, f"syncs {recipe.model} ({setting(config, bench)})")
        counted: list[int] = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")

            def watch(epoch: int, run) -> None:
                if epoch == 0:  # count during the second epoch only: no setup, evaluation or saving
                    caught.clear()
                    torch.cuda.set_sync_debug_mode("warn")
                elif epoch == 1:
                    torch.cuda.set_sync_debug_mode("default")
                    counted.append(sum("synchroniz" in str(w.message) for w in caught))

            try:
                run = train(config, run_dir=bench.run_dir(f"syncs-{recipe.model}"), progress=False, on_epoch_end=watch)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        steps = math.ceil(run.load_results().n_train / config.train.batch_size)
        per_step = counted[0] / steps
        rows.append(
            row(
                "syncs",
                recipe.model,
                setting=setting(config, bench),
                images=steps,
                rate=per_step,
                unit="syncs/step",
                result=f"{counted[0]} host syncs in {steps} steps",
                target=f"<= {MAX_SYNCS_PER_STEP}",
                reference="-",
                meets=verdict(per_step <= MAX_SYNCS_PER_STEP),
            )
        )
    return rows


def accuracy_job(bench: Bench, models: set[str]) -> list[dict[str, Any]]:
    rows = []
    for spec in ACCURACY_RUNS:
        overrides = list(spec.overrides)
        if bench.size.accuracy_epochs is not None:
            overrides.append(f"train.epochs={bench.size.accuracy_epochs}")
        config = bench.config(spec.preset, overrides)
        if config.model.name not in models:
            continue
        recipe = f"{setting(config, bench)}, {config.train.epochs:g} ep, lr {config.optim.lr:g}"
        status(bench, f"accuracy {spec.preset} ({recipe})")
        reset_peak_memory(bench.device)
        run = train(config, run_dir=bench.run_dir(f"accuracy-{spec.preset}"), progress=bench.progress)
        results = run.load_results()
        accuracy, seconds = results.accuracy, results.train_time_s
        cra = results.cra_at(PAPER_EPS)
        result = f"{results.eval_split} acc {accuracy:.1%}" + (f", CRA(36/255) {cra:.1%}" if cra is not None else "")
        rows.append(
            row(
                "accuracy",
                config.model.name,
                setting=recipe,
                images=results.n_train,
                seconds=seconds,
                rate=results.n_train * results.epochs / seconds,
                unit="img/s",
                peak_gib=peak_memory_gib(bench.device),
                result=result,
                target=spec.target,
                reference=spec.reference,
                meets=verdict(
                    accuracy_met(spec, accuracy, cra, seconds) if bench.gpu_full and bench.real_data else None
                ),
            )
        )
    return rows


def accuracy_met(spec: AccuracyRun, accuracy: float, cra: float | None, seconds: float) -> bool | None:
    checks = []
    if spec.min_accuracy is not None:
        checks.append(accuracy >= spec.min_accuracy)
    if spec.min_cra is not None:
        checks.append(cra is not None and cra >= spec.min_cra)
    if spec.max_seconds is not None:
        checks.append(seconds <= spec.max_seconds)
    return all(checks) if checks else None


JOB_FUNCTIONS: dict[str, Callable[[Bench, set[str]], list[dict[str, Any]]]] = {
    "train": train_job,
    "smoothing": smoothing_job,
    "syncs": syncs_job,
    "accuracy": accuracy_job,
}


# ---------------------------------------------------------------------------------------
# Where it ran, and the output


def git_commit() -> str:
    """HEAD and a dirty flag; $BENCH_GIT_COMMIT where the checkout has no .git (a device machine's copy)."""
    if os.environ.get("BENCH_GIT_COMMIT"):  # a copy of the checkout whose .git may be stale or absent
        return os.environ["BENCH_GIT_COMMIT"]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return f"{head}{' (dirty)' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("BENCH_GIT_COMMIT", "unknown (no git checkout; set BENCH_GIT_COMMIT)")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_in_checkout(source: Path, worker: str, arguments: list[str], what: str) -> dict[str, Any]:
    """The last stdout line, as JSON, of the Python source ``worker`` run with ``arguments`` in
    a fresh one-thread interpreter that imports robustlab from the checkout ``source`` (the
    benchmarks that compare two versions). The worker's JSON holds ``package``:
    robustlab.__file__, checked to lie inside ``source``."""
    env = dict(os.environ, PYTHONPATH=str(source / "src"), OMP_NUM_THREADS="1")
    command = [sys.executable, "-c", worker, *arguments]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{what} with {source} failed:\n{done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not Path(result["package"]).is_relative_to(source):
        raise SystemExit(f"the subprocess imported {result['package']}, not the checkout {source}")
    return result


def hardware(device: torch.device) -> str:
    text = f"CPU {cpu_name()}, {os.cpu_count()} cores (torch threads {torch.get_num_threads()})"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        text += f"; GPU {props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    return text


def metadata(args: argparse.Namespace, bench: Bench, argv: list[str]) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", "benchmarks/bench.py", *argv]),
        "git": git_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "hardware": hardware(bench.device),
        "device": str(bench.device),
        "size": bench.size_name,
        "data": bench.data_source,
        "overrides": bench.user_overrides,
        "torch_flags": bench.torch_flags,
    }


def render(report: dict[str, Any]) -> str:
    meta = report["meta"]
    header = [f"robustlab benchmark, {meta['date']}, size {meta['size']}, device {meta['device']}"]
    header += [f"{key}: {meta[key]}" for key in ("command", "git", "torch", "hardware", "data")]
    rows = [
        {
            **r,
            "seconds": _round(r["seconds"], 3),
            "rate": _round(r["rate"], 0 if (r["rate"] or 0) >= 10 else 2),
            "peak_gib": _round(r["peak_gib"], 2),
        }
        for r in report["rows"]
    ]
    return "\n".join(header) + "\n\n" + format_table(rows, COLUMNS)


def _round(value: float | None, digits: int) -> float | int | None:
    if value is None:
        return None
    return round(value) if digits == 0 else round(value, digits)


def append_markdown(path: Path, report: dict[str, Any], title: str | None) -> None:
    meta = report["meta"]
    heading = title or f"{meta['device']}, size {meta['size']}, {meta['date']}"
    text = f"\n## {heading}\n\n```text\n{render(report)}\n```\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


# ---------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Jobs: train (with certify rows), smoothing, syncs (CUDA), accuracy (long). "
        "GPU runbook: benchmarks/gpu_session.md.",
    )
    parser.add_argument("--device", default="auto", help="cuda, cpu, cuda:1, ... (default: auto)")
    parser.add_argument(
        "--size",
        choices=tuple(SIZES),
        default="smoke",
        help="smoke (CI, seconds), small (CPU, about a minute), full (the paper's sizes; GPU)",
    )
    parser.add_argument(
        "--jobs", help=f"comma-separated, from {', '.join(JOBS)} (default: train,smoothing, plus syncs on CUDA)"
    )
    parser.add_argument("--models", help="comma-separated model names to keep (default: all)")
    parser.add_argument("--data-dir", help="folder with CIFAR-10 (cifar10.npz); default: synthetic data")
    add_overrides_flag(parser, "every training run")
    parser.add_argument(
        "--append", metavar="FILE", help="append the table (markdown) to FILE, e.g. benchmarks/RESULTS.md"
    )
    parser.add_argument("--title", help="heading of the appended section (default: device, size and date)")
    parser.add_argument("--work-dir", help="folder for run directories and synthetic data (default: a temporary one)")
    parser.add_argument(
        "--tf32",
        action="store_true",
        help="CUDA: float32 matmuls in TF32 (certification is float64, smoothing forces IEEE float32)",
    )
    parser.add_argument(
        "--cudnn-benchmark",
        action="store_true",
        help="CUDA: let cuDNN time its convolution algorithms (torch.backends.cudnn.benchmark)",
    )
    parser.add_argument(
        "--smoothing",
        help=f"comma-separated smoothing settings, from: {', '.join(SMOOTHING_SETTINGS)} (default: the first three)",
    )
    parser.add_argument(
        "--smoothing-train-epochs",
        type=float,
        default=0,
        metavar="EPOCHS",
        help="train the smoothing preset's base net for EPOCHS (with the --set options) before the "
        "estimate, so that its accuracy and radii mean something (default 0: untrained weights; "
        "the speed does not depend on them)",
    )
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--quiet", action="store_true", help="no progress output on stderr")
    add_json_flag(parser)
    return parser.parse_args(argv)


def choose(text: str | None, known: tuple[str, ...] | list[str], what: str, default: list[str]) -> list[str]:
    if not text:
        return default
    chosen = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in chosen if t not in known]
    if unknown:
        raise ValueError(f"unknown {what} '{unknown[0]}'; choose from: {', '.join(known)}")
    return chosen


def set_torch_flags(args: argparse.Namespace, device: torch.device) -> list[str]:
    """Global torch settings the training loop does not set itself: measured here to see what they give."""
    if (args.tf32 or args.cudnn_benchmark) and device.type != "cuda":
        raise ValueError("--tf32 and --cudnn-benchmark are CUDA settings: use them with --device cuda")
    flags = []
    if args.tf32:
        torch.set_float32_matmul_precision("high")
        flags.append("tf32")
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
        flags.append("cudnn.benchmark")
    return flags


def run(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    device = resolve_device(args.device)
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    size = SIZES[args.size]
    torch_flags = set_torch_flags(args, device)
    jobs = choose(args.jobs, JOBS, "job", ["train", "smoothing"] + (["syncs"] if device.type == "cuda" else []))
    if "syncs" in jobs and device.type != "cuda":
        raise ValueError("the syncs job counts CUDA synchronisations: run it with --device cuda")
    if "accuracy" in jobs and args.size == "full" and not args.data_dir:
        raise ValueError("the accuracy job needs real CIFAR-10: give --data-dir (random labels give no accuracy)")
    all_models = [r.model for r in TRAIN_RECIPES]
    models = set(choose(args.models, all_models, "model", all_models))
    with tempfile.TemporaryDirectory(prefix="robustlab-bench-", dir=args.work_dir) as work:
        data_overrides, source, real = prepare_inputs(args, size, Path(work))
        bench = Bench(
            device,
            args.size,
            size,
            data_overrides,
            source,
            real,
            args.overrides,
            Path(work),
            progress=not args.quiet,
            torch_flags=torch_flags,
            smoothing_train_epochs=args.smoothing_train_epochs,
            smoothing_settings=choose(
                args.smoothing, SMOOTHING_SETTINGS, "smoothing setting", list(DEFAULT_SMOOTHING_SETTINGS)
            ),
        )
        for preset in {r.preset for r in TRAIN_RECIPES} | {SMOOTHING_PRESET}:
            bench.config(preset)  # a bad --set or a missing preset fails before any work
        rows = []
        for job in jobs:
            rows += JOB_FUNCTIONS[job](bench, models)
        return {"meta": metadata(args, bench, argv), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        report = run(args, argv)
    except (ConfigError, UnknownNameError, FileNotFoundError, ValueError) as error:
        print(f"bench.py: error: {error}", file=sys.stderr)
        return 2
    emit(args, report, render)
    if args.append:
        append_markdown(Path(args.append), report, args.title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
