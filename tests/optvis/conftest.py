"""One torch thread for the optimizer tests: their models are small, and on a shared machine two OpenMP
threads that wait for a core spin (measured under load: 1.1 s wall per render with one thread, 12-59 s with two)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
