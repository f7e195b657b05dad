"""A finished run's results as training writes them (shared by the store and sweep tests)."""

from __future__ import annotations

from typing import Any

from robustlab.records import ARCHITECTURE_VERSION
from robustlab.runs.result_files import RunResults

# results.json as robustlab wrote it before architecture versions (commit 9685729 to c5448ba)
OLD_RESULTS_JSON: dict[str, Any] = {
    "accuracy": 0.9,
    "cra": [{"eps": 36 / 255, "label": "36/255", "cra": 0.75}, {"eps": 1.0, "label": "1", "cra": 0.125}],
    "eval_split": "test",
    "n_eval": 360,
    "n_train": 1437,
    "lipschitz_constant": 1.0,
    "epochs": 2.0,
    "steps": 24,
    "train_loss": 0.5,
    "train_accuracy": 0.85,
    "train_cra": 0.6,
    "train_time_s": 1.5,
    "time_per_epoch_s": 0.75,
    "eval_time_s": 0.1,
    "device": "cpu",
    "world_size": 1,
    "torch_version": "2.5.1",
}


def run_results(**changes: Any) -> RunResults:
    """Results of a current robustlab's run, with ``changes`` (e.g. ``accuracy=0.5``)."""
    results = RunResults.from_dict({**OLD_RESULTS_JSON, "architecture_version": ARCHITECTURE_VERSION})
    for key, value in changes.items():
        setattr(results, key, value)
    return results
