"""Seeded choices of examples: validation splits and class-balanced subsets, as index arrays.

Pure functions of the labels (or the set size) and a seed, so a config names exactly one
set of images, and every dataset module can use them (the built-in digits split its
images with ``train_val_split``).
"""

from __future__ import annotations

import numpy as np


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
    per_class_val = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, per_class)]
    val = np.sort(np.concatenate(per_class_val)) if per_class_val else np.zeros(0, np.int64)
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
