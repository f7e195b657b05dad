"""`robustlab experiment`: run one of the paper's experiments (a sweep), then report it."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustlab.cli.common import (
    Subparsers,
    add_data_dir_flag,
    add_device_flag,
    add_json_flag,
    add_overrides_flag,
    data_dir_override,
    emit,
    format_table,
    positive_int,
)
from robustlab.config import ConfigError, from_dict, parse_override, read_yaml

if TYPE_CHECKING:
    from robustlab.experiments.experiment import Setup
    from robustlab.experiments.launch import Execution, SubmititLauncher
    from robustlab.runs.store import RunStore


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help="run one of the paper's experiments, then write its figure and table",
        description="Trains every run of the experiment that the run store does not hold yet "
        "(a killed sweep resumes), then writes the report. Without NAME: list the experiments.",
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="experiment name; omit it to list them")
    add_setup_arguments(parser)
    add_device_flag(parser, None, "device for training (auto, cpu, cuda, cuda:1); default: the config's")
    add_data_dir_flag(parser, " (sets data.data_dir of every run)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="train nothing: list every run with its budget (epochs, steps, images), lr and where it comes from, "
        "and GPU-hours",
    )
    parser.add_argument(
        "--status",
        action="store_true",
        help="show each run as queued, running, interrupted, done or failed; trains nothing",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_execution_arguments(parser)
    parser.set_defaults(func=run)


def add_execution_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "execution", "where the runs train; every worker claims runs from the run store until none is left"
    )
    group.add_argument(
        "--workers",
        type=positive_int,
        metavar="K",
        help="K runs at a time: K processes on this machine (one per GPU, or the CPU cores split between them), "
        "or K SLURM jobs with --launcher submitit (default: 1; with submitit one job per run to train)",
    )
    group.add_argument(
        "--gpus-per-job",
        type=int,
        metavar="G",
        help="GPUs per worker; G > 1 trains each run data-parallel with torchrun; 0: SLURM jobs without a GPU "
        "(default 1)",
    )
    group.add_argument(
        "--launcher",
        choices=("local", "submitit", "submitit-local"),
        default="local",
        help="local processes, SLURM jobs through submitit (pip install 'robustlab[cluster]'), or submitit's "
        "jobs run on this machine (to try a launcher config)",
    )
    group.add_argument(
        "--launcher-config",
        metavar="YAML",
        help="SLURM settings: partition, time_min, cpus_per_job, mem_gb, sbatch (a mapping of extra sbatch "
        "options, e.g. account), max_requeues, folder, wait, and workers and gpus_per_job; the flags win",
    )
    group.add_argument("--partition", help="SLURM partition")
    group.add_argument("--time", metavar="LIMIT", help="each SLURM job's time limit: minutes or [D-]HH:MM:SS")
    group.add_argument(
        "--sbatch", action="append", default=[], metavar="KEY=VALUE", help="extra sbatch option, e.g. account=lab"
    )
    group.add_argument("--wait", action="store_true", help="with submitit: wait for the jobs, then write the report")


def add_setup_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that select an experiment's runs (shared with `robustlab report`)."""
    parser.add_argument(
        "--scale",
        default="small",
        help="smoke (seconds on a CPU), demo (the CPU miniature, minutes), small (minutes on a GPU), paper (the paper's protocol)",
    )
    parser.add_argument("--dataset", help="dataset name or .npz path (default: the scale's)")
    add_overrides_flag(parser, "every run")
    parser.add_argument(
        "--param",
        dest="params",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="experiment parameter, e.g. --param sizes=48,97,195 --param epochs=10",
    )
    parser.add_argument("--runs-root", help="run store folder (default: $ROBUSTLAB_RUNS or ./runs)")
    parser.add_argument("--out", help="report folder (default: <runs-root>/reports/<experiment>-<dataset>-<scale>)")
    add_json_flag(parser)


def setup_from_args(args: argparse.Namespace) -> Setup:
    # imported when the command runs, not for --help: keeps start-up fast
    from robustlab.experiments import get_experiment

    experiment = get_experiment(args.name)
    defaults = experiment.setup(args.scale).params  # an unknown scale fails here, naming the scales
    params = dict(parse_param(text, defaults) for text in args.params)
    return experiment.setup(args.scale, args.dataset, args.overrides + data_dir_override(args), **params)


