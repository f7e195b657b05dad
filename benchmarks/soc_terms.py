#!/usr/bin/env python3
"""Does SOC's sixth training Taylor term buy accuracy at equal time? One measurement.

    flock /tmp/robustlab-heavy.lock python benchmarks/soc_terms.py --epochs 10 --seeds 0

Trains ``lipconvnet-soc`` on the digits preset (8x8 images, CPU-sized) with the powers
L^1..L^t of the training-mode series for t = 5 (the official SOC code's ``train_terms=5``,
also "1-Lipschitz layers compared") and t = 6 (robustlab's default), the same seeds and
epochs, and prints accuracy, CRA at 36/255 and 72/255 and seconds of training for each;
then trains t = 5 for the epochs that fit into t = 6's time ("equal time"). Evaluation
uses 12 terms either way. ``train_terms`` has no config key, so this script changes the
layer's default for its own runs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench import cpu_name  # benchmarks/ is on sys.path when run as a script
from robustlab.config import load_config
from robustlab.nn.lipschitz.soc import SOCConv2d
from robustlab.train.loop import train

DEFAULTS = SOCConv2d.__init__.__defaults__  # (kernel_size, bias, train_terms, eval_terms, correction, device, dtype)


def run(terms: int, epochs: float, seed: int, lr: float, folder: Path) -> tuple[float, list[float], float]:
    assert DEFAULTS is not None
    SOCConv2d.__init__.__defaults__ = DEFAULTS[:2] + (terms,) + DEFAULTS[3:]
    config = load_config(
        "digits",
        [
            "model.name=lipconvnet-soc",
            "model.kwargs={width: 16, depth: 3}",
            f"optim.lr={lr}",
            f"train.epochs={epochs}",
            f"seed={seed}",
            "train.device=cpu",
        ],
    )
    start = time.perf_counter()
    result = train(config, folder / f"t{terms}-e{epochs}-s{seed}", progress=False).load_results()
    seconds = time.perf_counter() - start
    SOCConv2d.__init__.__defaults__ = DEFAULTS
    return result.accuracy, [point.cra for point in result.cra], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--lr", type=float, default=0.03)
    args = parser.parse_args()
    print(f"processor: {cpu_name()}; load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            six = run(6, args.epochs, seed, args.lr, Path(tmp))
            five = run(5, args.epochs, seed, args.lr, Path(tmp))
            equal_epochs = round(args.epochs * six[2] / five[2], 1)
            five_equal = run(5, equal_epochs, seed, args.lr, Path(tmp))
            for name, (accuracy, cra, seconds) in (
                (f"6 terms, {args.epochs} epochs", six),
                (f"5 terms, {args.epochs} epochs", five),
                (f"5 terms, {equal_epochs} epochs", five_equal),
            ):
                cras = " ".join(f"{value:.3f}" for value in cra)
                print(f"seed {seed}: {name:22} accuracy {accuracy:.3f}  CRA {cras}  train+eval {seconds:.1f} s")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
