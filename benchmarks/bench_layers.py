#!/usr/bin/env python3
"""Cost of one conv layer of each family: the command behind README's layer table.

    OMP_NUM_THREADS=1 python benchmarks/bench_layers.py [FAMILY ...]

For each family (default: every one in ``LAYER_FAMILIES``, so a family added later gets its
row from the same command): ``layer = LAYER_FAMILIES.get(name).conv(64, 3,
input_size=(32, 32))`` on a batch of 32 activations of shape 64 x 32 x 32; the best of 5
timings of ``layer(x).sum().backward()`` in training mode and of ``layer(x)`` under
``no_grad`` in evaluation mode, after one untimed eval call that fills the evaluation cache
(its time, the normaliser's cost, is printed too). Prints one markdown row per family.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from robustlab.nn.lipschitz import LAYER_FAMILIES

CHANNELS, SIZE, BATCH, REPEATS = 64, 32, 32, 5


def best_ms(run: Callable[[], object], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def row(name: str) -> str:
    torch.manual_seed(0)
    layer = LAYER_FAMILIES.get(name).conv(CHANNELS, 3, input_size=(SIZE, SIZE))
    x = torch.randn(BATCH, CHANNELS, SIZE, SIZE)
    train = best_ms(lambda: layer.train()(x).sum().backward())
    with torch.no_grad():
        first = best_ms(lambda: layer.eval()(x), repeats=1)
        cached = best_ms(lambda: layer(x))
    params = sum(p.numel() for p in layer.parameters())
    return f"| {name} | {type(layer).__name__} | {params} | {train:.0f} | {cached:.0f} | {first:.0f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="*", help="layer families (default: all registered)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print("| family | layer | params | train fwd+bwd (ms) | eval fwd, cached (ms) | first eval fwd (ms) |")
    print("|---|---|---|---|---|---|")
    for name in args.families or LAYER_FAMILIES.names():
        print(row(name), flush=True)


if __name__ == "__main__":
    main()
