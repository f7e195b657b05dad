import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_torch():
    """Every test starts from the same global seed; CI machines have 2 cores."""
    torch.manual_seed(0)
    torch.set_num_threads(2)
    yield
