"""What SLURM says, read through its commands (sbatch, sinfo, squeue, scontrol), never sacct.

- ``check_request``: before an array is submitted, its request against ``sinfo``: a partition
  that does not exist, GPUs on a partition without any, more CPUs or memory than its largest
  node has, an account the user does not have. Each is a one-line error, where sbatch would
  refuse with a traceback or accept a job that pends forever.
- ``record_jobs`` / ``covered_points``: the arrays a driver submitted, with their points, in
  ``<runs root>/slurm-jobs.json``, so that a driver that was stopped and started again does
  not submit points that live jobs still hold or wait for.
- ``live_jobs``: those jobs as squeue lists them, with the reason of a pending one. Accounting
  (sacct) is off on many small clusters; squeue and the run store are enough.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustlab.config import ConfigError
from robustlab.errors import RobustlabError

RECORD = "slurm-jobs.json"  # in the runs root: the arrays submitted, and their points
ENDED = {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
# pending reasons that waiting does not cure: the job asks for what the partition or the account cannot give
HOPELESS = {
    "PartitionConfig",
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "ReqNodeNotAvail",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
    "QOSMaxCpuPerJobLimit",
    "QOSMaxGRESPerJob",
    "QOSMaxMemoryPerJob",
    "QOSMaxWallDurationPerJobLimit",
    "AssocMaxCpuPerJobLimit",
    "AssocMaxWallDurationPerJobLimit",
    "DependencyNeverSatisfied",
    "JobHeldAdmin",
}


@dataclass
class QueuedJob:
    """One array task as squeue lists it."""

    id: str  # ARRAY_TASK
    array: str
    state: str  # PENDING, RUNNING, COMPLETING, ...
    reason: str  # why it pends ("None" when it runs)


def _run(command: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    if shutil.which(command[0]) is None:
        raise RobustlabError(
            f"SLURM's {command[0]} is not on this machine's PATH: submit from the cluster's login node, "
            "or try the jobs on this machine with --launcher submitit-local"
        )
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RobustlabError(f"SLURM's {command[0]} did not answer in {timeout:.0f} s: is slurmctld up?") from None


def _checked(command: list[str]) -> str:
    done = _run(command)
    if done.returncode:
        words = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise RobustlabError(f"{' '.join(command[:2])} failed: {words[-1]}")
    return done.stdout


# ---------------------------------------------------------------------------------------
# Before submitting


@dataclass
class Node:
    partition: str
    default: bool
    cpus: int
    memory_mb: int
    gpus: int


def nodes() -> list[Node]:
    """Every node of every partition, from ``sinfo``."""
    out = []
    for line in _checked(["sinfo", "-h", "-N", "-o", "%P|%c|%m|%G"]).splitlines():
        parts = line.strip().split("|")
        if len(parts) != 4:
            continue
        partition, cpus, memory, gres = parts
        out.append(
            Node(partition.rstrip("*"), partition.endswith("*"), _number(cpus), _number(memory), _gpu_count(gres))
        )
    return out


def _number(text: str) -> int:
    match = re.match(r"\d+", text.strip())
    return int(match.group()) if match else 0


def _gpu_count(gres: str) -> int:
    """GPUs in sinfo's GRES column: ``gpu:a100:8(S:0-1),shard:4`` -> 8; ``(null)`` -> 0."""
    total = 0
    for item in re.sub(r"\([^)]*\)", "", gres).split(","):
        fields = item.split(":")
        if fields[0] == "gpu":
            total += _number(fields[-1]) if len(fields) > 1 else 1
    return total


def check_request(launcher: Any, gpus_per_job: int) -> None:
    """A one-line error for what the cluster cannot give a job of ``launcher``: an unknown
    partition or account, GPUs on a partition without them, more CPUs or memory than its
    largest node has."""
    _run(["sbatch", "--version"])  # sbatch missing from PATH: one line
    known = nodes()
    partitions = sorted({node.partition for node in known})
    name = launcher.partition or next((node.partition for node in known if node.default), None)
    if name is None or name not in partitions:
        what = f"no partition '{name}'" if name else "no --partition given, and no default partition"
        raise ConfigError(f"{what} on this cluster; sinfo lists: {', '.join(partitions) or 'none'}")
    mine = [node for node in known if node.partition == name]
    most_gpus = max(node.gpus for node in mine)
    if gpus_per_job > most_gpus:
        raise ConfigError(
            f"the jobs ask for {gpus_per_job} GPU(s) each, and the largest node of partition '{name}' has "
            f"{most_gpus}: choose a GPU partition (--partition), or train on CPUs with --gpus-per-job 0 --device cpu"
        )
    most_cpus = max(node.cpus for node in mine)
    if launcher.cpus_per_job > most_cpus:
        raise ConfigError(
            f"the jobs ask for {launcher.cpus_per_job} CPUs each, and the largest node of partition '{name}' has "
            f"{most_cpus}: set cpus_per_job to at most {most_cpus} in the launcher config"
        )
    most_memory = max(node.memory_mb for node in mine)
    if launcher.mem_gb is not None and launcher.mem_gb * 1024 > most_memory:
        raise ConfigError(
            f"the jobs ask for {launcher.mem_gb:g} GB each, and the largest node of partition '{name}' has "
            f"{most_memory / 1024:.1f} GB: set mem_gb to at most {most_memory // 1024} in the launcher config"
        )
    account = launcher.sbatch.get("account")
    if account is not None:
        _check_account(str(account))


