"""From a dataset to the arrays one run trains and evaluates on.

``prepare_data`` is the whole pipeline: load, hold out a validation split (or evaluate on
the test set), take a class-balanced training subset, add generated data, project onto
principal components, and compute the channel means of the final training set.
All choices are seeded, so a config names exactly one set of images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robustlab.config import DataConfig
from robustlab.data.datasets import DatasetError, check_generated_path, load_dataset, load_generated
from robustlab.data.principal_components import cached_pca, parse_component_spec
from robustlab.data.subsets import balanced_subset, reference_split, train_val_split


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
    if cfg.extra_path and cfg.extra_size == 0:
        check_generated_path(cfg.extra_path)  # a typo fails now, not in the run that adds images
    elif cfg.extra_path:
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
    assert cfg.extra_path is not None  # prepare_data calls this only with an extra_path
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
