"""EMA codebook update with Laplace-smoothed counts (Łańcucki et al. 2020, eq. 4; van den Oord et al. 2017).

For every codeword the running usage ``N_i`` and running sum ``m_i`` of the encoder outputs assigned to it are
tracked with discount ``gamma``:

    N_i <- gamma * N_i + (1 - gamma) * n_i
    m_i <- gamma * m_i + (1 - gamma) * sum_j e(x_j)
    w_i <- m_i / N_i

``N_i`` is Laplace-smoothed, ``(N_i + eps) / (sum N + K eps) * sum N``, so an unused code never divides by zero.
Proposition 1 (Łańcucki): with constant counts ``N_i = 1`` this is SGD on the codebook term of eq. 2 with learning
rate ``(1 - gamma) / 2``.  The state starts at ``N_i = 1, m_i = w_i`` so the first update is exactly that step.
"""
from __future__ import annotations

import torch
from torch import nn

from .distributed import all_reduce_sum
from .groups import flat_code_index


class EMACodebookUpdate(nn.Module):
    def __init__(self, num_codebooks: int, codebook_size: int, dim: int, decay: float = 0.99, eps: float = 1e-5):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay, self.eps = decay, eps
        self.register_buffer("cluster_size", torch.ones(num_codebooks, codebook_size))
        self.register_buffer("embed_sum", torch.zeros(num_codebooks, codebook_size, dim))

    @torch.no_grad()
    def reset(self, codebook: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Restart the statistics of ``rows`` (bool (G, K); all when None) at ``N_i = 1, m_i = w_i``."""
        if rows is None:
            self.cluster_size.fill_(1.0)
            self.embed_sum.copy_(codebook)
        else:
            self.cluster_size[rows] = 1.0
            self.embed_sum[rows] = codebook[rows].to(self.embed_sum.dtype)

    @torch.no_grad()
    def update(self, vectors: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Fold one batch in and return the new codebook (G, K, D).

        ``vectors`` (N, G, D) are the valid encoder outputs in the space the codes live in, ``codes`` (N, G) their
        assignments.  Counts and sums are summed over ranks first, so every rank computes the same codebook.
        """
        groups, size, dim = self.embed_sum.shape
        flat_codes = flat_code_index(codes, size).reshape(-1)
        counts = self.cluster_size.new_zeros(groups * size).index_add_(  # exact integers, as bincount's
            0, flat_codes, torch.ones_like(flat_codes, dtype=self.cluster_size.dtype))
        sums = torch.zeros(groups * size, dim, dtype=self.embed_sum.dtype, device=vectors.device)
        sums.index_add_(0, flat_codes, vectors.reshape(-1, dim).to(sums.dtype))
        counts, sums = all_reduce_sum(counts), all_reduce_sum(sums)
        self.cluster_size.lerp_(counts.view(groups, size), 1.0 - self.decay)
        self.embed_sum.lerp_(sums.view(groups, size, dim), 1.0 - self.decay)
        total = self.cluster_size.sum(dim=1, keepdim=True)
        smoothed = (self.cluster_size + self.eps) / (total + size * self.eps) * total
        return self.embed_sum / smoothed.unsqueeze(-1)
