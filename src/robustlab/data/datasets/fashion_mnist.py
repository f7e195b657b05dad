"""``fashion-mnist``: Zalando's Fashion-MNIST, 60k/10k, 28x28x1, in MNIST's idx format."""

from __future__ import annotations

from robustlab.data.datasets.base import DatasetSpec, register
from robustlab.data.datasets.readers import idx_files, read_idx_dataset

register(
    DatasetSpec(
        "fashion-mnist",
        "Zalando Fashion-MNIST, 60k/10k, 28x28x1",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        (28, 28, 1),
        files=idx_files(
            (
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ),
            ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        ),
        read_official=read_idx_dataset,
    )
)
