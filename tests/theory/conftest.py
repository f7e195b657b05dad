import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The theory tests train and attack tiny models: one thread is faster than a pool, whose
    hand-offs dominate on small tensors (and take many times longer on busy shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
