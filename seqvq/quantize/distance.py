"""Nearest-code search without the N x K distance matrix (Huh et al. 2023, Appendix A.1 "divide-and-conquer").

The assignment of eq. 5 (Huh) / eq. 1 (Łańcucki) is ``argmin_j ||z_i - c_j||^2``.  Expanding the square gives
``||z_i||^2 - 2 z_i . c_j + ||c_j||^2``; the first term does not change the argmin, so each chunk of rows costs one
``addmm`` (the matmul that is the floor of any exact search) and one ``min`` over a cache-sized block.

Precision: the expansion cancels catastrophically in float32 when data and codes sit far from the origin
(``||z||^2`` ~ offset^2 * D while the gaps between codes are O(1)).  Distances are translation invariant, so both
sides are first shifted by the codebook mean, which keeps the argmin equal to a float64 brute force for
mean-shifted inputs (tested at offsets 0, 10, 50).

Cosine distance is the same search on l2-normalised vectors (``||a - b||^2 = 2 - 2 cos(a, b)``); the caller
normalises.

Low precision: a bfloat16 search is only faster where matmuls run on tensor cores (CUDA), not on this CPU.  When
enabled it keeps ``rerank`` candidates per row from the bfloat16 distances and re-ranks them in float32, so the
result is exact unless the true nearest code is outside the candidates.
"""
from __future__ import annotations

import torch

# Elements of one (rows x codes) distance block: 2^18 floats = 1 MiB, which stays in L2/L3 cache on CPUs and is a
# negligible allocation on GPUs.  Chosen by bench/vq_speed.py (see the README's benchmark section).
DEFAULT_BLOCK_ELEMENTS = 1 << 18
# Codes per block for very large codebooks: above this the codes are searched in slices with a running minimum.
DEFAULT_CODE_CHUNK = 8192


@torch.no_grad()
def nearest_codes(
    z: torch.Tensor,
    codebook: torch.Tensor,
    *,
    block_elements: int = DEFAULT_BLOCK_ELEMENTS,
    code_chunk: int = DEFAULT_CODE_CHUNK,
    low_precision: bool = False,
    rerank: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(indices, squared_distances)`` of the nearest row of ``codebook`` (K, D) for each row of z (N, D).

    Memory is O(block_elements) beyond the inputs; the full N x K matrix is never allocated.
    """
    if z.dim() != 2 or codebook.dim() != 2 or z.shape[1] != codebook.shape[1]:
        raise ValueError(f"nearest_codes expects z (N, D) and codebook (K, D); got {tuple(z.shape)} and "
                         f"{tuple(codebook.shape)}")
    num_vectors, num_codes = z.shape[0], codebook.shape[0]
    indices = torch.empty(num_vectors, dtype=torch.long, device=z.device)
    distances = torch.empty(num_vectors, dtype=z.dtype, device=z.device)
    if num_vectors == 0:
        return indices, distances

    shift = codebook.mean(dim=0)
    codes = codebook - shift
    search_codes = codes.to(torch.bfloat16) if low_precision else codes
    code_sq_norms = search_codes.float().pow(2).sum(dim=1).to(search_codes.dtype)
    codes_per_block = min(num_codes, code_chunk)
    rows_per_block = max(1, block_elements // codes_per_block)

    for start in range(0, num_vectors, rows_per_block):
        rows = z[start:start + rows_per_block] - shift
        search_rows = rows.to(search_codes.dtype)
        if low_precision:
            best = _rerank_candidates(rows, codes, search_rows, search_codes, code_sq_norms, rerank)
        else:
            best = _exact_block_min(search_rows, search_codes, code_sq_norms, codes_per_block)
        indices[start:start + rows.shape[0]] = best
        distances[start:start + rows.shape[0]] = (rows - codes[best]).pow(2).sum(dim=1)
    return indices, distances


def _exact_block_min(rows, codes, code_sq_norms, codes_per_block):
    """argmin over codes of ``||c||^2 - 2 z.c`` for one block of rows, slicing the codes when K is large."""
    best_value, best_index = None, None
    for code_start in range(0, codes.shape[0], codes_per_block):
        code_slice = slice(code_start, code_start + codes_per_block)
        scores = torch.addmm(code_sq_norms[code_slice], rows, codes[code_slice].T, alpha=-2.0)
        value, index = scores.min(dim=1)
        if best_value is None:
            best_value, best_index = value, index
        else:
            better = value < best_value
            best_value = torch.where(better, value, best_value)
            best_index = torch.where(better, index + code_start, best_index)
    return best_index


def _rerank_candidates(rows, codes, search_rows, search_codes, code_sq_norms, rerank):
    """Low-precision scores pick ``rerank`` candidates per row; float32 distances choose among them."""
    scores = torch.addmm(code_sq_norms, search_rows, search_codes.T, alpha=-2.0)
    candidates = scores.topk(min(rerank, codes.shape[0]), dim=1, largest=False).indices  # (rows, r)
    exact = (rows.unsqueeze(1) - codes[candidates]).pow(2).sum(dim=2)
    return candidates.gather(1, exact.argmin(dim=1, keepdim=True)).squeeze(1)
