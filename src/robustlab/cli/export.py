"""`robustlab export`: a run's weights as one file that loads without the run folder."""

from __future__ import annotations

import argparse

from robustlab.cli.common import Subparsers, add_json_flag, emit


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a run's weights and architecture record as a safetensors file",
        description="Writes the run's final weights (or latest checkpoint) with the record that rebuilds the "
        "model (name, kwargs, input shape, classes, mean, architecture version) into one safetensors file. "
        "Load it with robustlab.load_model(PATH) or torch.hub.load(REPO, 'lipconvnet_cpl', weights=PATH); "
        "nothing is unpickled.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder made by `robustlab train`")
    parser.add_argument("--format", choices=("safetensors",), default="safetensors", help="file format (safetensors)")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="export the plain-convolution copy (robustlab.nn.export.export_model): same outputs, no Lipschitz layers",
    )
    parser.add_argument("--out", help="output file (default: RUN_DIR/model.safetensors, or model-plain.safetensors)")
    add_json_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from robustlab.runs.checkpoint import export_run

    path = export_run(args.run_dir, args.out, args.plain)
    emit(args, {"path": str(path), "plain": args.plain}, lambda data: f"wrote {data['path']}")
    return 0
