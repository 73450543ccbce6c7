"""Shared test fixtures."""
import pytest


@pytest.fixture(scope="module")
def one_thread():
    """Tiny probes: one intra-op thread is fastest and does not stall on a busy 2-core machine."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
