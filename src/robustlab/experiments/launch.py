"""Executing sweeps: workers that claim points from the run store until none is left.

Every point of a sweep is one config, and an independent job. However a sweep is executed,
each worker runs the same loop (``work``): claim a point in the store's index
(``robustlab.runs.claims``), train it (resuming its run if one was interrupted), settle the
claim, take the next. So two workers, or two sweeps started at once on one store, never
train the same point; a worker that dies leaves a claim that goes stale, and another worker
takes the point over and resumes its run from the checkpoint; a point whose training raises
is recorded as failed with its error, and the worker goes on with the others.

Where the workers run (``execute``):

- ``workers=1``: in this process;
- ``workers=K``: K processes on this machine, one per GPU (``CUDA_VISIBLE_DEVICES``), or on
  the CPU with the cores split between them;
- ``launcher=SubmititLauncher(...)``: a SLURM job array through submitit, each job a
  worker; a job that reaches its time limit is requeued and its run resumes from the last
  checkpoint. Results land in the one run store, which every node must see.

With ``gpus_per_job`` > 1 a worker trains each run data-parallel on its GPUs, through the
torchrun path of ``robustlab train`` (``robustlab.train.distributed``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.multiprocessing

from robustlab.config import ConfigError, ExperimentConfig
from robustlab.errors import RobustlabError, one_line
from robustlab.progress import Progress
from robustlab.runs import claims
from robustlab.runs.store import IN_PROGRESS, RunStore, StoredRun, point_key
from robustlab.train.loop import train

POLL_S = 1.0  # how often a waiting worker, or the process watching workers, looks at the store


class ClaimLostError(RobustlabError):
    """Another worker took this point over (this one had stopped beating for a lease)."""


@dataclass
class WorkOrder:
    """A worker's task: train these configs into the store at ``root``. Plain data, so that
    it travels to worker processes and SLURM jobs."""

    root: str
    configs: list[ExperimentConfig]
    since: float = field(default_factory=time.time)  # the sweep's start (robustlab.runs.claims)
    device: str | None = None  # overrides train.device of new runs
    gpus_per_job: int = 1  # > 1: each run trains data-parallel under torchrun
    threads: int | None = None  # torch's CPU threads in this worker
    wait: bool = True  # wait for points other workers hold (a SLURM job leaves them to their holder)
    progress: bool = True
    labels: dict[str, str] = field(default_factory=dict)  # point key -> what progress lines call it

    def label(self, config: ExperimentConfig) -> str:
        return self.labels.get(point_key(config), config.name)


@dataclass
class SubmititLauncher:
    """SLURM jobs through submitit (``pip install 'robustlab[cluster]'``). The fields are also
    the keys of a ``--launcher-config`` YAML file."""

    cluster: Literal["slurm", "local"] = "slurm"  # local: submitit's LocalExecutor, the same jobs on this machine
    partition: str | None = None
    time_min: int = 24 * 60  # each job's time limit in minutes (SLURM's --time)
    gpus_per_job: int = 1  # > 1: each run trains data-parallel on the job's GPUs
    cpus_per_job: int = 8
    mem_gb: float | None = None
    array_size: int = 0  # jobs in the array, each a worker; 0: one per run to train
    sbatch: dict[str, Any] = field(default_factory=dict)  # more sbatch options, e.g. {account: lab, qos: high}
    max_requeues: int = 3  # how often a job that reached its time limit is requeued
    folder: str | None = None  # submitit's job files and logs (default: <runs root>/submitit)
    wait: bool = False  # wait for the jobs to end (the experiment then writes its report)


# ---------------------------------------------------------------------------------------
# One worker


def work(order: WorkOrder) -> int:
    """Claim and train points until every point is done or failed; returns how many this
    worker trained."""
    if order.threads:
        torch.set_num_threads(order.threads)
    store = RunStore(order.root)
    pending = [(point_key(config), config) for config in order.configs if store.find_done(config) is None]
    trained = 0
    with claims.alive(store), Progress(len(pending), "runs", "run", order.progress) as bar:
        while pending:
            held = claims.claims(store, [key for key, _ in pending])
            pending = [(key, config) for key, config in pending if not claims.settled_since(held.get(key), order.since)]
            free = [(key, config) for key, config in pending if held.get(key, {}).get("state") != claims.RUNNING]
            claimed = next(((key, c) for key, c in free if claims.claim(store, key, c.name, order.since)), None)
            if claimed is not None:
                if _train_claimed(store, *claimed, order):
                    trained += 1
                    bar.update()
                    bar.line(f"{order.label(claimed[1])}: {_outcome(store.find_done(claimed[1]))}")
            elif pending and order.wait:
                time.sleep(POLL_S)
            else:
                break
    return trained


def _train_claimed(store: RunStore, key: str, config: ExperimentConfig, order: WorkOrder) -> bool:
    """Train a claimed point and settle its claim; whether this worker trained it."""
    try:
        if store.find_done(config) is not None:  # finished meanwhile, by a sweep that did not claim it
            claims.settle(store, key, claims.DONE)
            return False
        if any(row.status in IN_PROGRESS for row in store.find(config)):  # a live process trains it unclaimed
            claims.settle(store, key, claims.RELEASED)
            time.sleep(POLL_S)
            return False
        _train_point(store, key, config, order)
    except ClaimLostError:
        return False
    except Exception as error:
        print(f"robustlab: run {config.name} failed: {one_line(error)}", file=sys.stderr)
        claims.settle(store, key, claims.FAILED, one_line(error))
        return False
    except BaseException:  # interrupted (Ctrl-C, a job's time limit): the next worker resumes the run
        claims.settle(store, key, claims.RELEASED)
        raise
    claims.settle(store, key, claims.DONE)
    return True


def _outcome(row: StoredRun | None) -> str:
    """A finished run's accuracy and first CRA, and its folder: its progress line."""
    if row is None or row.results is None:
        return "finished"
    text = f"accuracy {row.results.accuracy:.3f}"
    if row.results.cra and row.results.lipschitz_constant is not None:
        first = row.results.cra[0]
        text += f", CRA {first.label} {first.cra:.3f}"
    return f"{text} ({row.id})"


