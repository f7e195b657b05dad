"""Randomized smoothing: the paper's radius estimate and Cohen et al.'s CERTIFY / PREDICT.

The smoothed classifier of a base classifier f is h(x) = argmax_c P(f(x + e) = c) with
e ~ N(0, sigma^2 I). Three ways to look at it, all Monte-Carlo:

- ``estimate`` (Prach & Lampert, Section 4): n = 1000 noisy copies, p1 = frequency of the
  TRUE class, p2 = frequency of the most frequent other class, both clipped to
  [0.01, 0.99], radius = sigma/2 * (PhiInv(p1) - PhiInv(p2)); negative = misclassified.
  This estimates the robustness of the (unevaluable) smoothed classifier: it is NOT a
  guarantee, and every result says so.
- ``certify`` (Cohen et al. 2019): pick the top class from n0 = 100 copies, count it in
  n = 100,000 fresh copies, take the one-sided Clopper-Pearson lower bound pA at level
  alpha; abstain if pA < 1/2, else radius = sigma * PhiInv(pA). Sound with probability at
  least 1 - alpha per image.
- ``predict`` (Cohen et al. 2019): the top class of n copies, unless a two-sided binomial
  test of the top two counts has p-value > alpha (then abstain). No radius.

How it runs: noise is drawn on the model's device, many noisy copies of several images
per forward pass; predictions are counted with ``scatter_add_`` on the device, and the
counts come to the host once per chunk of images. Each image has its own noise stream,
seeded from (seed, image index, purpose), so a result depends neither on the batch size
nor on which other images share a chunk, and a resumed run replays exactly. With an
``output`` path every chunk's results are appended to a JSONL file (flushed and fsynced);
running again with the same file skips the images already there.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import beta, binomtest, norm
from torch import nn

from robustlab.certify.evaluate import CURVE_POINTS, eps_label, split_images
from robustlab.certify.margins import cra, cra_curve
from robustlab.progress import Progress
from robustlab.runs.config import DEFAULT_EPS
from robustlab.runs.store import Run, append_json_lines

METHODS = ("estimate", "certify", "predict")
NOISE_BLOCK = 1000  # copies drawn per call from an image's stream; fixed, so results ignore batch size
ABSTAIN = -1
GUARANTEES = {
    "estimate": "none: a Monte-Carlo ESTIMATE of the smoothed classifier's radius (Prach & Lampert), not a certificate",
    "certify": "certified: each radius holds with probability >= 1 - alpha (Cohen et al. 2019, CERTIFY)",
    "predict": "prediction only: wrong with probability <= alpha when not abstaining "
    "(Cohen et al. 2019, PREDICT); no radius",
}
_STREAMS = {"estimate": 0, "select": 1, "certify": 2, "predict": 3}


# ---------------------------------------------------------------------------------------
# Statistics (host side, on the counts of one chunk)


def clopper_pearson_lower(successes, trials: int, alpha: float):
    """One-sided (1 - alpha) Clopper-Pearson lower confidence bound of a binomial proportion.

    Element-wise on arrays of success counts.
    """
    successes = np.asarray(successes)
    bound = np.where(successes == 0, 0.0, beta.ppf(alpha, np.maximum(successes, 1), trials - successes + 1))
    return _scalar_or_array(bound)


def estimated_radius(p1, p2, sigma: float, clip: tuple[float, float] = (0.01, 0.99)):
    """The paper's radius sigma/2 * (PhiInv(p1) - PhiInv(p2)) with clipped frequencies (element-wise)."""
    return _scalar_or_array(sigma / 2 * (norm.ppf(np.clip(p1, *clip)) - norm.ppf(np.clip(p2, *clip))))


def certified_radius(p_lower, sigma: float):
    """Cohen et al.'s radius sigma * PhiInv(pA) for a lower bound pA >= 1/2 (element-wise)."""
    return _scalar_or_array(sigma * norm.ppf(p_lower))


def _scalar_or_array(values):
    return float(values) if np.ndim(values) == 0 else np.asarray(values, dtype=np.float64)


# ---------------------------------------------------------------------------------------
# Sampling on the device


