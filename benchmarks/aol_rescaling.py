#!/usr/bin/env python3
"""AOL's rescaling of a conv kernel: the loop of overlap products (``conv_gram_row_sums``'
``"products"`` form) against the reference's one self-convolution (``"convolution"``), forward
and backward, per kernel shape, alternating order; prints the ratio products / convolution
(median and range; above 1: the self-convolution is faster) and which form the code picks.

    flock /tmp/robustlab-heavy.lock python benchmarks/aol_rescaling.py --repeats 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from bench import cpu_name  # benchmarks/ is on sys.path when run as a script
from robustlab.nn.lipschitz.aol import conv_gram_row_sums, gram_row_sums_form

SHAPES = [(c, c, 3, 3) for c in (16, 32, 64, 128, 256, 512, 1024)] + [(64, 64, 1, 1), (32, 16, 5, 5)]


def seconds(form: str, kernel: torch.Tensor, inner: int) -> float:
    start = time.perf_counter()
    for _ in range(inner):
        conv_gram_row_sums(kernel, form=form).sum().backward()
    if kernel.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / inner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    print(f"processor: {cpu_name()}, device {args.device}; load {os.getloadavg()}")
    for shape in SHAPES:
        kernel = torch.randn(shape, device=args.device, requires_grad=True)
        inner = max(1, int(2e8 // (shape[0] * shape[1] ** 2 * shape[2] ** 2 * shape[3] ** 2)))
        for form in ("products", "convolution"):  # warm-up
            seconds(form, kernel, 1)
        times: dict[str, list[float]] = {"products": [], "convolution": []}
        for repeat in range(args.repeats):
            for form in ("products", "convolution") if repeat % 2 == 0 else ("convolution", "products"):
                times[form].append(seconds(form, kernel, inner))
        ratios = [p / c for p, c in zip(times["products"], times["convolution"])]
        print(
            f"{shape!s:18} products {statistics.median(times['products']) * 1e3:8.3f} ms  convolution "
            f"{statistics.median(times['convolution']) * 1e3:8.3f} ms  ratio {statistics.median(ratios):5.2f} "
            f"[{min(ratios):.2f}-{max(ratios):.2f}]  picked: {gram_row_sums_form(kernel)}"
        )


if __name__ == "__main__":
    main()
