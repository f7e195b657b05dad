"""``cifar10``: CIFAR-10, 50k/10k, 32x32x3, from the official python-pickle archive."""

from __future__ import annotations

from robustlab.data.datasets.base import DatasetSpec, register
from robustlab.data.datasets.readers import RemoteFile, cifar_reader

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

register(
    DatasetSpec(
        "cifar10",
        "CIFAR-10, 50k/10k, 32x32x3",
        CLASSES,
        (32, 32, 3),
        files=(
            RemoteFile(
                "cifar-10-python.tar.gz",
                "c58f30108f718f92721af3b95e74349a",
                ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
            ),
        ),
        read_official=cifar_reader(
            "cifar-10-python.tar.gz",
            tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
            "cifar-10-batches-py/test_batch",
            "labels",
        ),
    )
)
