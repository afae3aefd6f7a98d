"""Codebook usage regularizer: KL of the batch's mean soft assignment to the uniform distribution (Zhang et al.
2023, "Regularized Vector Quantization for Tokenized Image Synthesis", arXiv 2303.06424: the prior distribution
regularization; the diversity loss of wav2vec 2.0, Baevski et al. 2020, is the same quantity up to its
normalisation).

For valid vectors z_n and codes c_k, the soft assignment is ``p_nk = softmax_k(-||z_n - c_k||^2 / tau)`` and the
batch's mean ``p̄_k = (1/N) sum_n p_nk``; the penalty is

    KL(p̄ || U) = sum_k p̄_k log p̄_k + log K,

0 when the batch spreads its soft mass evenly over the codes and log K when all of it sits on one code.  Its
gradient reaches the inputs and every code (also the unselected ones), pushing the mean usage towards uniform.
With several codebooks the penalty is averaged over them.

Memory: the N x K matrix never exists.  The sum over n is taken one block of rows at a time, each block under
activation checkpointing, so the forward keeps only a (K,) running sum and backward recomputes each block's
softmax when it needs it.  Under ``torch.distributed`` the sums and counts are all-reduced (differentiably) in
state-updating passes, so p̄ is the global batch's mean; other passes stay local (they may run on one rank alone).
A rank without valid vectors sums one empty block, so it takes part in the same collectives, forward and backward.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .distance import DEFAULT_BLOCK_ELEMENTS
from .distributed import all_reduce_sum, differentiable_all_reduce_sum


@dataclass(frozen=True)
class UsageRegularizerOptions:
    """``VectorQuantizer(usage_regularizer=...)``: ``weight`` x KL(p̄ || U) is added to the loss, with p̄ the mean
    of the soft assignments at ``temperature`` tau (the module docstring; Zhang et al. 2023)."""

    weight: float = 0.1
    temperature: float = 1.0

    def __post_init__(self):
        if self.temperature <= 0 or self.weight < 0:
            raise ValueError(f"usage_regularizer needs temperature > 0 and weight >= 0; got weight={self.weight}, "
                             f"temperature={self.temperature}")


def _block_probability_sum(rows: torch.Tensor, codebook: torch.Tensor, temperature: float) -> torch.Tensor:
    """``sum_n softmax(-||z_n - c||^2 / tau)`` over a block of rows (n, d) -> (K,); distances taken around the
    codebook mean (exact for the softmax, accurate in float32 far from the origin)."""
    shift = codebook.mean(dim=0).detach()
    codes = codebook - shift
    logits = (2.0 * (rows - shift) @ codes.T - codes.pow(2).sum(dim=1)) / temperature
    return F.softmax(logits, dim=1).sum(dim=0)


def mean_soft_assignment(z_e: torch.Tensor, codebook: torch.Tensor, temperature: float, reduce_over_ranks: bool,
                         block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> torch.Tensor:
    """p̄ (G, K) of the valid vectors ``z_e`` (N, G, d) against ``codebook`` (G, K, d), differentiable w.r.t.
    both; summed over ranks when ``reduce_over_ranks``."""
    groups, size, _ = codebook.shape
    rows_per_block = max(1, block_elements // max(size, 1))
    # At least one block, empty when N = 0, so that the sum has the same graph on every rank and an all-padding
    # rank records the differentiable all-reduce too (else its backward skips a collective).  Traced by
    # torch.compile, one block of all rows: N may be a size known only at run time (masked input).
    spans = ([slice(None)] if torch.compiler.is_compiling() else
             [slice(start, start + rows_per_block) for start in range(0, max(z_e.shape[0], 1), rows_per_block)])
    sums = []
    for g in range(groups):
        total = codebook.new_zeros(size)
        for span in spans:
            rows = z_e[span, g]
            total = total + checkpoint(_block_probability_sum, rows, codebook[g], temperature, use_reentrant=False)
        sums.append(total)
    sums = torch.stack(sums)
    count = torch.tensor(float(z_e.shape[0]), device=z_e.device, dtype=sums.dtype)
    if reduce_over_ranks:
        sums, count = differentiable_all_reduce_sum(sums), all_reduce_sum(count)
    return sums / count.clamp_min(1.0)


def kl_to_uniform(mean_assignment: torch.Tensor) -> torch.Tensor:
    """``KL(p̄ || U)`` averaged over codebooks, for p̄ (G, K); 0 for an empty batch (p̄ all zero)."""
    size = mean_assignment.shape[-1]
    empty = mean_assignment.sum(dim=-1) == 0
    kl = (mean_assignment * torch.log(mean_assignment.clamp_min(1e-30))).sum(dim=-1) + math.log(size)
    return torch.where(empty, torch.zeros_like(kl), kl).mean()
