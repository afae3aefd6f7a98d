"""Data-dependent codebook re-estimation (Łańcucki et al. 2020, §III-B, Algorithm 1).

Every training step offers the valid encoder outputs to a reservoir.  For the first ``init_steps`` (M_init) steps
nothing is quantized — the layer passes its input through — so the encoder can settle.  At step M_init the codebook
is set by k-means++ on the reservoir, and again every ``every`` (r_reestim) steps while the step is below
``init_steps + steps`` (M_init + M_reestim); after that training is ordinary VQ.  Algorithm 1 re-estimates at
multiples of r_reestim; here the count starts at M_init so that the first quantized step always has a
data-dependent codebook (identical when M_init is a multiple of r_reestim).  The reservoir is fed up to the last
re-estimation and not after (nothing would read it).

The reservoir restarts after each re-estimation (``restart_reservoir=True``, the default), so each k-means
clusters a uniform sample of the encoder outputs since the previous one — §III-B's "keep up with changes to the
distribution of encoder outputs", and what DistSup, the paper's reference code, does.  ``restart_reservoir=False``
keeps one uniform sample of all history (warm-up included) instead.  (Algorithm 1's pseudo-code does not say.)

DistSup ran the schedule per epoch; give ``steps_per_epoch`` and the three counts are read in epochs.

Every re-estimation rewrites the codes through the quantizer's ``rewrite_codes``, which writes through the affine
map, restarts the EMA statistics and LRU clocks and marks the codes for ``seqvq.reset_optimizer_state``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .kmeans import kmeans
from .reservoir import Reservoir
from .rng import BufferedGenerator


@dataclass(frozen=True)
class ReestimationOptions:
    """Łańcucki et al. 2020 Algorithm 1 (``VectorQuantizer(reestimate=...)``): pass the input through for
    ``init_steps`` (M_init) steps, then k-means++ with ``kmeans_iterations`` Lloyd steps on a reservoir of
    ``reservoir_size`` encoder outputs every ``every`` (r_reestim) steps while below ``init_steps + steps``
    (M_init + M_reestim); the three counts in epochs when ``steps_per_epoch`` is given (DistSup);
    ``restart_reservoir`` as in the module docstring."""

    init_steps: int = 1000
    every: int = 100
    steps: int = 5000
    reservoir_size: int = 20480
    kmeans_iterations: int = 5
    steps_per_epoch: int | None = None
    restart_reservoir: bool = True


class DataDependentReestimation(nn.Module):
    def __init__(self, dim: int, options: ReestimationOptions = ReestimationOptions(), seed: int = 0):
        super().__init__()
        scale = options.steps_per_epoch or 1
        self.init_steps, self.steps = options.init_steps * scale, options.steps * scale
        self.every = max(1, options.every * scale)
        self.kmeans_iterations, self.restart_reservoir = options.kmeans_iterations, options.restart_reservoir
        self.reservoir = Reservoir(options.reservoir_size, dim, seed=seed)
        self.rng = BufferedGenerator(seed + 1)

    def passes_through(self, step: int) -> bool:
        """Before M_init the layer does not quantize (Algorithm 1, ``quantized = x``)."""
        return step < self.init_steps

    def last_reestimation(self) -> int:
        if self.steps <= 0:
            return self.init_steps
        return self.init_steps + (self.steps - 1) // self.every * self.every

    def reestimates_at(self, step: int) -> bool:
        if step == self.init_steps:
            return True
        return self.init_steps < step < self.init_steps + self.steps and (step - self.init_steps) % self.every == 0

    @torch.no_grad()
    def collect(self, vectors: torch.Tensor, step: int) -> None:
        """Phase 1: offer this step's valid vectors (N, dim) while a re-estimation is still to come."""
        if step <= self.last_reestimation():
            self.reservoir.add(vectors)

    @torch.no_grad()
    def new_codebook(self, step: int, num_codebooks: int, codebook_size: int) -> torch.Tensor | None:
        """Phase 2: at a scheduled step with a non-empty reservoir, :meth:`codebook`, after which the reservoir
        restarts (unless ``restart_reservoir=False``); otherwise None."""
        if not self.reestimates_at(step) or not self.reservoir.filled:
            return None
        centroids = self.codebook(num_codebooks, codebook_size)
        if self.restart_reservoir:
            self.reservoir.restart()
        return centroids

    @torch.no_grad()
    def codebook(self, num_codebooks: int, codebook_size: int) -> torch.Tensor:
        """k-means++ + Lloyd on the (rank-merged) reservoir, one codebook per group: (G, K, d)."""
        samples = self.reservoir.contents()
        groups = samples.view(samples.shape[0], num_codebooks, -1)
        with self.rng.generator() as generator:
            return torch.stack([kmeans(groups[:, g].contiguous(), codebook_size, self.kmeans_iterations, generator)
                                for g in range(num_codebooks)])
