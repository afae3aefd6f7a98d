"""Least-recently-used dead-code replacement (Huh et al. 2023, §3 "Replacement policy"; Zeghidour et al. 2021;
Dhariwal et al. 2020).

A code not selected for ``life_span`` training steps (Huh et al.: 20 works best) is replaced by a random valid
encoder output of the current batch — or of the reservoir when the quantizer keeps one.  Active codes are left
untouched.  Usage is counted over all ranks and rank 0's draw is broadcast, so every rank replaces the same codes
with the same vectors.  Replacement goes through ``rewrite_codes`` (affine inverse, EMA reset, optimizer reset).
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
    def dead_codes(self, counts: torch.Tensor, step: int) -> torch.Tensor:
        """Record this step's usage (counts (G, K), rank-summed) and return the codes dead for life_span steps."""
        self.last_used[counts > 0] = step
        return (step - self.last_used) >= self.life_span

    @torch.no_grad()
    def replacements(self, dead: torch.Tensor, candidates: torch.Tensor, step: int) -> torch.Tensor | None:
        """Vectors (G, K, d) holding, at the dead codes, random rows of ``candidates`` (N, G, d); None when nothing
        can be replaced (no dead code, or no candidate vectors on this batch)."""
        if not dead.any():  # usage counts are rank-summed, so every rank agrees here
            return None
        if broadcast(torch.tensor(float(candidates.shape[0]), device=dead.device)).item() == 0:
            return None  # rank 0 saw no valid vector this step
        groups, size = dead.shape
        vectors = candidates.new_zeros(groups, size, candidates.shape[-1])
        if candidates.shape[0]:
            with self.rng.generator() as generator:
                picks = torch.randint(candidates.shape[0], (groups, size), generator=generator)
            vectors = candidates[picks.to(candidates.device), torch.arange(groups, device=candidates.device)[:, None]]
        self.last_used[dead] = step
        return broadcast(vectors.contiguous())
