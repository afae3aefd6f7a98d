"""Least-recently-used dead-code replacement (Huh et al. 2023, §3 "Replacement policy"; Zeghidour et al. 2021;
Dhariwal et al. 2020).

A code not selected for ``life_span`` training steps (Huh et al.: 20 works best) is replaced by a random valid
encoder output of the current batch.  Active codes are left untouched.  Under DDP usage is counted over all ranks
and the replacements are drawn uniformly from every rank's vectors, the same on every rank (see
``replacements``).  Replacement goes through the
quantizer's ``rewrite_codes`` (affine inverse, EMA reset, optimizer reset), which also restarts the clock of every
rewritten code — whether replaced here or re-estimated by k-means — so a fresh code gets a whole life span.

When it runs relative to the other remedies (never before M_init, never on a k-means step) is decided once, in
the phase list of :mod:`seqvq.quantize.core`.  Candidates come from the batch only: a reservoir may hold
vectors from long ago (Algorithm 1 stops filling it, or keeps a sample of all history), and a replacement must
land where the data is now.
"""
from __future__ import annotations

import torch
from torch import nn

from .distributed import all_reduce_sum, rank, row_counts
from .rng import BufferedGenerator


class LRUReplacement(nn.Module):
    def __init__(self, num_codebooks: int, codebook_size: int, life_span: int = 20, seed: int = 0):
        super().__init__()
        if life_span < 1:
            raise ValueError(f"life_span must be >= 1, got {life_span}")
        self.life_span = life_span
        self.register_buffer("last_used", torch.zeros(num_codebooks, codebook_size, dtype=torch.long))
        self.rng = BufferedGenerator(seed)

    @torch.no_grad()
    def record_usage(self, counts: torch.Tensor, step: int | torch.Tensor) -> None:
        """Note the codes used at ``step`` (counts (G, K), rank-summed)."""
        self.last_used.copy_(torch.where(counts > 0, step, self.last_used))

    @torch.no_grad()
    def restart_clocks(self, rows: torch.Tensor | None, step: int) -> None:
        """Codes just rewritten (bool (G, K); all when None) count as used at ``step``."""
        if rows is None:
            self.last_used.fill_(step)
        else:
            self.last_used[rows] = step

    def dead_codes(self, step: int) -> torch.Tensor:
        """Bool (G, K): the codes unused for ``life_span`` steps up to ``step``."""
        return (step - self.last_used) >= self.life_span

    @torch.no_grad()
    def replacements(self, dead: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor | None:
        """Vectors (G, K, d) holding, at the dead codes, rows of ``candidates`` (N, G, d) drawn uniformly from the
        candidates of all ranks; None when nothing can be replaced (no dead code, or no candidate on any rank).

        Every rank draws the same row numbers of the rank-ordered concatenation from the same generator; the rank
        that holds a drawn row writes it, the others zeros, and one all-reduce hands every rank the same vectors
        (no rows are gathered).  A rank without candidates (an all-padding batch) takes part all the same."""
        if not dead.any():  # usage counts are rank-summed, so every rank agrees here
            return None
        counts = row_counts(candidates.shape[0], dead.device)
        if sum(counts) == 0:
            return None
        groups, size = dead.shape
        with self.rng.generator() as generator:
            picks = torch.randint(sum(counts), (groups, size), generator=generator).to(candidates.device)
        local = picks - sum(counts[: rank()])
        mine = (local >= 0) & (local < candidates.shape[0])
        vectors = candidates.new_zeros(groups, size, candidates.shape[-1])
        if candidates.shape[0]:
            rows = local.clamp(0, candidates.shape[0] - 1)
            chosen = candidates[rows, torch.arange(groups, device=candidates.device)[:, None]]
            vectors = torch.where(mine.unsqueeze(-1), chosen, vectors)
        return all_reduce_sum(vectors)
