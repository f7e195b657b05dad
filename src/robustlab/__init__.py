"""robustlab: certifiably robust image classification with 1-Lipschitz networks.

The entry points a researcher uses first::

    import robustlab

    robustlab.list_models("lipconvnet-*")
    net = robustlab.create_model("lipconvnet-cpl", input_shape=(3, 32, 32), num_classes=10)
    run = robustlab.train.train(robustlab.load_config("digits"))   # a run folder
    model, config = robustlab.load_run_model(run.path)
    result = robustlab.evaluate(model, images, labels)               # an EvalResult

``robustlab.train`` is the training package (its ``train`` function trains one run), so
the name keeps one meaning. Everything else lives in the subpackages (``robustlab.nn``,
``robustlab.certify``, ``robustlab.experiments``, ...), whose ``__init__`` lists their API.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Name -> the module that defines it, imported on first use (module __getattr__, PEP 562):
# every ``import robustlab.X``, including the command line's start, runs this file first,
# and importing torch models and the training engine here would slow ``robustlab --help``.
_LAZY = {
    "create_model": "robustlab.nn.models",
    "list_models": "robustlab.nn.models",
    "load_config": "robustlab.config",
    "evaluate": "robustlab.certify.evaluate",
    "load_run_model": "robustlab.runs.checkpoint",
    "load_model": "robustlab.runs.checkpoint",
}

__all__ = [
    "__version__",
    "create_model",
    "evaluate",
    "list_models",
    "load_config",
    "load_model",
    "load_run_model",
    "train",
]

if TYPE_CHECKING:  # what type checkers and editors see
    from robustlab import train
    from robustlab.certify.evaluate import evaluate
    from robustlab.config import load_config
    from robustlab.nn.models import create_model, list_models
    from robustlab.runs.checkpoint import load_model, load_run_model


def __getattr__(name: str) -> Any:
    if name == "train":  # the subpackage; importing it binds it here
        return importlib.import_module("robustlab.train")
    if name not in _LAZY:
        raise AttributeError(f"module 'robustlab' has no attribute '{name}'")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
