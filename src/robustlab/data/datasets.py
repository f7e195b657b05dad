"""Image classification datasets as uint8 NHWC numpy arrays.

Sources, in the order ``load_dataset`` tries them for a named dataset:

1. ``<data_dir>/<name>.npz`` with ``x_train, y_train, x_test, y_test`` (NHWC uint8), the
   format ``/work/shared/data/assemble.py`` writes;
2. the official files in ``<data_dir>/<name>/`` (MNIST-style idx ``.gz`` files, or the
   CIFAR python-pickle ``.tar.gz``), checked against the official md5 sums;
3. a download of the official files, only when the caller allows it.

``digits`` (scikit-learn's 8x8 digits) is built in and needs no files. Any problem with a
file is one ``DatasetError`` that names the file, says what was expected and how to fix it.

Pickles never run code: the CIFAR archives are read with an unpickler that admits plain
data and numpy's array-reconstruction globals, nothing else.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.client
import io
import math
import os
import pickle
import shutil
import struct
import tarfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustlab.data.sampling import train_val_split
from robustlab.files import atomic_open
from robustlab.progress import Progress, progress_bar
from robustlab.registry import Registry

DATA_DIR_ENV = "ROBUSTLAB_DATA"
DEFAULT_DATA_DIR = Path("~/.robustlab/data")


class DatasetError(ValueError):
    """A dataset that is missing, corrupt, or not in the expected format."""


# x_train, y_train, x_test, y_test: what every dataset's reader returns
Splits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


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


# ---------------------------------------------------------------------------------------
# Official files: where they come from and how to check them


@dataclass(frozen=True)
class RemoteFile:
    filename: str
    md5: str
    urls: tuple[str, ...]  # mirrors, tried in order


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, remote: RemoteFile) -> None:
    actual = md5sum(path)
    if actual != remote.md5:
        raise DatasetError(
            f"{path}: md5 checksum {actual} does not match the official {remote.md5}; the file is "
            f"truncated, corrupt or not the official {remote.filename}. Delete it and download it "
            "again (--download), or pass verify=False (--no-verify) to read a file in the official "
            "format that is not the official file."
        )


def download_file(remote: RemoteFile, target: Path) -> Path:
    """Fetch ``remote`` into ``target``: checksum-verified, written atomically, mirrors in turn."""
    errors = []
    for url in remote.urls:
        try:
            with atomic_open(target, "wb") as out:
                digest = _copy_url(url, out, remote.filename)
                if digest != remote.md5:
                    raise DatasetError(f"{url}: md5 {digest} instead of the official {remote.md5}")
            return target
        except (OSError, http.client.HTTPException, DatasetError) as error:  # urllib's errors are OSErrors
            errors.append(f"{url}: {error}")
    raise DatasetError(
        f"could not download {remote.filename} ({'; '.join(errors)}). Download it by hand and "
        f"put it at {target}, or use `robustlab data prepare NAME --from FILE`."
    )


def _copy_url(url: str, out, label: str) -> str:
    digest = hashlib.md5()
    with urllib.request.urlopen(url, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with Progress(total, label, "B", unit_scale=True) as bar:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                digest.update(block)
                bar.update(len(block))
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------
# Safe pickles (CIFAR)

_RECONSTRUCT = np.zeros(0).__reduce__()[0]  # numpy's _reconstruct, wherever this numpy keeps it
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArrayUnpickler(pickle.Unpickler):
    """Plain data and numpy arrays only: any other global (os.system, ...) is refused."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused to load the global {module}.{name}") from None


def safe_unpickle(data: bytes, where: str) -> object:
    """Unpickle Python-2 era data (latin1 strings, as in the CIFAR files) without running code."""
    try:
        return _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as error:
        raise DatasetError(
            f"{where}: not a valid CIFAR batch pickle ({error}); only plain data and numpy "
            "arrays are accepted. Use the official archive."
        ) from None


# ---------------------------------------------------------------------------------------
# Readers of the file formats


