"""Linear codebook re-parameterization (SimVQ: Zhu et al. 2024, "Addressing Representation Collapse in Vector
Quantized Models with One Linear Layer", arXiv 2411.02038).

The codes are ``C W``: a frozen basis ``C`` (the quantizer's ``codebook``, which no gradient trains) times one
learned d x d matrix ``W`` per codebook.  The codebook gradient reaches ``W`` only, and every step of ``W`` moves
every code, selected or not — the remedy for codes that are never selected and so never trained.  The affine map
of Huh §4.1 (``affine.py``) is the diagonal case (plus a shift).

``inverse`` solves ``X W = c`` for the basis rows (no explicit inverse), so k-means, re-estimation, replacement and
the EMA reset write exactly the effective codes they intend, up to the conditioning of ``W``.

Choice where the paper is silent for our setting: ``W`` starts as the identity, so the initial codes are the
basis (the same start as without the map; SimVQ's reference code uses a default-initialised linear layer).
"""
from __future__ import annotations

import torch
from torch import nn


class LinearCodebookMap(nn.Module):
    """``effective = signal @ W`` per codebook; ``signal`` (G, K, d), ``W`` (G, d, d)."""

    def __init__(self, num_codebooks: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.eye(dim).repeat(num_codebooks, 1, 1))

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        """Effective codes (G, K, d) from the frozen basis."""
        return signal @ self.weight

    def inverse(self, effective: torch.Tensor) -> torch.Tensor:
        """The basis rows whose image is ``effective`` (G, K, d)."""
        weight = self.weight.detach().to(effective.dtype)
        return torch.linalg.solve(weight, effective, left=False)
