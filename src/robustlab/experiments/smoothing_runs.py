"""Randomized smoothing of trained runs, and one table beside their Lipschitz certificates.

The paper's Section 4 compares the two: ``smooth_run`` smooths a run's model over its
evaluation images (``robustlab smooth``), resumably, into the run folder;
``comparison_table`` reads every result the run folders hold (``robustlab smooth --compare``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from robustlab.certify import smoothing
from robustlab.certify.evaluate import split_images
from robustlab.certify.smoothing import SmoothingResult
from robustlab.config import DEFAULT_EPS
from robustlab.files import read_json
from robustlab.records import CRAPoint, cra_at, eps_label
from robustlab.runs.checkpoint import load_run_model
from robustlab.runs.result_files import CERTIFY_FILE, CertifyReport, RunResults
from robustlab.runs.store import Run
from robustlab.runtime import resolve_device

DEFAULT_SAMPLES = {"estimate": 1000, "certify": 100_000, "predict": 100_000}


@dataclass
class SmoothedRun:
    """A run's smoothing summary (``smoothing-<method>.json``): the result without its
    per-image records (they are in ``results_file``) and where it came from."""

    result: SmoothingResult
    run: str
    split: str
    skip: int  # every skip-th image of the split
    limit: int | None  # at most this many images
    train_noise_std: float  # the noise the base classifier was trained with
    results_file: str

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.result.to_dict(records=False),
            "run": self.run,
            "split": self.split,
            "skip": self.skip,
            "limit": self.limit,
            "train_noise_std": self.train_noise_std,
            "results_file": self.results_file,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SmoothedRun:
        return cls(
            SmoothingResult.from_dict(data),
            str(data["run"]),
            str(data["split"]),
            int(data["skip"]),
            data["limit"],
            float(data["train_noise_std"]),
            str(data["results_file"]),
        )


@dataclass
class ComparisonRow:
    """One result of one run in the comparison table; ``cra`` by radius label (a fraction)."""

    run: str
    model: str
    method: str
    guarantee: str  # deterministic | p >= 1 - alpha | estimate | none
    split: str
    images: int
    accuracy: float
    cra: dict[str, float | None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "model": self.model,
            "method": self.method,
            "guarantee": self.guarantee,
            "split": self.split,
            "images": self.images,
            "accuracy": self.accuracy,
            **self.cra,
        }


def results_paths(run_dir: str | Path, method: str) -> tuple[Path, Path]:
    """(per-image JSONL, summary JSON) of ``method`` in a run directory."""
    run_dir = Path(run_dir)
    return run_dir / f"smoothing-{method}.jsonl", run_dir / f"smoothing-{method}.json"


def smooth_run(
    run_dir: str | Path,
    method: str = "estimate",
    *,
    sigma: float | None = None,
    n: int | None = None,
    n0: int = 100,
    alpha: float = 0.001,
    split: str | None = None,
    limit: int | None = None,
    skip: int = 1,
    batch_size: int = 10_000,
    device: str = "auto",
    data_dir: str | None = None,
    seed: int = 0,
    precision: str = "float32",
    compile: bool = False,
    restart: bool = False,
    progress: bool = True,
) -> SmoothedRun:
    """Smooth the model of a trained run over its evaluation images; resumable.

    sigma defaults to the noise the base classifier was trained with (augment.noise_std);
    n to 1000 for ``estimate`` and 100,000 for ``certify``/``predict``. Every ``skip``-th
    image of the split is used, at most ``limit`` of them. Per-image results go to
    ``smoothing-<method>.jsonl`` in the run directory (a rerun continues it; ``restart``
    discards it first), the summary to ``smoothing-<method>.json``. ``compile`` runs the model
    under ``torch.compile`` (a GPU speed option: the noisy batches all have one shape, so it
    compiles once).
    """
    if method not in smoothing.METHODS:
        raise ValueError(f"unknown smoothing method '{method}'; choose one of: {', '.join(smoothing.METHODS)}")
    if precision != "float32" and method != "estimate":
        raise ValueError(f"{method} is a certificate and runs in float32 only; bfloat16 is for 'estimate'")
    run = Run(run_dir)
    config = run.load_config()
    if data_dir:  # the dataset moved since the run recorded its folder
        config.data.data_dir = data_dir
    sigma = _noise_level(sigma, config.augment.noise_std)
    images, labels, split, _ = split_images(config, split)
    if skip < 1 or (limit is not None and limit < 1):
        raise ValueError(f"--skip must be >= 1 and --limit >= 1, got skip={skip}, limit={limit}")
    indices = list(range(0, len(labels), skip))[:limit]
    jsonl, summary_path = results_paths(run.path, method)
    if restart:
        jsonl.unlink(missing_ok=True)
    trained, _ = load_run_model(run.path, device=resolve_device(device))
    model = cast(nn.Module, torch.compile(trained)) if compile else trained
    n = n or DEFAULT_SAMPLES[method]
    options: dict[str, Any] = dict(
        batch_size=batch_size, seed=seed, indices=indices, output=jsonl, eps=config.eval.eps, progress=progress
    )
    x, y = images[indices], labels[indices]
    if method == "estimate":
        result = smoothing.estimate(model, x, y, sigma, n, precision=precision, **options)
    elif method == "certify":
        result = smoothing.certify(model, x, y, sigma, n0, n, alpha, **options)
    else:
        result = smoothing.predict(model, x, y, sigma, n, alpha, **options)
    result.records = []  # they are in the JSONL file
    smoothed = SmoothedRun(result, str(run.path), split, skip, limit, config.augment.noise_std, str(jsonl))
    run.write_json(summary_path.name, smoothed.to_dict())
    return smoothed


def _noise_level(sigma: float | None, train_noise: float) -> float:
    if sigma is None:
        if not train_noise > 0:
            raise ValueError(
                "this run was trained without noise (augment.noise_std = 0), so there is no default "
                "noise level; give one with --sigma (the paper's base net uses 1/8)"
            )
        return train_noise
    return sigma


def comparison_table(run_dirs: Sequence[str | Path], eps: Sequence[float] = DEFAULT_EPS) -> list[ComparisonRow]:
    """Accuracy and CRA at the same radii for every result found in the run directories.

    The deterministic certificate of a run comes from ``certify.json`` (``robustlab
    certify``), or else from the ``results.json`` that training wrote; smoothing from
    ``smoothing-<method>.json``. Each row says what kind of guarantee its numbers carry.
    """
    rows = []
    for run_dir in run_dirs:
        run = Run(run_dir)
        model = run.load_config().model.name
        certified = run.path / CERTIFY_FILE
        smoothed = [path for method in smoothing.METHODS if (path := results_paths(run.path, method)[1]).exists()]
        if certified.exists():
            rows.append(_certify_row(run.id, model, CertifyReport.from_dict(read_json(certified)), eps))
        elif run.results_path.exists():
            rows.append(_training_row(run.id, model, run.load_results(), eps))
        elif not smoothed:
            raise FileNotFoundError(
                f"{run.path} has no results yet (no results.json, certify.json or smoothing-*.json); "
                "train it, or run `robustlab certify` / `robustlab smooth` on it first"
            )
        rows += [_smoothing_row(run.id, model, SmoothedRun.from_dict(read_json(path)), eps) for path in smoothed]
    return rows


def _deterministic(lipschitz_constant: float | None) -> tuple[str, str]:
    """(method, guarantee) of a Lipschitz or a standard net's own certificate."""
    return ("lipschitz margin", "deterministic") if lipschitz_constant is not None else ("standard net", "none")


