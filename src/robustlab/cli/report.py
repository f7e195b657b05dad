"""`robustlab report`: an experiment's figure and table from the run store, without training."""

from __future__ import annotations

import argparse

from robustlab.cli.common import Subparsers, add_data_dir_flag, emit
from robustlab.cli.experiment import add_setup_arguments, render_report, setup_from_args


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write an experiment's figure and table from the runs already trained",
        description="Reads the run store (nothing is trained); runs still missing are left out and counted.",
    )
    parser.add_argument("name", metavar="NAME", help="experiment name (see `robustlab experiment`)")
    add_setup_arguments(parser)
    add_data_dir_flag(parser, " (the report reads the dataset's size and classes)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported when the command runs, not for --help: keeps start-up fast
    from robustlab.experiments import report_experiment
    from robustlab.runs.store import RunStore

    report = report_experiment(setup_from_args(args), RunStore(args.runs_root, create=False), out_dir=args.out)
    emit(args, report.to_dict(), render_report)
    return 0
