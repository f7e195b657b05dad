"""Counting a model's votes on noisy copies of images, on the model's device.

Each image has its own noise stream, seeded from (seed, image index, purpose), and draws
its copies ``NOISE_BLOCK`` at a time, so the counts depend neither on the batch size nor on
which other images share a batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

import numpy as np
import torch
from torch import nn

NOISE_BLOCK = 1000  # copies drawn per call from an image's stream; fixed, so results ignore batch size
STREAMS = {"estimate": 0, "select": 1, "certify": 2, "predict": 3}


def noise_seed(seed: int, index: int, stream: str) -> int:
    """Seed of one image's noise stream: a hash of (seed, image index, purpose)."""
    state = np.random.SeedSequence([seed, index, STREAMS[stream]]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1  # < 2**63: valid on every device


def count_predictions(
    model: nn.Module,
    images: torch.Tensor,
    seeds: Sequence[int],
    num_samples: int,
    sigma: float,
    batch_size: int,
    precision: str = "float32",
) -> torch.Tensor:
    """Class counts (images, classes) of ``model`` on ``num_samples`` noisy copies of each image.

    ``images`` are float NCHW on the model's device. Nothing here waits for the device:
    the counts stay there until the caller asks for them.
    """
    device = images.device
    generators = [torch.Generator(device).manual_seed(s) for s in seeds]
    blocks = [
        (row, min(NOISE_BLOCK, num_samples - start))
        for row in range(len(images))
        for start in range(0, num_samples, NOISE_BLOCK)
    ]
    counts: torch.Tensor | None = None
    num_classes = 0
    for group in _group_blocks(blocks, batch_size):
        rows = torch.tensor([row for row, _ in group])
        sizes = torch.tensor([size for _, size in group])
        image_of_copy = torch.repeat_interleave(rows, sizes).to(device, non_blocking=True)
        noise = torch.empty((int(sizes.sum()), *images.shape[1:]), device=device)
        for (row, _size), part in zip(group, noise.split(sizes.tolist())):
            part.normal_(0.0, sigma, generator=generators[row])
        for copies, owners in zip(noise.split(batch_size), image_of_copy.split(batch_size)):
            with _autocast(device, precision):
                logits = model(images[owners] + copies)
            if counts is None:
                num_classes = logits.shape[1]
                counts = torch.zeros(len(images) * num_classes, dtype=torch.long, device=device)
            predictions = logits.argmax(dim=1)
            cells = owners * num_classes + predictions
            counts.scatter_add_(0, cells, torch.ones_like(cells))
    assert counts is not None, "no noisy copies to count"
    return counts.view(len(images), num_classes)


def _group_blocks(blocks: list[tuple[int, int]], batch_size: int) -> Iterator[list[tuple[int, int]]]:
    """Consecutive noise blocks, grouped up to ``batch_size`` copies (a lone larger block is split later)."""
    group: list[tuple[int, int]] = []
    total = 0
    for row, size in blocks:
        if group and total + size > batch_size:
            yield group
            group, total = [], 0
        group.append((row, size))
        total += size
    if group:
        yield group


def _autocast(device: torch.device, precision: str) -> AbstractContextManager[None]:
    if precision == "float32":
        return _full_float32(device)
    return torch.autocast(device.type, dtype=torch.bfloat16)


@contextmanager
def _full_float32(device: torch.device) -> Iterator[None]:
    """No TF32 shortcut in certification: CUDA convolutions default to TF32."""
    if device.type != "cuda":
        yield
        return
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul  # type: ignore[attr-defined]
    saved = conv.fp32_precision, matmul.fp32_precision
    conv.fp32_precision = matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision, matmul.fp32_precision = saved
