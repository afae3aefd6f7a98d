"""k-means++ (Arthur & Vassilvitskii 2007) seeding and Lloyd iterations in plain torch.

Used for data-dependent codebook initialization and re-estimation (Łańcucki et al. 2020, Algorithm 1; Huh et al.
2023 App. A.7).  Assignments go through the chunked ``nearest_codes`` search, so memory stays O(block) for any
number of points and centroids.
"""
from __future__ import annotations

import torch

from .distance import DEFAULT_BLOCK_ELEMENTS, nearest_codes

# Round growth of the batched D^2 seeding (see kmeans_plus_plus).
DEFAULT_SEEDING_GROWTH = 0.5


@torch.no_grad()
def kmeans_plus_plus(points: torch.Tensor, num_centroids: int, generator: torch.Generator,
                     growth: float = DEFAULT_SEEDING_GROWTH, trials: int = 1) -> torch.Tensor:
    """D^2 seeding: each next centroid is a point drawn with probability proportional to its squared distance to
    the nearest centroid chosen so far.  Points may be fewer than centroids (they are then reused).

    Batched in rounds: with ``c`` centroids chosen, a round draws ``max(1, floor(growth * c))`` points at once from
    the same D^2 distribution, then one blocked ``nearest_codes`` search of every point against the round's new
    centroids updates the distances — about ``log(K) / log(1 + growth)`` rounds of matrix products instead of K
    sequential matrix-vector products (the oversampling rounds of k-means||, Bahmani et al. 2012, without its
    re-clustering step).  ``growth = 0`` is exact k-means++ (one draw per round).  A round may draw a point twice;
    Lloyd's empty-cluster rule moves such a duplicate.  The choice of 0.5 is measured in bench/peer_speed.py
    (time and inertia against exact k-means++ and FAISS) and bench/kmeans_seeding.py (against growth 1 and 2: they
    seed in 0.6-1.1x the time, to within 0.4 % of the inertia, a difference too small to change every recipe's
    recorded re-estimations for).

    ``trials > 1`` is greedy k-means++ (Arthur & Vassilvitskii 2007, sec. 6; scikit-learn's default with
    ``2 + ln K`` trials): each centroid is the best, by the D^2 potential ``sum_i min(D_i^2, ||x_i - c||^2)`` it
    leaves, of ``trials`` points drawn from the D^2 distribution (within a round, against the centroids of the
    rounds before).  It costs ``trials`` times the distance computations, and lowers the inertia where plain D^2
    sampling is drawn to far-out points (wide, noisy clusters in many dimensions).  ``trials = 1`` draws exactly as
    before.
    """
    return _seed(points, num_centroids, generator, growth, trials)[0]


def _seed(points, num_centroids, generator, growth, trials=1):
    """k-means++ seeding (see kmeans_plus_plus); also returns each point's nearest seed, which the searches of the
    rounds have found already (so the first Lloyd step needs no search of its own)."""
    count = points.shape[0]
    if count == 0:
        raise ValueError("k-means++ needs at least one point")
    if growth < 0:
        raise ValueError(f"k-means++: growth must be >= 0, got {growth}")
    if trials < 1:
        raise ValueError(f"k-means++: trials must be >= 1, got {trials}")
    chosen = torch.empty(num_centroids, dtype=torch.long, device=points.device)
    chosen[0] = int(torch.randint(count, (1,), generator=generator))
    closest = nearest_codes(points, points[chosen[:1]])[1]
    nearest = torch.zeros(count, dtype=torch.long, device=points.device)
    done, offsets = 1, None
    while done < num_centroids:
        draws = min(num_centroids - done, max(1, int(growth * done)))
        thresholds = torch.rand(draws * trials, generator=generator, dtype=closest.dtype).to(points.device)
        cumulative = torch.cumsum(closest, dim=0)
        if cumulative[-1] > 0:
            picks = torch.searchsorted(cumulative, thresholds * cumulative[-1], right=True).clamp_max_(count - 1)
        else:  # every point coincides with a centroid already: draw uniformly
            picks = (thresholds * count).long().clamp_max_(count - 1)
        if trials > 1:
            if offsets is None:
                shift = points.mean(dim=0)
                offsets = (points - shift).pow(2).sum(dim=1)
            best = _potentials(points, points[picks], closest - offsets, shift).view(draws, trials).argmin(
                dim=1, keepdim=True)
            picks = picks.view(draws, trials).gather(1, best).squeeze(1)
        chosen[done:done + draws] = picks
        found, distance = nearest_codes(points, points[picks])
        nearer = distance < closest
        nearest = torch.where(nearer, found + done, nearest)
        torch.where(nearer, distance, closest, out=closest)
        done += draws
    return points[chosen].clone(), nearest


