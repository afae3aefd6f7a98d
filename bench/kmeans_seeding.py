"""The growth of seqvq's batched k-means++ seeding: seeding time and final inertia per growth, in one run.

    python bench/kmeans_seeding.py [--threads 1] [--repeats 5] [--growths 0 0.5 1 2]

For each re-estimation size (points x K x D, as in bench/peer_speed.py) and each growth (0 = exact k-means++), the
median CPU time (``time.process_time``: all threads, robust to other jobs on the machine) of the seeding alone, in
units of one exhaustive ``nearest_codes`` search of the points against K codes, and the inertia per point after 10
Lloyd iterations, averaged over the repeats (seeds 0, 1, ...).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from seqvq.quantize.distance import nearest_codes
from seqvq.quantize.kmeans import kmeans, kmeans_plus_plus

SIZES = [(20_480, 512, 64), (20_480, 2048, 64), (20_480, 8192, 64)]


def clustered_points(points: int, dim: int) -> torch.Tensor:
    """256 Gaussian clusters of points (float32, std 3 between centres, 1 within): the k-means data of this script
    and of bench/peer_speed.py."""
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((256, dim)).astype(np.float32) * 3
    members = centres[rng.integers(0, 256, points)]
    return torch.from_numpy(members + rng.standard_normal((points, dim)).astype(np.float32))


def cpu_seconds(function) -> float:
    start = time.process_time()
    function()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--growths", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"seeding CPU time in searches (median of {args.repeats}) and inertia per point after 10 Lloyd iterations "
          f"(mean); {args.threads} thread(s)")
    print("| points | K | D | one search ms | " + " | ".join(f"growth {g:g}" for g in args.growths) + " |")
    print("|---|---|---|---|" + "---|" * len(args.growths))
    for points, k, dim in SIZES:
        data = clustered_points(points, dim)
        codes = data[:k].clone()
        search = statistics.median(cpu_seconds(lambda: nearest_codes(data, codes)) for _ in range(args.repeats))
        cells = []
        for growth in args.growths:
            seeding = statistics.median(
                cpu_seconds(lambda: kmeans_plus_plus(data, k, torch.Generator().manual_seed(seed), growth))
                for seed in range(args.repeats))
            inertia = statistics.mean(
                float(nearest_codes(data, kmeans(data, k, 10, torch.Generator().manual_seed(seed), growth))[1].mean())
                for seed in range(args.repeats))
            cells.append(f"{seeding / search:.2f} ({inertia:.3f})")
        print(f"| {points} | {k} | {dim} | {search * 1e3:.0f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
