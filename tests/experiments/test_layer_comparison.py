"""The layer comparison end to end: every registered family trained, certified and costed."""

import json

import pytest

from robustlab.cli import main
from robustlab.config import ConfigError
from robustlab.experiments import get_experiment, report_experiment, run_experiment
from robustlab.experiments.launch import Execution
from robustlab.experiments.layer_comparison import COSTS_FILE
from robustlab.nn.lipschitz import LAYER_FAMILIES
from robustlab.runs.store import RunStore

QUIET = Execution(progress=False)


@pytest.mark.slow
def test_smoke_scale_compares_every_registered_family(tmp_path, capsys):
    runs = tmp_path / "runs"
    command = ["experiment", "layer_comparison", "--scale", "smoke", "--runs-root", str(runs), "--quiet", "--json"]
    assert main(command) == 0
    report = json.loads(capsys.readouterr().out)
    assert [row["family"] for row in report["rows"]] == LAYER_FAMILIES.names()
    for row in report["rows"]:
        assert row["architecture"] == f"lipconvnet-{row['family']}"
        assert row["parameters"] > 0 and row["peak memory (MB)"] is not None and row["s/epoch"] > 0
        assert all(row[column] is not None for column in ("accuracy", "CRA 36/255", "CRA 108/255", "CRA 1"))
    assert report["runs_missing"] == 0 and len(report["figures"]) == 1
    costs = json.loads((runs / COSTS_FILE).read_text())
    assert len(costs) == len(LAYER_FAMILIES)  # measured once per model, kept for later calls


def test_a_time_budget_becomes_epochs_from_the_measured_cost(tmp_path):
    experiment = get_experiment("layer_comparison")
    store = RunStore(tmp_path)
    setup = experiment.setup("smoke", families=("aol", "bro"), epochs=0.0, budget_s=0.5)
    rows, report = run_experiment(setup, store, out_dir=tmp_path / "r", execution=QUIET)
    costs = {json.loads(key)[0]: cost for key, cost in json.loads((tmp_path / COSTS_FILE).read_text()).items()}
    assert sorted(costs) == ["lipconvnet-aol", "lipconvnet-bro"]
    for row in rows:
        expected = 0.5 / costs[row.config.model.name]["seconds_per_epoch"]
        assert row.config.train.epochs == pytest.approx(expected, rel=1e-2)  # 3 significant digits
    again = report_experiment(setup, store, out_dir=tmp_path / "again")  # the kept costs find the same runs
    assert again.runs_missing == 0 and again.rows == report.rows


def test_budget_and_family_mistakes_are_explained():
    experiment = get_experiment("layer_comparison")
    with pytest.raises(ConfigError, match="exactly one budget"):
        experiment.sweeps(experiment.setup("smoke", budget_s=60.0))
    with pytest.raises(KeyError, match="known layer families: aoc, aol, bcop"):
        experiment.sweeps(experiment.setup("smoke", families=("nope",)))
