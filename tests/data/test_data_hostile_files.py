"""Files that claim absurd sizes or hold what the format forbids: each ends in one DatasetError
line before anything is sized from the claim, and never in another exception.

The property tests (hypothesis) write arbitrary bytes and arbitrary arrays in the npz, idx and
CIFAR formats and check that every input gives either a valid dataset or a DatasetError.
"""

import io
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_data_datasets import cifar10_members, py2_pickle, write_idx, write_mnist_files, write_tar

from robustlab.config import load_config
from robustlab.data.datasets import DatasetError, ImageDataset, load_dataset, read_idx
from robustlab.data.splits import prepare_data

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _npz(path, **arrays) -> None:
    np.savez(path, **arrays)


def _images(n: int, shape=(4, 4, 1)) -> np.ndarray:
    return np.zeros((n, *shape), np.uint8)


def test_one_huge_label_without_class_names_is_one_line_not_a_billion_names(tmp_path):
    path = tmp_path / "hostile.npz"
    _npz(path, x_train=_images(1), y_train=np.array([10**9]), x_test=_images(1), y_test=np.array([0]))
    # in a child process with a memory cap: the old code built 10**9 class names (22 GB)
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
        "from robustlab.cli import main; sys.exit(main(['data', 'info', sys.argv[1]]))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"robustlab data: error: {path}: label 1000000000 implies 1000000001 classes for 2 images; labels must be "
        "0 .. K-1 for K classes (add a 'classes' array of K names if some classes have no images)"
    ]


def _npz_claiming(path, shape: tuple[int, ...]) -> None:
    """An .npz whose x_train header claims ``shape`` but holds 16 bytes."""
    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, header)
    member.write(bytes(16))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x_train.npy", member.getvalue())
        for name, array in (("y_train", np.zeros(1, int)), ("x_test", _images(1)), ("y_test", np.zeros(1, int))):
            buffer = io.BytesIO()
            np.save(buffer, array)
            archive.writestr(f"{name}.npy", buffer.getvalue())


def test_an_npz_header_claiming_a_terabyte_is_refused_before_numpy_allocates_it(tmp_path):
    path = tmp_path / "claims.npz"
    _npz_claiming(path, (10**6, 1000, 1000, 1))
    with pytest.raises(DatasetError, match=r"array x_train claims shape \(1000000, 1000, 1000, 1\) .* holds 16 bytes"):
        load_dataset(str(path))


def test_an_idx_header_whose_dimensions_overflow_int64_is_refused(tmp_path):
    path = tmp_path / "big.idx"
    path.write_bytes(struct.pack(">BBBB", 0, 0, 8, 4) + struct.pack(">4I", *[2**32 - 1] * 4) + bytes(16))
    with pytest.raises(DatasetError, match="the idx header promises shape"):
        read_idx(path)


def _write_cifar_with(tmp_path, member: str, batch: dict):
    members = cifar10_members()[0]
    members[f"cifar-10-batches-py/{member}"] = py2_pickle(batch)
    path = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tar(path, members)


def test_a_cifar_batch_of_the_wrong_data_shape_reaches_its_check(tmp_path):
    _write_cifar_with(tmp_path, "data_batch_2", {"data": np.zeros((4, 1024), np.uint8), "labels": [0, 1, 2, 3]})
    with pytest.raises(DatasetError, match=r"data_batch_2: 'data' must be a uint8 array of shape \(N, 3072\)"):
        load_dataset("cifar10", tmp_path, verify=False)


