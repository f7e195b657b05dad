"""The three smoothing methods, their per-image records and the resumable records file.

``smooth`` runs one method over a set of images a chunk at a time: it queues the chunk's
counting on the device (``sampling.count_predictions``), turns the previous chunk's counts
into per-image records on the host, appends them to the JSONL file (``output``) and, at the
end, summarises all records. A rerun with the same file skips the images already there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import binomtest
from torch import nn

from robustlab.certify.certificates import cra_points, dense_curve
from robustlab.certify.smoothing.statistics import certified_radius, clopper_pearson_lower, estimated_radius
from robustlab.certify.smoothing.votes import count_predictions, noise_seed
from robustlab.config import DEFAULT_EPS
from robustlab.files import append_json_lines
from robustlab.progress import Progress
from robustlab.records import ABSTAIN, SmoothingParams, SmoothingResult, SmoothingTiming

# (noise stream, sample-count parameter) per method; certify selects with n0, then certifies with n
_DRAWS = {
    "estimate": [("estimate", "n")],
    "certify": [("select", "n0"), ("certify", "n")],
    "predict": [("predict", "n")],
}


def _launch(model: nn.Module, x: torch.Tensor, indices: list[int], p: SmoothingParams) -> torch.Tensor:
    """Queue the counting of one chunk on the device: (draws, images, classes), not yet on the host."""
    return torch.stack(
        [
            count_predictions(
                model,
                x,
                [noise_seed(p.seed, i, stream) for i in indices],
                getattr(p, samples),
                p.sigma,
                p.batch_size,
                p.precision or "float32",
            )
            for stream, samples in _DRAWS[p.method]
        ]
    )


def _estimate_records(counts: np.ndarray, labels: list[int], indices: list[int], p: SmoothingParams) -> list[dict]:
    (counts,) = counts
    rows, labels_ = np.arange(len(labels)), np.asarray(labels)
    true_counts = counts[rows, labels_]
    others = counts.copy()
    others[rows, labels_] = -1
    other_counts = others.max(axis=1)
    low, high = p.clip or (0.01, 0.99)
    radii = estimated_radius(true_counts / p.n, other_counts / p.n, p.sigma, (low, high))
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


def _certify_records(counts: np.ndarray, labels: list[int], indices: list[int], p: SmoothingParams) -> list[dict]:
    selection, counts = counts
    tops = selection.argmax(axis=1)
    top_counts = counts[np.arange(len(tops)), tops]
    p_lower = np.atleast_1d(clopper_pearson_lower(top_counts, p.n, p.alpha or 0.001))
    abstain = p_lower < 0.5
    radii = np.atleast_1d(certified_radius(np.where(abstain, 0.5, p_lower), p.sigma))
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


def _predict_records(counts: np.ndarray, labels: list[int], indices: list[int], p: SmoothingParams) -> list[dict]:
    records = []
    for index, label, row in zip(indices, labels, counts[0]):
        second, top = np.argsort(row, kind="stable")[-2:]
        top_count, second_count = int(row[top]), int(row[second])
        p_value = binomtest(top_count, top_count + second_count, 0.5).pvalue
        abstain = p_value > p.alpha
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


def estimate(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    sigma: float,
    n: int = 1000,
    *,
    clip: tuple[float, float] = (0.01, 0.99),
    batch_size: int = 10_000,
    seed: int = 0,
    precision: str = "float32",
    **run_options: Any,
) -> SmoothingResult:
    """The paper's ESTIMATE of smoothed robustness (not a guarantee). See ``smooth`` for options."""
    params = SmoothingParams("estimate", sigma, n, batch_size, seed, clip=list(clip), precision=precision)
    return smooth(model, images, labels, params, **run_options)


def certify(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    sigma: float,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    *,
    batch_size: int = 10_000,
    seed: int = 0,
    **run_options: Any,
) -> SmoothingResult:
    """Cohen et al.'s CERTIFY: certified radii, sound with probability >= 1 - alpha each."""
    params = SmoothingParams("certify", sigma, n, batch_size, seed, n0=n0, alpha=alpha)
    return smooth(model, images, labels, params, **run_options)


def predict(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    sigma: float,
    n: int = 100_000,
    alpha: float = 0.001,
    *,
    batch_size: int = 10_000,
    seed: int = 0,
    **run_options: Any,
) -> SmoothingResult:
    """Cohen et al.'s PREDICT: the smoothed prediction, or abstain when the vote is too close."""
    params = SmoothingParams("predict", sigma, n, batch_size, seed, alpha=alpha)
    return smooth(model, images, labels, params, **run_options)


