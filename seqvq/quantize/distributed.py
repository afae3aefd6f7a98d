"""Collectives that are no-ops outside ``torch.distributed``, so every statistic can be reduced unconditionally.

Under DDP every rank must hold the same codebook: EMA sums and counts, BatchNorm moments, usage counters and
reservoir samples are reduced or gathered here, and whatever one rank computes from them (k-means, replacement
vectors) is broadcast from rank 0.
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


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate along dim 0 the (possibly differently sized) ``tensor`` of every rank."""
    if not is_distributed():
        return tensor
    world = dist.get_world_size()
    count = torch.tensor([tensor.shape[0]], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    longest = int(max(c.item() for c in counts))
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(c.item())] for g, c in zip(gathered, counts)], dim=0)
