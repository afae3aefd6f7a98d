"""k-means++ (Arthur & Vassilvitskii 2007) seeding and Lloyd iterations in plain torch.

Used for data-dependent codebook initialization and re-estimation (Łańcucki et al. 2020, Algorithm 1; Huh et al.
2023 App. A.7).  Assignments go through the chunked ``nearest_codes`` search, so memory stays O(block) for any
number of points and centroids.
"""
from __future__ import annotations

import torch

from .distance import nearest_codes


@torch.no_grad()
def kmeans_plus_plus(points: torch.Tensor, num_centroids: int, generator: torch.Generator) -> torch.Tensor:
    """D^2 seeding: each next centroid is a point drawn with probability proportional to its squared distance to
    the nearest centroid chosen so far.  Points may be fewer than centroids (they are then reused).

    Each pick costs one matrix-vector product (distances via ``||x||^2 - 2 x.c + ||c||^2`` on mean-centred points,
    which keeps float32 accurate) and one cumulative-sum draw; no N x K matrix is formed.
    """
    count = points.shape[0]
    if count == 0:
        raise ValueError("k-means++ needs at least one point")
    centred = points - points.mean(dim=0)
    squared_norms = centred.pow(2).sum(dim=1)
    chosen = torch.empty(num_centroids, dtype=torch.long)
    chosen[0] = torch.randint(count, (1,), generator=generator)
    closest = torch.full((count,), float("inf"), dtype=points.dtype, device=points.device)
    thresholds = torch.rand(num_centroids, generator=generator).to(points.device)
    for index in range(num_centroids):
        if index:
            cumulative = torch.cumsum(closest, dim=0)
            if cumulative[-1] > 0:
                pick = torch.searchsorted(cumulative, thresholds[index:index + 1] * cumulative[-1], right=True)
                chosen[index] = pick.clamp_max(count - 1).cpu()
            else:  # every point coincides with a centroid already: draw uniformly
                chosen[index] = int(thresholds[index] * count)
        centre = centred[int(chosen[index])]
        distance = torch.addmv(squared_norms, centred, centre, alpha=-2.0).add_(centre.dot(centre)).clamp_min_(0.0)
        torch.minimum(closest, distance, out=closest)
    return points[chosen.to(points.device)].clone()


@torch.no_grad()
def lloyd(points: torch.Tensor, centroids: torch.Tensor, iterations: int) -> torch.Tensor:
    """Lloyd iterations from ``centroids``; an emptied cluster moves to the point farthest from its centroid, so
    every code stays in use.  Stops early when assignments no longer change."""
    centroids = centroids.clone()
    previous = None
    for _ in range(iterations):
        assignment, distance = nearest_codes(points, centroids)
        if previous is not None and torch.equal(assignment, previous):
            break
        previous = assignment
        counts = torch.bincount(assignment, minlength=centroids.shape[0])
        sums = torch.zeros_like(centroids).index_add_(0, assignment, points)
        occupied = counts > 0
        centroids[occupied] = sums[occupied] / counts[occupied].unsqueeze(1).to(points.dtype)
        empty = (~occupied).nonzero().squeeze(1)
        if empty.numel():
            farthest = distance.topk(min(empty.numel(), points.shape[0])).indices
            centroids[empty[: farthest.numel()]] = points[farthest]
    return centroids


def kmeans(points: torch.Tensor, num_centroids: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding followed by ``iterations`` Lloyd steps."""
    return lloyd(points, kmeans_plus_plus(points, num_centroids, generator), iterations)
