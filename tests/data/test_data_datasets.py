"""Dataset readers on small files written in the official formats (no network)."""

import gzip
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from robustlab.data.datasets import (
    AFFINE_DIGITS,
    AFFINE_DIGITS_COUNT,
    DATASETS,
    DatasetError,
    RemoteFile,
    default_data_dir,
    download_file,
    import_files,
    load_dataset,
    load_generated,
    md5sum,
)
from robustlab.data.datasets.readers import _RECONSTRUCT
from robustlab.registry import UnknownNameError

RNG = np.random.default_rng(0)

# ---------------------------------------------------------------------------------------
# Writers of the official formats


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def write_mnist_files(folder: Path, n_train: int = 20, n_test: int = 10) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte.gz": RNG.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte.gz": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte.gz": RNG.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": np.arange(n_test) % 10,
    }
    for name, array in arrays.items():
        write_idx(folder / name, array)
    return arrays


class Py2StylePickler(pickle.Pickler):
    """Pickles numpy arrays the way the Python 2 CIFAR files hold them: raw data as a string."""

    def reducer_override(self, obj):
        if type(obj) is np.ndarray:
            state = (1, obj.shape, obj.dtype, False, obj.tobytes().decode("latin1"))
            return _RECONSTRUCT, (np.ndarray, (0,), "b"), state
        return NotImplemented


def py2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    Py2StylePickler(buffer, protocol=2).dump(obj)
    # the official files name numpy 1's module; exercise that spelling
    return buffer.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def cifar10_members(per_batch: int = 4) -> tuple[dict[str, bytes], np.ndarray, np.ndarray]:
    members, images, labels = {}, [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = RNG.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        batch_labels = list(RNG.integers(0, 10, per_batch))
        members[f"cifar-10-batches-py/{name}"] = py2_pickle({"data": data, "labels": [int(v) for v in batch_labels]})
        images.append(data)
        labels += batch_labels
    return members, np.concatenate(images), np.array(labels)


def write_cifar10(data_dir: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    members, images, labels = cifar10_members()
    path = data_dir / "cifar10" / "cifar-10-python.tar.gz"
    path.parent.mkdir(parents=True)
    write_tar(path, members)
    return path, images, labels


def write_npz(path: Path, n_train=12, n_test=6, shape=(32, 32, 3), num_classes=10, **extra) -> dict:
    arrays = dict(
        x_train=RNG.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        y_train=np.arange(n_train) % num_classes,
        x_test=RNG.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        y_test=np.arange(n_test) % num_classes,
        **extra,
    )
    np.savez(path, **arrays)
    return arrays


# ---------------------------------------------------------------------------------------
# Built-in digits


def test_digits_is_a_seeded_stratified_uint8_split():
    data = load_dataset("digits")
    assert data.x_train.shape == (1437, 8, 8, 1) and data.x_test.shape == (360, 8, 8, 1)
    assert data.x_train.dtype == np.uint8 and data.x_train.max() == 255 and data.x_train.min() == 0
    assert data.y_train.dtype == np.int64 and data.num_classes == 10 and data.input_shape == (1, 8, 8)
    assert np.bincount(data.y_test).min() >= 35 and np.bincount(data.y_test).max() <= 37
    again = load_dataset("digits")
    assert np.array_equal(again.x_test, data.x_test) and np.array_equal(again.y_train, data.y_train)


def test_digits_are_read_without_scikit_learn_and_equal_its_loader():
    code = (
        "import sys; import numpy as np; from robustlab.data.datasets.digits import _digits_arrays; "
        "images, labels = _digits_arrays(); print('sklearn' in sys.modules); "
        "np.save(sys.stdout.buffer, images); np.save(sys.stdout.buffer, labels)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
    loaded, _, arrays = done.stdout.partition(b"\n")
    assert loaded == b"False"  # importing scikit-learn takes 0.6 s of every listing of the digits' pca points
    stream = io.BytesIO(arrays)
    images, labels = np.load(stream), np.load(stream)
    from sklearn.datasets import load_digits

    digits = load_digits()
    assert np.array_equal(images, digits.images) and np.array_equal(labels, digits.target)


def test_the_count_of_the_generated_digits_is_known_without_generating_them():
    assert len(load_generated(AFFINE_DIGITS)[1]) == AFFINE_DIGITS_COUNT


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="cifar10.*digits.*mnist"):
        load_dataset("imagenet")


# ---------------------------------------------------------------------------------------
# MNIST idx files


def test_mnist_idx_files_are_read_in_order(tmp_path):
    arrays = write_mnist_files(tmp_path / "mnist")
    data = load_dataset("mnist", tmp_path, verify=False)
    assert data.x_train.shape == (20, 28, 28, 1) and data.x_test.shape == (10, 28, 28, 1)
    assert np.array_equal(data.x_train[..., 0], arrays["train-images-idx3-ubyte.gz"])
    assert np.array_equal(data.y_test, arrays["t10k-labels-idx1-ubyte.gz"])
    assert data.source == str(tmp_path / "mnist")


def test_fashion_mnist_reads_the_same_format_with_its_classes(tmp_path):
    write_mnist_files(tmp_path / "fashion-mnist")
    data = load_dataset("fashion-mnist", tmp_path, verify=False)
    assert data.classes[0] == "T-shirt/top" and len(data.y_train) == 20


def test_files_that_are_not_official_fail_the_checksum(tmp_path):
    write_mnist_files(tmp_path / "mnist")
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.gz: md5 checksum .* official f68b3c2d"):
        load_dataset("mnist", tmp_path)


def test_truncated_idx_file_is_one_clear_error(tmp_path):
    write_mnist_files(tmp_path / "mnist")
    path = tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz.*truncated"):
        load_dataset("mnist", tmp_path, verify=False)


def test_idx_data_shorter_than_its_header_says_is_refused(tmp_path):
    write_mnist_files(tmp_path / "mnist")
    path = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-3]))
    with pytest.raises(DatasetError, match="promises shape"):
        load_dataset("mnist", tmp_path, verify=False)