def noise_seed(seed: int, index: int, stream: str) -> int:
    """Seed of one image's noise stream: a hash of (seed, image index, purpose)."""
    state = np.random.SeedSequence([seed, index, _STREAMS[stream]]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1  # < 2**63: valid on every device


def count_predictions(
    model: nn.Module,
    images: torch.Tensor,
    seeds: Sequence[int],
    num_samples: int,
    sigma: float,
    batch_size: int,
    precision: str = "float32",
) -> torch.Tensor:
    """Class counts (images, classes) of ``model`` on ``num_samples`` noisy copies of each image.

    ``images`` are float NCHW on the model's device. Nothing here waits for the device:
    the counts stay there until the caller asks for them.
    """
    device = images.device
    generators = [torch.Generator(device).manual_seed(s) for s in seeds]
    blocks = [
        (row, min(NOISE_BLOCK, num_samples - start))
        for row in range(len(images))
        for start in range(0, num_samples, NOISE_BLOCK)
    ]
    counts = None
    for group in _group_blocks(blocks, batch_size):
        rows = torch.tensor([row for row, _ in group])
        sizes = torch.tensor([size for _, size in group])
        image_of_copy = torch.repeat_interleave(rows, sizes).to(device, non_blocking=True)
        noise = torch.empty((int(sizes.sum()), *images.shape[1:]), device=device)
        for (row, _size), part in zip(group, noise.split(sizes.tolist())):
            part.normal_(0.0, sigma, generator=generators[row])
        for copies, owners in zip(noise.split(batch_size), image_of_copy.split(batch_size)):
            with _autocast(device, precision):
                logits = model(images[owners] + copies)
            if counts is None:
                num_classes = logits.shape[1]
                counts = torch.zeros(len(images) * num_classes, dtype=torch.long, device=device)
            predictions = logits.argmax(dim=1)
            cells = owners * num_classes + predictions
            counts.scatter_add_(0, cells, torch.ones_like(cells))
    return counts.view(len(images), num_classes)


def _group_blocks(blocks: list[tuple[int, int]], batch_size: int) -> Iterator[list[tuple[int, int]]]:
    """Consecutive noise blocks, grouped up to ``batch_size`` copies (a lone larger block is split later)."""
    group, total = [], 0
    for row, size in blocks:
        if group and total + size > batch_size:
            yield group
            group, total = [], 0
        group.append((row, size))
        total += size
    if group:
        yield group


def _autocast(device: torch.device, precision: str):
    if precision == "float32":
        return _full_float32(device)
    return torch.autocast(device.type, dtype=torch.bfloat16)


@contextmanager
def _full_float32(device: torch.device) -> Iterator[None]:
    """No TF32 shortcut in certification: CUDA convolutions default to TF32."""
    if device.type != "cuda":
        yield
        return
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = conv.fp32_precision, matmul.fp32_precision
    conv.fp32_precision = matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision, matmul.fp32_precision = saved


# ---------------------------------------------------------------------------------------
# The three methods: which counts each draws on the device, and its records from them

# (noise stream, sample-count parameter) per method; certify selects with n0, then certifies with n
_DRAWS = {
    "estimate": [("estimate", "n")],
    "certify": [("select", "n0"), ("certify", "n")],
    "predict": [("predict", "n")],
}


def _launch(method: str, model: nn.Module, x: torch.Tensor, indices: list[int], p: dict[str, Any]) -> torch.Tensor:
    """Queue the counting of one chunk on the device: (draws, images, classes), not yet on the host."""
    return torch.stack(
        [
            count_predictions(
                model,
                x,
                [noise_seed(p["seed"], i, stream) for i in indices],
                p[samples],
                p["sigma"],
                p["batch_size"],
                p.get("precision", "float32"),
            )
            for stream, samples in _DRAWS[method]
        ]
    )


def _estimate_records(counts: np.ndarray, labels: list[int], indices: list[int], p: dict[str, Any]) -> list[dict]:
    (counts,) = counts
    rows, labels_ = np.arange(len(labels)), np.asarray(labels)
    true_counts = counts[rows, labels_]
    others = counts.copy()
    others[rows, labels_] = -1
    other_counts = others.max(axis=1)
    radii = estimated_radius(true_counts / p["n"], other_counts / p["n"], p["sigma"], p["clip"])
    return [
        {
            "index": index,
            "label": label,
            "prediction": int(row.argmax()),
            "count_true": int(true_count),
            "count_other": int(other_count),
            "radius": float(radius),
            "correct": bool(true_count > other_count),
        }
        for index, label, row, true_count, other_count, radius in zip(
            indices, labels, counts, true_counts, other_counts, np.atleast_1d(radii)
        )
    ]


def _certify_records(counts: np.ndarray, labels: list[int], indices: list[int], p: dict[str, Any]) -> list[dict]:
    selection, counts = counts
    tops = selection.argmax(axis=1)
    top_counts = counts[np.arange(len(tops)), tops]
    p_lower = np.atleast_1d(clopper_pearson_lower(top_counts, p["n"], p["alpha"]))
    abstain = p_lower < 0.5
    radii = np.atleast_1d(certified_radius(np.where(abstain, 0.5, p_lower), p["sigma"]))
    return [
        {
            "index": index,
            "label": label,
            "prediction": ABSTAIN if abstained else int(top),
            "count": int(count),
            "p_lower": float(bound),
            "radius": None if abstained else float(radius),
            "correct": bool(not abstained and top == label),
        }
        for index, label, top, count, bound, abstained, radius in zip(
            indices, labels, tops, top_counts, p_lower, abstain, radii
        )
    ]


def _predict_records(counts: np.ndarray, labels: list[int], indices: list[int], p: dict[str, Any]) -> list[dict]:
    records = []
    for index, label, row in zip(indices, labels, counts[0]):
        second, top = np.argsort(row, kind="stable")[-2:]
        top_count, second_count = int(row[top]), int(row[second])
        p_value = binomtest(top_count, top_count + second_count, 0.5).pvalue
        abstain = p_value > p["alpha"]
        records.append(
            {
                "index": index,
                "label": label,
                "prediction": ABSTAIN if abstain else int(top),
                "count_top": top_count,
                "count_second": second_count,
                "p_value": float(p_value),
                "correct": bool(not abstain and int(top) == label),
            }
        )
    return records


_RECORDS: dict[str, Callable] = {
    "estimate": _estimate_records,
    "certify": _certify_records,
    "predict": _predict_records,
}


# ---------------------------------------------------------------------------------------
# Public API


def estimate(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    labels: Sequence[int],
    sigma: float,
    n: int = 1000,
    *,
    clip: tuple[float, float] = (0.01, 0.99),
    batch_size: int = 10_000,
    seed: int = 0,
    precision: str = "float32",
    **run_options: Any,
) -> dict[str, Any]:
    """The paper's ESTIMATE of smoothed robustness (not a guarantee). See ``smooth`` for options."""
    if not 0 < clip[0] < clip[1] < 1:
        raise ValueError(f"clip must be two frequencies 0 < low < high < 1, got {clip}")
    if precision not in ("float32", "bfloat16"):
        raise ValueError(f"precision must be 'float32' or 'bfloat16', got '{precision}'")
    params = dict(sigma=sigma, n=n, clip=list(clip), batch_size=batch_size, seed=seed, precision=precision)
    return smooth("estimate", model, images, labels, params, **run_options)


def certify(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    labels: Sequence[int],
    sigma: float,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    *,
    batch_size: int = 10_000,
    seed: int = 0,
    **run_options: Any,
) -> dict[str, Any]:
    """Cohen et al.'s CERTIFY: certified radii, sound with probability >= 1 - alpha each."""
    params = dict(sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed)
    return smooth("certify", model, images, labels, params, **run_options)


def predict(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    labels: Sequence[int],
    sigma: float,
    n: int = 100_000,
    alpha: float = 0.001,
    *,
    batch_size: int = 10_000,
    seed: int = 0,
    **run_options: Any,
) -> dict[str, Any]:
    """Cohen et al.'s PREDICT: the smoothed prediction, or abstain when the vote is too close."""
    params = dict(sigma=sigma, n=n, alpha=alpha, batch_size=batch_size, seed=seed)
    return smooth("predict", model, images, labels, params, **run_options)


def smooth(
    method: str,
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    labels: Sequence[int],
    params: dict[str, Any],
    *,
    indices: Sequence[int] | None = None,
    output: str | Path | None = None,
    eps: Sequence[float] = DEFAULT_EPS,
    chunk_size: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run ``method`` over a set of images and summarise it; the three functions above call this.

    images: a tensor of float NCHW pixels in [0, 1] (the model's input), or an NHWC array,
        uint8 or float32 in [0, 1] (the dataset format); moved to the device a chunk at a time.
    labels: one int per image.
    indices: each image's index in its dataset (default 0..N-1): it seeds the image's noise.
    output: JSONL file of per-image records; existing records there are reused (resume).
    chunk_size: images per chunk (one host sync and one file append each).
    Returns the summary (accuracy, CRA at ``eps``, curve, timing) with ``records`` per image.
    """
    if method not in METHODS:
        raise ValueError(f"unknown smoothing method '{method}'; choose one of: {', '.join(METHODS)}")
    labels = [int(y) for y in labels]
    indices = list(range(len(labels))) if indices is None else [int(i) for i in indices]
    _check_inputs(images, labels, indices, params)
    params = {"method": method, **params, "model_hash": model_fingerprint(model)}
    done = _resume(output, params) if output else {}
    _check_labels(done, indices, labels)
    todo = [k for k, index in enumerate(indices) if index not in done]
    chunk_size = chunk_size or max(1, 4 * params["batch_size"] // params["n"])
    device = _device_of(model)
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        with (
            torch.inference_mode(),
            Progress(len(indices), f"smoothing {method}", "img", progress, initial=len(indices) - len(todo)) as bar,
        ):

            def finish(chunk: list[int], counts: torch.Tensor) -> None:
                records = _RECORDS[method](
                    counts.cpu().numpy(), [labels[k] for k in chunk], [indices[k] for k in chunk], params
                )
                if output:
                    append_json_lines(Path(output), records)
                done.update((r["index"], r) for r in records)
                bar.update(len(chunk))

            # One chunk of lookahead: the next chunk is queued on the device before the host
            # waits for the previous one's counts, so the device never idles on that sync.
            pending = None
            for start in range(0, len(todo), chunk_size):
                chunk = todo[start : start + chunk_size]
                counts = _launch(method, model, _to_device(images, chunk, device), [indices[k] for k in chunk], params)
                if pending:
                    finish(*pending)
                pending = (chunk, counts)
            if pending:
                finish(*pending)
    finally:
        model.train(was_training)
    records = [done[index] for index in indices]
    summary = summarize(records, method, params, eps)
    summary["timing"] = _timing(time.perf_counter() - started, len(todo), params)
    summary["records"] = records
    return summary


def _timing(seconds: float, images: int, params: dict[str, Any]) -> dict[str, Any]:
    """Speed of this call: only the images it computed (not those a resume reused)."""
    samples = images * (params["n"] + params.get("n0", 0))
    return {"seconds": seconds, "images_computed": images, "samples_per_second": samples / seconds if images else None}


def summarize(
    records: list[dict[str, Any]], method: str, params: dict[str, Any], eps: Sequence[float] = DEFAULT_EPS
) -> dict[str, Any]:
    """Accuracy, CRA at ``eps`` and the CRA-vs-radius curve; abstentions count as failures.

    The keys follow ``certify.evaluate.summarize`` (``accuracy``, ``cra``, ``curve``), so
    smoothing and Lipschitz results read the same way.
    """
    if not records:
        raise ValueError("nothing to summarise: no images were selected")
    correct = torch.tensor([r["correct"] for r in records])
    summary = {
        "method": method,
        "guarantee": GUARANTEES[method],
        **{k: v for k, v in params.items() if k not in ("method", "batch_size")},
        "num_images": len(records),
        "accuracy": correct.double().mean().item(),
    }
    if method != "estimate":
        abstained = torch.tensor([r["prediction"] == ABSTAIN for r in records])
        summary["abstain_rate"] = abstained.double().mean().item()
    if method != "predict":
        radii = torch.tensor([r["radius"] if r["correct"] else -math.inf for r in records], dtype=torch.float64)
        summary["cra"] = [{"eps": e, "label": eps_label(e), "cra": cra(radii, e)} for e in eps]
        grid = torch.linspace(0, max(1.0, *eps, radii.max().item()), CURVE_POINTS).tolist()
        summary["curve"] = {"eps": grid, "cra": cra_curve(radii, grid)}
    return summary


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's parameters and buffers: a resumed run must use the same model."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# Inputs, devices and the resumable results file


def _check_inputs(images, labels, indices, params) -> None:
    if len(images) != len(labels) or len(indices) != len(labels):
        raise ValueError(
            f"got {len(images)} images, {len(labels)} labels and {len(indices)} indices; "
            "give one label and one index per image"
        )
    if len(set(indices)) != len(indices):
        raise ValueError("image indices must be distinct: each one seeds its image's noise")
    if isinstance(images, np.ndarray) and (images.dtype not in (np.uint8, np.float32) or images.ndim != 4):
        raise ValueError(
            f"image arrays must be NHWC, uint8 or float32 in [0, 1] (the dataset format), "
            f"got {images.dtype} with shape {images.shape}"
        )
    if isinstance(images, torch.Tensor) and (not images.is_floating_point() or images.ndim != 4):
        raise ValueError(f"image tensors must be float NCHW in [0, 1], got {images.dtype} {tuple(images.shape)}")
    if not params["sigma"] > 0:
        raise ValueError(f"sigma must be > 0 (the noise standard deviation), got {params['sigma']}")
    for key in ("n", "n0", "batch_size"):
        if key in params and not (isinstance(params[key], int) and params[key] >= 1):
            raise ValueError(f"{key} must be a positive integer, got {params[key]!r}")
    if "alpha" in params and not 0 < params["alpha"] < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {params['alpha']}")


def _check_labels(done, indices, labels) -> None:
    for index, label in zip(indices, labels):
        if index in done and done[index]["label"] != label:
            raise ValueError(
                f"the results file has label {done[index]['label']} for image {index}, but the data "
                f"has {label}: it belongs to other data; move it away to start afresh"
            )


def _device_of(model: nn.Module) -> torch.device:
    for tensor in [*model.parameters(), *model.buffers()]:
        return tensor.device
    return torch.device("cpu")


def _to_device(images, rows: list[int], device: torch.device) -> torch.Tensor:
    """Float NCHW pixels of the given rows; NHWC arrays travel as they are and convert there."""
    if isinstance(images, np.ndarray):
        x = torch.from_numpy(images[rows]).to(device, non_blocking=True).permute(0, 3, 1, 2)
        return x.float().div_(255) if x.dtype == torch.uint8 else x.float()
    return images[rows].to(device, dtype=torch.float32, non_blocking=True)


def _resume(path: str | Path, params: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Records already in ``path`` (after checking they were made with ``params``)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        append_json_lines(path, [{"header": params}])
        return {}
    text = path.read_text()
    if not text.endswith("\n"):  # a write torn by a kill: drop the partial line
        text = text[: text.rfind("\n") + 1]
        with open(path, "r+") as handle:
            handle.truncate(len(text.encode()))
    lines = text.splitlines()
    try:
        header = json.loads(lines[0])["header"]
        records = [json.loads(line) for line in lines[1:]]
    except (json.JSONDecodeError, KeyError, TypeError, IndexError):
        raise ValueError(f"{path} is not a robustlab smoothing results file; move it away to start afresh") from None
    changed = {k: (header.get(k), v) for k, v in params.items() if k != "batch_size" and header.get(k) != v}
    if changed:
        diff = ", ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in changed.items())
        raise ValueError(
            f"{path} holds results of different settings ({diff}); resume with the same settings, "
            "or move the file away to start afresh"
        )
    return {r["index"]: r for r in records}


# ---------------------------------------------------------------------------------------
# Run directories: smoothing a trained run, and one table beside Lipschitz certification

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
    from robustlab.runtime import resolve_device
    from robustlab.train.loop import load_run_model  # train imports certify: import late

    if method not in METHODS:
        raise ValueError(f"unknown smoothing method '{method}'; choose one of: {', '.join(METHODS)}")
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
        result = estimate(model, x, y, sigma, n, precision=precision, **options)
    elif method == "certify":
        result = certify(model, x, y, sigma, n0, n, alpha, **options)
    else:
        result = predict(model, x, y, sigma, n, alpha, **options)
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
        smoothed = [path for method in METHODS if (path := results_paths(run.path, method)[1]).exists()]
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
    if method in METHODS:
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
