"""Shared test fixtures; recipes/common goes on sys.path so tests import its scripts (row_overrides) by name."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "recipes" / "common"))


@pytest.fixture
def one_thread():
    """Many tiny ops (pixel-by-pixel sampling, small models): extra threads only contend on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