def parse_param(text: str, defaults: dict[str, Any]) -> tuple[str, Any]:
    """``sizes=48,97`` -> ("sizes", (48, 97)), typed like the parameter's default value."""
    key, sep, raw = text.partition("=")
    if not sep or key not in defaults:
        known = ", ".join(sorted(defaults)) or "(none at this scale)"
        raise ConfigError(f"--param '{text}': expected KEY=VALUE with KEY one of: {known}")
    default = defaults[key]
    if isinstance(default, dict):
        raise ConfigError(f"--param '{text}': set config values with --set, e.g. --set train.batch_size=64")
    try:
        if isinstance(default, (list, tuple)):
            kind = type(default[0]) if default else str
            return key, tuple(kind(part) for part in raw.split(",") if part.strip())
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            number = float(raw)
            return key, int(number) if isinstance(default, int) and number.is_integer() else number
        return key, type(default)(raw) if default is not None else raw
    except ValueError:
        raise ConfigError(f"--param '{text}': '{raw}' does not fit {key} (default {default!r})") from None


def run(args: argparse.Namespace) -> int:
    if not args.name:
        return list_experiments(args)
    # imported when the command runs, not for --help: keeps start-up fast
    from robustlab.experiments import run_experiment
    from robustlab.runs.store import RunStore

    setup = setup_from_args(args)
    store = RunStore(args.runs_root, create=not args.status)  # --status only reads: the root must exist
    if args.status:
        return show_status(args, setup, store)
    if args.dry_run:
        from robustlab.experiments.plan import GPU, plan_experiment, totals

        jobs = plan_experiment(setup, store)
        plan = {"scale": setup.scale, "gpu": GPU, "jobs": jobs, "totals": totals(jobs, "experiment")}
        emit(args, plan, lambda p: format_table(_plan_rows(p["jobs"])) + "\n" + render_plan(p))
        return 0
    rows, report = run_experiment(setup, store, out_dir=args.out, execution=execution_from_args(args))
    if report is None:  # submitted to SLURM
        waiting = sum(r.status != "done" for r in rows)
        message = f"{waiting} runs submitted; `robustlab experiment {args.name} ... --status` shows where they stand"
        emit(args, [row.to_dict() for row in rows], lambda _: message)
        return 0
    emit(args, report.to_dict(), render_report)
    unfinished = [row for row in rows if row.status not in ("done", "trained")]
    for row in unfinished:
        why = f"failed: {row.error}" if row.error else f"is {row.status}"
        print(f"robustlab experiment: run {row.sweep} {_describe(row.overrides)} {why}", file=sys.stderr)
    return 1 if unfinished else 0


EXECUTION_KEYS = ("workers", "gpus_per_job")  # keys of a launcher config that are the execution's, not SLURM's


def execution_from_args(args: argparse.Namespace) -> Execution:
    """The one execution value of a command: --device, --quiet, --workers, --gpus-per-job and
    the launcher from --launcher-config and the flags (the flags win)."""
    from robustlab.experiments.launch import Execution

    settings: dict[str, Any] = {}
    launcher = None
    if args.launcher == "local":
        if args.launcher_config or args.partition or args.time or args.sbatch or args.wait:
            raise ConfigError("--launcher-config, --partition, --time, --sbatch and --wait go with --launcher submitit")
    else:
        launcher_settings = _launcher_settings(args.launcher_config) if args.launcher_config else {}
        settings = {key: launcher_settings.pop(key) for key in EXECUTION_KEYS if key in launcher_settings}
        launcher = _launcher(launcher_settings, args)
    for key, value in (("workers", args.workers), ("gpus_per_job", args.gpus_per_job)):
        if value is not None:
            settings[key] = value
    try:
        return Execution(device=args.device, progress=not args.quiet, launcher=launcher, **settings)
    except TypeError as error:  # a value of the wrong type in the launcher config
        raise ConfigError(f"--launcher-config {args.launcher_config}: {error}") from None


