#!/usr/bin/env python3
"""CPU bfloat16 training against float32: equal results within seed noise, and the speed-up.

    flock /tmp/robustlab-heavy.lock python benchmarks/bf16_equivalence.py --presets digits aol-mlp-mnist-small

For each preset and seed (default 0, 1, 2), trains once with ``train.precision=float32``
and once with ``bfloat16`` (alternating which goes first), on the CPU, and prints per
precision the mean and standard deviation over seeds of accuracy and CRA (36, 72, 108/255;
certification is float64 either way) and the median training seconds with the ratio
float32 / bfloat16 per seed (median and range). Refused, like training, on a CPU without
bf16 arithmetic.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench import cpu_name  # benchmarks/ is on sys.path when run as a script
from robustlab.config import load_config
from robustlab.train.loop import train

PRECISIONS = ("float32", "bfloat16")


def run(preset: str, precision: str, seed: int, folder: Path, data_dir: str | None) -> tuple[float, list[float], float]:
    overrides = [f"seed={seed}", f"train.precision={precision}", "train.device=cpu"]
    if data_dir:
        overrides.append(f"data.data_dir={data_dir}")
    config = load_config(preset, overrides)
    start = time.perf_counter()
    results = train(config, folder / f"{preset}-{precision}-{seed}", progress=False).load_results()
    return results.accuracy, [point.cra for point in results.cra], time.perf_counter() - start


def spread(values: list[float]) -> str:
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {deviation:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["digits", "aol-mlp-mnist-small"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-dir", help="folder with mnist.npz (default: $ROBUSTLAB_DATA)")
    args = parser.parse_args()
    print(f"CPU {cpu_name()}; load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            outcomes: dict[str, list[tuple[float, list[float], float]]] = {p: [] for p in PRECISIONS}
            for index, seed in enumerate(args.seeds):
                for precision in PRECISIONS if index % 2 == 0 else tuple(reversed(PRECISIONS)):
                    outcomes[precision].append(run(preset, precision, seed, Path(tmp), args.data_dir))
            for precision, runs in outcomes.items():
                cras = [spread([cra[i] for _, cra, _ in runs]) for i in range(len(runs[0][1]))]
                print(
                    f"{preset} {precision:8}: accuracy {spread([accuracy for accuracy, _, _ in runs])}, "
                    f"CRA {' | '.join(cras)}, train+eval {statistics.median(s for _, _, s in runs):.1f} s (median)"
                )
            ratios = [f32[2] / bf16[2] for f32, bf16 in zip(outcomes["float32"], outcomes["bfloat16"])]
            print(
                f"{preset}: float32 / bfloat16 time, median {statistics.median(ratios):.2f} "
                f"[{min(ratios):.2f}-{max(ratios):.2f}] over {len(ratios)} seeds"
            )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
