"""A uniform sample of every valid encoder output seen so far (Łańcucki et al. 2020, Algorithm 1, ``reservoir``).

Vectorized Algorithm R (Vitter 1985): the t-th vector ever offered (1-based) enters while the reservoir has room,
and afterwards replaces slot ``j ~ U{0, ..., t-1}`` when ``j < size``; within one batch a later vector wins a slot
that several draw, exactly as the sequential algorithm.  Contents, fill count and generator state are buffers.

Under DDP there is one reservoir, the same on every rank: ``add`` gathers the vectors of every rank (in rank order)
and every rank runs Algorithm R on that stream with the same generator, so the reservoir is a uniform sample over
all ranks' vectors — exactly what one process fed the rank-ordered concatenation would hold — and
DistributedDataParallel's broadcast of rank 0's buffers changes nothing.  The price is one all-gather of the valid
vectors per collecting step.
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
        """Offer this rank's ``vectors`` (N, dim, N may be 0) and, under DDP, every other rank's: a collective,
        so every rank calls it at the same steps."""
        vectors = all_gather_rows(vectors.to(self.samples.dtype))
        count, seen = vectors.shape[0], int(self.seen)
        if count == 0:
            return
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
        """The filled part of the reservoir (the same on every rank)."""
        return self.samples[: self.filled]
