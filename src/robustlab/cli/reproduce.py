"""`robustlab reproduce`: every experiment of the paper and the theory lab, and one report."""

from __future__ import annotations

import argparse
import shlex
import sys

from robustlab.cli.common import (
    add_data_dir_flag,
    add_device_flag,
    add_json_flag,
    add_overrides_flag,
    data_dir_override,
    emit,
    format_table,
)


def add_parser(subparsers) -> None:
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
        help="smoke (seconds: the pipeline check), demo (the CPU miniature on built-in digits, under 30 minutes "
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
    add_json_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from robustlab.experiments.reproduce import reproduce

    result = reproduce(
        args.scale,
        args.runs_root,
        args.out,
        parts=[p.strip() for p in args.parts.split(",") if p.strip()] if args.parts else None,
        overrides=args.overrides + data_dir_override(args),
        extra_data=args.extra_data,
        device=args.device,
        progress=not args.quiet,
        command="robustlab " + shlex.join(sys.argv[1:]),
        dry_run=args.dry_run,
    )
    if args.dry_run:
        emit(args, result, render_plan)
        return 0
    emit(args, result, render_summary)
    return 1 if any(part["error"] for part in result["parts"]) else 0


def render_summary(result: dict) -> str:
    from robustlab.experiments.reproduce import duration

    report = result["report"]
    lines = [format_table(result["parts"]), f"report: {report['html']}", f"        {report['markdown']}"]
    return "\n".join([*lines, f"wall time: {duration(result['seconds'])}"])


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