def test_a_cifar_label_out_of_range_reaches_its_check(tmp_path):
    _write_cifar_with(tmp_path, "test_batch", {"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 10]})
    with pytest.raises(DatasetError, match=r"\(test\): label 10 is out of range for 10 classes"):
        load_dataset("cifar10", tmp_path, verify=False)


def test_an_extra_path_that_does_not_exist_fails_even_when_no_extra_image_is_added(tmp_path):
    config = load_config("digits", [f"data.extra_path={tmp_path / 'edm.npz'}", "data.extra_size=0"])
    with pytest.raises(DatasetError, match=r"data.extra_path=.*edm.npz does not exist"):
        prepare_data(config.data)


# ---------------------------------------------------------------------------------------
# Property tests: any file ends in a dataset or in the one-line error


def _valid_or_dataset_error(load) -> None:
    try:
        data = load()
    except DatasetError as error:
        assert "\n" not in str(error)
        return
    assert isinstance(data, ImageDataset)
    assert data.x_train.dtype == np.uint8 and data.x_train.ndim == 4
    assert len(data.classes) >= 1 + max(data.y_train.max(initial=0), data.y_test.max(initial=0))


@FUZZ
@given(data=st.binary(max_size=2048))
def test_any_bytes_as_an_npz_end_in_a_dataset_or_one_error(tmp_path, data):
    path = tmp_path / "fuzz.npz"
    path.write_bytes(data)
    _valid_or_dataset_error(lambda: load_dataset(str(path)))


small_ints = st.integers(min_value=-3, max_value=2**40)
arrays = st.one_of(
    st.lists(small_ints, max_size=6).map(np.array),
    st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3), st.sampled_from([1, 2, 3])).map(
        lambda shape: np.zeros(shape, np.uint8)
    ),
    st.tuples(st.integers(0, 3), st.integers(1, 3)).map(lambda shape: np.ones(shape, np.float32)),
)


@FUZZ
@given(
    x_train=arrays, y_train=arrays, x_test=arrays, y_test=arrays, classes=st.none() | st.lists(st.text(), max_size=4)
)
def test_any_arrays_in_an_npz_end_in_a_dataset_or_one_error(tmp_path, x_train, y_train, x_test, y_test, classes):
    path = tmp_path / "arrays.npz"
    extra = {} if classes is None else {"classes": np.array(classes, dtype=str)}
    _npz(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, **extra)
    _valid_or_dataset_error(lambda: load_dataset(str(path)))


@FUZZ
@given(
    magic=st.binary(min_size=4, max_size=4) | st.just(b"\0\0\x08\x03"),
    dims=st.lists(st.integers(0, 2**32 - 1), max_size=4),
    payload=st.binary(max_size=64),
)
def test_any_idx_file_ends_in_an_array_or_one_error(tmp_path, magic, dims, payload):
    path = tmp_path / "fuzz-idx"
    path.write_bytes(magic + struct.pack(f">{len(dims)}I", *dims) + payload)
    try:
        array = read_idx(path)
    except DatasetError as error:
        assert "\n" not in str(error)
    else:
        assert array.dtype == np.uint8 and array.size == len(payload) - 4 * (magic[3] - len(dims))


@FUZZ
@given(index=st.integers(0, 3), cut=st.integers(0, 2000), noise=st.binary(max_size=8))
def test_damaged_mnist_files_end_in_a_dataset_or_one_error(tmp_path, index, cut, noise):
    folder = tmp_path / "mnist"
    arrays = write_mnist_files(folder, n_train=4, n_test=2)
    name = list(arrays)[index]
    write_idx(folder / name, arrays[name], compress=False)
    raw = (folder / name).read_bytes()
    (folder / name).write_bytes(raw[:cut] + noise)
    _valid_or_dataset_error(lambda: load_dataset("mnist", tmp_path, verify=False))


batches = st.fixed_dictionaries(
    {},
    optional={
        "data": arrays | st.just(np.zeros((2, 3072), np.uint8)) | st.text(max_size=4),
        "labels": st.lists(small_ints, max_size=3) | st.integers() | st.none(),
    },
)


@FUZZ
@given(batch=batches | st.lists(st.integers(), max_size=3) | st.text(max_size=8))
def test_any_cifar_batch_ends_in_a_dataset_or_one_error(tmp_path, batch):
    members = cifar10_members(per_batch=2)[0]
    members["cifar-10-batches-py/data_batch_3"] = py2_pickle(batch)
    path = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tar(path, members)
    _valid_or_dataset_error(lambda: load_dataset("cifar10", tmp_path, verify=False))
