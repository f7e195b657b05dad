import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The nets here are tiny: one thread is as fast as two and does not stall when the
    machine's cores are busy (waiting OpenMP threads can slow small ops down 10x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
