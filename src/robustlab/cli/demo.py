"""`robustlab demo`: the paper's central result in miniature, on a laptop CPU in minutes."""

from __future__ import annotations

import argparse

from robustlab.cli.common import (
    Subparsers,
    add_data_dir_flag,
    add_device_flag,
    add_json_flag,
    add_overrides_flag,
    data_dir_override,
    emit,
    int_list,
)
from robustlab.cli.experiment import render_report
from robustlab.config import ConfigError


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="accuracy and certified robust accuracy vs training-set size, on built-in data",
        description="Trains a small 1-Lipschitz network and a standard network on growing class-balanced "
        "subsets of the built-in digits (same number of steps per size; no download, no GPU), certifies "
        "the Lipschitz one, and prints and plots accuracy and CRA against the training-set size. "
        "--dataset and --device scale it up (e.g. --dataset cifar10 --device cuda).",
    )
    parser.add_argument("--out", default="robustlab-demo", help="output folder (default: robustlab-demo)")
    parser.add_argument("--dataset", help="dataset name or .npz path (default: digits, built in)")
    add_device_flag(parser, None, "auto, cpu, cuda, ... (default: auto)")
    add_data_dir_flag(parser, " for --dataset")
    parser.add_argument("--sizes", type=int_list, help="training-set sizes, e.g. 48,97,195 (capped at the split)")
    parser.add_argument("--epochs", type=float, help="epochs of the full training set; each size gets the same steps")
    parser.add_argument("--seeds", type=int_list, help="seeds to average over (default: 0,1,2)")
    add_overrides_flag(parser, "every run")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_json_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported when the command runs, not for --help: keeps start-up fast
    from robustlab.experiments.data_scaling import run_demo

    if args.epochs is not None and args.epochs <= 0:
        raise ConfigError(f"--epochs must be positive, got {args.epochs}")
    report = run_demo(
        args.out,
        args.dataset,
        args.device,
        args.sizes,
        args.epochs,
        args.seeds,
        args.overrides + data_dir_override(args),
        progress=not args.quiet,
    )
    emit(args, report.to_dict(), render_demo)
    return 0


def render_demo(data: dict) -> str:
    """The report as ``robustlab experiment`` prints it, with the test columns only, so that
    it fits a terminal; the training-image columns are in the written table."""
    test_columns = [c for c in data["columns"] if not c.startswith("train ")]
    left_out = len(data["columns"]) - len(test_columns)
    text = render_report({**data, "columns": test_columns})
    table = data["tables"].get("text") or next(iter(data["tables"].values()), None)
    return text + (f"\n(the {left_out} columns on the training images are in {table})" if left_out and table else "")
