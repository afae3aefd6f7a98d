"""Shared test fixtures."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """Many tiny ops (pixel-by-pixel sampling, small models): extra threads only contend on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
