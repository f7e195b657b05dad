"""Sweeps and the whole paper on a real SLURM cluster through submitit: a smoke sweep and the
smoke reproduction to their reports, a driver started twice, a requeue, a cancel, a killed job
step, and the one-line errors for what a cluster refuses.

They need a running cluster (``benchmarks/slurm_local.sh start`` installs and starts a one-node
one with munge; ``.ci/run`` does) and submitit; without them they skip, saying why."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweep_child import SIZES, tiny_sweep
from test_launch import _assert_resumed, _pause_a_worker_mid_run

from robustlab.experiments import Execution, SubmititLauncher, slurm
from robustlab.experiments.launch import execute, point_states, wait_for_jobs
from robustlab.files import safe_torch_load
from robustlab.runs import claims
from robustlab.runs.store import Run, RunStore, point_key
from robustlab.train.loop import train

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SETTINGS = "cpus_per_job: 1\nmem_gb: 1\ngpus_per_job: 0\ntime_min: 20\n"  # what the one-node test cluster gives
TINY = ["--param", "sizes=48,97", "--param", "recipes=tiny-lipmlp", "--param", "epochs=1"]


@pytest.fixture(scope="module")
def cluster():
    """A SLURM cluster that answers, and submitit; else skip with the reason."""
    pytest.importorskip("submitit", reason="the cluster tests submit through submitit: pip install submitit")
    why = os.environ.get("ROBUSTLAB_SLURM_SKIP")  # .ci/run's reason when slurm_local.sh could not start one
    if shutil.which("sinfo") is None:
        pytest.skip(why or "no SLURM here: benchmarks/slurm_local.sh start installs and starts a one-node cluster")
    states = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30).stdout.split()
    if not any(state.rstrip("*~#") in ("idle", "mix", "alloc") for state in states):
        pytest.skip(why or f"the SLURM cluster has no node up (sinfo: {states}): benchmarks/slurm_local.sh start")


def _launcher(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(SETTINGS)
    return path


def _robustlab(*argv: str) -> subprocess.CompletedProcess:
    """The command line in its own process, as a user runs it (stderr kept apart)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "robustlab.cli", *argv]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def _jobs_execution(tmp_path: Path, workers: int | None = None) -> Execution:
    launcher = SubmititLauncher(cpus_per_job=1, mem_gb=1, time_min=20, folder=str(tmp_path / "jobs"))
    return Execution(workers=workers, gpus_per_job=0, launcher=launcher, progress=False)


def _array(root: Path) -> str:
    (record,) = slurm.submitted(RunStore(root))
    return record["array"]


def test_a_smoke_sweep_runs_to_its_report_on_slurm_and_is_not_submitted_twice(cluster, tmp_path):
    runs = tmp_path / "runs"
    command = ["experiment", "data_scaling", "--scale", "smoke", *TINY, "--runs-root", str(runs), "--device", "cpu"]
    jobs = [*command, "--quiet", "--launcher", "submitit", "--launcher-config", str(_launcher(tmp_path))]
    done = _robustlab(*jobs, "--wait")
    assert done.returncode == 0, done.stderr
    assert "submitted 2 jobs" in done.stderr and "sacct" not in done.stderr  # accounting is off: no warnings
    assert (runs / "reports" / "data_scaling-digits-smoke" / "table.json").exists()
    status = _robustlab(*command, "--status", "--json")
    assert [row["state"] for row in json.loads(status.stdout)] == ["done", "done"]
    again = _robustlab(*jobs, "--wait")  # every run is done: nothing is submitted
    assert again.returncode == 0 and "submitted" not in again.stderr
    assert len(slurm.submitted(RunStore(runs))) == 1


