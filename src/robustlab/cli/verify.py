"""`robustlab verify`: check that a model is 1-Lipschitz (or within the bound it claims, for a
network whose bound is computed from its weights), layer by layer and as a whole."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from robustlab.cli.common import Subparsers, add_device_flag, add_json_flag, emit, format_table
from robustlab.config import parse_override

if TYPE_CHECKING:
    import torch

    from robustlab.nn.models import ImageClassifier


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="check that a model is 1-Lipschitz (per-layer norms, network lower bound)",
        description="Estimates the operator norm of every layer (exact SVD for dense layers, Lanczos on J^T J "
        "otherwise, an FFT upper bound for plain/AOL convolutions, the all-active bound for CPL/SLL; by default "
        "only for layers up to 131072 parameters, larger ones get a Lanczos estimate: --exact for all) and an "
        "empirical lower bound of the network's Lipschitz constant by gradient ascent. Exits with status 1 if "
        "anything exceeds its claimed bound (1 for 1-Lipschitz layers; computed from the weights for LiResNet's) "
        "times 1 + tolerance. Give a freshly built --model with --dataset (which only sets the input "
        "shape and class count; no data is read), or a RUN_DIR made by `robustlab train`.",
    )
    parser.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a run folder made by `robustlab train`")
    parser.add_argument("--model", help="a model registry name, e.g. lipconvnet-cpl (built with random weights)")
    parser.add_argument(
        "--dataset", help="a dataset name (see `robustlab data info`): input shape and classes for --model"
    )
    parser.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="constructor argument for --model, e.g. width=16 (repeatable)",
    )
    parser.add_argument("--tolerance", type=float, default=1e-4, help="allowed excess over 1 (default 1e-4)")
    parser.add_argument(
        "--exact",
        action="store_true",
        help="every layer's exact method and rigorous upper bounds (SVD, FFT) at any size, more Lanczos starts "
        "and ascent steps: minutes for large layers on a CPU (default: fast, under a minute; layers over "
        "131072 parameters get a Lanczos estimate)",
    )
    parser.add_argument(
        "--attack-steps",
        type=int,
        help="gradient-ascent steps for the network lower bound (default 10; 20 with --exact)",
    )
    parser.add_argument("--seed", type=int, default=0)
    add_device_flag(parser, "cpu", "cpu (default), auto, cuda, ...")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported when the command runs, not for --help: keeps start-up fast
    from robustlab.nn.verify import verify_model
    from robustlab.runtime import resolve_device, seed_everything

    seed_everything(args.seed)
    device = resolve_device(args.device)
    model, source = _load(args, device)
    report = verify_model(
        model,
        model.input_shape,
        args.tolerance,
        exact=args.exact,
        attack_steps=args.attack_steps,
        seed=args.seed,
        progress=not args.quiet,
    )
    report["model"] = source
    emit(args, report, _render)
    if not report["ok"]:
        bad = [row["name"] for row in report["layers"] if not row["ok"]]
        if _one_lipschitz(report):
            what = f"layer(s) {', '.join(bad)} exceed" if bad else "the network's empirical Lipschitz constant exceeds"
            print(f"robustlab verify: NOT 1-LIPSCHITZ: {what} 1 + {args.tolerance:g}", file=sys.stderr)
        else:
            what = f"layer(s) {', '.join(bad)} exceed their" if bad else "the network's empirical constant exceeds its"
            print(
                f"robustlab verify: NOT WITHIN ITS BOUND: {what} claimed bound times 1 + {args.tolerance:g}",
                file=sys.stderr,
            )
        return 1
    return 0


def _one_lipschitz(report: dict) -> bool:
    return report["claimed_lipschitz"] in (None, 1.0)


def _load(args: argparse.Namespace, device: torch.device) -> tuple[ImageClassifier, str]:
    if args.run_dir and (args.model or args.dataset):
        raise ValueError("give either RUN_DIR or --model with --dataset, not both")
    if args.run_dir:
        from robustlab.runs.checkpoint import load_run_model  # lazy, as in run()

        model, config = load_run_model(args.run_dir, device)
        return model, f"{config.model.name} ({args.run_dir})"
    if not (args.model and args.dataset):
        raise ValueError(
            "give a RUN_DIR, or --model NAME together with --dataset NAME (e.g. --model lipconvnet-cpl --dataset cifar10)"
        )
    from robustlab.nn.models import create_model  # lazy, as in run()

    shape, num_classes = dataset_shape(args.dataset)
    return create_model(args.model, shape, num_classes, **_model_kwargs(args.model_arg)).to(device), args.model


def dataset_shape(name: str) -> tuple[tuple[int, int, int], int]:
    """(C, H, W) and class count of a named dataset, from its registry entry (no files read)."""
    from robustlab.data.datasets import DATASETS  # imports torch: not for --help

    spec = DATASETS.get(name)
    if spec.image_shape is None:
        raise ValueError(
            f"dataset '{name}' has no fixed image shape; use a named dataset such as cifar10, or a RUN_DIR"
        )
    height, width, channels = spec.image_shape
    return (channels, height, width), len(spec.classes)


def _model_kwargs(texts: list[str]) -> dict:
    kwargs = {}
    for text in texts:
        path, value = parse_override(text)
        if len(path) != 1:
            raise ValueError(f"--model-arg '{text}' must look like key=value, e.g. width=16")
        kwargs[path[0]] = value
    return kwargs


def _render(report: dict) -> str:
    rows = [
        {
            "layer": r["name"],
            "type": r["type"],
            "method": r["method"],
            "norm": r["norm"],
            "upper bound": r["upper_bound"],
            "claimed": r["claimed"],
            "ok": "yes" if r["ok"] else "NO",
        }
        for r in report["layers"]
        if r["method"] != "analytic" or not r["ok"]
    ]
    network = report["network"]
    if _one_lipschitz(report):
        verdict = "1-Lipschitz (within tolerance)" if report["ok"] else "NOT 1-Lipschitz"
    else:  # a network whose bound is computed from its weights (LiResNet)
        bound = f"claimed bounds (network L = {report['claimed_lipschitz']:.6f})"
        verdict = f"within its {bound}" if report["ok"] else f"NOT within its {bound}"
    return (
        f"{report['model']}, input {tuple(report['input_shape'])}: layers with parameters\n{format_table(rows)}\n"
        f"product of layer norms: {network['layer_product']:.6f}\n"
        f"network lower bound (gradient ascent): {network['lower_bound']:.6f}\n"
        f"verdict: {verdict} (tolerance {report['tolerance']:g})"
        + ("" if report.get("exact") else "\nfast check: large layers by a Lanczos estimate; --exact for every layer")
    )
