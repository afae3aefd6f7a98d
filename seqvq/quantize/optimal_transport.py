"""Assignment by optimal transport (OptVQ: Zhang et al. 2024, "Preventing Local Pitfalls in Vector Quantization via
Optimal Transport", arXiv 2412.15195; equation and section numbers of that paper are not cited here because
they could not be checked against its text, so the objective is written out).

While training, the N valid vectors of the (global) batch are assigned to the K codes by the entropic transport plan
between the uniform distribution over vectors and the uniform distribution over codes, the solution of OptVQ's
``min_A Tr(A^T D) - H(A) / epsilon`` under those marginals:

    P = diag(exp f) exp(-epsilon C) diag(exp g),   P 1 = 1/N,   P^T 1 = 1/K,

found by Sinkhorn-Knopp (alternate normalisation of the rows and columns); each vector's code is drawn from its row
of P (below).  The cost is OptVQ's normalised distance matrix: ``C = (D - mean D) / std D`` with
``D_ij = ||z_i - c_j||`` (the Euclidean, not squared, distance) and the statistics over the whole matrix, and the
plan is ``exp(-epsilon * C)`` with OptVQ's ``epsilon = 10`` and 5 iterations (its reference code; the shift by
``min C`` there is a constant factor of the plan and cancels).  Evaluation takes the nearest code.

Memory: the N x K matrix never exists.  The potentials f (N) and g (K) are kept instead, in the log domain; each
pass recomputes the distances one block of rows at a time: one pass for the mean and standard deviation, then per
iteration one pass that sets every row's f (its row sums to 1/N) and accumulates the column log-sums with the new f
(one exp per entry serves both), after which g makes every column sum to 1/K.  A last pass draws each row's code.

Under ``torch.distributed`` (state-updating passes) the plan is that of the global batch: the distance statistics,
N and the column sums are all-reduced, so every rank holds the same g and the balance is over all ranks' vectors.

The code is drawn from the vector's row of P (the reference quantizer class's default, ``use_prob``), by the
Gumbel-max trick one block at a time, from the quantizer's buffered sampling generator (exact resume).  The
reference's released configs take the row's argmax instead (``sinkhorn={"sample": False}``), which balances less:
the plan's soft mass is balanced, but at OptVQ's epsilon the rows of far-away data peak on the same few codes
(tested).  Several codebooks each get their own plan.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .distance import DEFAULT_BLOCK_ELEMENTS, centred_scores
from .distributed import all_reduce_min, all_reduce_sum
from .stochastic import gumbel_noise


@dataclass(frozen=True)
class SinkhornOptions:
    """``VectorQuantizer(assignment="optimal_transport", sinkhorn=...)``: the inverse temperature ``epsilon`` of the
    plan ``exp(-epsilon C)`` on the standardised distances, the Sinkhorn-Knopp ``iterations`` (OptVQ: 10, 5), and
    whether each code is drawn from its row of the plan (``sample``, the reference class's default ``use_prob``)
    or is the row's argmax (``sample=False``, the ``use_prob: false`` of its released CIFAR-10 and ImageNet configs).
    """

    epsilon: float = 10.0
    iterations: int = 5
    sample: bool = True

    def __post_init__(self):
        if self.epsilon <= 0 or self.iterations < 1:
            raise ValueError(f"sinkhorn needs epsilon > 0 and iterations >= 1; got epsilon={self.epsilon}, "
                             f"iterations={self.iterations}")


def _distances(rows: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (rows, K), computed around the codebook mean (accurate far from the origin)."""
    shift = codebook.mean(dim=0)
    squared = centred_scores(rows, codebook) + (rows - shift).pow(2).sum(dim=1, keepdim=True)
    return squared.clamp_min(0.0).sqrt()


def _global_logsumexp(values: torch.Tensor, reduce_over_ranks: bool) -> torch.Tensor:
    """``log sum exp`` over ranks of per-rank log-sums ``values`` (K,), stable (shifted by the global maximum)."""
    if not reduce_over_ranks:
        return values
    peak = -all_reduce_min(-values.clone())
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    return peak + all_reduce_sum((values - peak).exp()).log()


class _Blocks:
    """The rows of ``z`` in blocks of about ``block_elements`` distances, with the cost ``epsilon C`` of each."""

    def __init__(self, z, codebook, epsilon, block_elements, reduce_over_ranks):
        self.z, self.codebook = z, codebook
        self.rows_per_block = max(1, block_elements // max(codebook.shape[0], 1))
        totals = z.new_zeros(3, dtype=torch.float64)
        for rows in self.rows():
            distances = _distances(rows, codebook).double()
            totals += torch.stack([distances.sum(), distances.pow(2).sum(), distances.new_tensor(distances.numel())])
        if reduce_over_ranks:
            totals = all_reduce_sum(totals)
        count = totals[2].clamp_min(1.0)
        mean = totals[0] / count
        std = (totals[1] / count - mean ** 2).clamp_min(0.0).sqrt()
        self.mean, self.scale = float(mean), epsilon / max(float(std), 1e-12)
        self.count = int(totals[2]) // max(codebook.shape[0], 1)

    def rows(self):
        for start in range(0, self.z.shape[0], self.rows_per_block):
            yield self.z[start:start + self.rows_per_block]

    def costs(self):
        for rows in self.rows():
            yield (_distances(rows, self.codebook) - self.mean) * self.scale


def _column_potentials(blocks: _Blocks, options: SinkhornOptions, reduce_over_ranks: bool) -> torch.Tensor:
    """g (K,) after ``options.iterations`` Sinkhorn-Knopp iterations (each: rows, then columns)."""
    size = blocks.codebook.shape[0]
    log_rows = -math.log(max(blocks.count, 1))
    g = blocks.codebook.new_zeros(size)
    for _ in range(options.iterations):
        columns = blocks.codebook.new_full((size,), -math.inf)
        for cost in blocks.costs():
            columns = torch.logaddexp(columns, _block_column_logsums(g, cost, log_rows))
        g = -math.log(size) - _global_logsumexp(columns, reduce_over_ranks)
    return g


def _block_column_logsums(g: torch.Tensor, cost: torch.Tensor, log_rows: float) -> torch.Tensor:
    """One block's row step and its column log-sums ``log sum_i exp(f_i - C_ij)`` (K,), with one exp per entry:
    ``e = exp(a - max_j a)`` for ``a = g - C`` gives both the rows' sums s (so ``f = log_rows - max a - log s``) and
    the columns' (``exp(f_i - C_ij) = e_ij exp(log_rows - g_j) / s_i``).  A column whose every e underflows in the
    block is recomputed by the exact log-sum-exp."""
    scores = g - cost
    peak = scores.amax(dim=1, keepdim=True)
    weights = scores.sub_(peak).exp_()
    row_sums = weights.sum(dim=1, keepdim=True)
    column_sums = (row_sums.reciprocal().T @ weights).squeeze(0)
    if bool((column_sums == 0).any()):
        f = log_rows - peak - row_sums.log()
        return torch.logsumexp(f - cost, dim=0)
    return column_sums.log() + log_rows - g


@torch.no_grad()
def sinkhorn_potentials(z: torch.Tensor, codebook: torch.Tensor, options: SinkhornOptions = SinkhornOptions(),
                        reduce_over_ranks: bool = False, block_elements: int = DEFAULT_BLOCK_ELEMENTS):
    """Log-potentials ``(f (N,), g (K,), scale, mean)`` of the transport plan of ``z`` (N, d) onto ``codebook`` (K, d):
    ``P_ij = exp(f_i + g_j - scale (D_ij - mean))``.  f is the row step after the last g, so every row sums to
    1/N exactly; the columns sum to 1/K up to the convergence of the iterations."""
    blocks = _Blocks(z, codebook, options.epsilon, block_elements, reduce_over_ranks)
    g = _column_potentials(blocks, options, reduce_over_ranks)
    log_rows = -math.log(max(blocks.count, 1))
    f = [log_rows - torch.logsumexp(g - cost, dim=1) for cost in blocks.costs()]
    return torch.cat(f) if f else z.new_zeros(0), g, blocks.scale, blocks.mean


@torch.no_grad()
def optimal_transport_codes(z: torch.Tensor, codebook: torch.Tensor, options: SinkhornOptions = SinkhornOptions(),
                            reduce_over_ranks: bool = False, generator: torch.Generator | None = None,
                            block_elements: int = DEFAULT_BLOCK_ELEMENTS) -> torch.Tensor:
    """The code (N,) of each row of ``z``: drawn from its row of the transport plan with ``generator`` (Gumbel-max),
    or the row's argmax without one (module docstring)."""
    blocks = _Blocks(z, codebook, options.epsilon, block_elements, reduce_over_ranks)
    g = _column_potentials(blocks, options, reduce_over_ranks)
    codes = []
    for cost in blocks.costs():
        logits = g - cost
        if generator is not None:
            logits = logits + gumbel_noise(logits.shape, logits, generator)
        codes.append(logits.argmax(dim=1))
    return torch.cat(codes) if codes else torch.zeros(0, dtype=torch.long, device=z.device)
