"""Index arithmetic of ``num_codebooks = G`` independent codebooks of ``K`` codes (Łańcucki §IV-C: the input's
channels split into G parts, each quantized by its own codebook).  The G codebooks are stored as one (G, K, d)
tensor; code ``k`` of codebook ``g`` is row ``g * K + k`` of its (G * K, d) flattening.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def flat_code_index(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Codes (..., G) in [0, K) -> rows of the flattened (G * K, ...) codebook, same shape."""
    return codes + torch.arange(codes.shape[-1], device=codes.device) * codebook_size


def code_vectors(codebook: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """The vectors (..., G, d) of ``codes`` (..., G) in ``codebook`` (G, K, d); differentiable w.r.t. it.

    A lookup by ``F.embedding``, not by indexing (``codebook[index]``): indexing's backward accumulates the
    gradient of a code selected many times in an order that varies from run to run on a multi-threaded CPU, so two
    identical runs on 2 threads drifted apart from the first quantized step; the embedding's backward sums in a
    fixed order there and on CUDA (tests/test_quantizer_core.py)."""
    groups, size, dim = codebook.shape
    return F.embedding(flat_code_index(codes, size), codebook.reshape(groups * size, dim))


def grouped_counts(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Usage counts (G, K), int64, of codes (N, G) in [0, K)."""
    groups = codes.shape[-1]
    flat = flat_code_index(codes, codebook_size).reshape(-1)
    # A fixed-size scatter rather than bincount, whose output size depends on the data (a graph break under
    # torch.compile); the counts are the same integers.
    counts = torch.zeros(groups * codebook_size, dtype=torch.long, device=codes.device)
    return counts.index_add_(0, flat, torch.ones_like(flat)).view(groups, codebook_size)
