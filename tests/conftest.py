import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_single_thread_torch():
    """Every test starts from the same global seed, on one intra-op thread.

    The test nets are tiny: one thread is as fast as a pool and never stalls when the
    machine's two cores are busy (a waiting OpenMP pool made small convolutions up to
    100x slower here).
    """
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
