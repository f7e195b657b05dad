"""Datasets, splits, device-resident loading with augmentation, and PCA projections."""

from robustlab.data.datasets import (
    DATASETS,
    DatasetError,
    ImageDataset,
    default_data_dir,
    import_files,
    load_dataset,
    load_generated,
)
from robustlab.data.loader import DeviceLoader, augment_batch
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
