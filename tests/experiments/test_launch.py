"""Executing sweeps with real processes and a real run store: local workers, a worker killed
mid-run, two sweeps at once, submitit's local executor (the code path of SLURM), failures."""

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sweep_child import SIZES, tiny_sweep

from robustlab.cli import main
from robustlab.config import ConfigError
from robustlab.experiments import Execution, SubmititLauncher, get_experiment, slurm
from robustlab.experiments.launch import execute, job_minutes
from robustlab.experiments.sweep import Sweep, run_sweep
from robustlab.runs import claims
from robustlab.runs.store import Run, RunStore, point_key, result_key

CHILD = Path(__file__).with_name("sweep_child.py")
QUIET = Execution(progress=False)


def _start_sweep(root: Path, workers: int, epochs: float) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(CHILD.parent)}
    command = [sys.executable, str(CHILD), str(root), str(workers), str(epochs)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True)


def _point_claims(root: Path, epochs: float) -> list[dict]:
    keys = [point_key(point.config) for point in tiny_sweep(epochs).points()]
    held = claims.claims(RunStore(root), keys)
    return [held[key] for key in keys]


def _assert_trained_once(root: Path) -> None:
    """One finished run per point, and no other run folder."""
    runs = RunStore(root).query()
    assert sorted(run.config["data"]["subset_size"] for run in runs) == list(SIZES)
    assert all(run.status == "done" for run in runs)
    assert len([path for path in root.iterdir() if (path / "config.yaml").exists()]) == len(SIZES)


def _pause_a_worker_mid_run(root: Path, finished) -> tuple[str, int, str]:
    """Stop a worker whose run has a checkpoint and no results yet (before ``finished()``);
    returns (claim key, pid, run id)."""
    deadline = time.time() + 120
    while time.time() < deadline and not finished():
        if (root / "index.sqlite").exists():
            with RunStore(root).connect() as db:
                held = db.execute(
                    "SELECT key, worker, run_id FROM claims WHERE state = 'running' AND run_id IS NOT NULL"
                )
                for key, worker, run_id in held.fetchall():
                    pid = int(worker.split(":")[1])
                    os.kill(pid, signal.SIGSTOP)
                    if (root / run_id / "checkpoint.pt").exists() and not (root / run_id / "results.json").exists():
                        return key, pid, run_id
                    os.kill(pid, signal.SIGCONT)  # it finished meanwhile: try again
        time.sleep(0.02)
    raise AssertionError("no worker was caught in the middle of a run")


def _assert_resumed(root: Path, key: str, run_id: str) -> None:
    claim = claims.claims(RunStore(root), [key])[key]
    assert claim["attempts"] == 2 and claim["run_id"] == run_id  # taken over, in the same folder
    epochs = [m["epoch"] for m in Run(root / run_id).metrics() if "final" not in m]
    assert epochs == list(range(1, len(epochs) + 1))  # from the checkpoint: no epoch twice, none skipped


@pytest.mark.slow
def test_two_local_workers_train_each_point_once_and_resume_a_killed_workers_point(tmp_path):
    with ThreadPoolExecutor(1) as pool:  # this process watches the workers, as `robustlab experiment` does
        sweep = pool.submit(run_sweep, tiny_sweep(10), RunStore(tmp_path), Execution(progress=False, workers=2))
        key, pid, run_id = _pause_a_worker_mid_run(tmp_path, sweep.done)
        os.kill(pid, signal.SIGKILL)
        rows = sweep.result(timeout=300)
    assert [row.status for row in rows] == ["trained"] * len(SIZES)
    assert [row.results.n_train for row in rows] == list(SIZES)
    _assert_trained_once(tmp_path)
    _assert_resumed(tmp_path, key, run_id)
    held = _point_claims(tmp_path, 10)
    assert sorted(claim["attempts"] for claim in held) == [1] * (len(SIZES) - 1) + [2]
    assert all(int(claim["worker"].split(":")[1]) not in (os.getpid(), pid) for claim in held)  # the other worker


