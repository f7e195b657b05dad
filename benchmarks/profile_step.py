#!/usr/bin/env python3
"""Where a training step's time goes: the loader, the step, and the top CUDA kernels.

    PYTHONPATH=src python benchmarks/profile_step.py --device cuda --presets simpleconvnet,cpl-lcn \
        --set train.precision=bfloat16 --set train.channels_last=true

For each preset it builds what ``robustlab.train.loop.train`` trains with, through the same
``build_training`` (loader, model, loss, optimizer, schedule), ``prepare_for_training`` and
``make_train_step``, then times, after warm-up steps:
``loader`` (drawing and augmenting batches alone), ``step`` (the loop's train step on a fixed batch)
and ``both`` (the loop's pattern), as milliseconds per step; and prints the profiler's
kernels by GPU time for a few steps. Synthetic CIFAR-shaped data unless ``--data-dir``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench import speed_options, write_synthetic_cifar
from robustlab.config import load_config
from robustlab.runtime import resolve_device
from robustlab.train.distributed import setup
from robustlab.train.loop import build_training, make_train_step, prepare_for_training


def timed(device: torch.device, steps: int, work) -> float:
    """Milliseconds per call of ``work``, synchronised at both ends."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps * 1e3


def profile_preset(preset: str, overrides: list[str], device: torch.device, args: argparse.Namespace) -> None:
    config = load_config(preset, overrides)
    parts = build_training(config, device)  # what a run trains with, built as training builds it
    loader = parts.loader
    context, _ = setup(str(device))
    train_model = prepare_for_training(parts.model, config.train, context, device)
    step = make_train_step(
        train_model, parts.loss_fn, parts.optimizer, parts.schedule, config.train, context, device,
        grad_clip=config.optim.grad_clip,
    )  # fmt: skip
    memory = torch.channels_last if config.train.channels_last else torch.contiguous_format

    batches = (batch for _ in itertools.count() for batch in loader)  # pass after pass

    def draw():
        x, y = next(batches)
        return x.contiguous(memory_format=memory) if x.ndim == 4 else x, y

    x, y = draw()
    fixed = lambda: step(x, y)  # noqa: E731
    both = lambda: step(*draw())  # noqa: E731

    timed(device, args.warmup, both)
    loader_ms, step_ms, both_ms = (timed(device, args.steps, work) for work in (draw, fixed, both))
    flags = " ".join(speed_options(config))
    print(
        f"\n== {preset} ({config.model.name}, {flags}, batch {config.train.batch_size}): "
        f"loader {loader_ms:.2f} ms, step {step_ms:.2f} ms, both {both_ms:.2f} ms per step "
        f"-> {both_ms * len(loader) / 1e3:.2f} s per epoch of {len(loader)} steps",
        flush=True,
    )
    if device.type != "cuda" or args.kernels <= 0:
        return
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        timed(device, 5, both)
    print(
        prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=args.kernels, max_name_column_width=70),
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--presets", default="simpleconvnet,cpl-lcn,aol-lcn,aol-mlp")
    parser.add_argument("--data-dir", help="folder with cifar10.npz (default: synthetic data of its shape)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--images", type=int, default=45_000, help="synthetic training images (default 45000)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--kernels", type=int, default=15, help="rows of the kernel table (0: none)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as work:
        if args.data_dir:
            data = ["data.name=cifar10", f"data.data_dir={args.data_dir}"]
        else:
            data = [f"data.name={write_synthetic_cifar(Path(work) / 'synthetic.npz', args.images)}"]
        for preset in args.presets.split(","):
            overrides = [*data, "data.val_size=0", f"train.device={device}", *args.overrides]
            profile_preset(preset.strip(), overrides, device, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
