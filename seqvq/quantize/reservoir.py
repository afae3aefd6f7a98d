"""A uniform sample of every valid encoder output seen so far (Łańcucki et al. 2020, Algorithm 1, ``reservoir``).

Vectorized Algorithm R (Vitter 1985): the t-th vector ever offered (1-based) enters while the reservoir has room,
and afterwards replaces slot ``j ~ U{0, ..., t-1}`` when ``j < size``; within one batch a later vector wins a slot
that several draw, exactly as the sequential algorithm.  Contents, fill count and generator state are buffers.
"""
from __future__ import annotations

import torch
from torch import nn

from .distributed import all_gather_rows
from .rng import BufferedGenerator


class Reservoir(nn.Module):
    def __init__(self, size: int, dim: int, seed: int = 0):
        super().__init__()
        self.size = size
        self.register_buffer("samples", torch.zeros(size, dim))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))
        self.rng = BufferedGenerator(seed)

    @property
    def filled(self) -> int:
        return int(min(int(self.seen), self.size))

    @torch.no_grad()
    def add(self, vectors: torch.Tensor) -> None:
        """Offer ``vectors`` (N, dim) to the reservoir."""
        count, seen = vectors.shape[0], int(self.seen)
        if count == 0:
            return
        vectors = vectors.to(self.samples.dtype)
        free = max(0, min(self.size - seen, count))
        self.samples[seen:seen + free] = vectors[:free]
        rest = vectors[free:]
        if rest.shape[0]:
            ordinal = torch.arange(seen + free + 1, seen + count + 1, dtype=torch.float64)  # 1-based t
            with self.rng.generator() as generator:
                uniform = torch.rand(rest.shape[0], generator=generator, dtype=torch.float64)
            slots = (uniform * ordinal).long()
            accepted = (slots < self.size).nonzero().squeeze(1)
            winner = torch.full((self.size,), -1, dtype=torch.long)
            winner.scatter_reduce_(0, slots[accepted], accepted, reduce="amax")
            taken = (winner >= 0).nonzero().squeeze(1)
            self.samples[taken.to(self.samples.device)] = rest[winner[taken].to(rest.device)]
        self.seen += count

    @torch.no_grad()
    def restart(self) -> None:
        """Empty the sample; the generator's stream goes on."""
        self.samples.zero_()
        self.seen.zero_()

    def contents(self) -> torch.Tensor:
        """The filled part of the reservoir, merged over ranks under DDP."""
        return all_gather_rows(self.samples[: self.filled])
