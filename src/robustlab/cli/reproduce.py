"""`robustlab reproduce`: every experiment of the paper and the theory lab, and one report."""

from __future__ import annotations

import argparse
import shlex
import sys

from robustlab.cli.common import (
    Subparsers,
    add_data_dir_flag,
    add_device_flag,
    add_json_flag,
    add_overrides_flag,
    data_dir_override,
    emit,
    format_table,
)
from robustlab.cli.experiment import add_execution_arguments, execution_from_args, render_plan


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        help="run every experiment of the paper and the theory lab, then write one report (HTML and Markdown)",
        description="Runs each part of the paper (lr search, Figures 1-5, Table 1, the one-architecture table, "
        "extra data, Theorems 1-2) at one scale through the run store (finished runs are reused, a killed "
        "reproduction resumes), then writes report.html and report.md laid out like the paper, with the "
        "paper's claims each with a computed verdict, the scaling-law fits and each figure's provenance. A part that fails "
        "(e.g. a dataset that is not there) is reported as such; the others still run.",
    )
    parser.add_argument(
        "--scale",
        default="demo",
        choices=("smoke", "demo", "small", "paper"),
        help="smoke (seconds: the pipeline check), demo (the CPU miniature on built-in digits, about 35 minutes "
        "on 2 cores), small (CIFAR-10/MNIST/CIFAR-100, GPU minutes per experiment), paper (the paper's protocol)",
    )
    parser.add_argument("--runs-root", help="run store folder (default: $ROBUSTLAB_RUNS or ./runs)")
    parser.add_argument("--out", help="report folder (default: reproduce-<scale>)")
    parser.add_argument("--parts", help="comma-separated part ids to run (default: all); e.g. figure-1,theory")
    add_overrides_flag(parser, "every run of every experiment")
    parser.add_argument("--extra-data", metavar="FILE", help="generated images (.npz: image, label) for extra data")
    add_device_flag(parser, None, "device for training (auto, cpu, cuda, ...); default: the configs'")
    add_data_dir_flag(parser, " (sets data.data_dir of every run)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="run nothing: list every job (recipe, dataset, size, seed, epochs, steps, images, lr and where it "
        "comes from, the lr-search jobs it waits for, GPU-hours) and the totals per section",
    )
    parser.add_argument(
        "--status",
        action="store_true",
        help="per section: runs queued, pending in SLURM (with its reason), running, interrupted, done and failed, "
        "and the device-hours spent and left; trains nothing",
    )
    add_json_flag(parser)
    add_execution_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from robustlab.experiments.reproduce import reproduce, status

    parts = [p.strip() for p in args.parts.split(",") if p.strip()] if args.parts else None
    if args.status:
        rows = status(args.scale, args.runs_root, parts, args.overrides + data_dir_override(args), args.extra_data)
        emit(args, rows, render_status)
        return 0
    result = reproduce(
        args.scale,
        args.runs_root,
        args.out,
        parts=parts,
        overrides=args.overrides + data_dir_override(args),
        extra_data=args.extra_data,
        command="robustlab " + shlex.join(sys.argv[1:]),
        dry_run=args.dry_run,
        execution=execution_from_args(args),
    )
    if args.dry_run:
        emit(args, result, render_plan)
        return 0
    emit(args, result, render_summary)
    return 1 if any(part["error"] for part in result["parts"]) else 0


def render_status(rows: list[dict]) -> str:
    runs = sum(row["runs"] for row in rows)
    done = sum(row["done"] for row in rows)
    spent = sum(row["hours spent"] for row in rows)
    left = [row["hours left"] for row in rows]
    estimate = f"{sum(left):.2f}" if None not in left else "unknown for sections with no run done yet"
    footer = f"{done} of {runs} runs done; {spent:.2f} device-hours spent, left (estimated): {estimate}"
    return format_table(rows) + "\n" + footer


def render_summary(result: dict) -> str:
    from robustlab.experiments.reproduce import duration

    report = result["report"]
    lines = [format_table(result["parts"]), f"report: {report['html']}", f"        {report['markdown']}"]
    return "\n".join([*lines, f"wall time: {duration(result['seconds'])}"])
