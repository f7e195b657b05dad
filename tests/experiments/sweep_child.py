"""A sweep in its own process, for the tests that start, race and kill real processes.

python sweep_child.py ROOT WORKERS EPOCHS: trains a sweep of three tiny nets on digits into
ROOT with WORKERS local workers and prints the rows' statuses as JSON."""

import json
import sys

from robustlab.config import load_config
from robustlab.experiments.launch import Execution
from robustlab.experiments.sweep import Sweep, run_sweep, with_overrides
from robustlab.runs.store import RunStore

SIZES = (48, 97, 195)


def tiny_sweep(epochs: float) -> Sweep:
    tiny_mlp = {"model.name": "lipmlp-aol", "model.kwargs": {"width": 16, "depth": 1}, "train.device": "cpu"}
    base = with_overrides(load_config("digits"), {**tiny_mlp, "train.epochs": epochs})
    return Sweep("tiny", base, {"data.subset_size": list(SIZES)})


if __name__ == "__main__":  # worker processes import this module again
    root, workers, epochs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    rows = run_sweep(tiny_sweep(epochs), RunStore(root), Execution(progress=False, workers=workers))
    print(json.dumps([row.status for row in rows]))
