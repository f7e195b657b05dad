"""`robustlab smooth`: randomized smoothing of a trained run, and the comparison table
(``robustlab.experiments.smoothing_runs``)."""

from __future__ import annotations

import argparse
from typing import Any

from robustlab.cli.common import (
    Subparsers,
    add_data_dir_flag,
    add_device_flag,
    add_json_flag,
    emit,
    format_table,
    non_negative_number,
    positive_int,
)

METHODS = ("estimate", "certify", "predict")  # smoothing.METHODS, without importing torch for --help


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "smooth",
        help="randomized smoothing of a trained run: the paper's estimate or Cohen et al.'s certificate",
        description="Smooths the run's model with Gaussian noise over its evaluation images. 'estimate' is the "
        "paper's radius estimate (NOT a guarantee); 'certify' and 'predict' are Cohen et al. (2019). Per-image "
        "results go to RUN_DIR/smoothing-<method>.jsonl as they are computed: rerunning continues where a "
        "killed run stopped. With --compare: one table of every certify/smoothing result of the given runs.",
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folder(s) made by `robustlab train`")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="only print the table of existing results (Lipschitz CRA next to smoothing) of the runs",
    )
    parser.add_argument("--method", choices=METHODS, default="estimate")
    parser.add_argument(
        "--sigma", type=non_negative_number, help="noise std (default: the run's augment.noise_std), e.g. 1/8"
    )
    parser.add_argument(
        "--n", type=positive_int, help="noise samples per image (default: 1000 estimate, 100000 certify/predict)"
    )
    parser.add_argument(
        "--n0", type=positive_int, default=100, help="certify: samples that select the top class (default 100)"
    )
    parser.add_argument(
        "--alpha", type=float, default=0.001, help="certify/predict: failure probability (default 0.001)"
    )
    parser.add_argument(
        "--split", choices=("test", "val", "train"), help="images to use (default: the run's evaluation split)"
    )
    parser.add_argument("--limit", type=int, help="use at most this many images")
    parser.add_argument("--skip", type=int, default=1, help="use every SKIP-th image (default 1: all)")
    parser.add_argument("--batch-size", type=int, default=10_000, help="noisy images per forward pass (default 10000)")
    add_device_flag(parser, "auto", "auto, cpu, cuda, cuda:1, ...")
    add_data_dir_flag(parser, ", if not the one the run recorded")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument(
        "--precision",
        choices=("float32", "bfloat16"),
        default="float32",
        help="estimate only: bfloat16 autocast for speed on a GPU (default float32)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="run the model under torch.compile (GPU speed; the first batch pays the compilation)",
    )
    parser.add_argument("--restart", action="store_true", help="discard earlier results of this method and start over")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported when the command runs, not for --help: keeps start-up fast
    from robustlab.experiments.smoothing_runs import comparison_table, smooth_run

    if args.compare:
        emit(args, {"rows": [row.to_dict() for row in comparison_table(args.run_dirs)]}, _render_comparison)
        return 0
    if len(args.run_dirs) != 1:
        raise ValueError("smoothing runs on one RUN_DIR at a time; give several only with --compare")
    result = smooth_run(
        args.run_dirs[0],
        args.method,
        sigma=args.sigma,
        n=args.n,
        n0=args.n0,
        alpha=args.alpha,
        split=args.split,
        limit=args.limit,
        skip=args.skip,
        batch_size=args.batch_size,
        device=args.device,
        data_dir=args.data_dir,
        seed=args.seed,
        precision=args.precision,
        compile=args.compile,
        restart=args.restart,
        progress=not args.quiet,
    )
    emit(args, result.to_dict(), _render_result)
    return 0


def _render_result(result: dict[str, Any]) -> str:
    settings = f"sigma={result['sigma']:g}, n={result['n']}"
    settings += f", n0={result['n0']}" if "n0" in result else ""
    settings += f", alpha={result['alpha']:g}" if "alpha" in result else ""
    row = {"method": result["method"], "images": result["num_images"], "accuracy": result["accuracy"]}
    if "abstain_rate" in result:
        row["abstained"] = result["abstain_rate"]
    row.update({point["label"]: point["cra"] for point in result.get("cra", [])})
    timing = result["timing"]
    speed = timing["samples_per_second"]
    lines = [
        f"randomized smoothing of {result['run']} on {result['num_images']} {result['split']} images ({settings})",
        format_table([row]),
        f"guarantee: {result['guarantee']}",
        f"{timing['images_computed']} images computed in {timing['seconds']:.1f} s"
        + (f" ({speed:,.0f} noisy samples/s)" if speed else ""),
        f"per-image results: {result['results_file']}",
    ]
    return "\n".join(lines)


def _render_comparison(data: dict[str, Any]) -> str:
    return format_table(data["rows"]) + (
        "\n\nguarantee: deterministic = certified 1-Lipschitz margin; p >= 1 - alpha = Cohen et al.'s certificate; "
        "estimate = the paper's Monte-Carlo estimate, not a guarantee"
    )
