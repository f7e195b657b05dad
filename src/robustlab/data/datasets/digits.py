"""``digits``: scikit-learn's 8x8 digits, built in (no files), split 1437/360; and
``digits-affine``, generated data for them (the built-in stand-in for the paper's EDM samples)."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from robustlab.data.datasets.base import DatasetSpec, register
from robustlab.data.datasets.readers import Splits
from robustlab.data.subsets import train_val_split

DIGITS_COUNT = 1797  # images in scikit-learn's digits
AFFINE_DIGITS = "digits-affine"  # the name of the generated data (see affine_digits)
AFFINE_DIGITS_COUNT = 24_000  # how many it holds: a sweep lists its sizes without generating them


def digits_splits() -> Splits:
    pixels, target = _digits_arrays()
    images = np.round(pixels * (255 / 16)).astype(np.uint8)[..., None]
    labels = target.astype(np.int64)
    train, test = train_val_split(labels, val_size=360, seed=0)
    return images[train], labels[train], images[test], labels[test]


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: 1797 images of 8x8 pixels in 0..16, and their labels.

    Read from the file scikit-learn ships, as its ``load_digits`` reads it, without importing
    scikit-learn (0.6 s, most of a `reproduce --status` that lists the pca sweep's digits
    points); through ``load_digits`` where that file is not where this scikit-learn keeps it."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    shipped = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if shipped is not None and shipped.is_file():
        table = np.loadtxt(shipped, delimiter=",")
        if table.shape == (DIGITS_COUNT, 65):  # 64 pixels, then the label
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1]
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target


register(
    DatasetSpec(
        "digits", "scikit-learn 8x8 digits, 1437/360 (built in)", tuple("0123456789"), (8, 8, 1), builtin=digits_splits
    )
)


@functools.lru_cache(maxsize=1)
def affine_digits(count: int = AFFINE_DIGITS_COUNT, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Generated data for the digits, needing no download: mild random affine distortions (rotation
    up to 8 degrees, scaling by 0.95-1.05, slight shear, shifts under half a pixel) of the digits
    *training* images, labelled like their source. A crude generative model of the training set,
    standing in for the paper's EDM samples in the CPU miniature; deterministic, so a config names
    one set. (Twice as strong distortions made the extra images hurt: 87.2 -> 87.5, 90.3, 89.4% CRA
    instead of 87.5, 88.9, 90.6% with 179 real digits + 179, 1253, 5549 generated, one seed.)"""
    from scipy.ndimage import map_coordinates

    images, labels = digits_splits()[:2]
    rng = np.random.default_rng(seed)
    source = rng.integers(len(images), size=count)
    angle, scale, shear = (
        rng.uniform(-0.14, 0.14, count),
        rng.uniform(0.95, 1.05, count),
        rng.uniform(-0.05, 0.05, count),
    )
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    matrix = np.stack([np.stack([cos, cos * shear - sin], -1), np.stack([sin, sin * shear + cos], -1)], -2)
    grid = np.stack(np.meshgrid(np.arange(8.0), np.arange(8.0), indexing="ij")) - 3.5  # (2, 8, 8), centred
    shift = rng.uniform(-0.4, 0.4, (count, 2))
    points = np.einsum("nab,bij->naij", matrix, grid) + 3.5 + shift[:, :, None, None]  # input pixel of each output
    index = np.broadcast_to(source[:, None, None, None].astype(np.float64), (count, 1, 8, 8))
    coordinates = np.concatenate([index, points], axis=1).transpose(1, 0, 2, 3)  # (3, count, 8, 8)
    warped = map_coordinates(images[..., 0].astype(np.float64), coordinates, order=1)
    return np.clip(np.round(warped), 0, 255).astype(np.uint8)[..., None], labels[source]
