#!/usr/bin/env python3
"""The run store at the scale of a study: `runs list`, `runs list --status failed`, a sweep's
`--status`, the smoke reproduction's `--status` and `runs reindex` on 1,000 and 10,000 runs
made of copies of a real run folder.

    python benchmarks/bench_store.py                       # 1,000 and 10,000 runs, in a temporary folder
    python benchmarks/bench_store.py --runs 1000 --source runs/<run>

The store: copies of one run folder (by default a digits run trained here in seconds), each
with its own seed in config.yaml so that every run is another point; config.yaml, metrics.jsonl
and results.json are copied, the weights files hard-linked (the store reads none of them).
One run in ten has no results.json and is recorded as failed. Each command runs in a fresh
process as a user runs it: the time includes Python's start-up; "peak MB" is the process's
maximum resident set; "torch" says whether the command imported torch. Goals (issue 24):
listing, a sweep's and the reproduction's status under 1 s at 10,000 runs without importing
torch, reindex under 30 s, memory flat in the number of runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FAILED_EVERY = 10  # one run in ten failed
LOOKUP = """
import sys, time
from robustlab.config import config_from_dict, read_yaml
from robustlab.experiments import get_experiment
from robustlab.experiments.launch import point_states
from robustlab.runs.store import RunStore
from pathlib import Path
root, experiment, stored = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = RunStore(root)
source = read_yaml(Path(root) / "copy-00001" / "config.yaml")
configs = [config_from_dict({**source, "seed": 1000 + i}) for i in range(stored)]
start = time.perf_counter()
found = store.find_done_many(configs)
lookup = time.perf_counter() - start
assert sum(row is not None for row in found) == sum(i % 10 != 0 for i in range(stored)), "wrong matches"
chosen = get_experiment(experiment)
points = [point.config for sweep in chosen.sweeps(chosen.setup("smoke")) for point in sweep.points()]
start = time.perf_counter()
point_states(points, store)
print(lookup, len(points), time.perf_counter() - start)
"""
COMMAND = """
import sys
from robustlab.cli import main
sys.stdout = open("/dev/null", "w")
code = main(sys.argv[1:])
print("torch" in sys.modules, code, file=sys.stderr)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, nargs="+", default=[1000, 10000], help="store sizes, ascending")
    parser.add_argument("--source", type=Path, help="a finished run folder to copy (default: train one here)")
    parser.add_argument("--root", type=Path, help="where to build the store (default: a temporary folder)")
    parser.add_argument("--experiment", default="compute_scaling", help="the sweep whose --status is timed")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-store-"))
    root = args.root or work / "runs"
    try:
        source = args.source or _train_source(work / "source")
        print(f"# run store benchmark: {platform.processor() or platform.machine()}, {_cpu_name()}")
        print(f"# source run: {source}; load average before: {_load()}")
        print(f"{'runs':>6}  {'command':<40}  {'seconds':>7}  {'peak MB':>7}  torch  load")
        made = 0
        for total in sorted(args.runs):
            _add_runs(source, root, made, total)
            made = total
            commands = [
                ("runs reindex", ["runs", "reindex", "--runs-root", str(root)]),
                ("runs list", ["runs", "list", "--runs-root", str(root)]),
                ("runs list --status failed", ["runs", "list", "--status", "failed", "--runs-root", str(root)]),
                (
                    f"experiment {args.experiment} --status",
                    ["experiment", args.experiment, "--scale", "smoke", "--status", "--runs-root", str(root)],
                ),
                ("reproduce --status (smoke)", ["reproduce", "--scale", "smoke", "--status", "--runs-root", str(root)]),
            ]
            for label, argv in commands:
                seconds, peak_mb, torch_loaded = _measure(argv)
                print(f"{total:>6}  {label:<40}  {seconds:>7.2f}  {peak_mb:>7.0f}  {torch_loaded!s:<5}  {_load()}")
                if label == "runs reindex":
                    _mark_failed(root)
            stored = min(total, 1000)
            lookup = [sys.executable, "-c", LOOKUP, str(root), args.experiment, str(stored)]
            found, points, status = subprocess.run(lookup, capture_output=True, text=True, check=True).stdout.split()
            print(f"{total:>6}  {f'find_done_many of {stored} stored points':<40}  {float(found):>7.2f}  (in process)")
            print(
                f"{total:>6}  {f'point_states of the {points} sweep points':<40}  {float(status):>7.2f}  (in process)"
            )
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)


def _train_source(where: Path) -> Path:
    overrides = ["model.kwargs={width: 16, depth: 1}", "train.batch_size=128", "train.epochs=2", "train.device=cpu"]
    argv = [sys.executable, "-m", "robustlab.cli", "train", "--runs-root", str(where), "--quiet"]
    subprocess.run(argv + [f"--set={o}" for o in overrides], check=True, stdout=subprocess.DEVNULL)
    (run,) = [path.parent for path in where.glob("*/results.json")]
    return run


def _add_runs(source: Path, root: Path, start: int, stop: int) -> None:
    """Copies ``start .. stop - 1`` of the source run, each its own point (seed)."""
    config = (source / "config.yaml").read_text()
    assert "\nseed: " in config, "the source's config.yaml has no top-level seed"
    head, tail = config.split("\nseed: ", 1)
    tail = tail.split("\n", 1)[1]
    root.mkdir(parents=True, exist_ok=True)
    for i in range(start, stop):
        folder = root / f"copy-{i:05d}"
        folder.mkdir()
        (folder / "config.yaml").write_text(f"{head}\nseed: {1000 + i}\n{tail}")
        shutil.copyfile(source / "metrics.jsonl", folder / "metrics.jsonl")
        if i % FAILED_EVERY:
            shutil.copyfile(source / "results.json", folder / "results.json")
        for name in ("checkpoint.pt", "model.pt"):
            if (source / name).exists():
                os.link(source / name, folder / name)


def _mark_failed(root: Path) -> None:
    """Record the runs without results as failed, as training would have."""
    from robustlab.runs.store import Run, RunStore

    store = RunStore(root)
    for row in store.query(status="interrupted"):
        run = Run(row.path)
        store.record(run, run.load_config(), "failed", error="RuntimeError: the benchmark's failed run")


def _measure(argv: list[str]) -> tuple[float, float, bool]:
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", COMMAND, *argv], stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read() if process.stderr else ""
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    torch_loaded, code = last.split() if len(last.split()) == 2 else ("?", "?")
    if code != "0":
        raise SystemExit(f"robustlab {' '.join(argv)} failed:\n{stderr}")
    return seconds, usage.ru_maxrss / 1024, torch_loaded == "True"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown processor"


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