def test_reproduce_smoke_on_slurm_lr_search_first_a_second_driver_submits_nothing_then_the_report(cluster, tmp_path):
    runs, out = tmp_path / "runs", tmp_path / "report"
    where = ["--scale", "smoke", "--runs-root", str(runs), "--device", "cpu", "--quiet"]
    jobs = ["--launcher", "submitit", "--launcher-config", str(_launcher(tmp_path))]
    planned = json.loads(_robustlab("reproduce", *where, "--parts", "lr-search", "--dry-run", "--json").stdout)
    searches = sum(job["section"] == "lr-search" for job in planned["jobs"])  # every recipe a later part trains
    # a driver without --wait: the lr search's jobs first, waited for, then figure-1's submitted
    first = _robustlab("reproduce", *where, *jobs, "--parts", "lr-search,figure-1", "--out", str(out), "--json")
    parts = {part["part"]: part for part in json.loads(first.stdout)["parts"]}
    assert searches >= 3 and parts["lr-search"]["runs done"] == searches and not parts["lr-search"]["error"]
    assert "runs submitted" in parts["figure-1"]["error"]
    arrays = len(slurm.submitted(RunStore(runs)))
    assert arrays == 2
    second = _robustlab("reproduce", *where, *jobs, "--parts", "figure-1", "--out", str(out))  # started again
    assert "not submitting them again" in second.stderr or "submitted" not in second.stderr  # (or all done)
    assert len(slurm.submitted(RunStore(runs))) == arrays
    status = json.loads(_robustlab("reproduce", "--status", *where, "--parts", "lr-search,figure-1", "--json").stdout)
    assert [row["section"] for row in status] == ["lr-search", "figure-1"]
    assert status[0]["done"] == searches and status[1]["runs"] == 6 and status[0]["hours spent"] > 0
    assert sum(status[1][state] for state in ("queued", "pending", "running", "done")) == 6
    # the whole smoke reproduction, waiting for every job: every section to the report
    started = time.time()
    full = _robustlab("reproduce", *where, *jobs, "--wait", "--out", str(out), "--json")
    print(f"reproduce --scale smoke --launcher submitit --wait: {time.time() - started:.0f} s")
    assert full.returncode == 0, full.stderr
    summary = json.loads(full.stdout)
    assert not any(part["error"] for part in summary["parts"]) and "sacct" not in full.stderr
    assert (out / "report.html").exists() and (out / "report.md").exists()
    status = json.loads(_robustlab("reproduce", "--status", *where, "--json").stdout)
    assert all(row["done"] == row["runs"] for row in status)


def test_a_requeued_job_resumes_its_run_from_the_checkpoint_to_the_uninterrupted_weights(cluster, tmp_path):
    root = tmp_path / "runs"
    sweep = tiny_sweep(10)
    config = sweep.points()[0].config
    execute([config], RunStore(root), _jobs_execution(tmp_path))
    key, pid, run_id = _pause_a_worker_mid_run(root, lambda: RunStore(root).find_done(config) is not None)
    job = _slurm_job_of(pid)
    subprocess.run(["scontrol", "requeue", job], check=True)  # what preemption does
    os.kill(pid, signal.SIGCONT)
    _release_requeued(job)
    wait_for_jobs(RunStore(root), progress=False)
    _assert_resumed(root, key, run_id)
    alone = train(config, run_dir=tmp_path / "alone", progress=False)  # the same run without the requeue
    resumed = safe_torch_load(Run(root / run_id).model_path)["model"]
    uninterrupted = safe_torch_load(alone.model_path)["model"]
    assert resumed.keys() == uninterrupted.keys()
    assert all(bool((resumed[name] == uninterrupted[name]).all()) for name in resumed)


def _release_requeued(job: str) -> None:
    """SLURM holds a requeued job back for two minutes (BeginTime); let it start now."""
    deadline = time.time() + 60
    while time.time() < deadline:
        state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout
        if state.strip() == "PENDING":
            subprocess.run(["scontrol", "update", f"jobid={job}", "starttime=now"], check=True)
            return
        time.sleep(0.2)
    raise AssertionError(f"job {job} was not requeued")


def test_a_cancelled_job_is_recorded_as_failed_and_the_others_finish(cluster, tmp_path):
    root = tmp_path / "runs"
    configs = [point.config for point in tiny_sweep(10).points()]
    execute(configs, RunStore(root), _jobs_execution(tmp_path))  # three jobs, one per run
    store = RunStore(root)
    key, pid, _ = _pause_a_worker_mid_run(root, lambda: all(store.find_done(c) for c in configs))
    job = _slurm_job_of(pid)
    subprocess.run(["scancel", job], check=True)
    os.kill(pid, signal.SIGCONT)
    wait_for_jobs(store, progress=False)
    states = {point_key(config): state for config, state in zip(configs, point_states(configs, store))}
    assert (
        states.pop(key)["state"] == "failed"
        and f"SLURM job {job} was cancelled" in claims.claims(store, [key])[key]["error"]
    )
    assert [state["state"] for state in states.values()] == ["done", "done"]


