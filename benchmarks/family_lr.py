#!/usr/bin/env python3
"""Accuracy of every layer family's lipconvnet on the digits preset, at the lr it trains at.

    python benchmarks/family_lr.py --epochs 20                        # each family at its LR_SCALE
    python benchmarks/family_lr.py --families soc,bro --lrs 0.3,0.03  # a sweep at given lrs

Each run is the digits preset with ``--set model.name=lipconvnet-<family>`` (the preset's lr
scaled by the family's ``LR_SCALE``, as ``robustlab train`` does), trained by the training engine
itself; ``--lrs`` sets ``optim.lr`` explicitly instead. Prints one line per run: family, lr,
test accuracy, CRA at 36/255, final train loss, seconds. Chance is 10%.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from robustlab.config import load_config
from robustlab.nn.lipschitz import LAYER_FAMILIES
from robustlab.train.loop import train
from robustlab.train.optim import lr_for_swapped_model


def run(family: str, lr: float | None, epochs: float, kwargs: str, root: str) -> str:
    overrides = [f"model.name=lipconvnet-{family}", f"train.epochs={epochs}", f"model.kwargs={kwargs}"]
    overrides += ["train.device=cpu"] + ([f"optim.lr={lr}"] if lr is not None else [])
    config = load_config("digits", overrides)
    if lr is None:
        config = lr_for_swapped_model(config, load_config("digits"))
    start = time.perf_counter()
    results = train(config, run_dir=os.path.join(root, f"{family}-{lr}"), progress=False).load_results()
    return (
        f"{family:<10} lr {config.optim.lr:<8.4g} accuracy {results.accuracy:.4f}  "
        f"CRA 36/255 {results.cra_at(36 / 255):.4f}  train_loss {results.train_loss:.3f}  "
        f"{time.perf_counter() - start:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=",".join(LAYER_FAMILIES.names()))
    parser.add_argument("--lrs", help="comma-separated lrs (default: the preset's lr times the family's scale)")
    parser.add_argument("--epochs", type=float, default=20)
    parser.add_argument("--kwargs", default="{width: 32, depth: 2}", help="model.kwargs of every lipconvnet")
    args = parser.parse_args()
    lrs = [float(lr) for lr in args.lrs.split(",")] if args.lrs else [None]
    with tempfile.TemporaryDirectory() as root:
        for family in args.families.split(","):
            for lr in lrs:
                print(run(family, lr, args.epochs, args.kwargs, root), flush=True)


if __name__ == "__main__":
    main()
