"""A local worker killed with SIGKILL: the sweep's summary names it and the point another
worker took over, and multiprocessing warns of no leaked semaphore. Real processes."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("sweep_child.py")


def _kill_a_worker_with_a_checkpoint(root: Path, sweep: subprocess.Popen) -> int:
    deadline = time.time() + 120
    while time.time() < deadline and sweep.poll() is None:
        if (root / "index.sqlite").exists():
            try:
                with sqlite3.connect(root / "index.sqlite") as db:
                    held = db.execute(
                        "SELECT worker, run_id FROM claims WHERE state = 'running' AND run_id IS NOT NULL"
                    ).fetchall()
            except sqlite3.Error:  # the index is being created
                held = []
            for worker, run_id in held:
                if (root / run_id / "checkpoint.pt").exists() and not (root / run_id / "results.json").exists():
                    pid = int(worker.split(":")[1])
                    os.kill(pid, signal.SIGKILL)
                    return pid
        time.sleep(0.05)
    raise AssertionError("no worker was caught in the middle of a run")


@pytest.mark.slow
def test_a_killed_worker_is_named_with_the_point_taken_over_and_no_semaphore_leaks(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(CHILD.parent)}
    command = [sys.executable, str(CHILD), str(tmp_path), "2", "10"]
    sweep = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    pid = _kill_a_worker_with_a_checkpoint(tmp_path, sweep)
    out, err = sweep.communicate(timeout=300)
    assert json.loads(out) == ["trained"] * 3
    assert "leaked semaphore" not in err and "Traceback" not in err, err
    (line,) = [line for line in err.splitlines() if f"(pid {pid})" in line]
    found = re.fullmatch(
        rf"robustlab: robustlab-worker-\d \(pid {pid}\) was killed by SIGKILL while it trained "
        r"tiny subset_size=\d+, which robustlab-worker-\d \(pid (\d+)\) took over \(done\)",
        line,
    )
    assert found and int(found[1]) != pid, line
