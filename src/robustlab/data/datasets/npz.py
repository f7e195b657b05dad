"""``npz``: any .npz with ``x_train, y_train, x_test, y_test`` (NHWC uint8) and optional
``classes``, given by its path."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustlab.data.datasets.base import DatasetSpec, ImageDataset, register
from robustlab.data.datasets.readers import DatasetError, check_images, check_labels, read_npz

register(DatasetSpec("npz", "any .npz with x_train, y_train, x_test, y_test (give its path)", (), None))


def load_npz_dataset(path: str | Path) -> ImageDataset:
    """An .npz with ``x_train, y_train, x_test, y_test`` (NHWC uint8) and optional ``classes``."""
    path = Path(path).expanduser()
    arrays = read_npz(path, ("x_train", "y_train", "x_test", "y_test"))
    x_train, y_train = check_images(arrays["x_train"], arrays["y_train"], f"{path} (train)")
    x_test, y_test = check_images(arrays["x_test"], arrays["y_test"], f"{path} (test)", x_train.shape[1:])
    if "classes" in arrays:
        classes = [str(c) for c in np.asarray(arrays["classes"]).reshape(-1)]
    else:
        classes = [str(c) for c in range(_label_count(y_train, y_test, path))]
    for y, split in ((y_train, "train"), (y_test, "test")):
        check_labels(y, len(classes), f"{path} ({split})")
    return ImageDataset(path.stem, x_train, y_train, x_test, y_test, classes, str(path))


def _label_count(y_train: np.ndarray, y_test: np.ndarray, path: Path) -> int:
    """The number of classes the labels imply (largest label + 1), checked before anything is
    sized from it: a file with one image cannot hold a billion classes."""
    largest = int(max(y_train.max(initial=0), y_test.max(initial=0)))
    images = len(y_train) + len(y_test)
    if largest >= images:
        raise DatasetError(
            f"{path}: label {largest} implies {largest + 1} classes for {images} images; labels must be "
            "0 .. K-1 for K classes (add a 'classes' array of K names if some classes have no images)"
        )
    return largest + 1
