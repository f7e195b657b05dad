"""From a dataset to the arrays one run trains and evaluates on.

``prepare_data`` is the whole pipeline: load, hold out a validation split (or evaluate on
the test set), take a class-balanced training subset, add generated data, project onto
principal components, and compute the channel means of the final training set.
All choices are seeded, so a config names exactly one set of images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robustlab.data.datasets import DatasetError, load_dataset, load_generated
from robustlab.data.pca import cached_pca, parse_component_spec
from robustlab.runs.config import DataConfig


@dataclass
class PreparedData:
    name: str
    x_train: np.ndarray  # (N, H, W, C): uint8, or float32 in the [0, 1] pixel scale after PCA
    y_train: np.ndarray  # int64
    x_eval: np.ndarray
    y_eval: np.ndarray
    eval_split: str  # "val" or "test"
    mean: np.ndarray  # float32 (C,): channel means of x_train in the [0, 1] scale
    num_classes: int
    full_train_size: int  # training split size before subsetting (the epoch-scaling rule)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        height, width, channels = self.x_train.shape[1:]
        return channels, height, width


def train_val_split(labels: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split of indices into (train, validation), each sorted.

    Every class gives its share of ``val_size`` (largest remainder, ties by class index),
    so 5,000 of CIFAR-10's 50,000 training images are 500 per class.
    """
    labels = np.asarray(labels)
    if not 0 <= val_size < len(labels):
        raise ValueError(
            f"val_size must be between 0 and {len(labels) - 1} (the training set size - 1), got {val_size}"
        )
    classes, counts = np.unique(labels, return_counts=True)
    quotas = counts * val_size / len(labels)
    per_class = np.floor(quotas).astype(np.int64)
    leftover = val_size - per_class.sum()
    per_class[np.argsort(-(quotas - per_class), kind="stable")[:leftover]] += 1
    rng = np.random.default_rng(seed)
    val = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, per_class)]
    val = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    train = np.setdiff1d(np.arange(len(labels)), val, assume_unique=True)
    return train, val


def reference_split(size: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference code's split of ``size`` indices into (train, validation), each sorted.

    It shuffles all indices with NumPy's legacy generator seeded with ``seed`` and takes the
    first ``size - val_size`` for training and the rest for validation, so with seed 1111 a
    run validates on exactly the 5,000 CIFAR-10 images the reference numbers were measured on
    (class counts are not balanced).
    """
    if not 0 <= val_size < size:
        raise ValueError(f"val_size must be between 0 and {size - 1} (the training set size - 1), got {val_size}")
    order = np.arange(size)
    np.random.RandomState(seed).shuffle(order)
    return np.sort(order[: size - val_size]), np.sort(order[size - val_size :])


def balanced_subset(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` examples, as class-balanced as the data allows, nested in ``n``.

    Each class gets a seeded order of its examples and the classes a seeded rank. Taking
    examples round by round (the j-th example of every class, in rank order) and stopping
    after ``n`` gives counts that differ by at most one between classes, the remainder going
    to the first-ranked classes; a smaller ``n`` with the same seed picks a subset of the
    larger one. A class that runs out drops out of later rounds.
    """
    labels = np.asarray(labels)
    if not 1 <= n <= len(labels):
        raise ValueError(f"subset size must be between 1 and {len(labels)} (the number of examples), got {n}")
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    class_rank = rng.permutation(len(classes))
    round_of = np.empty(len(labels), np.int64)  # which round an example is taken in
    for c in classes:
        members = np.flatnonzero(labels == c)
        round_of[rng.permutation(members)] = np.arange(len(members))
    rank_of = class_rank[np.searchsorted(classes, labels)]
    order = np.argsort(round_of * len(classes) + rank_of, kind="stable")
    return np.sort(order[:n])


def channel_means(images: np.ndarray) -> np.ndarray:
    """Per-channel means of NHWC images in the [0, 1] scale (uint8 is divided by 255)."""
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"expected a non-empty (N, H, W, C) array, got shape {images.shape}")
    pixels = images.reshape(-1, images.shape[-1])
    means = pixels.sum(axis=0, dtype=np.float64) / len(pixels)
    return (means / 255 if images.dtype == np.uint8 else means).astype(np.float32)


def prepare_data(cfg: DataConfig) -> PreparedData:
    """The training and evaluation arrays of one run, as ``cfg`` describes them."""
    data = load_dataset(cfg.name, cfg.data_dir, cfg.download)
    if cfg.val_size > 0:
        if cfg.split == "reference":
            train, val = reference_split(len(data.y_train), cfg.val_size, cfg.split_seed)
        else:
            train, val = train_val_split(data.y_train, cfg.val_size, cfg.split_seed)
        x_eval, y_eval, eval_split = data.x_train[val], data.y_train[val], "val"
        x_full, y_full = data.x_train[train], data.y_train[train]
    else:
        x_eval, y_eval, eval_split = data.x_test, data.y_test, "test"
        x_full, y_full = data.x_train, data.y_train
    x_train, y_train = x_full, y_full
    if cfg.subset_size is not None:
        subset = balanced_subset(y_full, cfg.subset_size, cfg.subset_seed)
        x_train, y_train = x_full[subset], y_full[subset]
    if cfg.extra_path and cfg.extra_size != 0:
        x_extra, y_extra = _extra_data(cfg, data.x_train.shape[1:], data.num_classes)
        x_train, y_train = np.concatenate([x_train, x_extra]), np.concatenate([y_train, y_extra])
    if cfg.pca_components:
        pca = cached_pca(x_full)  # components of the whole training split, not of a small subset
        components = parse_component_spec(cfg.pca_components, pca.dim)
        x_train, x_eval = pca.project(x_train, components), pca.project(x_eval, components)
    return PreparedData(
        name=data.name,
        x_train=x_train,
        y_train=y_train,
        x_eval=x_eval,
        y_eval=y_eval,
        eval_split=eval_split,
        mean=channel_means(x_train),
        num_classes=data.num_classes,
        full_train_size=len(x_full),
    )


def _extra_data(cfg: DataConfig, image_shape: tuple, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A class-balanced (seeded, nested) selection of ``cfg.extra_size`` generated images."""
    images, labels = load_generated(cfg.extra_path)
    if images.shape[1:] != image_shape:
        raise DatasetError(
            f"{cfg.extra_path}: generated images have shape {images.shape[1:]}, the dataset {image_shape}"
        )
    if len(labels) and labels.max() >= num_classes:
        raise DatasetError(f"{cfg.extra_path}: label {labels.max()} is out of range for {num_classes} classes")
    if cfg.extra_size == -1:
        return images, labels
    if not 1 <= cfg.extra_size <= len(images):
        raise DatasetError(
            f"data.extra_size={cfg.extra_size}, but {cfg.extra_path} holds {len(images)} images; "
            "use a number from 1 to that, or -1 for all"
        )
    chosen = balanced_subset(labels, cfg.extra_size, cfg.subset_seed)
    return images[chosen], labels[chosen]
