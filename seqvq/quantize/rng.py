"""A random generator whose state is a buffer, so a checkpoint resumes the exact random stream.

Reservoir sampling, k-means++ seeding and dead-code replacement draw random numbers during training; keeping the
generator state in ``state_dict`` (rather than in a global or a Python object) makes a run killed mid-schedule and
resumed bit-identical to an uninterrupted one.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn


class BufferedGenerator(nn.Module):
    """``with module.generator() as g:`` yields a CPU ``torch.Generator`` and stores its new state afterwards;
    ``module.peek()`` yields one at the same state and stores nothing (its draws are those the next
    ``generator()`` block will make)."""

    def __init__(self, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("state", generator.get_state())

    @contextlib.contextmanager
    def generator(self):
        generator = torch.Generator()
        generator.set_state(self.state.detach().cpu())
        yield generator
        self.state.copy_(generator.get_state().to(self.state.device))

    def peek(self) -> torch.Generator:
        return torch.Generator().set_state(self.state.detach().cpu())