def _train_point(store: RunStore, key: str, config: ExperimentConfig, order: WorkOrder) -> None:
    unfinished = store.find_unfinished(config)
    if order.gpus_per_job > 1:
        _train_with_torchrun(store, config, unfinished, order)
        return

    def keep_claim(epoch, run) -> None:
        if not claims.hold(store, key, store.run_id(run.path)):
            raise ClaimLostError(f"another worker took over {run.path}")

    if unfinished:  # continues with the config saved in the run folder (its device too)
        train(None, unfinished.path, store, resume=True, progress=order.progress, on_epoch_end=keep_claim)
    else:
        train(_on_device(config, order.device), store=store, progress=order.progress, on_epoch_end=keep_claim)


def _train_with_torchrun(store: RunStore, config: ExperimentConfig, unfinished: StoredRun | None, order: WorkOrder):
    """One run, data-parallel over this worker's GPUs: ``robustlab train`` under torchrun."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={order.gpus_per_job}"]
    command += ["-m", "robustlab.cli", "train", "--runs-root", str(store.root), "--quiet"]
    with tempfile.TemporaryDirectory() as folder:
        if unfinished:
            command += ["--resume", unfinished.path]
        else:
            path = Path(folder) / "config.yaml"
            path.write_text(_on_device(config, order.device).to_yaml())
            command += ["--config", str(path)]
        log = Path(folder) / "train.log"
        with open(log, "w") as output:  # the command's summary would mix into this process's output
            status = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT).returncode
        if status:
            lines = [line for line in log.read_text().splitlines() if line.strip()]
            errors = [line for line in lines if line.startswith("robustlab train: error:")] or lines or ["no output"]
            raise RobustlabError(f"torchrun exited with status {status}: {errors[-1]}")


def _on_device(config: ExperimentConfig, device: str | None) -> ExperimentConfig:
    return (
        config
        if device is None
        else dataclasses.replace(config, train=dataclasses.replace(config.train, device=device))
    )


# ---------------------------------------------------------------------------------------
# Many workers


def execute(
    configs: list[ExperimentConfig],
    store: RunStore,
    device: str | None = None,
    progress: bool = True,
    workers: int = 1,
    gpus_per_job: int = 1,
    launcher: SubmititLauncher | None = None,
    labels: dict[str, str] | None = None,
) -> list[Any]:
    """Train every config that ``store`` has not finished; returns the submitted jobs (with
    ``launcher``), else nothing, once every point is done or failed. ``labels`` (point key ->
    name) say what the progress lines call each point (default: the config's name)."""
    if workers < 1 or gpus_per_job < 1:
        raise ConfigError(f"workers and GPUs per job must be at least 1, got {workers} and {gpus_per_job}")
    todo = [config for config in configs if store.find_done(config) is None]
    points = len({point_key(config) for config in todo})
    order = WorkOrder(
        str(store.root), todo, device=device, gpus_per_job=gpus_per_job, progress=progress, labels=labels or {}
    )
    if launcher is not None and points:
        return submit(order, launcher, points)
    if min(workers, points) == 1 and gpus_per_job == 1:
        work(order)
    elif points:
        run_workers(order, min(workers, points))
    return []


def run_workers(order: WorkOrder, workers: int) -> None:
    """``workers`` processes on this machine, each running ``work``, one per GPU set (or with
    the CPU cores split between them); returns when all have ended."""
    gpus = _gpu_sets(order, workers)
    threads = max(1, _cpu_count() // workers)
    context = torch.multiprocessing.get_context("spawn")
    processes = []
    for index in range(workers):
        worker_order = dataclasses.replace(order, threads=threads, progress=False)
        process = context.Process(
            target=_worker_main, args=(worker_order, gpus[index]), name=f"robustlab-worker-{index}"
        )
        process.start()
        processes.append(process)
    store, keys = RunStore(order.root), sorted({point_key(config) for config in order.configs})
    held: dict[int, set[str]] = {}  # a live worker's pid -> the points it held when last looked at

    def running() -> bool:
        states = claims.claims(store, keys)
        for process in processes:
            if process.is_alive():  # is_alive reaps dead workers
                held[process.pid or 0] = {k for k, s in states.items() if _holder_pid(s) == process.pid}
        return any(process.is_alive() for process in processes)

    try:
        _watch(running, order)
    finally:
        for process in processes:
            process.join()
    for process in processes:
        if process.exitcode:
            print(_death_line(process, held.get(process.pid or 0, set()), processes, store, order), file=sys.stderr)


def _holder_pid(state: dict[str, Any]) -> int | None:
    """The pid of the process holding a claim (None when settled)."""
    if state["state"] not in (claims.RUNNING, "interrupted") or not state["worker"]:
        return None
    return int(state["worker"].split(":")[1])


def _death_line(process, points: set[str], processes: list, store: RunStore, order: WorkOrder) -> str:
    """What the summary says of a worker that ended badly: how, and who took over its point."""
    code = process.exitcode
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"ended with exit status {code}"
    names = {other.pid: f"{other.name} (pid {other.pid})" for other in processes}
    labels = {point_key(config): order.label(config) for config in order.configs}
    taken = []
    for key, state in sorted(claims.claims(store, sorted(points)).items()):
        label = labels.get(key, key)
        holder = int(state["worker"].split(":")[1]) if state["worker"] else None
        if holder is None or holder == process.pid:
            taken.append(f"{label} (not taken over)")
        else:
            taker = names.get(holder, f"another process (pid {holder})")
            taken.append(f"{label}, which {taker} took over ({state['state']})")
    held = f" while it trained {'; '.join(taken)}" if taken else ""
    return f"robustlab: {process.name} (pid {process.pid}) {how}{held}"


def _worker_main(order: WorkOrder, cuda_devices: str | None) -> None:
    if cuda_devices is not None:  # before anything initialises CUDA in this process
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda_devices
    from tqdm import tqdm

    # tqdm's default lock is a multiprocessing semaphore, which a SIGKILLed worker leaves for the
    # resource tracker to warn about; a worker writes no bars to share a lock for
    tqdm.set_lock(threading.RLock())
    work(order)


def _gpu_sets(order: WorkOrder, workers: int) -> list[str | None]:
    """Each worker's CUDA_VISIBLE_DEVICES: ``gpus_per_job`` GPUs of those visible, in turn."""
    if (order.device or "auto").startswith("cpu") or not torch.cuda.is_available():
        return [None] * workers
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    size = order.gpus_per_job
    return [",".join(gpus[(index * size + k) % len(gpus)] for k in range(size)) for index in range(workers)]


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _watch(running, order: WorkOrder) -> None:
    """Progress of the points the workers settle while ``running()``: a bar, or a line each."""
    store = RunStore(order.root)
    configs = {point_key(config): config for config in order.configs}
    settled: set[str] = set()
    with Progress(len(configs), "runs", "run", order.progress) as bar:
        while running():
            time.sleep(POLL_S)
            states = claims.claims(store, list(configs))
            for key in sorted(set(configs) - settled):
                state = states.get(key)
                if claims.settled_since(state, order.since):
                    settled.add(key)
                    bar.update()
                    failed = state and state["state"] == claims.FAILED
                    outcome = "failed" if failed else _outcome(store.find_done(configs[key]))
                    bar.line(f"{order.label(configs[key])}: {outcome}")


# ---------------------------------------------------------------------------------------
# SLURM through submitit


class SweepJob:
    """One job of a sweep's array: a worker. submitit calls ``checkpoint`` when the job
    reaches its time limit and requeues what it returns: the same worker, which claims the
    interrupted point again and resumes its run from the last checkpoint."""

    def __init__(self, order: WorkOrder):
        self.order = order

    def __call__(self) -> int:
        return work(self.order)

    def checkpoint(self) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(SweepJob(self.order))


def submit(order: WorkOrder, launcher: SubmititLauncher, points: int) -> list[Any]:
    """Send the sweep to SLURM as one job array of workers; with ``launcher.wait``, wait for it."""
    try:
        import submitit
    except ImportError:
        raise RobustlabError(
            "--launcher submitit needs the submitit package: pip install 'robustlab[cluster]'"
        ) from None
    if launcher.cluster == "slurm" and shutil.which("sbatch") is None:
        raise RobustlabError(
            "SLURM's sbatch is not on this machine's PATH: submit from the cluster's login node, "
            "or try the jobs on this machine with --launcher submitit-local"
        )
    folder = Path(launcher.folder or Path(order.root) / "submitit")
    executor = submitit.AutoExecutor(
        folder=folder, cluster=launcher.cluster, **{f"{launcher.cluster}_max_num_timeout": launcher.max_requeues}
    )
    executor.update_parameters(
        name=f"robustlab-{order.configs[0].name}",
        timeout_min=launcher.time_min,
        gpus_per_node=launcher.gpus_per_job,
        tasks_per_node=1,
        cpus_per_task=launcher.cpus_per_job,
        mem_gb=launcher.mem_gb,
        slurm_partition=launcher.partition,
        slurm_additional_parameters=dict(launcher.sbatch),
    )
    job_order = dataclasses.replace(
        order, gpus_per_job=max(1, launcher.gpus_per_job), threads=launcher.cpus_per_job, wait=False, progress=False
    )
    size = min(launcher.array_size, points) if launcher.array_size else points
    jobs = executor.submit_array([SweepJob(job_order) for _ in range(size)])
    array = jobs[0].job_id.split("_")[0]
    print(f"robustlab: submitted {size} jobs (array {array}) for {points} runs; logs in {folder}", file=sys.stderr)
    if launcher.wait:
        _watch(lambda: not all(job.done() for job in jobs), order)
    return jobs


def job_minutes(text: str | int) -> int:
    """A time limit as minutes (``90``) or ``[D-]HH:MM:SS`` (``4:00:00``, ``2-00:00:00``), in whole minutes."""
    text = str(text).strip()
    clock = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d\d):(\d\d)", text)
    if text.isdigit():
        minutes = int(text)
    elif clock:
        days, hours, mins, secs = (int(group or 0) for group in clock.groups())
        minutes = days * 24 * 60 + hours * 60 + mins + (secs > 0)
    else:
        minutes = 0
    if minutes < 1:
        raise ConfigError(f"time limit '{text}': expected minutes or [D-]HH:MM:SS, such as 90, 4:00:00 or 2-00:00:00")
    return minutes


# ---------------------------------------------------------------------------------------
# What the store knows about each point


def point_states(configs: list[ExperimentConfig], store: RunStore) -> list[dict[str, Any]]:
    """Per config: ``state`` (queued, running, interrupted, done, failed), the ``run`` (id),
    the ``worker`` (host:pid), ``attempts``, the one-line ``error`` of a failure, and the
    store ``row`` of a finished run."""
    held = claims.claims(store, [point_key(config) for config in configs])
    states = []
    for config, done in zip(configs, store.find_done_many(configs)):
        claim = held.get(point_key(config)) or {}
        state = claim.get("state")
        if done is not None:
            state = claims.DONE
        elif state in (None, claims.DONE):  # never claimed, or its finished run is gone
            state = "queued"
        elif state == claims.RELEASED:
            state = "interrupted"
        states.append(
            {
                "state": state,
                "run": done.id if done else claim.get("run_id"),
                "worker": ":".join((claim.get("worker") or "").split(":")[:2]) or None,
                "attempts": claim.get("attempts", 0),
                "error": claim.get("error") if state == claims.FAILED else None,
                "row": done,
            }
        )
    return states
