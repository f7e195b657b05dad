"""`robustlab train`: train a model from a preset or YAML config, or resume a run."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

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
from robustlab.config import ExperimentConfig, load_config, parse_override, preset_names

if TYPE_CHECKING:
    from robustlab.runs.store import Run

DEFAULT_PRESET = "digits"  # built-in data, trains in seconds on a CPU


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model (preset or YAML config) and certify it",
        description="Trains as the config says, writes checkpoints, metrics, the final weights and results "
        "into a run folder, and indexes it in the run store. Multi-GPU: "
        "torchrun --nproc_per_node=K -m robustlab.cli train ...",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--config",
        metavar="PRESET_OR_YAML",
        default=DEFAULT_PRESET,
        help=f"a preset ({', '.join(preset_names())}) or a YAML file (default: {DEFAULT_PRESET})",
    )
    source.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoint")
    add_overrides_flag(parser, "this run")
    parser.add_argument("--run-dir", help="folder for this run (default: a new folder under the runs root)")
    parser.add_argument("--runs-root", help="folder of runs and their index (default: $ROBUSTLAB_RUNS or ./runs)")
    add_device_flag(parser, None, "auto, cpu, cuda, cuda:1, ... (sets train.device)")
    add_data_dir_flag(parser, " (sets data.data_dir)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported when the command runs, not for --help: keeps start-up fast
    from robustlab.runs.store import RunStore
    from robustlab.train import distributed
    from robustlab.train.loop import train

    overrides = args.overrides + ([f"train.device={args.device}"] if args.device else []) + data_dir_override(args)
    store = RunStore(args.runs_root) if args.runs_root else None
    if args.resume:
        if overrides:
            raise ValueError(
                "--resume continues a run with its saved config; --set, --device and --data-dir cannot change it"
            )
        result_run = train(None, run_dir=args.resume, store=store, resume=True, progress=not args.quiet)
    else:
        config = _lr_for_model(load_config(args.config, overrides), args, overrides)
        result_run = train(config, run_dir=args.run_dir, store=store, progress=not args.quiet)
    if distributed.is_main_process():  # under torchrun only rank 0 reports
        emit(args, summary(result_run), _render)
    return 0


def _lr_for_model(config: ExperimentConfig, args: argparse.Namespace, overrides: list[str]) -> ExperimentConfig:
    """A preset whose model ``--set`` swapped trains at the new layer family's lr (each family's
    ``LR_SCALE``), unless ``--set optim.lr=...`` chose one."""
    from robustlab.progress import note
    from robustlab.train.optim import lr_for_swapped_model

    if any(parse_override(text)[0] == ["optim", "lr"] for text in overrides):
        return config
    preset = load_config(args.config)
    scaled = lr_for_swapped_model(config, preset)
    if scaled.optim.lr != config.optim.lr:
        note(
            f"lr {scaled.optim.lr:.4g}: {args.config}'s lr {config.optim.lr:.4g} (for {preset.model.name}) scaled to "
            f"{scaled.model.name}'s layer family; --set optim.lr=... chooses another",
            not args.quiet,
        )
    return scaled


def summary(run: Run) -> dict:
    return {"run_dir": str(run.path), **run.load_results().to_dict()}


def _render(data: dict) -> str:
    rows = [{"metric": "accuracy", "value": data["accuracy"]}]
    rows += [{"metric": f"CRA {entry['label']}", "value": entry["cra"]} for entry in data["cra"]]
    rows += [
        {"metric": key, "value": data[key]}
        for key in ("train_accuracy", "train_cra", "epochs", "steps", "train_time_s", "device")
        if key in data
    ]
    text = f"run: {data['run_dir']} (evaluated on {data['eval_split']}, {data['n_eval']} images)\n" + format_table(rows)
    return text + "".join(f"\nWARNING: {warning}" for warning in data.get("warnings", []))
