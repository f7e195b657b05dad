"""Datasets, splits, device-resident loading with augmentation, and PCA projections."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from robustlab.data.datasets import (
    DATASETS,
    DatasetError,
    ImageDataset,
    default_data_dir,
    import_files,
    load_dataset,
    load_generated,
)
from robustlab.data.principal_components import PCA, fit_pca, parse_component_spec
from robustlab.data.splits import PreparedData, channel_means, prepare_data
from robustlab.data.subsets import balanced_subset, reference_split, train_val_split

__all__ = [
    "DATASETS",
    "PCA",
    "DatasetError",
    "DeviceLoader",
    "ImageDataset",
    "PreparedData",
    "augment_batch",
    "balanced_subset",
    "channel_means",
    "default_data_dir",
    "fit_pca",
    "import_files",
    "load_dataset",
    "load_generated",
    "parse_component_spec",
    "prepare_data",
    "reference_split",
    "train_val_split",
]

# The loader's names are imported on first use (module __getattr__, PEP 562): it is the one
# module here that imports torch, and a sweep's --status reads dataset names and published
# sizes through this package without training anything.
_LAZY = {"DeviceLoader": "robustlab.data.loader", "augment_batch": "robustlab.data.loader"}

if TYPE_CHECKING:  # what type checkers and editors see
    from robustlab.data.loader import DeviceLoader, augment_batch


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module '{__name__}' has no attribute '{name}'")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value