def _launcher_settings(path: str) -> dict[str, Any]:
    from robustlab.experiments.launch import SubmititLauncher

    settings = read_yaml(Path(path))  # a damaged file is a one-line error naming it
    if not isinstance(settings, dict):
        raise ConfigError(f"--launcher-config {path}: expected a mapping of settings, got {settings!r}")
    known = sorted([field.name for field in fields(SubmititLauncher) if field.name != "cluster"] + list(EXECUTION_KEYS))
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ConfigError(f"--launcher-config {path}: unknown key '{unknown[0]}'; valid keys: {', '.join(known)}")
    return dict(settings)


def _launcher(settings: dict[str, Any], args: argparse.Namespace) -> SubmititLauncher:
    """The submitit launcher from a launcher config's SLURM settings and the flags (which win)."""
    from robustlab.experiments.launch import SubmititLauncher, job_minutes

    flags: dict[str, Any] = {"cluster": "local" if args.launcher == "submitit-local" else "slurm"}
    if args.partition:
        flags["partition"] = args.partition
    if args.time:
        flags["time_min"] = job_minutes(args.time)
    if args.wait:
        flags["wait"] = True
    sbatch = dict(settings.get("sbatch") or {})
    for text in args.sbatch:
        (key,), value = parse_override(text)
        sbatch[key] = value
    where = f"--launcher-config {args.launcher_config}" if args.launcher_config else "launcher"
    try:
        return from_dict({**settings, **flags, "sbatch": sbatch}, SubmititLauncher, where)
    except ConfigError as error:
        raise ConfigError(str(error) if args.launcher_config else f"launcher: {error}") from None


def show_status(args: argparse.Namespace, setup: Setup, store: RunStore) -> int:
    from robustlab.experiments import get_experiment
    from robustlab.experiments.launch import point_states

    points = [
        (sweep.name, point) for sweep in get_experiment(setup.experiment).sweeps(setup) for point in sweep.points()
    ]
    states = point_states([point.config for _, point in points], store)
    table = [
        {
            "sweep": name,
            **point.overrides,
            **{key: state[key] for key in ("state", "run", "worker", "attempts", "error")},
        }
        for (name, point), state in zip(points, states)
    ]
    counts = Counter(row["state"] for row in table)
    emit(args, table, lambda t: format_table(t) + "\n" + ", ".join(f"{n} {state}" for state, n in counts.items()))
    return 0


def _plan_rows(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    shown = ("id", "subset_size", "seed", "epochs", "steps", "images", "lr", "lr_source", "gpu_hours", "status")
    return [{key: job[key] for key in shown} for job in jobs]


def _describe(overrides: dict[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in overrides.items())


def render_report(data: dict[str, Any]) -> str:
    from robustlab.report.tables import with_spread  # a value with its sd reads "mean ± sd"

    columns, rows = with_spread(data["rows"], data["columns"])
    lines = [data["title"], format_table(rows, columns), *data.get("fit_notes", []), *data["notes"]]
    lines += [f"figure: {path}" for path in data["figures"]]
    lines += [f"table: {path}" for path in data["tables"].values()]
    return "\n".join(lines)


def list_experiments(args: argparse.Namespace) -> int:
    # imported when the command runs, not for --help: keeps start-up fast
    from robustlab.experiments import EXPERIMENTS

    rows = [
        {"name": name, "scales": ",".join(EXPERIMENTS.get(name).scales), "reproduces": EXPERIMENTS.get(name).summary}
        for name in EXPERIMENTS.names()
    ]
    emit(args, rows, lambda r: format_table(r, ["name", "scales", "reproduces"]))
    return 0


def render_plan(result: dict) -> str:
    """The plan for a human: the totals per section and overall (the jobs are in --json)."""
    jobs = result["jobs"]
    searched = sum(job["lr_source"].startswith("searched") for job in jobs)
    lines = [
        f"plan at scale {result['scale']}: {len(jobs)} jobs, {searched} of them with the lr search's choice",
        format_table(result["totals"]),
        f"GPU-hours from the speeds measured on one {result['gpu']} (benchmarks/RESULTS.md); "
        "--json lists every job with its budget, lr and dependencies",
    ]
    return "\n".join(lines)
