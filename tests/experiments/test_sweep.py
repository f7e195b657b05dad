"""Sweep mechanics against a real run store (no training: runs are recorded by hand)."""

import json
import sqlite3

import pytest

from results_helpers import OLD_RESULTS_JSON, run_results
from robustlab.config import ConfigError, load_config
from robustlab.experiments.sweep import (
    Sweep,
    collect,
    expand_grid,
    result_key,
    run_sweep,
    with_overrides,
)
from robustlab.runs.store import RunStore


def test_dict_grid_is_the_cartesian_product_and_lists_stay():
    grid = expand_grid({"data.subset_size": [48, 97], "seed": [0, 1]})
    assert grid == [
        {"data.subset_size": 48, "seed": 0},
        {"data.subset_size": 48, "seed": 1},
        {"data.subset_size": 97, "seed": 0},
        {"data.subset_size": 97, "seed": 1},
    ]
    explicit = [{"model.name": "a", "optim.lr": 1.0}, {"model.name": "b"}]
    assert expand_grid(explicit) == explicit


def test_overrides_are_checked_like_set_options():
    config = with_overrides(
        load_config(),
        {
            "optim.lr": 0.3,
            "data.subset_size": 97,
            "eval.eps": [0.5],
            "model.kwargs": {"width": 8},
            "data.pca_components": None,
        },
    )
    assert (config.optim.lr, config.data.subset_size, config.eval.eps) == (0.3, 97, [0.5])
    assert config.model.kwargs == {"width": 8}
    with pytest.raises(ConfigError, match="unknown config key optim.lrr"):
        with_overrides(load_config(), {"optim.lrr": 0.3})
    with pytest.raises(ConfigError, match="expected an integer"):
        with_overrides(load_config(), {"data.subset_size": "many"})


def test_points_carry_the_sweep_name_and_the_grid_values():
    sweep = Sweep("scaling", load_config(), {"data.subset_size": [48, 97]})
    points = sweep.points()
    assert [p.config.data.subset_size for p in points] == [48, 97]
    assert all(p.config.name == "scaling" for p in points)
    assert Sweep("single", load_config()).points()[0].overrides == {}


def test_execution_settings_do_not_change_which_run_matches():
    config = load_config()
    elsewhere = with_overrides(
        config,
        {
            "train.device": "cuda:1",
            "name": "other",
            "data.data_dir": "/x",
            "train.cuda_graph": True,
            "train.channels_last": True,
            "train.compile": True,
        },
    )
    assert result_key(config) == result_key(elsewhere)
    assert result_key(config) != result_key(with_overrides(config, {"optim.lr": 0.5}))
    assert result_key(config) != result_key(with_overrides(config, {"train.precision": "bfloat16"}))


def test_collect_finds_done_runs_and_only_done_ones(tmp_path):
    store = RunStore(tmp_path / "runs")
    sweep = Sweep("s", load_config(), {"data.subset_size": [48, 97, 195]})
    first, second, _ = sweep.points()
    done = store.create(first.config)
    done.save_results(run_results(accuracy=0.5))
    store.record(done, first.config, "done", run_results(accuracy=0.5))
    started = store.create(second.config)  # created, never finished, no checkpoint
    rows = collect(sweep, store)
    assert [r.status for r in rows] == ["done", "train", "train"]
    assert rows[0].results == run_results(accuracy=0.5) and rows[0].run == str(done.path.resolve())
    # a checkpoint left by a killed run makes the point resumable
    started.checkpoint_path.write_bytes(b"")
    assert [r.status for r in collect(sweep, store)] == ["done", "resume", "train"]
    # dry run: reports the plan, trains nothing
    assert [r.status for r in run_sweep(sweep, store, dry_run=True)] == ["done", "resume", "train"]
    assert len(store.query()) == 2


def test_a_run_done_on_another_device_counts_as_done(tmp_path):
    store = RunStore(tmp_path)
    config = with_overrides(load_config(), {"train.device": "cuda"})
    run = store.create(config)
    store.record(run, config, "done", run_results())
    assert store.find_done(with_overrides(config, {"train.device": "cpu"})) is not None
    assert store.find_done(with_overrides(config, {"seed": 1})) is None


def _rewrite_stored_config(store: RunStore, stored: dict) -> None:
    with sqlite3.connect(store.index_path) as db:
        db.execute("UPDATE runs SET config = ?", (json.dumps(stored),))


def test_a_run_stored_before_a_config_key_existed_takes_its_default(tmp_path):
    store = RunStore(tmp_path)
    config = load_config()
    run = store.create(config)
    store.record(run, config, "done", run_results())
    older = config.to_dict()
    del older["data"]["split"]  # as a robustlab from before data.split stored it
    _rewrite_stored_config(store, older)
    assert store.find_done(config) is not None
    assert store.find_done(with_overrides(config, {"data.split": "reference"})) is None
    older["data"]["retired_option"] = 1  # a key this version does not know: not comparable
    _rewrite_stored_config(store, older)
    assert store.find_done(config) is None


def test_a_run_of_an_older_architecture_version_is_trained_again(tmp_path):
    store = RunStore(tmp_path)
    config = load_config()
    run = store.create(config)
    store.record(run, config, "done", run_results())
    with sqlite3.connect(store.index_path) as db:  # results from before architecture versions
        db.execute("UPDATE runs SET results = ?", (json.dumps(OLD_RESULTS_JSON),))
    assert store.find_done(config) is None
    store.record(run, config, "done", run_results(accuracy=0.5))
    assert store.find_done(config) is not None