def _potentials(points, candidates, limits, shift):
    """The D^2 potential ``sum_i min(closest_i, ||x_i - c||^2)`` with each candidate c added alone, less a constant
    ``sum_i ||x_i - mu||^2`` (mu = ``shift``, the points' mean): ``||x_i - c||^2 = ||x_i - mu||^2 + s_ic`` with
    ``s_ic = ||c'||^2 + 2 mu.c' - 2 x_i.c'``, ``c' = c - mu`` (no cancellation far from the origin), so the sum is
    the constant plus ``sum_i min(s_ic, limits_i)`` where ``limits_i = closest_i - ||x_i - mu||^2``.  Blocks of rows:
    one ``addmm``, one in-place minimum and one matrix-vector product (the column sums) each."""
    codes = candidates - shift
    bias = codes.pow(2).sum(dim=1) + 2.0 * (codes @ shift)
    totals = torch.zeros(candidates.shape[0], dtype=torch.float64, device=points.device)
    rows_per_block = max(1, DEFAULT_BLOCK_ELEMENTS // candidates.shape[0])
    ones = points.new_ones(rows_per_block)
    for start in range(0, points.shape[0], rows_per_block):
        rows = slice(start, start + rows_per_block)
        scores = torch.addmm(bias, points[rows], codes.T, alpha=-2.0)
        torch.minimum(scores, limits[rows].unsqueeze(1), out=scores)
        totals += ones[: scores.shape[0]] @ scores
    return totals


@torch.no_grad()
def lloyd(points: torch.Tensor, centroids: torch.Tensor, iterations: int,
          assignment: torch.Tensor | None = None) -> torch.Tensor:
    """Lloyd iterations from ``centroids``; an emptied cluster moves to the point farthest from its centroid, so
    every code stays in use.  Stops early when assignments no longer change.  ``assignment``: each point's nearest
    centroid where the caller knows it already (the seeding does); it replaces the first step's search."""
    centroids = centroids.clone()
    previous = None
    for step in range(iterations):
        if step or assignment is None:
            assignment = nearest_codes(points, centroids, with_distances=False)[0]
        if previous is not None and torch.equal(assignment, previous):
            break
        previous = assignment
        counts = torch.bincount(assignment, minlength=centroids.shape[0])
        empty = (counts == 0).nonzero().squeeze(1)
        if empty.numel():  # distances to the assigned centroids, computed only when a cluster emptied (rare)
            farthest = (points - centroids[assignment]).pow(2).sum(dim=1).topk(min(empty.numel(), points.shape[0]))
        sums = torch.zeros_like(centroids).index_add_(0, assignment, points)
        occupied = counts > 0
        centroids[occupied] = sums[occupied] / counts[occupied].unsqueeze(1).to(points.dtype)
        if empty.numel():
            centroids[empty[: farthest.indices.numel()]] = points[farthest.indices]
    return centroids


def kmeans(points: torch.Tensor, num_centroids: int, iterations: int, generator: torch.Generator,
           growth: float = DEFAULT_SEEDING_GROWTH, trials: int = 1) -> torch.Tensor:
    """k-means++ seeding (batched by ``growth``; 0 = exact; greedy with ``trials`` > 1) followed by ``iterations``
    Lloyd steps."""
    seeds, nearest_seed = _seed(points, num_centroids, generator, growth, trials)
    return lloyd(points, seeds, iterations, assignment=nearest_seed)
