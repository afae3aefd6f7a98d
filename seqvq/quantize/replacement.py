"""Least-recently-used dead-code replacement (Huh et al. 2023, §3 "Replacement policy"; Zeghidour et al. 2021;
Dhariwal et al. 2020).

A code not selected for ``life_span`` training steps (Huh et al.: 20 works best) is replaced by a random valid
encoder output of the current batch.  Active codes are left untouched.  Usage is counted over all ranks and rank
0's draw is broadcast, so every rank replaces the same codes with the same vectors.  Replacement goes through the
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

from .distributed import broadcast
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
    def record_usage(self, counts: torch.Tensor, step: int) -> None:
        """Note the codes used at ``step`` (counts (G, K), rank-summed)."""
        self.last_used[counts > 0] = step

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
        """Vectors (G, K, d) holding, at the dead codes, random rows of ``candidates`` (N, G, d); None when nothing
        can be replaced (no dead code, or no valid vector on rank 0 this step)."""
        if not dead.any():  # usage counts are rank-summed, so every rank agrees here
            return None
        if broadcast(torch.tensor(float(candidates.shape[0]), device=dead.device)).item() == 0:
            return None
        groups, size = dead.shape
        vectors = candidates.new_zeros(groups, size, candidates.shape[-1])
        if candidates.shape[0]:
            with self.rng.generator() as generator:
                picks = torch.randint(candidates.shape[0], (groups, size), generator=generator)
            vectors = candidates[picks.to(candidates.device), torch.arange(groups, device=candidates.device)[:, None]]
        return broadcast(vectors.contiguous())
