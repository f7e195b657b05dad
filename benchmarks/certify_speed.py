#!/usr/bin/env python3
"""Certification time and radii against a baseline checkout, in one run, alternating order.

    flock /tmp/robustlab-heavy.lock python benchmarks/certify_speed.py RUN_DIR \\
        --baseline /tmp/base-e44de7d --images 500 10000 --repeats 3

RUN_DIR is a trained run (its final weights). ``--baseline`` is another checkout of
robustlab (e.g. ``git worktree add /tmp/base-e44de7d e44de7d``). Each repetition certifies
the first N test images with both versions, each in a fresh subprocess (its own imports,
``OMP_NUM_THREADS=1``), in alternating order; the time is that of ``certify_points``
(float64 copy, normalisers, forward passes, margins) measured inside the subprocess, and
that of a second ``certify_points`` in the same process (what a process that certifies the
same weights again pays: ours reuses the proved CPL sigmas). Prints, per N, each version's median time and the ratio baseline / ours (median and
range over repetitions, above 1: ours is faster), and the radii compared point by point
(ours - baseline: how many points are smaller and larger, the largest decrease and increase,
CRA at 36, 72 and 108/255 of each, certified meaning radius > eps as ``margins.cra``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from bench import cpu_name, run_in_checkout  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from robustlab.certify.evaluate import certify_points
from robustlab.runs.checkpoint import load_run_model
from robustlab.certify.evaluate import split_images
run_dir, count, out, shift_test_cost = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
if shift_test_cost >= 0:
    from robustlab.nn.lipschitz import cpl
    cpl.SHIFT_TEST_COST = shift_test_cost
model, config = load_run_model(run_dir)
images, labels, _, _ = split_images(config, "test")
images, labels = images[:count], labels[:count]
start = time.perf_counter()
certificates = certify_points(model, images, labels, batch_size=500)
seconds = time.perf_counter() - start
np.save(out, certificates.radii.numpy())
start = time.perf_counter()
certify_points(model, images, labels, batch_size=500)  # again: what a process reuses
again = time.perf_counter() - start
import robustlab
print(json.dumps({"seconds": seconds, "again": again, "package": robustlab.__file__}))
"""


def certify_once(source: Path, run_dir: str, count: int, out: Path, shift_test_cost: float = -1) -> tuple[float, float]:
    """Seconds of the first ``certify_points`` in a fresh process, and of a second one on the
    same weights in that process (where a version reuses proved sigmas)."""
    result = run_in_checkout(source, WORKER, [run_dir, str(count), str(out), str(shift_test_cost)], "certification")
    return result["seconds"], result["again"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--baseline", required=True, type=Path, help="another robustlab checkout")
    parser.add_argument("--images", type=int, nargs="+", default=[500])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--shift-test-costs",
        type=float,
        nargs="*",
        default=[],
        help="also certify with ours at these cpl.SHIFT_TEST_COST values (once each) and compare the radii",
    )
    args = parser.parse_args()
    print(f"processor: {cpu_name()}; load average: {os.getloadavg()}")
    versions = {"ours": REPO, "baseline": args.baseline.resolve()}
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.images:
            times: dict[str, list[float]] = {name: [] for name in versions}
            again: dict[str, list[float]] = {name: [] for name in versions}
            for repeat in range(args.repeats):
                order = list(versions) if repeat % 2 == 0 else list(reversed(versions))
                for name in order:
                    first, second = certify_once(versions[name], args.run_dir, count, Path(tmp) / f"{name}.npy")
                    times[name].append(first)
                    again[name].append(second)
            ratios = [base / ours for base, ours in zip(times["baseline"], times["ours"])]
            print(
                f"{count} images: ours {statistics.median(times['ours']):.2f} s, baseline "
                f"{statistics.median(times['baseline']):.2f} s; ratio baseline/ours median "
                f"{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}] over {args.repeats}"
            )
            print(
                f"  a second certification in the same process: ours {statistics.median(again['ours']):.2f} s, "
                f"baseline {statistics.median(again['baseline']):.2f} s"
            )
            report_radii(Path(tmp))
            for limit in args.shift_test_costs:
                seconds, _ = certify_once(REPO, args.run_dir, count, Path(tmp) / "ours.npy", limit)
                print(f"  ours with SHIFT_TEST_COST={limit:g}: {seconds:.2f} s")
                report_radii(Path(tmp))
    print(f"load average after: {os.getloadavg()}")


def report_radii(folder: Path) -> None:
    import numpy as np

    ours, base = np.load(folder / "ours.npy"), np.load(folder / "baseline.npy")
    change = ours - base
    cras = ", ".join(
        f"{k}/255 ours {np.mean(ours > k / 255):.4f} baseline {np.mean(base > k / 255):.4f}" for k in (36, 72, 108)
    )
    print(
        f"  radii: {int((change < 0).sum())} of {len(change)} smaller, {int((change > 0).sum())} larger; "
        f"largest decrease {max(0.0, -change.min()):.3g}, largest increase {max(0.0, change.max()):.3g}; CRA {cras}"
    )


if __name__ == "__main__":
    main()
