"""The readers every dataset shares: official files (md5 checks, downloads), safe pickles, the
idx, npz and CIFAR formats, and the checks that turn any array into uint8 NHWC images with
int64 labels or one ``DatasetError`` line that names the file.

A size read from a file (an idx or npy header, a zip member) is compared with the bytes the
file holds before anything is allocated from it, and pickles never run code: the CIFAR
archives are read with an unpickler that admits plain data and numpy's array-reconstruction
globals, nothing else.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import math
import pickle
import struct
import tarfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from robustlab.files import atomic_open
from robustlab.progress import Progress, progress_bar


class DatasetError(ValueError):
    """A dataset that is missing, corrupt, or not in the expected format."""


# x_train, y_train, x_test, y_test: what every dataset's reader returns
Splits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


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


def _copy_url(url: str, out: BinaryIO, label: str) -> str:
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

    def find_class(self, module: str, name: str) -> Any:  # as pickle.Unpickler's: a class or a function
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


def read_split_npz(path: Path) -> Splits:
    arrays = read_npz(path, ("x_train", "y_train", "x_test", "y_test"))
    return arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]


def check_images(x: np.ndarray, y: np.ndarray, where: str, shape: tuple | None = None) -> tuple:
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


def check_labels(y: np.ndarray, num_classes: int, where: str) -> None:
    if len(y) and y.max() >= num_classes:
        raise DatasetError(f"{where}: label {y.max()} is out of range for {num_classes} classes")


# ---------------------------------------------------------------------------------------
# Whole datasets in the official formats: MNIST-style idx files, CIFAR pickles in a tar.gz


IDX_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def idx_files(md5s: tuple[str, ...], mirrors: tuple[str, ...]) -> tuple[RemoteFile, ...]:
    return tuple(RemoteFile(n, m, tuple(u + n for u in mirrors)) for n, m in zip(IDX_NAMES, md5s))


def read_idx_dataset(paths: dict[str, Path]) -> Splits:
    x_train, y_train, x_test, y_test = (read_idx(paths[n]) for n in IDX_NAMES)
    for x, y, name in ((x_train, y_train, IDX_NAMES[0]), (x_test, y_test, IDX_NAMES[2])):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DatasetError(f"{paths[name]}: {x.shape} images do not fit {y.shape} labels")
    return x_train[..., None], y_train, x_test[..., None], y_test


def cifar_reader(archive: str, train: tuple[str, ...], test: str, label_key: str) -> Callable:
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