def read_idx(path: Path) -> np.ndarray:
    """An idx file (MNIST format), gzip-compressed or not, as a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise DatasetError(f"{path}: cannot read it ({error}); the file is truncated or corrupt") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise DatasetError(f"{path}: not an idx file of unsigned bytes (MNIST format)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", raw[4:header]) if len(raw) >= header else None
    if shape is None or len(raw) - header != math.prod(shape):  # Python ints: no overflow
        raise DatasetError(
            f"{path}: the idx header promises shape {shape} but the data does not match; the file is truncated"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def read_npz(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named arrays of an .npz file; pickled objects are refused."""
    if not path.exists():
        raise DatasetError(f"{path} does not exist")
    try:
        _check_npz_sizes(path)
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in keys if k not in archive.files]
            if missing:
                raise DatasetError(
                    f"{path}: missing arrays {', '.join(missing)}; expected {', '.join(keys)} "
                    f"(found {', '.join(archive.files) or 'none'})"
                )
            return {k: archive[k] for k in archive.files}
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, MemoryError) as error:
        raise DatasetError(f"{path}: not a readable .npz file ({error}); it is truncated or corrupt") from None


_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
# deflate expands at most ~1032:1; a member claiming more than this is lying about its size
_MAX_DEFLATE_RATIO = 1100


def _check_npz_sizes(path: Path) -> None:
    """Refuse an .npz whose array headers claim more bytes than its members hold, before numpy
    allocates the claimed size (a few-byte file can claim a terabyte)."""
    with zipfile.ZipFile(path) as archive:
        on_disk = path.stat().st_size
        for member in archive.infolist():
            if not member.filename.endswith(".npy"):
                continue
            stored = member.compress_size if member.compress_type != zipfile.ZIP_STORED else member.file_size
            if stored > on_disk or member.file_size > _MAX_DEFLATE_RATIO * max(stored, 1):
                raise DatasetError(
                    f"{path}: member {member.filename} claims {member.file_size} bytes; the file is corrupt"
                )
            with archive.open(member) as handle:
                read_header = _NPY_HEADER_READERS.get(np.lib.format.read_magic(handle))
                if read_header is None:
                    raise DatasetError(f"{path}: {member.filename} is not an .npy array of format version 1 or 2")
                shape, _, dtype = read_header(handle)  # the header only: nothing is allocated
                held = member.file_size - handle.tell()
            claimed = math.prod(shape) * dtype.itemsize
            if claimed > held:
                raise DatasetError(
                    f"{path}: array {member.filename[:-4]} claims shape {shape} ({claimed} bytes) but holds "
                    f"{held} bytes; the file is truncated or corrupt"
                )


def _read_split_npz(path: Path) -> Splits:
    arrays = read_npz(path, ("x_train", "y_train", "x_test", "y_test"))
    return arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]


def _check_images(x: np.ndarray, y: np.ndarray, where: str, shape: tuple | None = None) -> tuple:
    """NHWC uint8 images and int64 labels, or a DatasetError saying what is wrong."""
    if x.ndim == 3:  # grayscale stored without a channel axis
        x = x[..., None]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise DatasetError(f"{where}: images must be uint8 (N, H, W, C) with C = 1 or 3, got {x.dtype} {x.shape}")
    if shape is not None and x.shape[1:] != shape:
        raise DatasetError(f"{where}: expected images of shape {shape} (H, W, C), got {x.shape[1:]}")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"{where}: expected {len(x)} integer labels, got {y.dtype} {y.shape}")
    if len(y) and y.min() < 0:
        raise DatasetError(f"{where}: labels must be non-negative, found {y.min()}")
    return x, y.astype(np.int64)


def _check_labels(y: np.ndarray, num_classes: int, where: str) -> None:
    if len(y) and y.max() >= num_classes:
        raise DatasetError(f"{where}: label {y.max()} is out of range for {num_classes} classes")


# ---------------------------------------------------------------------------------------
# Dataset definitions


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
            return self._dataset(_read_split_npz(npz), source=str(npz))
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
        x_train, y_train = _check_images(x_train, y_train, f"{source} (train)", self.image_shape)
        x_test, y_test = _check_images(x_test, y_test, f"{source} (test)", self.image_shape)
        for y, split in ((y_train, "train"), (y_test, "test")):
            _check_labels(y, len(self.classes), f"{source} ({split})")
        return ImageDataset(self.name, x_train, y_train, x_test, y_test, list(self.classes), source)


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def _register(spec: DatasetSpec) -> None:
    DATASETS.add(spec.name, spec)


# -- digits: built in --------------------------------------------------------------------