def test_missing_files_say_how_to_get_them(tmp_path):
    with pytest.raises(DatasetError, match="robustlab data prepare mnist --download") as error:
        load_dataset("mnist", tmp_path)
    assert "train-images-idx3-ubyte.gz" in str(error.value) and str(tmp_path) in str(error.value)


# ---------------------------------------------------------------------------------------
# CIFAR pickles


def test_cifar10_archive_is_read_with_the_safe_unpickler(tmp_path):
    _, images, labels = write_cifar10(tmp_path)
    data = load_dataset("cifar10", tmp_path, verify=False)
    assert data.x_train.shape == (20, 32, 32, 3) and data.x_test.shape == (4, 32, 32, 3)
    # official layout: each row is the red plane, then green, then blue
    assert np.array_equal(data.x_train[3, :, :, 1], images[3, 1024:2048].reshape(32, 32))
    assert np.array_equal(data.y_train, labels[:20]) and np.array_equal(data.y_test, labels[20:])
    assert data.classes[0] == "airplane"


def test_cifar100_uses_the_fine_labels(tmp_path):
    train = RNG.integers(0, 256, (6, 3072), dtype=np.uint8)
    test = RNG.integers(0, 256, (2, 3072), dtype=np.uint8)
    path = tmp_path / "cifar100" / "cifar-100-python.tar.gz"
    path.parent.mkdir()
    write_tar(
        path,
        {
            "cifar-100-python/train": py2_pickle(
                {"data": train, "fine_labels": [0, 99, 5, 6, 7, 8], "coarse_labels": [0] * 6}
            ),
            "cifar-100-python/test": py2_pickle({"data": test, "fine_labels": [42, 1], "coarse_labels": [0, 0]}),
        },
    )
    data = load_dataset("cifar100", tmp_path, verify=False)
    assert data.num_classes == 100 and data.y_train.tolist() == [0, 99, 5, 6, 7, 8] and len(data.x_test) == 2


class RunsShellCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    members, _, _ = cifar10_members()
    members["cifar-10-batches-py/data_batch_1"] = pickle.dumps(
        {"data": RunsShellCommand(marker), "labels": []}, protocol=2
    )
    path = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    path.parent.mkdir()
    write_tar(path, members)
    with pytest.raises(DatasetError, match=r"data_batch_1.*refused to load the global (posix|os)\.system"):
        load_dataset("cifar10", tmp_path, verify=False)
    assert not marker.exists()


def test_cifar_archive_checksum_is_verified(tmp_path):
    write_cifar10(tmp_path)
    with pytest.raises(DatasetError, match="cifar-10-python.tar.gz: md5 checksum .* c58f30108f718f92721af3b95e74349a"):
        load_dataset("cifar10", tmp_path)


def test_truncated_cifar_archive_is_one_clear_error(tmp_path):
    path, _, _ = write_cifar10(tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError, match="cifar-10-python.tar.gz.*truncated or corrupt"):
        load_dataset("cifar10", tmp_path, verify=False)


def test_archive_without_the_expected_members_is_refused(tmp_path):
    path = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    path.parent.mkdir()
    write_tar(path, {"something/else": b"x"})
    with pytest.raises(DatasetError, match="no member cifar-10-batches-py/data_batch_1"):
        load_dataset("cifar10", tmp_path, verify=False)


# ---------------------------------------------------------------------------------------
# npz files


def test_assembled_npz_is_a_source_for_the_named_dataset(tmp_path):
    arrays = write_npz(tmp_path / "cifar10.npz")
    write_cifar10(tmp_path)  # the npz wins over the official files
    data = load_dataset("cifar10", tmp_path)
    assert data.source == str(tmp_path / "cifar10.npz")
    assert np.array_equal(data.x_train, arrays["x_train"]) and data.num_classes == 10


def test_npz_with_the_wrong_image_shape_for_the_name_is_refused(tmp_path):
    write_npz(tmp_path / "cifar10.npz", shape=(28, 28, 1))
    with pytest.raises(DatasetError, match=r"cifar10.npz \(train\): expected images of shape \(32, 32, 3\)"):
        load_dataset("cifar10", tmp_path)


def test_npz_with_out_of_range_labels_is_refused(tmp_path):
    write_npz(tmp_path / "mnist.npz", shape=(28, 28, 1), num_classes=11)
    with pytest.raises(DatasetError, match="label 10 is out of range for 10 classes"):
        load_dataset("mnist", tmp_path)


def test_generic_npz_by_path_with_class_names(tmp_path):
    path = tmp_path / "toy.npz"
    write_npz(path, shape=(5, 7, 1), num_classes=3, classes=np.array(["cat", "dog", "emu"]))
    data = load_dataset(str(path))
    assert data.name == "toy" and data.classes == ["cat", "dog", "emu"] and data.input_shape == (1, 5, 7)


def test_generic_npz_with_missing_arrays_names_them(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, x_train=np.zeros((2, 4, 4, 1), np.uint8), y_train=np.zeros(2, int))
    with pytest.raises(DatasetError, match="missing arrays x_test, y_test"):
        load_dataset(path.as_posix())


def test_float_images_in_an_npz_are_refused(tmp_path):
    path = tmp_path / "floats.npz"
    write_npz(path)
    np.savez(path, **{**dict(np.load(path)), "x_train": np.zeros((12, 32, 32, 3), np.float32)})
    with pytest.raises(DatasetError, match="images must be uint8"):
        load_dataset(str(path))


def test_truncated_npz_is_one_clear_error(tmp_path):
    path = tmp_path / "cut.npz"
    write_npz(path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DatasetError, match="cut.npz: not a readable .npz"):
        load_dataset(str(path))


