"""A bad day for the run store: writers killed mid-write, damaged metrics, a missing root, a
locked index, a full disk. Real run folders, real processes, real SQLite files."""

import json
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import suppress

import pytest

from robustlab.cli import main
from robustlab.config import load_config
from robustlab.files import DiskFullError, atomic_open, free_bytes
from robustlab.runs import claims as claims_module
from robustlab.runs import store as store_module
from robustlab.runs.store import Run, RunStore
from robustlab.train import loop as loop_module
from robustlab.train.loop import train

TINY = ["model.kwargs={width: 16, depth: 1}", "train.batch_size=128", "train.epochs=2", "train.device=cpu"]


def tiny_config(*overrides: str):
    return load_config("digits", [*TINY, *overrides])


def _write_forever(path):
    """Child process: writes a checkpoint through atomic_open, and is killed mid-write."""
    with atomic_open(path, "wb") as handle:
        while True:
            handle.write(b"\0" * 65536)


def _leave_killed_checkpoint_write(run: Run):
    process = mp.get_context("spawn").Process(target=_write_forever, args=(run.checkpoint_path,))
    process.start()
    deadline = time.time() + 30
    while not list(run.path.glob(".checkpoint.pt.*.tmp")):
        assert time.time() < deadline, "writer never started"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    assert len(list(run.path.glob(".checkpoint.pt.*.tmp"))) == 1


class _Stop(Exception):
    pass


def _stop_after_first_epoch(epoch, run):
    if epoch == 0:
        raise _Stop


