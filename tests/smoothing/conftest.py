import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared, oversubscribed 2-core machine, two threads made
    small forward passes up to 100x slower (threads spin waiting for each other)."""
    torch.set_num_threads(1)
