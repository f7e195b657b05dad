"""The run index: relative run ids (a root can move), reindex, merge, damaged indexes, claims.

Runs here are real folders written through the store, without training; real SQLite files."""

import json
import shutil
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from results_helpers import run_results
from robustlab.cli import main
from robustlab.config import load_config
from robustlab.runs import claims
from robustlab.runs.store import DamagedIndexError, RunStore, point_key


def _finished(store: RunStore, *overrides: str, accuracy: float = 0.5):
    config = load_config(None, ["name=s", *overrides])
    run = store.create(config)
    results = run_results(accuracy=accuracy)
    run.save_results(results)
    store.record(run, config, "done", results)
    return run


def _unfinished(store: RunStore, *overrides: str):
    config = load_config(None, ["name=s", *overrides])
    run = store.create(config)
    run.checkpoint_path.write_bytes(b"checkpoint")
    store.record(run, config, "failed", error="ValueError: boom")
    return run


def _listing(root) -> list[tuple[str, str]]:
    return [(row.id, row.status) for row in RunStore(root).query()]  # oldest first


def test_runs_are_keyed_by_their_folder_so_a_copied_root_still_finds_them(tmp_path):
    store = RunStore(tmp_path / "a")
    run = _finished(store, "seed=1")
    assert store.query()[0].id == run.path.name
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")
    (row,) = RunStore(tmp_path / "b").query()
    assert row.path == str(tmp_path / "b" / run.path.name) and row.results.accuracy == 0.5


def test_reindex_rebuilds_a_deleted_and_a_garbage_index(tmp_path, capsys):
    store = RunStore(tmp_path)
    _finished(store, "seed=1")
    _unfinished(store, "seed=2")
    before = _listing(tmp_path)
    assert [status for _, status in before] == ["done", "failed"]
    store.index_path.unlink()
    _, unreadable = RunStore.reindex(tmp_path)
    assert unreadable == [] and [s for _, s in _listing(tmp_path)] == ["done", "interrupted"]
    assert [i for i, _ in _listing(tmp_path)] == [i for i, _ in before]
    with claims.alive(store):  # a sound index keeps the claims of a running sweep
        assert claims.claim(store, "point", "s", time.time())
        RunStore.reindex(tmp_path)
        assert claims.claims(store, ["point"])["point"]["state"] == "running"
    store.index_path.write_bytes(b"\x00garbage, not SQLite" * 100)
    with pytest.raises(DamagedIndexError, match="robustlab runs reindex"):
        RunStore(tmp_path)
    assert main(["runs", "reindex", "--runs-root", str(tmp_path)]) == 0
    assert "2 runs indexed" in capsys.readouterr().out
    assert [i for i, _ in _listing(tmp_path)] == [i for i, _ in before]
    found = RunStore(tmp_path).find_done(load_config(None, ["seed=1"]))
    assert found is not None and found.results.accuracy == 0.5


def _damage(index, how: str) -> None:
    if how == "garbage":
        index.write_bytes(b"this is not a database\n" * 50)
    else:
        with sqlite3.connect(index) as db:
            db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, label TEXT)")
            db.execute("INSERT INTO runs VALUES (1, 'someone else')")