def test_npz_holding_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "objects.npz"
    write_npz(path)
    np.savez(
        path, **{**dict(np.load(path)), "y_train": np.array([RunsShellCommand(tmp_path / "x")] * 12, dtype=object)}
    )
    with pytest.raises(DatasetError, match="objects.npz"):
        load_dataset(str(path))
    assert not (tmp_path / "x").exists()


def test_generated_data_format(tmp_path):
    path = tmp_path / "edm.npz"
    np.savez(path, image=RNG.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8), label=np.arange(7) % 10)
    images, labels = load_generated(path)
    assert images.shape == (7, 32, 32, 3) and labels.dtype == np.int64
    np.savez(path, images=images, labels=labels)
    with pytest.raises(DatasetError, match="missing arrays image, label"):
        load_generated(path)


def test_data_folder_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_DATA", str(tmp_path))
    write_npz(tmp_path / "mnist.npz", shape=(28, 28, 1))
    assert default_data_dir() == tmp_path
    assert load_dataset("mnist").source == str(tmp_path / "mnist.npz")
    assert default_data_dir(tmp_path / "other") == tmp_path / "other"


def test_status_tells_which_source_would_be_used(tmp_path):
    assert DATASETS.get("cifar10").status(tmp_path) == "missing"
    write_cifar10(tmp_path)
    assert DATASETS.get("cifar10").status(tmp_path) == "official"
    write_npz(tmp_path / "cifar10.npz")
    assert DATASETS.get("cifar10").status(tmp_path) == "npz"
    assert DATASETS.get("digits").status(tmp_path) == "built in"


# ---------------------------------------------------------------------------------------
# Downloads (from file:// URLs) and imports


def test_download_verifies_the_checksum_and_tries_mirrors(tmp_path):
    source = tmp_path / "served.bin"
    source.write_bytes(b"official bytes" * 1000)
    remote = RemoteFile("served.bin", md5sum(source), ((tmp_path / "absent").as_uri(), source.as_uri()))
    target = tmp_path / "data" / "served.bin"
    download_file(remote, target)
    assert target.read_bytes() == source.read_bytes()


def test_download_with_a_wrong_checksum_leaves_no_file(tmp_path):
    source = tmp_path / "served.bin"
    source.write_bytes(b"tampered")
    remote = RemoteFile("served.bin", "0" * 32, (source.as_uri(),))
    target = tmp_path / "data" / "served.bin"
    with pytest.raises(DatasetError, match="could not download served.bin.*instead of the official 0000"):
        download_file(remote, target)
    assert list(target.parent.iterdir()) == []


def test_import_copies_a_checked_npz_into_the_data_folder(tmp_path):
    source = tmp_path / "elsewhere" / "anything.npz"
    source.parent.mkdir()
    arrays = write_npz(source, shape=(28, 28, 1))
    written = import_files("mnist", source, tmp_path / "data")
    assert written == [tmp_path / "data" / "mnist.npz"]
    assert np.array_equal(load_dataset("mnist", tmp_path / "data").x_test, arrays["x_test"])


def test_import_of_official_files_checks_their_md5(tmp_path):
    write_mnist_files(tmp_path / "download")
    with pytest.raises(DatasetError, match="md5 checksum"):
        import_files("mnist", tmp_path / "download", tmp_path / "data")
    assert not (tmp_path / "data" / "mnist").exists()
    written = import_files("mnist", tmp_path / "download", tmp_path / "data", verify=False)
    assert len(written) == 4 and load_dataset("mnist", tmp_path / "data", verify=False).x_train.shape[0] == 20


def test_import_from_a_folder_without_dataset_files_says_what_it_wanted(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="expected one of cifar10.npz, cifar-10-python.tar.gz"):
        import_files("cifar10", tmp_path / "empty", tmp_path / "data")
