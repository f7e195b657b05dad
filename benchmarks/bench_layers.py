#!/usr/bin/env python3
"""Cost of one conv layer of each family: the command behind README's layer table.

    OMP_NUM_THREADS=1 python benchmarks/bench_layers.py [FAMILY ...]

One width-64 3x3 conv layer per family (``LAYER_FAMILIES.get(name).conv(64, 3,
input_size=(32, 32))``), a batch of 32 CIFAR-shaped activations (64 x 32 x 32): the best of 5
of ``layer(x).sum().backward()`` in training mode, and of ``layer(x)`` under ``no_grad`` in
evaluation mode after one untimed call (which fills the layer's evaluation cache; its time is
printed too). Prints one markdown row per family.
"""

from __future__ import annotations

import argparse
import time

import torch

from robustlab.nn.lipschitz import LAYER_FAMILIES

CHANNELS, SIZE, BATCH, REPEATS = 64, 32, 32, 5


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(name: str) -> dict:
    torch.manual_seed(0)
    layer = LAYER_FAMILIES.get(name).conv(CHANNELS, 3, input_size=(SIZE, SIZE))
    x = torch.randn(BATCH, CHANNELS, SIZE, SIZE)
    layer.train()
    train = best_of(REPEATS, lambda: layer(x).sum().backward())
    layer.eval()
    with torch.no_grad():
        first = best_of(1, lambda: layer(x))
        cached = best_of(REPEATS, lambda: layer(x))
    parameters = sum(p.numel() for p in layer.parameters())
    return {
        "family": name,
        "layer": type(layer).__name__,
        "params": parameters,
        "train": train,
        "first": first,
        "eval": cached,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("families", nargs="*", help="layer families (default: all registered)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print("| family | layer | params | train fwd+bwd (ms) | eval fwd, cached (ms) | first eval fwd (ms) |")
    print("|---|---|---|---|---|---|")
    for name in args.families or LAYER_FAMILIES.names():
        row = measure(name)
        print(
            f"| {row['family']} | {row['layer']} | {row['params']} | {row['train'] * 1e3:.0f} | "
            f"{row['eval'] * 1e3:.0f} | {row['first'] * 1e3:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
