"""``mnist``: MNIST handwritten digits, 60k/10k, 28x28x1, from the official idx files."""

from __future__ import annotations

from robustlab.data.datasets.base import DatasetSpec, register
from robustlab.data.datasets.readers import idx_files, read_idx_dataset

register(
    DatasetSpec(
        "mnist",
        "MNIST handwritten digits, 60k/10k, 28x28x1",
        tuple("0123456789"),
        (28, 28, 1),
        files=idx_files(
            (
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ),
            ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        ),
        read_official=read_idx_dataset,
    )
)