@pytest.mark.slow
def test_two_sweeps_started_together_train_every_point_once(tmp_path):
    sweeps = [_start_sweep(tmp_path, workers=1, epochs=3) for _ in range(2)]
    outputs = [sweep.communicate(timeout=300)[0] for sweep in sweeps]
    assert [json.loads(output) for output in outputs] == [["trained"] * len(SIZES)] * 2  # each waited for the other
    _assert_trained_once(tmp_path)
    assert [claim["attempts"] for claim in _point_claims(tmp_path, 3)] == [1] * len(SIZES)


@pytest.mark.slow
def test_submitit_jobs_train_a_sweep_and_a_job_at_its_time_limit_is_requeued(tmp_path):
    pytest.importorskip("submitit")
    root = tmp_path / "runs"
    launcher = SubmititLauncher(cluster="local", cpus_per_job=1, time_min=10, folder=str(tmp_path / "jobs"))
    execution = Execution(workers=2, gpus_per_job=0, launcher=launcher, progress=False)
    jobs = execute([point.config for point in tiny_sweep(10).points()], RunStore(root), execution)
    assert len(jobs) == 2  # an array of two jobs, each a worker
    key, pid, run_id = _pause_a_worker_mid_run(root, lambda: all(job.done() for job in jobs))
    os.kill(pid, signal.SIGUSR2)  # what SLURM (through submitit) sends before a job's time limit
    os.kill(pid, signal.SIGCONT)
    assert sum(job.result() for job in jobs) == len(SIZES)  # points trained (or finished after the requeue)
    _assert_trained_once(root)
    _assert_resumed(root, key, run_id)
    rows = run_sweep(tiny_sweep(10), RunStore(root), execution)
    assert [row.status for row in rows] == ["done"] * len(SIZES)  # nothing left to submit


@pytest.mark.slow
def test_a_job_with_two_devices_trains_its_run_data_parallel(tmp_path):
    config = tiny_sweep(0.5).points()[0].config  # two gloo processes stand in for two GPUs
    execute([config], RunStore(tmp_path), Execution(device="cpu", gpus_per_job=2, progress=False))
    done = RunStore(tmp_path).find_done(config)
    assert done.results.world_size == 2 and done.results.n_train == SIZES[0]
    key = point_key(config)
    assert claims.claims(RunStore(tmp_path), [key])[key]["state"] == "done"


def test_a_failing_point_is_recorded_and_the_others_train(tmp_path):
    store = RunStore(tmp_path)
    good = {"model.kwargs": {"width": 16, "depth": 1}}
    sweep = Sweep("mixed", tiny_sweep(0.5).base, [{**good, "data.subset_size": 48}, {"model.kwargs": {"bogus": 1}}])
    rows = run_sweep(sweep, store, QUIET)
    assert [row.status for row in rows] == ["trained", "failed"]
    assert "bogus" in rows[1].error and "\n" not in rows[1].error
    assert len(store.query()) == 1  # the point that failed at its start left no run behind
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [Path(rows[0].run).name]
    again = run_sweep(sweep, store, QUIET)  # a later sweep tries the failed point again
    assert [row.status for row in again] == ["done", "failed"]
    key = point_key(sweep.points()[1].config)
    assert claims.claims(store, [key])[key]["attempts"] == 2


