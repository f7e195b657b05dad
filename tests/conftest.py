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


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Cached fits (PCA) go to a folder of the test session, not to the user's ~/.cache."""
    import os

    previous = os.environ.get("ROBUSTLAB_CACHE")
    os.environ["ROBUSTLAB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("ROBUSTLAB_CACHE", None)
    else:
        os.environ["ROBUSTLAB_CACHE"] = previous
