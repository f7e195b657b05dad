"""Where and how computations run: device choice and seeding."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' was asked for, but CUDA is not available; use --device cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``count`` inside the block, restored after it (None: unchanged).

    Tiny nets (the smoke and demo scales) train as fast on one thread, and on a busy machine
    two OpenMP threads that wait for each other made them several times slower (measured:
    data_scaling at smoke scale 9.8 s on one thread, 35 s on two, at load average 2).
    """
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