def _check_account(account: str) -> None:
    """The user must have ``account`` (where accounting is on: without it SLURM does not check accounts)."""
    if shutil.which("sacctmgr") is None:
        return
    done = _run(["sacctmgr", "-nP", "show", "associations", f"user={getpass.getuser()}", "format=account"])
    if done.returncode or not done.stdout.strip():  # accounting disabled: nothing to check against
        return
    accounts = sorted({line.strip() for line in done.stdout.splitlines() if line.strip()})
    if account not in accounts:
        raise ConfigError(
            f"account '{account}' is not one of yours on this cluster; sacctmgr lists: {', '.join(accounts)}"
        )


def sbatch_error(text: str) -> str:
    """sbatch's reason, from submitit's error: its last ``sbatch: error:`` line."""
    lines = [line.strip() for line in text.splitlines() if "error" in line.lower()] or [text.strip() or "no output"]
    return lines[-1]


# ---------------------------------------------------------------------------------------
# The jobs a driver submitted


def _record_path(store: Any) -> Path:
    return Path(store.root) / RECORD


def submitted(store: Any) -> list[dict[str, Any]]:
    """The arrays submitted into this store: ``{array, jobs, points, submitted}`` each."""
    path = _record_path(store)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as error:
        raise RobustlabError(f"{path} is damaged ({error}); delete it to forget the submitted jobs") from None


def record_jobs(store: Any, array: str, jobs: list[str], points: list[str]) -> None:
    records = submitted(store) + [
        {"array": array, "jobs": jobs, "points": sorted(set(points)), "submitted": time.time()}
    ]
    path = _record_path(store)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(records, indent=1))
    os.replace(temporary, path)  # atomic: a killed driver leaves the old record or the new one


def queue() -> list[QueuedJob]:
    """This user's jobs as squeue lists them, one line per array task."""
    out = []
    for line in _checked(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%r"]).splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            out.append(QueuedJob(parts[0], parts[0].split("_")[0], parts[1], parts[2]))
    return out


def live_jobs(store: Any, keys: set[str] | None = None) -> list[QueuedJob]:
    """The queued or running jobs of the arrays submitted into ``store`` (for ``keys``' points)."""
    arrays = {r["array"] for r in submitted(store) if keys is None or keys & set(r["points"])}
    if not arrays:
        return []
    return [job for job in queue() if job.array in arrays and job.state not in ENDED]


def covered_points(store: Any) -> set[str]:
    """The points of arrays that still have a job queued or running."""
    records = submitted(store)
    if not records:
        return set()
    live = {job.array for job in queue() if job.state not in ENDED}
    return {key for record in records if record["array"] in live for key in record["points"]}


def pending_reasons(store: Any, keys: set[str]) -> dict[str, str]:
    """Point key -> why its jobs pend, for points whose arrays have jobs and none of them running."""
    records = [r for r in submitted(store) if keys & set(r["points"])]
    if not records:
        return {}
    jobs = queue()
    reasons = {}
    for record in records:
        mine = [job for job in jobs if job.array == record["array"] and job.state not in ENDED]
        if mine and all(job.state == "PENDING" for job in mine):
            for key in set(record["points"]) & keys:
                reasons[key] = mine[0].reason
    return reasons


def hopeless_line(job: QueuedJob) -> str:
    return (
        f"SLURM job {job.id} is PENDING ({job.reason}), which waiting does not cure: the request exceeds what the "
        f"partition or the account allows; cancel it (scancel {job.array}) and submit with a launcher config that fits"
    )


def restarts(job_id: str) -> int:
    """How often SLURM has requeued this job (``scontrol show job``'s Restarts)."""
    done = _run(["scontrol", "show", "job", "-o", job_id], timeout=20)
    match = re.search(r"\bRestarts=(\d+)", done.stdout)
    return int(match.group(1)) if match else 0
