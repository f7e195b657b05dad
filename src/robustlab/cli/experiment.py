"""`robustlab experiment`: run one of the paper's experiments (a sweep), then report it."""

from __future__ import annotations

import argparse
from typing import Any

from robustlab.cli.common import add_json_flag, emit, format_table
from robustlab.config import ConfigError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help="run one of the paper's experiments, then write its figure and table",
        description="Trains every run of the experiment that the run store does not hold yet "
        "(a killed sweep resumes), then writes the report. Without NAME: list the experiments.",
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="experiment name; omit it to list them")
    add_setup_arguments(parser)
    parser.add_argument("--device", help="device for training (auto, cpu, cuda, cuda:1); default: the config's")
    parser.add_argument("--dry-run", action="store_true", help="only list the runs that would train")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def add_setup_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that select an experiment's runs (shared with `robustlab report`)."""
    parser.add_argument(
        "--scale",
        default="small",
        help="smoke (seconds on a CPU), small (minutes on a GPU), paper (the paper's protocol)",
    )
    parser.add_argument("--dataset", help="dataset name or .npz path (default: the scale's)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every run, e.g. --set optim.lr=0.3 (repeatable)",
    )
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


def setup_from_args(args: argparse.Namespace):
    # imported when the command runs, not for --help: keeps start-up fast
    from robustlab.experiments import get_experiment

    experiment = get_experiment(args.name)
    defaults = experiment.setup(args.scale).params  # an unknown scale fails here, naming the scales
    params = dict(parse_param(text, defaults) for text in args.params)
    return experiment.setup(args.scale, args.dataset, args.overrides, **params)


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
    rows, report = run_experiment(
        setup,
        RunStore(args.runs_root),
        out_dir=args.out,
        device=args.device,
        dry_run=args.dry_run,
        progress=not args.quiet,
    )
    if args.dry_run:
        plan = [{"sweep": r.sweep, **r.overrides, "status": r.status} for r in rows]
        emit(args, plan, lambda p: format_table(p) + f"\n{sum(r['status'] != 'done' for r in p)} runs to train")
        return 0
    assert report is not None  # written unless it is a dry run
    emit(args, report.to_dict(), render_report)
    return 0


def render_report(data: dict[str, Any]) -> str:
    lines = [data["title"], format_table(data["rows"], data["columns"]), *data["notes"]]
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
