import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests run many tiny ops; on a shared 2-core machine one thread avoids
    oversubscription stalls (13 ms instead of 0.03 ms per small conv, measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
