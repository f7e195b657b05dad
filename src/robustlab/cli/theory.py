"""`robustlab theory`: the experiments behind Theorems 1 and 2 of the paper."""

from __future__ import annotations

import argparse
from typing import Any

from robustlab.cli.common import Subparsers, add_device_flag, add_json_flag, emit, format_table, int_list


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("theory", help="measure Theorem 1 (no free robustness) and Theorem 2 (1-NN)")
    parser.set_defaults(func=lambda args: parser.print_help())
    theorems = parser.add_subparsers(dest="theorem", metavar="THEOREM")

    one = theorems.add_parser("theorem1", help="learners on the hypercube family D_phi: clean and robust accuracy vs n")
    one.add_argument(
        "--sizes",
        type=int_list,
        default=[16, 64, 256, 1024, 4096],
        help="training-set sizes n, comma-separated (default: 16,64,256,1024,4096)",
    )
    one.add_argument(
        "--fixed-d", type=int, default=10, help="also sweep n at this fixed dimension d; 0 to skip (default: 10)"
    )
    one.add_argument("--delta", type=float, default=0.1, help="size of the non-robust feature x_d (default: 0.1)")
    one.add_argument("--eps", type=float, help="L2 attack radius, in [0, 1) (default: delta, as in the paper)")
    one.add_argument(
        "--learners",
        type=_name_list,
        help="comma-separated (default: sign, 1nn, mlp, lipschitz-mlp and the oracle)",
    )
    one.add_argument("--pgd-steps", type=int, default=20, help="L2 PGD steps per start; 0 for the paper's attack only")
    add_device_flag(one, "auto", "auto, cpu or cuda (default: auto)")
    _add_common(one)
    one.set_defaults(func=run_theorem1)

    two = theorems.add_parser(
        "theorem2", help="L-inf 1-NN on a checkerboard with margin delta: exact robust accuracy vs n"
    )
    two.add_argument(
        "--sizes", type=int_list, help="training-set sizes n, comma-separated (default: 8 to twice the sufficient n)"
    )
    two.add_argument("--d", type=int, default=3, help="dimension (default: 3)")
    two.add_argument("--delta", type=float, default=0.1, help="margin of the robust classifier (default: 0.1)")
    two.add_argument("--cells", type=int, default=4, help="checkerboard cells per axis (default: 4)")
    two.add_argument("--radius", type=float, help="L-inf attack radius (default: delta/2, as in the theorem)")
    _add_common(two)
    two.set_defaults(func=run_theorem2)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials", type=int, default=5, help="independent draws averaged per n (default: 5)")
    parser.add_argument("--test-size", type=int, default=1000, help="test points per draw (default: 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--plot", metavar="FILE", help="write the figure to FILE (.png, .pdf, .svg)")
    add_json_flag(parser)


def run_theorem1(args: argparse.Namespace) -> int:
    from robustlab.runtime import resolve_device
    from robustlab.theory.hypercube import DEFAULT_LEARNERS, theorem1_sweep
    from robustlab.theory.plots import plot_theorem1

    options = dict(
        delta=args.delta,
        eps=args.eps,
        learners=args.learners or list(DEFAULT_LEARNERS),
        trials=args.trials,
        test_size=args.test_size,
        pgd_steps=args.pgd_steps,
        seed=args.seed,
        device=resolve_device(args.device),
    )
    sweeps = {"d = ceil(log2 n) + 7": theorem1_sweep(args.sizes, **options)}
    if args.fixed_d:
        sweeps[f"d = {args.fixed_d}"] = theorem1_sweep(args.sizes, d=args.fixed_d, **options)
    result: dict[str, Any] = {"sweeps": sweeps}
    if args.plot:
        result["plot"] = str(plot_theorem1(sweeps, args.plot))
    emit(args, result, _render_theorem1)
    return 0


def run_theorem2(args: argparse.Namespace) -> int:
    from robustlab.theory.nearest_neighbour import theorem2_sweep
    from robustlab.theory.plots import plot_theorem2

    sweep = theorem2_sweep(
        args.sizes,
        d=args.d,
        delta=args.delta,
        cells=args.cells,
        radius=args.radius,
        trials=args.trials,
        test_size=args.test_size,
        seed=args.seed,
    )
    if args.plot:
        sweep["plot"] = str(plot_theorem2(sweep, args.plot))
    emit(args, sweep, _render_theorem2)
    return 0


def _render_theorem1(result: dict) -> str:
    columns = ["n", "d", "learner", "clean", "robust", "robust_ci", "certified", "bound", "ceiling"]
    parts = []
    for title, sweep in result["sweeps"].items():
        settings = sweep["settings"]
        parts.append(
            f"Theorem 1, {title}, delta = {settings['delta']:g}, eps = {settings['eps']:g}, "
            f"{settings['trials']} draws of phi x {settings['test_size']} test points"
        )
        parts.append(format_table(sweep["rows"], columns))
    if "plot" in result:
        parts.append(f"figure: {result['plot']}")
    return "\n\n".join(parts)


def _render_theorem2(sweep: dict) -> str:
    s = sweep["settings"]
    header = (
        f"Theorem 2, d = {s['d']}, delta = {s['delta']:g}, {s['cells']} cells per axis, "
        f"L-inf radius {s['radius']:g}; sufficient n = {s['sufficient_n']}; "
        f"{s['trials']} training sets x {s['test_size']} test points"
    )
    table = format_table(sweep["rows"], ["n", "clean", "certified", "robust", "robust_ci", "searched"])
    footer = "searched: fraction of test points decided by the exact MILP search"
    parts = [header, table, footer] + ([f"figure: {sweep['plot']}"] if "plot" in sweep else [])
    return "\n\n".join(parts)


def _name_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]
