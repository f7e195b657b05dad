import json

import numpy as np
import pytest
import torch

from results_helpers import OLD_RESULTS_JSON, run_results
from robustlab.config import ExperimentConfig, load_config
from robustlab.runs.result_files import RunResults
from robustlab.runs.store import Run, RunStore


def test_sqlite_index_queries_by_config_values(tmp_path):
    store = RunStore(tmp_path / "runs")
    for lr, n in [(0.1, 48), (0.1, 97), (0.3, 48)]:
        config = load_config(None, [f"optim.lr={lr}", f"data.subset_size={n}", "name=sweep"])
        run = store.create(config)
        store.record(run, config, status="done", results=run_results(accuracy=n / 100))
    assert len(store.query(**{"optim.lr": 0.1})) == 2
    rows = store.query(**{"optim.lr": 0.1, "data.subset_size": 97})
    assert len(rows) == 1 and rows[0].results == run_results(accuracy=0.97)
    assert rows[0].config["data"]["subset_size"] == 97
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
    run.save_results(run_results(accuracy=0.5))
    reopened = Run(tmp_path / "r1")
    assert reopened.load_config() == config
    assert [m["loss"] for m in reopened.metrics()] == [2.0]
    assert reopened.load_results() == run_results(accuracy=0.5)


def test_not_a_run_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a robustlab run directory"):
        Run(tmp_path).load_config()


def test_results_with_numpy_arrays_tensors_and_paths_are_written_as_json(tmp_path):
    run = Run(tmp_path / "r")
    path = run.write_json(
        "extra.json",
        {
            "counts": np.bincount([0, 1, 1]),
            "mean": np.float32(0.5),
            "radii": torch.tensor([0.25, 1.0]),
            "where": tmp_path,
        },
    )
    assert json.loads(path.read_text()) == {"counts": [1, 2], "mean": 0.5, "radii": [0.25, 1.0], "where": str(tmp_path)}


def test_results_json_of_an_older_robustlab_loads_and_keeps_its_keys(tmp_path):
    run = Run(tmp_path / "old")
    run.results_path.parent.mkdir()
    run.results_path.write_text(json.dumps(OLD_RESULTS_JSON, indent=2))  # no architecture_version yet
    results = run.load_results()
    assert results.architecture_version == 1  # what files without it hold
    assert (results.accuracy, results.n_eval, results.eval_split, results.train_cra) == (0.9, 360, "test", 0.6)
    assert results.cra_at(36 / 255) == 0.75 and results.cra_at(72 / 255) is None
    # written again, the file has the keys it had, in the same order, plus the version
    assert results.to_dict() == {**OLD_RESULTS_JSON, "architecture_version": 1}
    assert list(results.to_dict()) == [*OLD_RESULTS_JSON, "architecture_version"]


def test_results_of_a_standard_network_leave_out_what_it_does_not_measure():
    data = {**OLD_RESULTS_JSON, "cra": [], "lipschitz_constant": None, "architecture_version": 2}
    del data["train_cra"]
    results = RunResults.from_dict({**data, "some_future_key": 1})  # unknown keys are ignored
    assert results.train_cra is None and results.cra == [] and results.cra_at(36 / 255) is None
    assert results.to_dict() == data
