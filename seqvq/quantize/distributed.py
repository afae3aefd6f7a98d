"""Collectives that are no-ops outside ``torch.distributed``, so every statistic can be reduced unconditionally.

Under DDP every rank must hold the same codebook: EMA sums and counts, BatchNorm moments, affine moments and usage
counters are reduced, the reservoir's input and k-means' first batch gathered, and whatever is computed from them
(k-means, replacement vectors) is broadcast from rank 0 or reduced.  Every collective is issued on every rank
whether or not it has a valid vector (an all-padding batch): a rank that skipped one would deadlock the others.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place and return it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_min(tensor: torch.Tensor) -> torch.Tensor:
    """The minimum of ``tensor`` over ranks, in place, and return it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor


def differentiable_all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks with gradients flowing back to every rank's contribution (for BatchNorm moments)."""
    if is_distributed():
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` on every rank with rank ``src``'s copy, in place, and return it."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def row_counts(count: int, device: torch.device) -> list[int]:
    """Every rank's ``count`` (e.g. its number of valid vectors), in rank order."""
    if not is_distributed():
        return [count]
    counts = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, torch.tensor([count], device=device))
    return [int(c.item()) for c in counts]


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate along dim 0, in rank order, the (possibly differently sized, possibly empty) ``tensor`` of
    every rank."""
    if not is_distributed():
        return tensor
    counts = row_counts(tensor.shape[0], tensor.device)
    longest = max(counts)
    if longest == 0:  # no rank has a row: nothing to send (every rank knows it from the counts)
        return tensor
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.zeros_like(padded) for _ in counts]
    dist.all_gather(gathered, padded)
    return torch.cat([g[:c] for g, c in zip(gathered, counts)], dim=0)
