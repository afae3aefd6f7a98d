"""seqvq against the field's reference implementations, in one process: ``python bench/peer_speed.py [--quick]``.

Exact nearest-code search: ``seqvq.quantize.nearest_codes`` (``auto`` = FAISS where installed, and the plain torch
path) against FAISS ``IndexFlatL2.search(k=1)``, ``torch.cdist(...).argmin``, scikit-learn
``pairwise_distances_argmin`` and vector-quantize-pytorch's eval-mode ``VectorQuantize``, each timed relative to the
floor of ``bench/vq_speed.py`` (the bare blocked ``x @ C.T``).  k-means: seqvq (batched and exact k-means++ seeding
+ 10 Lloyd iterations) against FAISS ``Kmeans`` (its own random seeding + 10 iterations) and scikit-learn ``KMeans``
(greedy k-means++ + 10 iterations), time and inertia per point; and the fewest Lloyd iterations after seqvq's
seeding that reach FAISS's 10-iteration inertia, with the time of that k-means (the issue's "at equal inertia").

The machine may be shared: callables are interleaved, repeated, and the median wall time of each is reported,
with the load average (``uptime``) printed before each table.  Missing packages (``pip install seqvq[bench]``)
leave their columns as "—".
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from seqvq.quantize.distance import nearest_codes
from seqvq.quantize.kmeans import kmeans, lloyd
from kmeans_seeding import clustered_points  # (bench/ is on sys.path when run as a script)
from vq_speed import floor_function  # the blocked x @ C.T floor

try:
    import faiss
except ImportError:
    faiss = None
try:
    from sklearn.cluster import KMeans
    from sklearn.metrics import pairwise_distances_argmin
except ImportError:
    KMeans = pairwise_distances_argmin = None
try:
    from vector_quantize_pytorch import VectorQuantize
except ImportError:
    VectorQuantize = None

# The issue's four shapes first (--quick: the first two), then the corners of bench/vq_speed.py's range
# (N 1e4-1e6, K 512-8192, D 32-512) that the issue's table leaves out.
ISSUE_SHAPES = [(100_000, 512, 64), (100_000, 1024, 256), (100_000, 4096, 64), (1_000_000, 512, 64),
                (10_000, 512, 64), (100_000, 512, 32), (100_000, 1024, 512), (100_000, 8192, 64)]
KMEANS_SIZES = [(20_480, 512, 64), (20_480, 2048, 64), (100_000, 4096, 64), (100_000, 512, 64),
                (20_480, 8192, 64)]
FULL_MATRIX_LIMIT = 1.1e8  # N * K above which the methods that build the full N x K matrix are skipped


def load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


CLOCK = time.perf_counter  # --clock cpu: time.process_time (CPU seconds of all threads: robust to a loaded machine)


def interleaved_medians(functions: dict, repeats: int, warm_up: bool = True) -> dict:
    """One warm-up call each, then ``repeats`` rounds calling every function in turn; median seconds of each."""
    times = {name: [] for name in functions}
    for function in functions.values() if warm_up else ():
        function()
    for _ in range(repeats):
        for name, function in functions.items():
            start = CLOCK()
            function()
            times[name].append(CLOCK() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def agreement(x, codebook, codes, reference) -> str:
    """How many codes equal the reference; where they differ, which of the two is farther in float64."""
    differ = (codes != reference).nonzero().squeeze(1)
    if differ.numel() == 0:
        return f"{x.shape[0]}/{x.shape[0]}"
    rows, table = x[differ].double(), codebook.double()
    ours = (rows - table[codes[differ]]).pow(2).sum(1)
    theirs = (rows - table[reference[differ]]).pow(2).sum(1)
    return (f"{x.shape[0] - differ.numel()}/{x.shape[0]} (seqvq farther {int((ours > theirs).sum())}, "
            f"FAISS farther {int((theirs > ours).sum())})")


def search_table(shapes, repeats) -> None:
    print(f"## exact search: median {CLOCK.__name__} / blocked x @ C.T floor; {torch.get_num_threads()} threads; "
          f"{load()}")
    print("| N | K | D | floor ms | seqvq auto | seqvq torch | FAISS IndexFlatL2 | torch.cdist+argmin | "
          "sklearn argmin | vector-quantize-pytorch | seqvq codes == FAISS |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n, k, d in shapes:
        generator = torch.Generator().manual_seed(0)
        x, codebook = torch.randn(n, d, generator=generator), torch.randn(k, d, generator=generator)
        functions = {"floor": floor_function(x, codebook),
                     "auto": lambda: nearest_codes(x, codebook, with_distances=False),
                     "torch": lambda: nearest_codes(x, codebook, with_distances=False, backend="torch")}
        if faiss is not None:
            index = faiss.IndexFlatL2(d)
            index.add(codebook.numpy())
            functions["faiss"] = lambda: index.search(x.numpy(), 1)
        small = n * k <= FULL_MATRIX_LIMIT
        if small:
            functions["cdist"] = lambda: torch.cdist(x, codebook).argmin(dim=1)
        if small and pairwise_distances_argmin is not None:
            functions["sklearn"] = lambda: pairwise_distances_argmin(x.numpy(), codebook.numpy())
        if small and VectorQuantize is not None:
            layer = VectorQuantize(dim=d, codebook_size=k).eval()
            layer._codebook.embed.data.copy_(codebook.view(layer._codebook.embed.shape))

            def quantize_layer():
                with torch.no_grad():
                    layer(x.unsqueeze(0))

            functions["lvq"] = quantize_layer
        seconds = interleaved_medians(functions, repeats)
        ratio = {name: f"{value / seconds['floor']:.2f}x" for name, value in seconds.items()}
        agree = "—"
        if faiss is not None:
            reference = torch.from_numpy(index.search(x.numpy(), 1)[1][:, 0])
            codes = nearest_codes(x, codebook, with_distances=False, backend="torch")[0]
            agree = agreement(x, codebook, codes, reference)
        columns = [ratio.get(name, "—") for name in ("auto", "torch", "faiss", "cdist", "sklearn", "lvq")]
        print(f"| {n:.0e} | {k} | {d} | {seconds['floor'] * 1e3:.0f} | " + " | ".join(columns) + f" | {agree} |",
              flush=True)


def kmeans_table(sizes, repeats) -> None:
    print(f"\n## k-means: seeding + 10 Lloyd iterations, median {CLOCK.__name__} s (inertia per point); "
          f"{torch.get_num_threads()} threads; {load()}")
    print("| points | K | D | seqvq (batched k-means++) | seqvq (exact k-means++) | FAISS Kmeans | "
          "sklearn KMeans | seqvq / FAISS | seqvq to FAISS's inertia |")
    print("|---|---|---|---|---|---|---|---|---|")
    for points, k, d in sizes:
        tensor = clustered_points(points, d)
        data = tensor.numpy()
        results = {}

        def run(name, fit):
            def call():
                results[name] = torch.as_tensor(fit()).float()
            return call

        functions = {"batched": run("batched", lambda: kmeans(tensor, k, 10, torch.Generator().manual_seed(0))),
                     "exact": run("exact", lambda: kmeans(tensor, k, 10, torch.Generator().manual_seed(0), 0.0))}
        if faiss is not None:
            def faiss_kmeans():
                model = faiss.Kmeans(d, k, niter=10, seed=0, max_points_per_centroid=10**9,
                                     min_points_per_centroid=1, verbose=False)
                model.train(data)
                return model.centroids
            functions["faiss"] = run("faiss", faiss_kmeans)
        if KMeans is not None and points * k <= 5e7:
            functions["sklearn"] = run("sklearn", lambda: KMeans(k, init="k-means++", n_init=1, max_iter=10,
                                                                 random_state=0).fit(data).cluster_centers_)
        seconds = interleaved_medians(functions, repeats, warm_up=False)
        inertia = {name: float(nearest_codes(tensor, c)[1].mean()) for name, c in results.items()}
        cell = {name: f"{seconds[name]:.2f} ({inertia[name]:.3f})" for name in seconds}
        versus = reach = "—"
        if "faiss" in seconds:
            versus = f"{seconds['batched'] / seconds['faiss']:.2f}x"
            iterations = iterations_to_reach(tensor, k, inertia["faiss"])
            if iterations is not None:
                timed = interleaved_medians({"reach": lambda: kmeans(tensor, k, iterations,
                                                                      torch.Generator().manual_seed(0))},
                                            repeats, warm_up=False)["reach"]
                reach = f"{iterations} it, {timed:.2f} s = {timed / seconds['faiss']:.2f}x"
        columns = [cell.get(name, "—") for name in ("batched", "exact", "faiss", "sklearn")]
        print(f"| {points} | {k} | {d} | " + " | ".join(columns) + f" | {versus} | {reach} |", flush=True)


def iterations_to_reach(points, k, target, most=10):
    """Fewest Lloyd iterations after seqvq's seeding (seed 0) whose inertia per point is <= ``target``, or None."""
    centroids = kmeans(points, k, 0, torch.Generator().manual_seed(0))
    for iterations in range(most + 1):
        if iterations:
            centroids = lloyd(points, centroids, 1)
        if float(nearest_codes(points, centroids)[1].mean()) <= target:
            return iterations
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the two smaller search shapes and k-means sizes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--kmeans-repeats", type=int, default=3, help="k-means runs are not warmed up")
    parser.add_argument("--tables", choices=("search", "kmeans", "both"), default="both")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    if faiss is not None:  # faiss-cpu bundles its own OpenMP runtime: its thread count is set separately
        faiss.omp_set_num_threads(args.threads)
    print(f"torch {torch.__version__}; faiss {getattr(faiss, '__version__', 'not installed')}")
    if args.tables != "kmeans":
        search_table(ISSUE_SHAPES[:2] if args.quick else ISSUE_SHAPES, args.repeats)
    if args.tables != "search":
        kmeans_table(KMEANS_SIZES[:2] if args.quick else KMEANS_SIZES, args.kmeans_repeats)


if __name__ == "__main__":
    main()
