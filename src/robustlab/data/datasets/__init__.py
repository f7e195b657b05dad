"""Image classification datasets as uint8 NHWC numpy arrays: one module per dataset, each
registering a ``DatasetSpec`` in ``DATASETS`` (CONTRIBUTING.md, "Adding a dataset"), over the
shared readers (``readers.py``) and the spec (``base.py``).

Sources, in the order ``load_dataset`` tries them for a named dataset:

1. ``<data_dir>/<name>.npz`` with ``x_train, y_train, x_test, y_test`` (NHWC uint8);
2. the official files in ``<data_dir>/<name>/`` (MNIST-style idx ``.gz`` files, or the
   CIFAR python-pickle ``.tar.gz``), checked against the official md5 sums;
3. a download of the official files, only when the caller allows it.

``digits`` (scikit-learn's 8x8 digits) is built in and needs no files. Any problem with a
file is one ``DatasetError`` that names the file, says what was expected and how to fix it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

# one line per dataset: importing its module registers it
from robustlab.data.datasets import cifar10, cifar100, digits, fashion_mnist, mnist, npz  # noqa: F401
from robustlab.data.datasets.base import (
    DATA_DIR_ENV,
    DATASETS,
    DatasetSpec,
    ImageDataset,
    default_data_dir,
    recorded_data_dir,
    register,
)
from robustlab.data.datasets.digits import AFFINE_DIGITS, AFFINE_DIGITS_COUNT, affine_digits
from robustlab.data.datasets.npz import load_npz_dataset
from robustlab.data.datasets.readers import (
    DatasetError,
    RemoteFile,
    check_images,
    download_file,
    md5sum,
    read_idx,
    read_npz,
    read_split_npz,
    safe_unpickle,
    verify_file,
)
from robustlab.files import atomic_open

__all__ = [
    "AFFINE_DIGITS",
    "AFFINE_DIGITS_COUNT",
    "DATASETS",
    "DATA_DIR_ENV",
    "DatasetError",
    "DatasetSpec",
    "ImageDataset",
    "RemoteFile",
    "check_generated_path",
    "default_data_dir",
    "download_file",
    "import_files",
    "load_dataset",
    "load_generated",
    "load_npz_dataset",
    "md5sum",
    "read_idx",
    "read_npz",
    "recorded_data_dir",
    "register",
    "safe_unpickle",
    "verify_file",
]


def load_dataset(
    name_or_path: str | Path,
    data_dir: str | Path | None = None,
    download: bool = False,
    verify: bool = True,
) -> ImageDataset:
    """A named dataset (see ``DATASETS``) or an .npz file given by path.

    ``download`` allows fetching missing official files; ``verify`` checks official files
    against their md5 sums (turn it off only for rebuilt files in the official format).
    """
    if str(name_or_path).endswith(".npz"):
        return load_npz_dataset(name_or_path)
    return DATASETS.get(str(name_or_path)).load(default_data_dir(data_dir), download, verify)


def check_generated_path(path: str | Path) -> None:
    """A DatasetError unless ``path`` names generated data that ``load_generated`` can open."""
    if str(path) != AFFINE_DIGITS and not Path(path).expanduser().is_file():
        raise DatasetError(
            f"data.extra_path={path} does not exist; give an .npz with 'image' and 'label' arrays "
            f"(or {AFFINE_DIGITS}, the built-in stand-in for the digits)"
        )


def load_generated(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Generated training data (e.g. EDM samples): an .npz with ``image`` (NHWC uint8) and ``label``,
    or ``digits-affine``, the built-in stand-in for the digits."""
    if str(path) == AFFINE_DIGITS:
        return affine_digits()
    path = Path(path).expanduser()
    arrays = read_npz(path, ("image", "label"))
    return check_images(arrays["image"], arrays["label"], str(path))


def import_files(name: str, source: str | Path, data_dir: str | Path | None = None, verify: bool = True) -> list[Path]:
    """Copy a dataset's files from ``source`` (an .npz, an official file, or a folder) into the data folder.

    Files are checked before they are copied (npz: readable and the right shapes; official
    files: md5), and copied atomically. Returns the paths written.
    """
    spec = DATASETS.get(name)
    data_dir, source = default_data_dir(data_dir), Path(source).expanduser()
    if not source.exists():
        raise DatasetError(f"{source} does not exist; give an .npz file, an official file or a folder holding them")
    official = {f.filename: f for f in spec.files}
    candidates = [source] if source.is_file() else sorted(source.iterdir())
    written = []
    for path in candidates:
        if path.name == spec.npz_path(data_dir).name or (source.is_file() and path.suffix == ".npz"):
            spec._dataset(read_split_npz(path), source=str(path))  # raises unless it fits
            written.append(_copy(path, spec.npz_path(data_dir)))
        elif path.name in official:
            if verify:
                verify_file(path, official[path.name])
            written.append(_copy(path, spec.folder(data_dir) / path.name))
    if not written:
        expected = [spec.npz_path(data_dir).name, *official]
        raise DatasetError(f"{source}: no files of dataset '{name}' there; expected one of {', '.join(expected)}")
    return written


def _copy(source: Path, target: Path) -> Path:
    if source.resolve() != target.resolve():
        with open(source, "rb") as src, atomic_open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return target