def _certify_row(run_id: str, model: str, report: CertifyReport, eps: Sequence[float]) -> ComparisonRow:
    evaluation = report.evaluation
    method, guarantee = _deterministic(evaluation.lipschitz_constant)
    return ComparisonRow(
        run_id,
        model,
        method,
        guarantee,
        report.split,
        evaluation.n,
        evaluation.accuracy,
        _by_label(evaluation.cra, eps),
    )


def _training_row(run_id: str, model: str, results: RunResults, eps: Sequence[float]) -> ComparisonRow:
    method, guarantee = _deterministic(results.lipschitz_constant)
    cra = _by_label(results.cra, eps)
    return ComparisonRow(run_id, model, method, guarantee, results.eval_split, results.n_eval, results.accuracy, cra)


def _smoothing_row(run_id: str, model: str, smoothed: SmoothedRun, eps: Sequence[float]) -> ComparisonRow:
    result, params = smoothed.result, smoothed.result.params
    guarantee = f"p >= 1 - {params.alpha:g}" if result.method == "certify" else result.method.replace("predict", "none")
    method = f"smoothing {result.method} (sigma {params.sigma:g})"
    cra = _by_label(result.cra or [], eps)
    return ComparisonRow(run_id, model, method, guarantee, smoothed.split, result.num_images, result.accuracy, cra)


def _by_label(points: list[CRAPoint], eps: Sequence[float]) -> dict[str, float | None]:
    return {eps_label(e): cra_at(points, e) for e in eps}