def test_experiment_status_shows_each_point(tmp_path, capsys):
    root = ["--runs-root", str(tmp_path), "--scale", "smoke", "--param", "sizes=48,97", "--param", "epochs=0.5"]
    recipe = ["--param", "recipes=tiny-convnet", "--set", "model.kwargs={width: 4}"]
    assert main(["experiment", "data_scaling", *root, *recipe, "--param", "sizes=48", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["experiment", "data_scaling", *root, *recipe, "--status", "--json"]) == 0
    states = json.loads(capsys.readouterr().out)
    assert [(s["data.subset_size"], s["state"]) for s in states] == [(48, "done"), (97, "queued")]
    assert states[0]["attempts"] == 1 and states[0]["run"].startswith("data_scaling-digits-tiny-convnet")


def test_the_full_set_run_of_data_and_compute_scaling_is_one_run():
    data = get_experiment("data_scaling")
    compute = get_experiment("compute_scaling")
    full = data.sweeps(data.setup("smoke", sizes=(48, 10**6), epochs=3, recipes=("tiny-lipmlp",)))[0].points()[-1]
    fixed = compute.sweeps(compute.setup("smoke", epochs=(3,), recipes=("tiny-lipmlp",)))[0].points()[0]
    assert full.config.data.subset_size is None  # the whole training split is no subset
    assert result_key(full.config) == result_key(fixed.config)
    assert point_key(full.config) == point_key(fixed.config)


def test_execution_options_are_checked(tmp_path, capsys):
    assert job_minutes("90") == 90 and job_minutes("4:00:00") == 240 and job_minutes("1-00:30:00") == 1470
    with pytest.raises(ConfigError, match="HH:MM:SS"):
        job_minutes("4h")
    settings = tmp_path / "cluster.yaml"
    settings.write_text("partition: gpu\nsbatch: {account: lab}\ntime_minutes: 60\n")
    command = ["experiment", "data_scaling", "--scale", "smoke", "--runs-root", str(tmp_path)]
    assert main([*command, "--launcher", "submitit", "--launcher-config", str(settings)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert str(settings) in line and "time_minutes" in line and "time_min" in line
    assert main([*command, "--partition", "gpu"]) == 2  # a SLURM flag without the SLURM launcher
    assert "--launcher submitit" in capsys.readouterr().err


def test_an_execution_is_one_checked_value():
    with pytest.raises(ConfigError, match="workers must be at least 1"):
        Execution(workers=0)
    with pytest.raises(ConfigError, match="0 only for SLURM jobs"):
        Execution(gpus_per_job=0)  # no GPU is a SLURM request; on this machine say --device cpu
    with pytest.raises(TypeError, match="gpus"):
        Execution(gpus=2)  # a misspelt setting is an error, not a failed run
    with pytest.raises(
        ConfigError,
        match=r"unknown config key execution.worker \(did you mean 'workers'\?\); valid keys of execution: device",
    ):
        Execution.from_dict({"worker": 4})
    execution = Execution.from_dict({"workers": 4, "gpus_per_job": 0, "launcher": {"partition": "gpu"}})
    assert execution.launcher == SubmititLauncher(partition="gpu") and execution.workers == 4
    assert not execution.waits and Execution().waits
    with pytest.raises(ConfigError, match="cpus_per_job"):
        SubmititLauncher(cpus_per_job=0)


def test_reproduce_takes_the_execution_flags_and_refuses_in_one_line(tmp_path, capsys, monkeypatch):
    pytest.importorskip("submitit")
    command = ["reproduce", "--scale", "smoke", "--runs-root", str(tmp_path), "--out", str(tmp_path / "r")]
    assert main([*command, "--partition", "gpu"]) == 2  # a SLURM flag without the SLURM launcher
    assert "--launcher submitit" in capsys.readouterr().err
    settings = tmp_path / "cluster.yaml"
    settings.write_text("workers: 2\ngpus_per_job: 0\ncpus_per_job: 1\nqueue: long\n")
    assert main([*command, "--launcher", "submitit", "--launcher-config", str(settings)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "unknown key 'queue'" in line and "cpus_per_job" in line and "workers" in line
    settings.write_text("workers: 2\ngpus_per_job: 0\ncpus_per_job: 1\n")
    monkeypatch.setenv("PATH", str(tmp_path))  # a machine without SLURM
    assert main([*command, "--launcher", "submitit", "--launcher-config", str(settings)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()  # before any part runs
    assert "sbatch is not on this machine's PATH" in line


def test_sinfo_gres_reads_as_a_gpu_count():
    assert slurm._gpu_count("gpu:a100:8(S:0-1),shard:4") == 8
    assert slurm._gpu_count("gpu:2,gpu:tesla:1") == 3
    assert slurm._gpu_count("(null)") == 0 and slurm._gpu_count("mps:100") == 0
