import numpy as np
import pytest
import torch

from robustlab.config import ExperimentConfig, load_config
from robustlab.runs.store import Run, RunStore


def test_sqlite_index_queries_by_config_values(tmp_path):
    store = RunStore(tmp_path / "runs")
    for lr, n in [(0.1, 48), (0.1, 97), (0.3, 48)]:
        config = load_config(None, [f"optim.lr={lr}", f"data.subset_size={n}", "name=sweep"])
        run = store.create(config)
        store.record(run, config, status="done", results={"cra": n / 100})
    assert len(store.query(**{"optim.lr": 0.1})) == 2
    rows = store.query(**{"optim.lr": 0.1, "data.subset_size": 97})
    assert len(rows) == 1 and rows[0]["results"] == {"cra": 0.97}
    assert rows[0]["config"]["data"]["subset_size"] == 97
    assert store.query(**{"data.subset_size": None}) == []
    # a second store object on the same folder sees the same index
    assert len(RunStore(tmp_path / "runs").query(status="done")) == 3


def test_run_directory_files(tmp_path):
    store = RunStore(tmp_path)
    config = ExperimentConfig(name="x")
    run = store.create(config, tmp_path / "r1")
    run.log_metrics({"epoch": 1, "loss": 2.0})
    with open(run.metrics_path, "a") as handle:
        handle.write('{"torn": ')  # what a kill mid-line leaves
    run.save_results({"accuracy": 0.5})
    reopened = Run(tmp_path / "r1")
    assert reopened.load_config() == config
    assert [m["loss"] for m in reopened.metrics()] == [2.0]
    assert reopened.load_results() == {"accuracy": 0.5}


def test_not_a_run_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a robustlab run directory"):
        Run(tmp_path).load_config()


def test_results_with_numpy_arrays_tensors_and_paths_are_written_as_json(tmp_path):
    run = Run(tmp_path / "r")
    run.save_results(
        {
            "counts": np.bincount([0, 1, 1]),
            "mean": np.float32(0.5),
            "radii": torch.tensor([0.25, 1.0]),
            "where": tmp_path,
        }
    )
    assert run.load_results() == {"counts": [1, 2], "mean": 0.5, "radii": [0.25, 1.0], "where": str(tmp_path)}