@pytest.mark.slow
def test_resume_and_reindex_remove_checkpoint_temporaries_of_killed_writers(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(_Stop):
        train(tiny_config(), tmp_path / "r", store=store, progress=False, on_epoch_end=_stop_after_first_epoch)
    run = Run(tmp_path / "r")
    _leave_killed_checkpoint_write(run)
    train(None, run.path, resume=True, progress=False)
    assert run.results_path.exists() and list(run.path.glob(".*.tmp")) == []

    _leave_killed_checkpoint_write(run)
    assert main(["runs", "reindex", "--runs-root", str(tmp_path)]) == 0
    assert list(run.path.glob(".*.tmp")) == []


@pytest.mark.parametrize(
    "command",
    [
        ["runs", "list"],
        ["runs", "list", "--status", "failed"],
        ["runs", "reindex"],
        ["experiment", "compute_scaling", "--scale", "smoke", "--status"],
        ["report", "compute_scaling", "--scale", "smoke"],
    ],
)
def test_reading_commands_refuse_a_runs_root_that_does_not_exist(tmp_path, capsys, command):
    missing = tmp_path / "no" / "such" / "dir"
    assert main([*command, "--runs-root", str(missing)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"runs root {missing} does not exist" in error
    assert not (tmp_path / "no").exists()


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A run stopped after 3 of 4 epochs: 3 metrics records, a checkpoint at the third."""
    root = tmp_path_factory.mktemp("stopped")

    def stop_after_third(epoch, run):
        if epoch == 2:
            raise _Stop

    with pytest.raises(_Stop):
        train(tiny_config("train.epochs=4"), root / "run", progress=False, on_epoch_end=stop_after_third)
    return root / "run"


def _copy_of(run_dir, tmp_path) -> Run:
    shutil.copytree(run_dir, tmp_path / "run")
    return Run(tmp_path / "run")


def _resume(run: Run, capsys) -> tuple[int, str]:
    code = main(["train", "--resume", str(run.path), "--quiet"])
    return code, capsys.readouterr().err.strip()


@pytest.mark.slow
def test_resume_refuses_a_damaged_metrics_line_that_history_follows(stopped_run, tmp_path, capsys):
    run = _copy_of(stopped_run, tmp_path)
    lines = run.metrics_path.read_text().splitlines(keepends=True)
    assert len(lines) == 3
    damaged = lines[0] + '{"epoch": 2, "st\x00ep' + "\n" + lines[2]
    run.metrics_path.write_text(damaged)
    code, error = _resume(run, capsys)
    assert code == 2 and len(error.splitlines()) == 1
    assert f"{run.metrics_path} line 2 is not a metrics record" in error and "1 records follow it" in error
    assert run.metrics_path.read_text() == damaged and not run.results_path.exists()


@pytest.mark.slow
def test_resume_refuses_metrics_that_are_not_utf8(stopped_run, tmp_path, capsys):
    run = _copy_of(stopped_run, tmp_path)
    damaged = run.metrics_path.read_bytes().replace(b'"epoch"', b'"ep\xff\xfeh"', 1)
    run.metrics_path.write_bytes(damaged)
    code, error = _resume(run, capsys)
    assert code == 2 and f"{run.metrics_path} line 1 is not UTF-8 text" in error and len(error.splitlines()) == 1
    assert run.metrics_path.read_bytes() == damaged


@pytest.mark.slow
def test_resume_sets_a_damaged_tail_aside_and_keeps_the_history(stopped_run, tmp_path, capsys):
    run = _copy_of(stopped_run, tmp_path)
    lines = run.metrics_path.read_text().splitlines(keepends=True)
    run.metrics_path.write_text("".join(lines) + '{"epoch": 4, "step": 3')  # a torn last write
    code, error = _resume(run, capsys)
    aside = run.path / "metrics.jsonl.damaged-1"
    assert code == 0 and f"moved them to {aside}" in error
    assert aside.read_text() == '{"epoch": 4, "step": 3'
    kept = run.metrics_path.read_text().splitlines(keepends=True)
    assert kept[:3] == lines and json.loads(kept[-1])["final"] is True


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real tmpfs of 1 MB (root only: elsewhere these tests are skipped)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def _fill(mount, leave: int):
    """Write ballast until only ``leave`` bytes are free on ``mount``."""
    free = free_bytes(mount)
    with open(mount / "ballast", "ab") as handle, suppress(OSError):
        handle.write(b"\0" * max(free - leave, 0))
    return mount / "ballast"


@pytest.mark.slow
def test_a_disk_that_fills_during_the_second_checkpoint_loses_nothing(small_tmpfs):
    first = {}

    def fill_after_first_checkpoint(epoch, run):
        if epoch == 0:
            first["bytes"] = run.checkpoint_path.read_bytes()
            _fill(small_tmpfs, leave=len(first["bytes"]) // 2)

    config = tiny_config("model.kwargs={width: 64, depth: 2}", "train.epochs=3")
    with pytest.raises(DiskFullError) as raised:
        train(config, small_tmpfs / "run", progress=False, on_epoch_end=fill_after_first_checkpoint)
    run = Run(small_tmpfs / "run")
    message = str(raised.value)
    assert message.startswith(f"no space left on {small_tmpfs} writing {run.checkpoint_path} (")
    assert f"({len(first['bytes']) / 1e6:.3g} MB needed)" in message and "\n" not in message
    assert run.checkpoint_path.read_bytes() == first["bytes"]  # the earlier checkpoint is intact
    assert [p.name for p in run.path.iterdir() if p.name.endswith(".tmp")] == []
    (row,) = RunStore(small_tmpfs).query()
    assert row.status in ("failed", "interrupted")  # marked with the disk's error, or untouched
    assert row.status == "interrupted" or row.error == f"DiskFullError: {message}"
    (small_tmpfs / "ballast").unlink()  # space again: the run resumes and finishes
    train(None, run.path, resume=True, progress=False)
    assert RunStore(small_tmpfs).query()[0].status == "done"


def test_a_full_disk_at_the_start_of_a_run_is_one_line_and_leaves_no_folder(small_tmpfs, capsys):
    index = RunStore(small_tmpfs).index_path  # the index exists; then the disk fills up
    ballast = _fill(small_tmpfs, leave=0)
    code = main(["train", *[f"--set={o}" for o in TINY], "--runs-root", str(small_tmpfs), "--quiet"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1
    # the index is the first write to fail; its size is what a write of it may need
    needed = f"(about {index.stat().st_size / 1e6:.3g} MB needed: the size of the index, which a write may rewrite)"
    assert error.startswith(f"robustlab train: error: no space left on {small_tmpfs} writing {index} {needed}")
    assert "not a usable robustlab index" not in error
    assert sorted(p.name for p in small_tmpfs.iterdir() if p.is_dir()) == []  # no orphan run folder
    ballast.unlink()
    assert RunStore(small_tmpfs).query() == []  # the index is sound


def test_reindex_on_a_full_disk_keeps_the_index_and_the_claims_of_running_sweeps(small_tmpfs, capsys):
    store = RunStore(small_tmpfs)
    keys = sorted(f"point-{i}" for i in range(50))
    with claims_module.alive(store):
        assert all(claims_module.claim(store, key, "a-sweep", time.time()) for key in keys)
    Run(small_tmpfs / "a-run").save_config(tiny_config())
    before = store.index_path.read_bytes()
    # Full to the last byte: SQLite cannot even make the index's -shm file ("disk I/O error").
    ballast = _fill(small_tmpfs, leave=0)
    with open(ballast, "ab", buffering=0) as handle, suppress(OSError):
        while True:
            handle.write(b"\0" * 512)
    code = main(["runs", "reindex", "--runs-root", str(small_tmpfs)])
    error = capsys.readouterr().err.strip()
    assert code == 2 and len(error.splitlines()) == 1
    needed = f"(about {len(before) / 1e6:.3g} MB needed: the size of the index, which a write may rewrite)"
    assert error.startswith(
        f"robustlab runs: error: no space left on {small_tmpfs} writing {store.index_path} {needed}"
    )
    assert store.index_path.read_bytes() == before  # the old index, untouched
    ballast.unlink()
    assert sorted(claims_module.claims(store, keys)) == keys  # the running sweep's claims are all there
    assert main(["runs", "reindex", "--runs-root", str(small_tmpfs)]) == 0  # space again: the rebuild works
    assert sorted(claims_module.claims(store, keys)) == keys and len(store.query()) == 1


LOCKER = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def _lock_index_at_last_epoch(store: RunStore, seconds: float, lockers: list):
    def lock(epoch, run):
        if epoch == 1:  # the last of two: the run's final index entry comes next
            locker = subprocess.Popen(
                [sys.executable, "-c", LOCKER, str(store.index_path), str(seconds)], stdout=subprocess.PIPE, text=True
            )
            lockers.append(locker)
            assert locker.stdout.readline().strip() == "locked"

    return lock


@pytest.fixture
def impatient_index(monkeypatch):
    """Seconds instead of minutes of waiting for a locked index (the same code path)."""
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.2)
    monkeypatch.setattr(loop_module, "INDEX_RETRY_S", (0.3, 0.6))


@pytest.mark.slow
def test_a_locked_index_never_fails_a_finished_run(tmp_path, capsys, impatient_index):
    store, lockers = RunStore(tmp_path), []
    try:
        run = train(
            tiny_config(), store=store, progress=False, on_epoch_end=_lock_index_at_last_epoch(store, 60, lockers)
        )
    finally:
        for locker in lockers:
            locker.kill()
            locker.wait()
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith(f"robustlab: warning: {run.path} is done but its index entry")
    assert f"robustlab runs reindex --runs-root {tmp_path}" in warning[0]
    # the index still says what it said before the lock (running, while this process lives)
    assert run.results_path.exists() and store.query()[0].status == "running"
    assert main(["runs", "reindex", "--runs-root", str(tmp_path)]) == 0
    (row,) = store.query()
    assert row.status == "done" and row.results == run.load_results()


@pytest.mark.slow
def test_a_briefly_locked_index_is_written_after_a_retry(tmp_path, capsys, impatient_index):
    store, lockers = RunStore(tmp_path), []
    run = train(tiny_config(), store=store, progress=False, on_epoch_end=_lock_index_at_last_epoch(store, 0.5, lockers))
    lockers[0].wait()
    assert "warning" not in capsys.readouterr().err
    (row,) = store.query()
    assert row.status == "done" and row.results == run.load_results()
