"""What a dataset is: a ``DatasetSpec`` registered in ``DATASETS`` by its own module (one file per
dataset in this package), and the ``ImageDataset`` it loads; and where dataset files live."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustlab.data.datasets.readers import (
    DatasetError,
    RemoteFile,
    Splits,
    check_images,
    check_labels,
    download_file,
    read_split_npz,
    verify_file,
)
from robustlab.registry import Registry

DATA_DIR_ENV = "ROBUSTLAB_DATA"
DEFAULT_DATA_DIR = Path("~/.robustlab/data")


@dataclass
class ImageDataset:
    name: str
    x_train: np.ndarray  # uint8 (N, H, W, C)
    y_train: np.ndarray  # int64 (N,)
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]
    source: str  # where the arrays came from (a file or folder, or "built in")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        height, width, channels = self.x_train.shape[1:]
        return channels, height, width


def default_data_dir(data_dir: str | Path | None = None) -> Path:
    """The folder with dataset files: the argument, else $ROBUSTLAB_DATA, else ~/.robustlab/data."""
    folder = Path(data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser()
    if folder.exists() and not folder.is_dir():
        given = "--data-dir (data.data_dir)" if data_dir else f"${DATA_DIR_ENV}"
        raise DatasetError(
            f"{folder} is a file, but {given} names the folder that holds the datasets (<name>.npz or the "
            "official files in <name>/); give that folder, or an .npz file as the dataset name itself"
        )
    return folder


def recorded_data_dir(name: str, data_dir: str | None) -> str | None:
    """The data folder a run of dataset ``name`` should record: absolute, and resolved from
    $ROBUSTLAB_DATA or the default when not given, so that certifying it later in another
    shell reads the same files. None for datasets that need no folder (built in, or a path)."""
    if name.endswith(".npz") or name not in DATASETS or not DATASETS.get(name).files:
        return data_dir
    return str(default_data_dir(data_dir).resolve())


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: its classes, image shape, official files and how to read them."""

    name: str
    description: str
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int] | None  # (H, W, C); None: any
    files: tuple[RemoteFile, ...] = ()
    read_official: Callable[[dict[str, Path]], Splits] | None = None
    builtin: Callable[[], Splits] | None = None

    def folder(self, data_dir: Path) -> Path:
        return data_dir / self.name

    def npz_path(self, data_dir: Path) -> Path:
        return data_dir / f"{self.name}.npz"

    def status(self, data_dir: Path) -> str:
        """Which source ``load`` would use: built in, npz, official, or missing."""
        if self.builtin:
            return "built in"
        if not self.files:
            return "give a path"
        if self.npz_path(data_dir).exists():
            return "npz"
        if all((self.folder(data_dir) / f.filename).exists() for f in self.files):
            return "official"
        return "missing"

    def load(self, data_dir: Path, download: bool = False, verify: bool = True) -> ImageDataset:
        if self.builtin:
            return self._dataset(self.builtin(), source="built in (scikit-learn)")
        if not self.files:
            raise DatasetError(f"dataset '{self.name}' is read from a file: give the path of an .npz file")
        npz = self.npz_path(data_dir)
        if npz.exists():
            return self._dataset(read_split_npz(npz), source=str(npz))
        paths = self._official_paths(data_dir, download, verify)
        assert self.read_official is not None  # a dataset with official files has a reader
        return self._dataset(self.read_official(paths), source=str(self.folder(data_dir)))

    def _official_paths(self, data_dir: Path, download: bool, verify: bool) -> dict[str, Path]:
        folder = self.folder(data_dir)
        paths = {}
        for remote in self.files:
            path = folder / remote.filename
            if not path.exists():
                if not download:
                    raise DatasetError(
                        f"dataset '{self.name}' not found in {data_dir}: expected {self.name}.npz "
                        f"(x_train, y_train, x_test, y_test) or the official files "
                        f"{', '.join(f.filename for f in self.files)} in {folder}/. If it is in another "
                        f"folder, give that folder (--data-dir or ${DATA_DIR_ENV}); else fetch it with "
                        f"`robustlab data prepare {self.name} --download --data-dir {data_dir}`."
                    )
                download_file(remote, path)
            elif verify:
                verify_file(path, remote)
            paths[remote.filename] = path
        return paths

    def _dataset(self, splits: Splits, source: str) -> ImageDataset:
        x_train, y_train, x_test, y_test = splits
        x_train, y_train = check_images(x_train, y_train, f"{source} (train)", self.image_shape)
        x_test, y_test = check_images(x_test, y_test, f"{source} (test)", self.image_shape)
        for y, split in ((y_train, "train"), (y_test, "test")):
            check_labels(y, len(self.classes), f"{source} ({split})")
        return ImageDataset(self.name, x_train, y_train, x_test, y_test, list(self.classes), source)


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def register(spec: DatasetSpec) -> DatasetSpec:
    """Adds ``spec`` to ``DATASETS`` under its name (each dataset module calls it once)."""
    DATASETS.add(spec.name, spec)
    return spec
