"""`robustlab data` through the real command line entry point."""

import json

import numpy as np

from robustlab.cli import main


def write_cifar_npz(path, n_train=20, n_test=10):
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
        y_train=np.arange(n_train) % 10,
        x_test=rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
        y_test=np.arange(n_test) % 10,
    )


def run_json(capsys, *argv):
    assert main(["data", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_info_table_shows_which_files_are_present(tmp_path, capsys):
    write_cifar_npz(tmp_path / "cifar10.npz")
    table = run_json(capsys, "info", "--data-dir", str(tmp_path))
    status = {row["name"]: row["status"] for row in table["datasets"]}
    assert status["cifar10"] == "npz" and status["mnist"] == "missing" and status["digits"] == "built in"
    assert table["data_dir"] == str(tmp_path)
    assert main(["data", "info", "--data-dir", str(tmp_path)]) == 0
    assert "cifar10" in capsys.readouterr().out


def test_info_of_one_dataset(tmp_path, capsys):
    write_cifar_npz(tmp_path / "cifar10.npz")
    info = run_json(capsys, "info", "cifar10", "--data-dir", str(tmp_path))
    assert (info["train_size"], info["test_size"], info["input_shape"]) == (20, 10, [3, 32, 32])
    assert info["num_classes"] == 10 and info["train_class_counts"] == [2] * 10
    x = np.load(tmp_path / "cifar10.npz")["x_train"]
    assert np.allclose(info["channel_means"], x.reshape(-1, 3).mean(0) / 255, atol=1e-4)
    assert main(["data", "info", "digits"]) == 0
    assert "1,437 / 360" in capsys.readouterr().out


def test_prepare_imports_a_file_into_the_data_folder(tmp_path, capsys):
    write_cifar_npz(tmp_path / "download.npz")
    result = run_json(
        capsys, "prepare", "cifar10", "--from", str(tmp_path / "download.npz"), "--data-dir", str(tmp_path / "data")
    )
    assert result["written"] == [str(tmp_path / "data" / "cifar10.npz")] and result["train_size"] == 20
    assert run_json(capsys, "info", "cifar10", "--data-dir", str(tmp_path / "data"))["test_size"] == 10


def test_missing_data_is_one_line_on_stderr(tmp_path, capsys):
    assert main(["data", "prepare", "cifar100", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "robustlab data prepare cifar100 --download" in err
    assert main(["data", "info", "nope"]) == 2
    assert "known datasets: cifar10, cifar100, digits" in capsys.readouterr().err
