"""Atomic writes and safe checkpoint loads (robustlab.files)."""

import json
import multiprocessing as mp
import os
import signal
import stat
import time

import pytest
import torch

from robustlab.files import (
    STALE_TEMPORARY_S,
    atomic_open,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    remove_stale_temporaries,
    safe_torch_load,
)


def _write_forever(path):
    """Child process: writes a huge file through atomic_open, and is killed mid-write."""
    with atomic_open(path, "w") as handle:
        while True:
            handle.write("new content " * 10000)


def test_killed_write_leaves_old_file_intact(tmp_path):
    target = tmp_path / "results.json"
    target.write_text('{"old": true}')
    process = mp.get_context("spawn").Process(target=_write_forever, args=(target,))
    process.start()
    deadline = time.time() + 30
    while not any(p.name.startswith(".results.json") for p in tmp_path.iterdir()):
        assert time.time() < deadline, "writer never started"
        time.sleep(0.05)
    time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    assert json.loads(target.read_text()) == {"old": True}


def test_failed_write_removes_temporary_file(tmp_path):
    target = tmp_path / "a.txt"
    with pytest.raises(RuntimeError), atomic_open(target, "w") as handle:
        handle.write("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_round_trip_and_corrupt_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_torch_save({"w": torch.arange(3.0), "epoch": 2}, path)
    loaded = safe_torch_load(path)
    assert loaded["epoch"] == 2 and torch.equal(loaded["w"], torch.arange(3.0))
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ValueError, match="cannot load checkpoint"):
        safe_torch_load(path)


class _NotPlainData:
    pass


def test_checkpoint_with_arbitrary_objects_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"obj": _NotPlainData()}, path)
    with pytest.raises(ValueError, match="cannot load checkpoint"):
        safe_torch_load(path)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_mode_a_plain_open_gives(tmp_path, umask):
    previous = os.umask(umask)
    try:
        with open(tmp_path / "plain.txt", "w") as handle:
            handle.write("x")
        atomic_write_text(tmp_path / "atomic.txt", "x")
        atomic_torch_save({"w": torch.zeros(2)}, tmp_path / "atomic.pt")
    finally:
        os.umask(previous)
    expected = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert expected == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "atomic.txt").stat().st_mode) == expected
    assert stat.S_IMODE((tmp_path / "atomic.pt").stat().st_mode) == expected


def test_an_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("{}")
    target.chmod(0o640)
    atomic_write_json(target, {"new": 1})
    assert stat.S_IMODE(target.stat().st_mode) == 0o640 and json.loads(target.read_text()) == {"new": 1}


def _killed_writer_leaves_temporary(target) -> list:
    process = mp.get_context("spawn").Process(target=_write_forever, args=(target,))
    process.start()
    deadline = time.time() + 30
    while not [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]:
        assert time.time() < deadline, "writer never started"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    return [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}.")]


def test_temporaries_of_killed_writers_are_removed_and_live_ones_stay(tmp_path):
    left = _killed_writer_leaves_temporary(tmp_path / "checkpoint.pt")
    assert len(left) == 1 and left[0].name.endswith(".tmp")
    with atomic_open(tmp_path / "model.pt", "wb") as handle:  # this process writes it right now
        handle.write(b"weights")
        (mine,) = [p for p in tmp_path.iterdir() if p.name.startswith(".model.pt.")]
        assert remove_stale_temporaries(tmp_path) == left
        assert mine.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    old = tmp_path / ".checkpoint.pt.k2v_9x1a.tmp"  # mkstemp's name (older robustlab): the age decides
    old.write_bytes(b"")
    assert remove_stale_temporaries(tmp_path) == []
    os.utime(old, (time.time() - 2 * STALE_TEMPORARY_S,) * 2)
    assert remove_stale_temporaries(tmp_path) == [old]
