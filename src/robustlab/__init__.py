"""robustlab: certifiably robust image classification with 1-Lipschitz networks."""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# Loaded on first use, so that `import robustlab` (and `robustlab --help`) does not import torch.
_LAZY = {"load_model": "robustlab.runs.checkpoint"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'robustlab' has no attribute {name!r}")
