"""Coverage of the scaling-law fits' 95% intervals, measured on synthetic sweeps with known laws.

For each design (sizes x seeds: 6x1, 6x3, 11x1, 11x3) and each quantity (the slope per doubling,
the N at which the line reaches a target, the sigmoid's ceiling and midpoint) prints the share of
replicates whose interval holds the true value (``robustlab.report.coverage``). A calibrated
method lies within 93-97% everywhere.

    python benchmarks/fit_coverage.py --replicates 1000
    python benchmarks/fit_coverage.py --method OLD/scaling_law.py   # another version of the module, to compare
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time

from robustlab.report.coverage import DESIGNS, QUANTITIES, measure
from robustlab.report.scaling_law import fit_scaling


def load_method(path: str):
    """``fit_scaling`` of another copy of scaling_law.py (it imports only NumPy and SciPy)."""
    spec = importlib.util.spec_from_file_location("other_scaling_law", path)
    assert spec is not None and spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.fit_scaling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=1000, help="synthetic sweeps per design")
    parser.add_argument("--designs", default=",".join(DESIGNS), help="comma-separated, of " + ", ".join(DESIGNS))
    parser.add_argument("--method", help="path of another scaling_law.py to measure instead of this one")
    parser.add_argument("--bootstraps", type=int, help="replicates per fit (default: the method's own)")
    args = parser.parse_args()
    fit = load_method(args.method) if args.method else fit_scaling
    print(f"coverage of the 95% intervals, {args.replicates} replicates per design ({args.method or 'this robustlab'})")
    print("| design | " + " | ".join(QUANTITIES) + " | seconds |")
    print("|---|" + "---|" * (len(QUANTITIES) + 1))
    for design in args.designs.split(","):
        started = time.perf_counter()
        rows = measure(design, args.replicates, fit, bootstraps=args.bootstraps)
        cells = [f"{row.percent:.1f}%" + (f" ({row.fits} fits)" if row.fits < row.replicates else "") for row in rows]
        print(f"| {design} | " + " | ".join(cells) + f" | {time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
