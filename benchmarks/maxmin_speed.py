#!/usr/bin/env python3
"""MaxMin forward + backward: the fused autograd node against the separate torch.maximum /
torch.minimum ops it replaced (commit e44de7d's MaxMin.forward), alternating order, on
activation shapes of a CPL LipConvNet (width 16, batch 256) step.

    flock /tmp/robustlab-heavy.lock python benchmarks/maxmin_speed.py --repeats 9

Prints per shape the median time of each and the ratio separate / fused (median and range;
above 1: the fused node is faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from bench import cpu_name  # benchmarks/ is on sys.path when run as a script
from robustlab.nn.activations import MaxMin

SHAPES = [(256, 16, 32, 32), (256, 32, 16, 16), (256, 64, 8, 8), (256, 128, 4, 4), (256, 256, 2, 2)]


def separate_ops(x: torch.Tensor) -> torch.Tensor:
    a, b = x.unflatten(1, (x.shape[1] // 2, 2)).unbind(2)
    return torch.stack((torch.maximum(a, b), torch.minimum(a, b)), 2).flatten(1, 2)


def seconds(function, x: torch.Tensor, grad: torch.Tensor) -> float:
    leaf = x.clone().requires_grad_()
    start = time.perf_counter()
    function(leaf).backward(grad)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    print(f"CPU {cpu_name()}; load average {os.getloadavg()}")
    fused = MaxMin()
    for shape in SHAPES:
        x, grad = torch.randn(shape), torch.randn(shape)
        times: dict[str, list[float]] = {"separate": [], "fused": []}
        functions = {"separate": separate_ops, "fused": fused}
        for name in functions:  # warm-up
            seconds(functions[name], x, grad)
        for repeat in range(args.repeats):
            for name in ("separate", "fused") if repeat % 2 == 0 else ("fused", "separate"):
                times[name].append(seconds(functions[name], x, grad))
        ratios = [s / f for s, f in zip(times["separate"], times["fused"])]
        print(
            f"{shape!s:20} separate {statistics.median(times['separate']) * 1e3:7.2f} ms  fused "
            f"{statistics.median(times['fused']) * 1e3:7.2f} ms  ratio {statistics.median(ratios):.2f} "
            f"[{min(ratios):.2f}-{max(ratios):.2f}]"
        )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
