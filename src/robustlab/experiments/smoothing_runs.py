"""Randomized smoothing of trained runs, and one table beside their Lipschitz certificates.

The paper's Section 4 compares the two: ``smooth_run`` smooths a run's model over its
evaluation images (``robustlab smooth``), resumably, into the run folder;
``comparison_table`` reads every result the run folders hold (``robustlab smooth --compare``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from robustlab.certify import smoothing
from robustlab.certify.evaluate import eps_label, split_images
from robustlab.config import DEFAULT_EPS
from robustlab.runs.checkpoint import load_run_model
from robustlab.runs.store import Run
from robustlab.runtime import resolve_device

DEFAULT_SAMPLES = {"estimate": 1000, "certify": 100_000, "predict": 100_000}


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
    seed: int = 0,
    precision: str = "float32",
    compile: bool = False,
    restart: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
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
    sigma = _noise_level(sigma, config.augment.noise_std)
    images, labels, split, _ = split_images(config, split)
    if skip < 1 or (limit is not None and limit < 1):
        raise ValueError(f"--skip must be >= 1 and --limit >= 1, got skip={skip}, limit={limit}")
    indices = list(range(0, len(labels), skip))[:limit]
    jsonl, summary_path = results_paths(run.path, method)
    if restart:
        jsonl.unlink(missing_ok=True)
    model, _ = load_run_model(run.path, device=resolve_device(device))
    if compile:
        model = torch.compile(model)
    options = dict(
        batch_size=batch_size, seed=seed, indices=indices, output=jsonl, eps=config.eval.eps, progress=progress
    )
    n = n or DEFAULT_SAMPLES[method]
    x, y = images[indices], labels[indices]
    if method == "estimate":
        result = smoothing.estimate(model, x, y, sigma, n, precision=precision, **options)
    elif method == "certify":
        result = smoothing.certify(model, x, y, sigma, n0, n, alpha, **options)
    else:
        result = smoothing.predict(model, x, y, sigma, n, alpha, **options)
    result.pop("records")  # per-image records are in the JSONL file
    result.update(
        run=str(run.path),
        split=split,
        skip=skip,
        limit=limit,
        train_noise_std=config.augment.noise_std,
        results_file=str(jsonl),
    )
    run.write_json(summary_path.name, result)
    return result


def _noise_level(sigma: float | None, train_noise: float) -> float:
    if sigma is None:
        if not train_noise > 0:
            raise ValueError(
                "this run was trained without noise (augment.noise_std = 0), so there is no default "
                "noise level; give one with --sigma (the paper's base net uses 1/8)"
            )
        return train_noise
    return sigma


def comparison_table(run_dirs: Sequence[str | Path], eps: Sequence[float] = DEFAULT_EPS) -> list[dict[str, Any]]:
    """Accuracy and CRA at the same radii for every result found in the run directories.

    The deterministic certificate of a run comes from ``certify.json`` (``robustlab
    certify``), or else from the ``results.json`` that training wrote; smoothing from
    ``smoothing-<method>.json``. Each row says what kind of guarantee its numbers carry.
    """

    rows = []
    for run_dir in run_dirs:
        run = Run(run_dir)
        config = run.load_config()
        deterministic = next((p for p in (run.path / "certify.json", run.results_path) if p.exists()), None)
        smoothed = [path for method in smoothing.METHODS if (path := results_paths(run.path, method)[1]).exists()]
        if deterministic is None and not smoothed:
            raise FileNotFoundError(
                f"{run.path} has no results yet (no results.json, certify.json or smoothing-*.json); "
                "train it, or run `robustlab certify` / `robustlab smooth` on it first"
            )
        sources = ([deterministic] if deterministic else []) + smoothed
        rows += [_comparison_row(run.id, config.model.name, _read_json(path), eps) for path in sources]
    return rows


def _comparison_row(run_id: str, model: str, data: dict[str, Any], eps: Sequence[float]) -> dict[str, Any]:
    method = data.get("method")
    if method in smoothing.METHODS:
        guarantee = f"p >= 1 - {data['alpha']:g}" if method == "certify" else method.replace("predict", "none")
        method, images, split = f"smoothing {method} (sigma {data['sigma']:g})", data["num_images"], data["split"]
    elif data.get("lipschitz_constant") is not None:
        method, guarantee = "lipschitz margin", "deterministic"
        images, split = data.get("n_eval", data.get("n")), data.get("eval_split", data.get("split"))
    else:
        method, guarantee = "standard net", "none"
        images, split = data.get("n_eval", data.get("n")), data.get("eval_split", data.get("split"))
    row = {
        "run": run_id,
        "model": model,
        "method": method,
        "guarantee": guarantee,
        "split": split,
        "images": images,
        "accuracy": data.get("accuracy"),
    }
    measured = {round(point["eps"], 9): point["cra"] for point in data.get("cra") or []}
    row.update({eps_label(e): measured.get(round(e, 9)) for e in eps})
    return row


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); re-create it") from None