def _digits() -> Splits:
    from sklearn.datasets import load_digits  # scikit-learn loads slowly: only when digits are used

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
    labels = digits.target.astype(np.int64)
    train, test = train_val_split(labels, val_size=360, seed=0)
    return images[train], labels[train], images[test], labels[test]


_register(
    DatasetSpec(
        "digits", "scikit-learn 8x8 digits, 1437/360 (built in)", tuple("0123456789"), (8, 8, 1), builtin=_digits
    )
)


@functools.lru_cache(maxsize=1)
def _affine_digits(count: int = 24_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Generated data for the digits, needing no download: mild random affine distortions (rotation
    up to 8 degrees, scaling by 0.95-1.05, slight shear, shifts under half a pixel) of the digits
    *training* images, labelled like their source. A crude generative model of the training set,
    standing in for the paper's EDM samples in the CPU miniature; deterministic, so a config names
    one set. (Twice as strong distortions made the extra images hurt: 87.2 -> 87.5, 90.3, 89.4% CRA
    instead of 87.5, 88.9, 90.6% with 179 real digits + 179, 1253, 5549 generated, one seed.)"""
    from scipy.ndimage import map_coordinates

    images, labels = _digits()[:2]
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


# -- MNIST and Fashion-MNIST: idx files ------------------------------------------------------

_IDX_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _idx_files(md5s: tuple[str, ...], mirrors: tuple[str, ...]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(n, m, tuple(u + n for u in mirrors)) for n, m in zip(_IDX_NAMES, md5s))


def _read_idx_dataset(paths: dict[str, Path]) -> Splits:
    x_train, y_train, x_test, y_test = (read_idx(paths[n]) for n in _IDX_NAMES)
    for x, y, name in ((x_train, y_train, _IDX_NAMES[0]), (x_test, y_test, _IDX_NAMES[2])):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DatasetError(f"{paths[name]}: {x.shape} images do not fit {y.shape} labels")
    return x_train[..., None], y_train, x_test[..., None], y_test


_register(
    DatasetSpec(
        "mnist",
        "MNIST handwritten digits, 60k/10k, 28x28x1",
        tuple("0123456789"),
        (28, 28, 1),
        files=_idx_files(
            (
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ),
            ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        ),
        read_official=_read_idx_dataset,
    )
)
_register(
    DatasetSpec(
        "fashion-mnist",
        "Zalando Fashion-MNIST, 60k/10k, 28x28x1",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        (28, 28, 1),
        files=_idx_files(
            (
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ),
            ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        ),
        read_official=_read_idx_dataset,
    )
)


# -- CIFAR-10 and CIFAR-100: python pickles in a tar.gz ----------------------------------------


def _cifar_reader(archive: str, train: tuple[str, ...], test: str, label_key: str) -> Callable:
    def read(paths: dict[str, Path]) -> Splits:
        path = paths[archive]
        try:
            with tarfile.open(path, "r:gz") as tar:
                members = progress_bar((*train, test), path.name, "file")
                batches = {m: _read_cifar_batch(tar, m, label_key, path) for m in members}
        except (tarfile.TarError, OSError, EOFError) as error:
            raise DatasetError(f"{path}: cannot read the archive ({error}); it is truncated or corrupt") from None
        x_train = np.concatenate([batches[m][0] for m in train])
        y_train = np.concatenate([batches[m][1] for m in train])
        return x_train, y_train, *batches[test]

    return read


def _read_cifar_batch(tar: tarfile.TarFile, member: str, label_key: str, path: Path) -> tuple:
    where = f"{path}:{member}"
    try:
        handle = tar.extractfile(member)
    except KeyError:
        raise DatasetError(f"{path}: the archive has no member {member}; is it the official file?") from None
    if handle is None:
        raise DatasetError(f"{path}: {member} is not a file; is the archive the official one?")
    batch = safe_unpickle(handle.read(), where)
    if not isinstance(batch, dict) or "data" not in batch or label_key not in batch:
        raise DatasetError(f"{where}: expected a dict with 'data' and '{label_key}'")
    data, labels = batch["data"], np.asarray(batch[label_key])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(f"{where}: 'data' must be a uint8 array of shape (N, 3072)")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{where}: '{label_key}' must be {len(data)} integer labels, one per image")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR100_CLASSES = tuple(
    [
        "apple",
        "aquarium_fish",
        "baby",
        "bear",
        "beaver",
        "bed",
        "bee",
        "beetle",
        "bicycle",
        "bottle",
        "bowl",
        "boy",
        "bridge",
        "bus",
        "butterfly",
        "camel",
        "can",
        "castle",
        "caterpillar",
        "cattle",
        "chair",
        "chimpanzee",
        "clock",
        "cloud",
        "cockroach",
        "couch",
        "crab",
        "crocodile",
        "cup",
        "dinosaur",
        "dolphin",
        "elephant",
        "flatfish",
        "forest",
        "fox",
        "girl",
        "hamster",
        "house",
        "kangaroo",
        "keyboard",
        "lamp",
        "lawn_mower",
        "leopard",
        "lion",
        "lizard",
        "lobster",
        "man",
        "maple_tree",
        "motorcycle",
        "mountain",
        "mouse",
        "mushroom",
        "oak_tree",
        "orange",
        "orchid",
        "otter",
        "palm_tree",
        "pear",
        "pickup_truck",
        "pine_tree",
        "plain",
        "plate",
        "poppy",
        "porcupine",
        "possum",
        "rabbit",
        "raccoon",
        "ray",
        "road",
        "rocket",
        "rose",
        "sea",
        "seal",
        "shark",
        "shrew",
        "skunk",
        "skyscraper",
        "snail",
        "snake",
        "spider",
        "squirrel",
        "streetcar",
        "sunflower",
        "sweet_pepper",
        "table",
        "tank",
        "telephone",
        "television",
        "tiger",
        "tractor",
        "train",
        "trout",
        "tulip",
        "turtle",
        "wardrobe",
        "whale",
        "willow_tree",
        "wolf",
        "woman",
        "worm",
    ]
)

_register(
    DatasetSpec(
        "cifar10",
        "CIFAR-10, 50k/10k, 32x32x3",
        _CIFAR10_CLASSES,
        (32, 32, 3),
        files=(
            RemoteFile(
                "cifar-10-python.tar.gz",
                "c58f30108f718f92721af3b95e74349a",
                ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
            ),
        ),
        read_official=_cifar_reader(
            "cifar-10-python.tar.gz",
            tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
            "cifar-10-batches-py/test_batch",
            "labels",
        ),
    )
)
_register(
    DatasetSpec(
        "cifar100",
        "CIFAR-100 (fine labels), 50k/10k, 32x32x3",
        _CIFAR100_CLASSES,
        (32, 32, 3),
        files=(
            RemoteFile(
                "cifar-100-python.tar.gz",
                "eb9058c3a382ffc7106e4002c42a8d85",
                ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
            ),
        ),
        read_official=_cifar_reader(
            "cifar-100-python.tar.gz", ("cifar-100-python/train",), "cifar-100-python/test", "fine_labels"
        ),
    )
)

_register(DatasetSpec("npz", "any .npz with x_train, y_train, x_test, y_test (give its path)", (), None))


# ---------------------------------------------------------------------------------------
# Entry points


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


def load_npz_dataset(path: str | Path) -> ImageDataset:
    """An .npz with ``x_train, y_train, x_test, y_test`` (NHWC uint8) and optional ``classes``."""
    path = Path(path).expanduser()
    arrays = read_npz(path, ("x_train", "y_train", "x_test", "y_test"))
    x_train, y_train = _check_images(arrays["x_train"], arrays["y_train"], f"{path} (train)")
    x_test, y_test = _check_images(arrays["x_test"], arrays["y_test"], f"{path} (test)", x_train.shape[1:])
    if "classes" in arrays:
        classes = [str(c) for c in np.asarray(arrays["classes"]).reshape(-1)]
    else:
        classes = [str(c) for c in range(_label_count(y_train, y_test, path))]
    for y, split in ((y_train, "train"), (y_test, "test")):
        _check_labels(y, len(classes), f"{path} ({split})")
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


AFFINE_DIGITS = "digits-affine"  # the built-in stand-in for generated data (see _affine_digits)


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
        return _affine_digits()
    path = Path(path).expanduser()
    arrays = read_npz(path, ("image", "label"))
    return _check_images(arrays["image"], arrays["label"], str(path))


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
            spec._dataset(_read_split_npz(path), source=str(path))  # raises unless it fits
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
