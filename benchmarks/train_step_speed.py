#!/usr/bin/env python3
"""One training step (forward, backward, SGD update) of the presets' models against a
baseline checkout, in one run, alternating order.

    flock /tmp/robustlab-heavy.lock python benchmarks/train_step_speed.py \\
        --baseline /tmp/base-e44de7d --repeats 3

``--baseline`` is another checkout of robustlab (e.g. ``git worktree add /tmp/base-e44de7d
e44de7d``). Each repetition builds each model with each version in a fresh subprocess
(``OMP_NUM_THREADS=1``, seed 0, CIFAR-10 shapes, batch 256, cross-entropy on random images
and labels), takes ``--warmup`` steps, then times ``--steps`` steps and keeps their median.
Prints per model each version's median step time and the ratio baseline / ours (median and
range over repetitions; above 1: ours is faster). The models are built by name from each
version's own registry, so an architecture that changed between the versions (LipConvNet's
version 3 added the reference code's 1x1 convolution) is timed as each version builds it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from bench import cpu_name, run_in_checkout  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
MODELS = {  # name: create_model keyword arguments
    "simpleconvnet": {},
    "lipconvnet-cpl": {"width": 16},
    "lipmlp-aol": {},
}

WORKER = r"""
import json, statistics, sys, time
import torch
import torch.nn.functional as F
torch.set_num_threads(1)
from robustlab.nn.models import create_model
import robustlab
name, kwargs, warmup, steps = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
model = create_model(name, (3, 32, 32), 10, **kwargs).train()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
images, labels = torch.rand(256, 3, 32, 32), torch.randint(0, 10, (256,))
times = []
for step in range(warmup + steps):
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()
    optimizer.step()
    times.append(time.perf_counter() - start)
print(json.dumps({"seconds": statistics.median(times[warmup:]), "package": robustlab.__file__}))
"""


def step_time(source: Path, model: str, warmup: int, steps: int) -> float:
    arguments = [model, json.dumps(MODELS[model]), str(warmup), str(steps)]
    result = run_in_checkout(source, WORKER, arguments, model)
    return result["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, type=Path, help="another robustlab checkout")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    print(f"processor: {cpu_name()}; load average: {os.getloadavg()}")
    versions = {"ours": REPO, "baseline": args.baseline.resolve()}
    for model in args.models:
        times: dict[str, list[float]] = {name: [] for name in versions}
        for repeat in range(args.repeats):
            order = list(versions) if repeat % 2 == 0 else list(reversed(versions))
            for name in order:
                times[name].append(step_time(versions[name], model, args.warmup, args.steps))
        ratios = [base / ours for base, ours in zip(times["baseline"], times["ours"])]
        print(
            f"{model} {MODELS[model] or ''}: ours {statistics.median(times['ours']):.3f} s/step, baseline "
            f"{statistics.median(times['baseline']):.3f} s/step; ratio baseline/ours median "
            f"{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}] over {args.repeats}"
        )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