def smooth(
    model: nn.Module,
    images: torch.Tensor | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    params: SmoothingParams,
    *,
    indices: Sequence[int] | None = None,
    output: str | Path | None = None,
    eps: Sequence[float] = DEFAULT_EPS,
    chunk_size: int | None = None,
    progress: bool = False,
) -> SmoothingResult:
    """Run ``params.method`` over a set of images and summarise it; the three functions above call this.

    images: a tensor of float NCHW pixels in [0, 1] (the model's input), or an NHWC array,
        uint8 or float32 in [0, 1] (the dataset format); moved to the device a chunk at a time.
    labels: one int per image.
    indices: each image's index in its dataset (default 0..N-1): it seeds the image's noise.
    output: JSONL file of per-image records; existing records there are reused (resume).
    chunk_size: images per chunk (one host sync and one file append each).
    Returns the summary (accuracy, CRA at ``eps``, curve, timing) with ``records`` per image.
    """
    params.check()
    method = params.method
    labels = [int(y) for y in labels]
    indices = list(range(len(labels))) if indices is None else [int(i) for i in indices]
    _check_inputs(images, labels, indices)
    params = dataclasses.replace(params, model_hash=model_fingerprint(model))
    done = _resume(output, params) if output else {}
    _check_labels(done, indices, labels)
    todo = [k for k, index in enumerate(indices) if index not in done]
    chunk_size = chunk_size or max(1, 4 * params.batch_size // params.n)
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
                counts = _launch(model, _to_device(images, chunk, device), [indices[k] for k in chunk], params)
                if pending:
                    finish(*pending)
                pending = (chunk, counts)
            if pending:
                finish(*pending)
    finally:
        model.train(was_training)
    records = [done[index] for index in indices]
    result = summarize_records(records, params, eps)
    result.timing = _timing(time.perf_counter() - started, len(todo), params)
    return result


def _timing(seconds: float, images: int, params: SmoothingParams) -> SmoothingTiming:
    """Speed of this call: only the images it computed (not those a resume reused)."""
    samples = images * (params.n + (params.n0 or 0))
    return SmoothingTiming(seconds, images, samples / seconds if images else None)


def summarize_records(
    records: list[dict[str, Any]], params: SmoothingParams, eps: Sequence[float] = DEFAULT_EPS
) -> SmoothingResult:
    """Accuracy, CRA at ``eps`` and the CRA-vs-radius curve of per-image records; abstentions
    count as failures."""
    if not records:
        raise ValueError("nothing to summarise: no images were selected")
    correct = torch.tensor([r["correct"] for r in records])
    result = SmoothingResult(params, len(records), correct.double().mean().item(), records=records)
    if params.method != "estimate":
        abstained = torch.tensor([r["prediction"] == ABSTAIN for r in records])
        result.abstain_rate = abstained.double().mean().item()
    if params.method != "predict":
        radii = torch.tensor([r["radius"] if r["correct"] else -math.inf for r in records], dtype=torch.float64)
        result.cra, result.curve = cra_points(radii, eps), dense_curve(radii, eps)
    return result


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's parameters and buffers: a resumed run must use the same model."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# Inputs, devices and the resumable results file


def _check_inputs(images: torch.Tensor | np.ndarray, labels: list[int], indices: list[int]) -> None:
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


def _check_labels(done: dict[int, dict[str, Any]], indices: list[int], labels: list[int]) -> None:
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


def _to_device(images: torch.Tensor | np.ndarray, rows: list[int], device: torch.device) -> torch.Tensor:
    """Float NCHW pixels of the given rows; NHWC arrays travel as they are and convert there."""
    if isinstance(images, np.ndarray):
        x = torch.from_numpy(images[rows]).to(device, non_blocking=True).permute(0, 3, 1, 2)
        return x.float().div_(255) if x.dtype == torch.uint8 else x.float()
    return images[rows].to(device, dtype=torch.float32, non_blocking=True)


def _resume(path: str | Path, params: SmoothingParams) -> dict[int, dict[str, Any]]:
    """Records already in ``path`` (after checking they were made with ``params``)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        append_json_lines(path, [{"header": params.to_dict()}])
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
    changed = {k: (header.get(k), v) for k, v in params.to_dict().items() if k != "batch_size" and header.get(k) != v}
    if changed:
        diff = ", ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in changed.items())
        raise ValueError(
            f"{path} holds results of different settings ({diff}); resume with the same settings, "
            "or move the file away to start afresh"
        )
    return {r["index"]: r for r in records}
