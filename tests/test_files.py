"""Atomic writes and safe checkpoint loads (robustlab.files)."""

import json
import multiprocessing as mp
import os
import signal
import time

import pytest
import torch

from robustlab.files import atomic_open, atomic_torch_save, safe_torch_load


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
