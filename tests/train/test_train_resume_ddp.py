"""Real process boundaries: a training run killed with SIGKILL and resumed, and a 2-process DDP run."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_helpers import tiny_config, tiny_overrides

from robustlab.files import safe_torch_load
from robustlab.runs.store import Run, RunStore
from robustlab.train.loop import train

# Trains in a child process; after the first epoch's checkpoint it announces itself and
# stalls in what stands for a long second epoch, where the parent kills it.
KILLED_CHILD = """
import sys, time
from pathlib import Path
from robustlab.config import load_config
from robustlab.train.loop import train

def stall(epoch, run):
    if epoch == 0:
        Path(sys.argv[2]).touch()
        time.sleep(120)

train(load_config("digits", sys.argv[3:]), run_dir=sys.argv[1], progress=False, on_epoch_end=stall)
"""

RESUME_SETTINGS = ("train.epochs=3", "augment.crop_padding=1", "train.eval_every=1")


def _weights(run: Run) -> dict:
    return safe_torch_load(run.model_path)["model"]


def _child_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}


@pytest.mark.slow
def test_killed_and_resumed_run_ends_with_exactly_the_uninterrupted_weights(tmp_path):
    run_dir, marker = tmp_path / "killed", tmp_path / "epoch1-done"
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, str(run_dir), str(marker), *tiny_overrides(*RESUME_SETTINGS)],
        env=_child_env(),
    )
    try:
        deadline = time.time() + 60
        while not marker.exists() and child.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the child never finished its first epoch"
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    store = RunStore(tmp_path)
    assert store.query()[0].status == "interrupted"  # its process is gone: not "running" forever
    assert safe_torch_load(Run(run_dir).checkpoint_path)["state"]["epoch"] == 1

    resumed = train(None, run_dir, store=store, resume=True, progress=False)
    uninterrupted = train(tiny_config(*RESUME_SETTINGS), tmp_path / "whole", progress=False)
    a, b = _weights(resumed), _weights(uninterrupted)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.load_results().cra == uninterrupted.load_results().cra
    assert [m["epoch"] for m in resumed.metrics()] == [1, 2, 3, 3]  # no epoch logged twice
    assert store.query(status="done")[0].path == str(run_dir.resolve())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_ddp_matches_single_process(tmp_path):
    # what torchrun does for its workers: the same command with RANK / WORLD_SIZE set
    overrides = tiny_overrides("train.epochs=1", "augment.crop_padding=1", "train.batch_size=100")
    command = [
        sys.executable,
        "-m",
        "robustlab.cli",
        "train",
        "--config",
        "digits",
        "--quiet",
        "--run-dir",
        str(tmp_path / "ddp"),
        *[arg for o in overrides for arg in ("--set", o)],
    ]
    port = _free_port()
    workers = [
        subprocess.Popen(
            command,
            env={
                **_child_env(),
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [worker.communicate(timeout=120) for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    assert "accuracy" in outputs[0][0] and outputs[1][0] == ""  # only rank 0 reports

    single = train(
        tiny_config("train.epochs=1", "augment.crop_padding=1", "train.batch_size=100"),
        tmp_path / "single",
        progress=False,
    )
    distributed_run = Run(tmp_path / "ddp")
    assert distributed_run.load_results().world_size == 2
    a, b = _weights(distributed_run), _weights(single)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert distributed_run.load_results().steps == single.load_results().steps == 15
    assert distributed_run.load_results().accuracy == single.load_results().accuracy > 0.2  # it learned
