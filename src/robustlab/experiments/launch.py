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
  worker; a job that reaches its time limit, or is requeued (``scontrol requeue``,
  preemption), starts again and its run resumes from the last checkpoint; a job that is
  cancelled (``scancel``) records its point as failed. Results land in the one run store,
  which every node must see.

All of that is one value, ``Execution`` (device, progress, workers, GPUs per job, launcher),
which goes unchanged from the command line through ``run_experiment``, ``run_sweep`` and
``train_rows`` to ``execute``. With ``gpus_per_job`` > 1 a worker trains each run
data-parallel on its GPUs, through the torchrun path of ``robustlab train``
(``robustlab.train.distributed``); with 0 (SLURM only) its jobs ask for no GPU.

Before a job array is submitted, ``robustlab.experiments.slurm`` checks it against what
``sinfo`` says the cluster has (one-line errors instead of sbatch's refusals or jobs that
pend forever), records the jobs in the store so that a second driver does not submit the
same points again, and watches them through ``squeue`` (no sacct: accounting is often off).
"""

from __future__ import annotations

# torch and the training engine are imported inside the functions that train: a sweep's
# --status reads the store through ``point_states`` and must not load them (issue 24).
import dataclasses
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from robustlab.config import ConfigError, ExperimentConfig, from_dict
from robustlab.errors import RobustlabError, one_line
from robustlab.experiments import slurm
from robustlab.progress import Progress
from robustlab.runs import claims
from robustlab.runs.store import IN_PROGRESS, Run, RunStore, StoredRun, point_key

POLL_S = 1.0  # how often a waiting worker, or the process watching workers, looks at the store
CANCELLED = threading.Event()  # set in a SLURM job that was cancelled: its worker takes no further point


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
    """SLURM jobs through submitit (``pip install 'robustlab[cluster]'``). The fields, with
    ``Execution``'s ``workers`` and ``gpus_per_job``, are the keys of a ``--launcher-config``
    YAML file."""

    cluster: Literal["slurm", "local"] = "slurm"  # local: submitit's LocalExecutor, the same jobs on this machine
    partition: str | None = None  # default: the cluster's default partition
    time_min: int = 24 * 60  # each job's time limit in minutes (SLURM's --time)
    cpus_per_job: int = 8
    mem_gb: float | None = None  # None: the partition's default memory per job
    sbatch: dict[str, Any] = field(default_factory=dict)  # more sbatch options, e.g. {account: lab, qos: high}
    max_requeues: int = 3  # how often a job that reached its time limit is requeued
    folder: str | None = None  # submitit's job files and logs (default: <runs root>/submitit)
    wait: bool = False  # wait for the jobs to end (the experiment then writes its report)

    def __post_init__(self) -> None:
        if self.time_min < 1 or self.cpus_per_job < 1 or self.max_requeues < 0:
            raise ConfigError(
                f"launcher: time_min and cpus_per_job must be at least 1 and max_requeues at least 0, got "
                f"{self.time_min}, {self.cpus_per_job} and {self.max_requeues}"
            )
        if self.mem_gb is not None and self.mem_gb <= 0:
            raise ConfigError(f"launcher: mem_gb must be above 0 (or left out), got {self.mem_gb}")


@dataclass
class Execution:
    """Where and how a sweep's runs train: one value from the command line (or the Python
    API) down to the workers. A misspelt field is a TypeError when it is built, and
    ``from_dict`` turns plain data into one with a one-line error for a bad key."""

    device: str | None = None  # overrides train.device of new runs (it does not change which runs count as done)
    progress: bool = True  # progress bars and a line per finished run
    workers: int | None = None  # runs at a time: local processes (default 1), or SLURM jobs (default one per run)
    gpus_per_job: int = 1  # GPUs per worker; > 1: data-parallel with torchrun; 0: SLURM jobs ask for no GPU
    launcher: SubmititLauncher | None = None  # None: this machine

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}")
        if self.gpus_per_job < 0 or (self.gpus_per_job == 0 and self.launcher is None):
            raise ConfigError(
                f"GPUs per job must be at least 1 (0 only for SLURM jobs without GPUs), got {self.gpus_per_job}"
            )

    @classmethod
    def from_dict(cls, settings: dict[str, Any]) -> Execution:
        """``{workers: 4, gpus_per_job: 1, launcher: {partition: gpu, ...}}`` -> an Execution."""
        return from_dict(settings, cls, "execution")

    @property
    def waits(self) -> bool:
        """Whether the runs have finished (or failed) when ``execute`` returns."""
        return self.launcher is None or self.launcher.wait


# ---------------------------------------------------------------------------------------
# One worker


def work(order: WorkOrder) -> int:
    """Claim and train points until every point is done or failed; returns how many this
    worker trained."""
    if order.threads:
        import torch

        torch.set_num_threads(order.threads)
    store = RunStore(order.root)
    pending = [(point_key(config), config) for config in order.configs if store.find_done(config) is None]
    trained = 0
    with claims.alive(store), Progress(len(pending), "runs", "run", order.progress) as bar:
        while pending and not CANCELLED.is_set():
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
    from robustlab.train.loop import train

    unfinished = store.find_unfinished(config)
    if order.gpus_per_job > 1:
        _train_with_torchrun(store, config, unfinished, order)
        return

    def keep_claim(epoch: int, run: Run) -> None:
        if not claims.hold(store, key, store.run_id(run.path)):
            raise ClaimLostError(f"another worker took over {run.path}")

    if unfinished:  # continues with the config saved in the run folder (its device too)
        train(None, unfinished.path, store, resume=True, progress=order.progress, on_epoch_end=keep_claim)
    else:
        train(_on_device(config, order.device), store=store, progress=order.progress, on_epoch_end=keep_claim)


def _train_with_torchrun(
    store: RunStore, config: ExperimentConfig, unfinished: StoredRun | None, order: WorkOrder
) -> None:
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
    execution: Execution | None = None,
    labels: dict[str, str] | None = None,
) -> list[Any]:
    """Train every config that ``store`` has not finished, as ``execution`` says; returns the
    submitted jobs (with a launcher), else nothing, once every point is done or failed (or,
    with a launcher that does not wait, once submitted). ``labels`` (point key -> name) say
    what the progress lines call each point (default: the config's name)."""
    execution = execution or Execution()
    todo = [config for config in configs if store.find_done(config) is None]
    points = len({point_key(config) for config in todo})
    order = WorkOrder(
        str(store.root),
        todo,
        device=execution.device,
        gpus_per_job=max(1, execution.gpus_per_job),
        progress=execution.progress,
        labels=labels or {},
    )
    if execution.launcher is not None and points:
        return submit(order, execution, points)
    workers = min(execution.workers or 1, points)
    if workers == 1 and execution.gpus_per_job == 1:
        work(order)
    elif points:
        run_workers(order, workers)
    return []


def run_workers(order: WorkOrder, workers: int) -> None:
    """``workers`` processes on this machine, each running ``work``, one per GPU set (or with
    the CPU cores split between them); returns when all have ended."""
    gpus = _gpu_sets(order, workers)
    threads = max(1, _cpu_count() // workers)
    import torch.multiprocessing

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


def _death_line(
    process: BaseProcess, points: set[str], processes: Sequence[BaseProcess], store: RunStore, order: WorkOrder
) -> str:
    """What the summary says of a worker that ended badly: how, and who took over its point."""
    code = process.exitcode
    assert code is not None, "the process was joined"
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
    import torch

    if (order.device or "auto").startswith("cpu") or not torch.cuda.is_available():
        return [None] * workers
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    size = order.gpus_per_job
    return [",".join(gpus[(index * size + k) % len(gpus)] for k in range(size)) for index in range(workers)]


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _watch(running: Callable[[], bool], order: WorkOrder) -> None:
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
    interrupted point again and resumes its run from the last checkpoint. SLURM stops a job
    with SIGTERM both when it is cancelled and when it is requeued (``scontrol requeue``,
    preemption); the job tells them apart by its restart count."""

    def __init__(self, order: WorkOrder):
        self.order = order

    def __call__(self) -> int:
        if os.environ.get("SLURM_JOB_ID"):
            signal.signal(signal.SIGTERM, _on_sigterm)
        return work(self.order)

    def checkpoint(self) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(SweepJob(self.order))


class JobRequeued(BaseException):
    """This SLURM job is being requeued: give the point back, the job's next start resumes it."""


class JobCancelled(RobustlabError):
    """This SLURM job was cancelled: its point is recorded as failed."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    job = os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID", "?"))
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    name = f"{job}_{task}" if task else job
    try:
        requeued = slurm.restarts(os.environ["SLURM_JOB_ID"]) > int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except RobustlabError:  # scontrol did not answer: give the point back rather than lose it
        requeued = True
    if requeued:
        raise JobRequeued(f"SLURM job {name} is requeued")
    CANCELLED.set()
    raise JobCancelled(f"SLURM job {name} was cancelled (scancel) while it trained this run")


def submit(order: WorkOrder, execution: Execution, points: int) -> list[Any]:
    """Send the sweep to SLURM as one job array of workers, after checking it against the
    cluster; with ``launcher.wait``, wait for it. Points that jobs submitted earlier (by a
    driver that was stopped) still hold or wait for are not submitted again."""
    launcher = execution.launcher
    assert launcher is not None
    try:
        import submitit
    except ImportError:
        raise RobustlabError(
            "--launcher submitit needs the submitit package: pip install 'robustlab[cluster]'"
        ) from None
    store = RunStore(order.root)
    folder = Path(launcher.folder or Path(order.root) / "submitit")
    covered = slurm.covered_points(store) if launcher.cluster == "slurm" else set()
    fresh = [config for config in order.configs if point_key(config) not in covered]
    waiting = len({point_key(config) for config in order.configs}) - len({point_key(c) for c in fresh})
    if waiting:
        print(f"robustlab: {waiting} runs are in jobs submitted before; not submitting them again", file=sys.stderr)
    jobs: list[Any] = []
    if fresh:
        points = len({point_key(config) for config in fresh})
        size = min(execution.workers, points) if execution.workers else points
        if launcher.cluster == "slurm":
            slurm.check_request(launcher, execution.gpus_per_job)
        executor = submitit.AutoExecutor(
            folder=folder, cluster=launcher.cluster, **{f"{launcher.cluster}_max_num_timeout": launcher.max_requeues}
        )
        executor.update_parameters(
            name=f"robustlab-{fresh[0].name}",
            timeout_min=launcher.time_min,
            tasks_per_node=1,
            cpus_per_task=launcher.cpus_per_job,
            mem_gb=launcher.mem_gb,
            slurm_partition=launcher.partition,
            slurm_additional_parameters={"requeue": True, **launcher.sbatch},
            **({"gpus_per_node": execution.gpus_per_job} if execution.gpus_per_job else {}),
        )
        job_order = dataclasses.replace(order, configs=fresh, threads=launcher.cpus_per_job, wait=False, progress=False)
        try:
            with _stderr_kept_back():  # sbatch's own complaint would come before our one line
                jobs = executor.submit_array([SweepJob(job_order) for _ in range(size)])
        except submitit.core.utils.FailedJobError as error:  # sbatch refused: its own words, in one line
            raise RobustlabError(f"SLURM refused the jobs: {slurm.sbatch_error(str(error))}") from None
        array = jobs[0].job_id.split("_")[0]
        if launcher.cluster == "slurm":
            slurm.record_jobs(store, array, [job.job_id for job in jobs], [point_key(c) for c in fresh])
        print(f"robustlab: submitted {size} jobs (array {array}) for {points} runs; logs in {folder}", file=sys.stderr)
    if launcher.wait:
        if launcher.cluster == "slurm":
            wait_for_jobs(store, {point_key(config) for config in order.configs}, order=order)
        else:
            _watch(lambda: not all(job.done() for job in jobs), order)
    return jobs


@contextmanager
def _stderr_kept_back() -> Iterator[None]:
    """Hold back what child processes (sbatch) write to stderr; show it only if no exception follows
    (a refusal is reported in one line, from submitit's error, which carries sbatch's words)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile("w+") as held:
        os.dup2(held.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if not failed:
                held.seek(0)
                sys.stderr.write(held.read())


def wait_for_jobs(
    store: RunStore, keys: set[str] | None = None, progress: bool = True, order: WorkOrder | None = None
) -> None:
    """Watch the SLURM jobs submitted into ``store`` (those of ``keys``' points) through
    squeue, never sacct, until none is queued or running; with ``order``, its points'
    progress lines, else a line whenever the count of running and pending jobs changes. A
    job that pends for a reason that waiting does not cure is reported once, with it."""
    reported: set[tuple[str, str]] = set()
    counts: list[tuple[int, int]] = []

    def running() -> bool:
        jobs = slurm.live_jobs(store, keys)
        for job in jobs:
            if job.state == "PENDING" and job.reason in slurm.HOPELESS and (job.array, job.reason) not in reported:
                reported.add((job.array, job.reason))
                print(f"robustlab: {slurm.hopeless_line(job)}", file=sys.stderr)
        pending = sum(job.state == "PENDING" for job in jobs)
        if order is None and progress and (not counts or counts[-1] != (len(jobs) - pending, pending)) and jobs:
            counts.append((len(jobs) - pending, pending))
            print(f"robustlab: SLURM jobs: {len(jobs) - pending} running, {pending} pending", file=sys.stderr)
        return bool(jobs)

    if order is not None:
        _watch(running, order)
        return
    while running():
        time.sleep(POLL_S * 5)


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