@pytest.mark.parametrize("how", ["garbage", "wrong schema"])
@pytest.mark.parametrize(
    "command",
    [
        ["runs", "list"],
        ["report", "data_scaling", "--scale", "smoke"],
        ["train", "--set", "train.epochs=0.1", "--quiet"],
    ],
)
def test_a_damaged_index_is_one_line_naming_the_file_and_the_fix(tmp_path, capsys, how, command):
    index = tmp_path / "index.sqlite"
    _damage(index, how)
    assert main([*command, "--runs-root", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert str(index) in line and "robustlab runs reindex" in line
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # nothing was trained


def test_an_index_of_robustlab_0_1_is_upgraded_from_the_run_folders(tmp_path):
    run = _finished(RunStore(tmp_path / "new"), "seed=3")
    (tmp_path / "old").mkdir()
    shutil.move(run.path, tmp_path / "old" / run.path.name)
    with sqlite3.connect(tmp_path / "old" / "index.sqlite") as db:  # the layout of robustlab 0.1
        db.execute(
            "CREATE TABLE runs (run_id TEXT PRIMARY KEY, path TEXT NOT NULL, name TEXT, status TEXT NOT NULL, "
            "created REAL NOT NULL, updated REAL NOT NULL, config TEXT NOT NULL, results TEXT)"
        )
        where = "/elsewhere/" + run.path.name  # absolute, from before the root was copied here
        db.execute("INSERT INTO runs VALUES (?, ?, 's', 'done', 0, 0, '{}', NULL)", (where, where))
    assert _listing(tmp_path / "old") == [(run.path.name, "done")]


def test_merge_copies_new_runs_and_leaves_out_finished_points(tmp_path, capsys):
    a, b = RunStore(tmp_path / "a"), RunStore(tmp_path / "b")
    _finished(a, "seed=1")
    _finished(b, "seed=1")  # the same point, finished on the other node too
    only_b = _finished(b, "seed=2")
    interrupted_b = _unfinished(b, "seed=3")
    _unfinished(b, "seed=1")  # superseded by a's finished run
    assert main(["runs", "merge", str(tmp_path / "a"), str(tmp_path / "b"), "--json"]) == 0
    outcome = json.loads(capsys.readouterr().out)[str(tmp_path / "b")]
    assert sorted(outcome["copied"]) == sorted([only_b.path.name, interrupted_b.path.name])
    assert len(outcome["duplicate"]) == 2
    assert (tmp_path / "a" / only_b.path.name / "results.json").exists()
    assert len(a.query(status="done")) == 2 and len(a.query()) == 3
    assert a.find_unfinished(load_config(None, ["seed=3"])).id == interrupted_b.path.name
    again = a.merge(tmp_path / "b")  # merging twice copies nothing
    assert again["copied"] == [] and len(again["present"]) == 2


def test_runs_list_filters_and_json(tmp_path, capsys):
    store = RunStore(tmp_path)
    _finished(store, "seed=1", "data.subset_size=48")
    _finished(store, "seed=2", "data.subset_size=97")
    _unfinished(store, "seed=3")
    root = ["--runs-root", str(tmp_path)]
    assert main(["runs", "list", *root, "--where", "data.subset_size=97", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["config"]["seed"] == 2 and row["status"] == "done"
    assert main(["runs", "list", *root, "--status", "failed"]) == 0
    listing = capsys.readouterr().out
    assert "ValueError: boom" in listing and listing.count("\n") == 3  # header, rule, one run


def test_a_run_whose_process_is_gone_reads_interrupted(tmp_path):
    store = RunStore(tmp_path)
    config = load_config(None, ["name=s"])
    with claims.alive(store):
        run = store.create(config)
        store.record(run, config, "running")
        assert store.query()[0].status == "running"
    assert store.query()[0].status == "interrupted"  # this process stopped beating for it
    assert store.query(status="interrupted")[0].id == run.path.name


def _worker_row(store: RunStore, host: str, heartbeat: float) -> None:
    with store.transaction() as db:
        db.execute("INSERT OR REPLACE INTO workers VALUES ('them', ?, 1, ?)", (host, heartbeat))
        db.execute("UPDATE claims SET worker = 'them'")


def test_a_claim_is_exclusive_until_its_process_stops_beating(tmp_path):
    store = RunStore(tmp_path)
    key, since = point_key(load_config()), time.time()
    with claims.alive(store):
        assert claims.claim(store, key, "s", since)
        _worker_row(store, "another-host", time.time())  # held by a live process on another node
        assert not claims.claim(store, key, "s", since)
        _worker_row(store, "another-host", time.time() - claims.LEASE_S - 1)  # its node went silent
        assert claims.claims(store, [key])[key]["state"] == "interrupted"
        assert claims.claim(store, key, "s", since)
        _worker_row(store, socket.gethostname(), time.time())  # this host, but no process 1 of ours runs it
        with sqlite3.connect(store.index_path) as db:
            db.execute("UPDATE workers SET pid = ?", (2**22 + 17,))  # above Linux's largest pid: gone
        assert claims.claim(store, key, "s", since)
        claims.settle(store, key, claims.FAILED, "ValueError: x")
        assert not claims.claim(store, key, "s", since)  # failed during this sweep: not again
        assert claims.claim(store, key, "s", time.time() + 1)  # the next sweep retries it
        assert claims.claims(store, [key])[key]["attempts"] == 4


@pytest.mark.parametrize("flags", [[], ["--status", "failed"], ["--status", "done", "--json"], ["--where", "seed=1"]])
def test_listing_a_store_imports_no_torch(tmp_path, flags):
    store = RunStore(tmp_path)
    _finished(store, "seed=1")
    _unfinished(store, "seed=2")
    code = (
        "import sys; from robustlab.cli import main; "
        f"code = main(['runs', 'list', '--runs-root', {str(tmp_path)!r}, *{flags!r}]); "
        "print('torch' in sys.modules, 'numpy' in sys.modules, code, file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr.strip() == "False False 0"
    assert "s-" in done.stdout  # each listing has one of the two runs


def test_a_sweep_finds_runs_indexed_without_point_keys(tmp_path):
    store = RunStore(tmp_path)
    run = _finished(store, "seed=3", accuracy=0.75)
    with sqlite3.connect(store.index_path) as db:  # as an index written by a robustlab without the cache
        db.execute("DROP TABLE points")
    store = RunStore(tmp_path)
    found = store.find_done_many([load_config(None, ["seed=3"]), load_config(None, ["seed=4"])])
    assert found[0] is not None and found[0].id == run.path.name and found[0].results.accuracy == 0.75
    assert found[1] is None


@pytest.mark.parametrize("runs", [0, 1, 3])
def test_runs_list_json_is_streamed_as_the_same_json_array(tmp_path, capsys, runs):
    store = RunStore(tmp_path)
    for seed in range(runs):
        _finished(store, f"seed={seed}")
    assert main(["runs", "list", "--runs-root", str(tmp_path), "--json"]) == 0
    out = capsys.readouterr().out
    assert out == json.dumps([row.to_dict() for row in store.query()], indent=2) + "\n"