def _slurm_job_of(pid: int) -> str:
    """The SLURM job (ARRAY_TASK of an array) that a worker process on this machine runs in."""
    environ = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
    if "SLURM_ARRAY_JOB_ID" in environ:
        return f"{environ['SLURM_ARRAY_JOB_ID']}_{environ['SLURM_ARRAY_TASK_ID']}"
    return environ["SLURM_JOB_ID"]  # an array of one job is submitted as a plain job


def test_a_killed_job_step_leaves_its_point_claimable_and_a_later_sweep_resumes_it(cluster, tmp_path):
    root = tmp_path / "runs"
    config = tiny_sweep(10).points()[1].config
    execute([config], RunStore(root), _jobs_execution(tmp_path))
    key, pid, run_id = _pause_a_worker_mid_run(root, lambda: RunStore(root).find_done(config) is not None)
    os.kill(pid, signal.SIGKILL)  # the node's job step dies: no SIGTERM, no cleanup
    wait_for_jobs(RunStore(root), progress=False)
    (state,) = point_states([config], RunStore(root))
    assert state["state"] == "interrupted"  # its worker stopped beating: free for the next worker
    execute([config], RunStore(root), Execution(progress=False))  # a later sweep, here on this machine
    _assert_resumed(root, key, run_id)
    assert RunStore(root).find_done(config).results.n_train == SIZES[1]


def test_what_the_cluster_refuses_is_one_line(cluster, tmp_path):
    runs = tmp_path / "runs"
    command = ["experiment", "data_scaling", "--scale", "smoke", *TINY, "--runs-root", str(runs), "--device", "cpu"]
    jobs = [*command, "--quiet", "--launcher", "submitit"]
    config = _launcher(tmp_path)
    refusals = {
        "GPU(s) each": [],  # the default, a GPU per job, on a cluster without GPUs
        "no partition 'nope'": ["--launcher-config", str(config), "--partition", "nope"],
        "CPUs each": ["--gpus-per-job", "0"],  # the default 8 CPUs on a smaller node
        "GB each": ["--launcher-config", str(_oversized(tmp_path))],
        # what only sbatch knows: its own words, in one line
        "SLURM refused the jobs: sbatch: error: Invalid generic resource": [
            "--launcher-config",
            str(config),
            "--sbatch",
            "gres=gpu:1",
        ],
    }
    for words, extra in refusals.items():
        refused = _robustlab(*jobs, *extra)
        assert refused.returncode == 2 and words in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
    no_slurm = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # a machine without sbatch
    refused = subprocess.run(
        [sys.executable, "-m", "robustlab.cli", *jobs, "--launcher-config", str(config)],
        capture_output=True,
        text=True,
        env=no_slurm,
    )
    assert refused.returncode == 2 and "sbatch is not on this machine's PATH" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not slurm.submitted(RunStore(runs))  # nothing reached the queue


def test_a_job_pending_for_a_reason_that_cannot_resolve_is_reported_while_waiting(cluster, tmp_path):
    runs = tmp_path / "runs"
    command = ["experiment", "data_scaling", "--scale", "smoke", *TINY, "--runs-root", str(runs), "--device", "cpu"]
    # more CPUs than the node has, asked for behind the check's back: SLURM accepts the job, which pends
    argv = [*command, "--quiet", "--launcher", "submitit", "--launcher-config", str(_launcher(tmp_path))]
    argv += ["--sbatch", "cpus_per_task=64", "--workers", "1", "--wait"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen(
        [sys.executable, "-m", "robustlab.cli", *argv], stderr=subprocess.PIPE, text=True, env=env
    )
    lines = []
    try:
        for line in driver.stderr:
            lines.append(line)
            if "PENDING (" in line:
                break
        assert "which waiting does not cure" in lines[-1] and "scancel" in lines[-1]
        subprocess.run(["scancel", _array(runs)], check=True)  # what the line tells the user to do
        driver.wait(timeout=60)
    finally:
        driver.kill()
    assert not any("sacct" in line or "Traceback" in line for line in lines)
    statuses = json.loads(_robustlab(*command, "--status", "--json").stdout)
    assert [row["state"] for row in statuses] == ["queued", "queued"]


def _oversized(tmp_path: Path) -> Path:
    path = tmp_path / "oversized.yaml"
    path.write_text(SETTINGS.replace("mem_gb: 1", "mem_gb: 100000"))
    return path
