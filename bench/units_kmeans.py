"""k-means units: seqvq's streaming ``KMeansTokenizer`` against FAISS and scikit-learn, fit and encode, in one run.

    python bench/units_kmeans.py                 # 100,000 x 768 -> 500 units, 5 passes (~3 minutes, 2 threads)
    python bench/units_kmeans.py --full          # 1,000,000 x 768 -> 2,000, 10 passes (scikit-learn at 1,000)
    python bench/units_kmeans.py --frames 50000 --units 100 --encode-frames 5000   # a smoke run

Fit: N x D frames (a Gaussian mixture of 1,024 components, written once to a temporary float32 file, as dumped
features are) -> K units, each method in its own subprocess on ``--threads`` threads, which reports its wall time,
peak resident memory (``ru_maxrss``: the whole process, Python, torch and the data it holds included) and the
inertia per frame of its centroids (mean squared distance of every frame to its exact nearest centroid, in float64,
the same evaluation for every method):

* seqvq full: ``KMeansTokenizer(update="full")`` streaming the file in batches of ``--batch-frames`` (never holds
  it): a reservoir pass, greedy k-means++ (and ``--sample-iterations`` Lloyd iterations) on a reservoir of
  ``--reservoir`` frames, ``--passes`` full Lloyd passes;
* seqvq mini-batch: the same with ``update="mini_batch"`` and ``--mini-batch-passes`` passes;
* FAISS ``Kmeans(niter=--passes)``, its defaults otherwise (random seeding, a subsample of at most 256 frames per
  centroid), data in memory;
* scikit-learn ``MiniBatchKMeans(batch_size=--sklearn-batch, max_iter=--passes epochs, n_init=1)`` (batch size
  1,024 by default, scikit-learn's: with ESPnet's 10,000, its greedy k-means++ on 3 x 10,000 frames takes minutes
  here, 183 s at the default size) and ``KMeans(max_iter=--passes, n_init=1)``, data in memory; at
  ``--sklearn-units`` clusters where they cannot do K in reasonable time.  ``KMeans`` runs only when named in
  ``--methods``: its greedy k-means++ over all frames (distances upcast to float64) takes minutes even at the
  default size (386.9 s for 100,000 x 768 -> 500 with 10 iterations on the shared 2-core machine here, against
  13.6 s for FAISS).

"seqvq to FAISS's inertia" is when seqvq's fit first held centroids at least as good as FAISS's final ones, from the
per-pass inertia it records (that of the centroids each pass starts from) and the time each pass ended.

Encode: ``--encode-frames`` x 1,024 frames, 1,000 centroids (frames of the data): ``KMeansTokenizer.encode``
against scikit-learn's ``predict`` (the model ``write_sklearn`` writes) and the bare ``x @ C.T`` both need, medians
of ``--repeats`` interleaved runs.  Then the codes against a float64 argmin, on the frames as they are and shifted
by ``--encode-offset`` in every dimension (features far from the origin, as some SSL layers' are): rows that
differ, how many of them are float32 ties (float64 distances within a relative 1e-6: float32 cannot order them),
and the same for ESPnet's ``ApplyKmeans`` float32 expansion ``|x|^2 - 2 x C + |C|^2`` and scikit-learn's
``predict``.

Wall-clock times on a shared machine: the load average is printed with each table; compare rows of one run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from seqvq.quantize.distance import nearest_codes
from seqvq.units import KMeansTokenizer, write_sklearn

COMPONENTS = 1024
CHUNK = 10_000  # frames generated (and evaluated) at a time
METHODS = ("seqvq full", "seqvq mini-batch", "FAISS Kmeans", "sklearn MiniBatchKMeans", "sklearn KMeans")


def load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def mixture_chunk(index: int, frames: int, dim: int) -> np.ndarray:
    """Frames ``index * CHUNK ...`` of the data: a Gaussian mixture (centres N(0, 0.25), per-component scales
    0.5-1.5), the same for any chunking."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((COMPONENTS, dim), dtype=np.float32) * 0.5
    scales = rng.uniform(0.5, 1.5, (COMPONENTS, 1)).astype(np.float32)
    rng = np.random.default_rng([1, index])
    labels = rng.integers(0, COMPONENTS, frames)
    return centres[labels] + scales[labels] * rng.standard_normal((frames, dim), dtype=np.float32)


def write_data(path: str, frames: int, dim: int) -> None:
    with open(path, "wb") as file:
        for index, start in enumerate(range(0, frames, CHUNK)):
            mixture_chunk(index, min(CHUNK, frames - start), dim).tofile(file)


class FileStream:
    """Batches ``(features (B, 1000, D), None)`` of ``batch_frames`` frames read from the raw float32 file into one
    reused buffer: what a loader of dumped features does, holding one batch."""

    def __init__(self, path: str, frames: int, dim: int, batch_frames: int):
        self.path, self.frames, self.dim = path, frames, dim
        self.buffer = np.empty((batch_frames, dim), dtype=np.float32)

    def __iter__(self):
        with open(self.path, "rb") as file:
            for start in range(0, self.frames, self.buffer.shape[0]):
                rows = self.buffer[: min(self.buffer.shape[0], self.frames - start)]
                file.readinto(memoryview(rows).cast("B"))
                tensor = torch.from_numpy(rows)
                utterances = rows.shape[0] // 1000
                yield tensor[: utterances * 1000].view(utterances, 1000, self.dim), None
                if rows.shape[0] % 1000:
                    yield tensor[utterances * 1000:].unsqueeze(0), None


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def inertia(path: str, frames: int, dim: int, centroids: np.ndarray) -> float:
    """Mean squared distance (float64) of every frame of the file to its exact nearest centroid."""
    table, total = torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32)), 0.0
    for features, _ in FileStream(path, frames, dim, CHUNK):
        rows = features.reshape(-1, dim)
        codes = nearest_codes(rows, table, with_distances=False)[0]
        total += float((rows.double() - table.double()[codes]).pow(2).sum())
    return total / frames


def run_method(args) -> None:
    """One fit in this (sub)process; prints one JSON line."""
    import faiss
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    base = peak_gb()
    result = {"method": args.method}
    sklearn_units = min(args.units, args.sklearn_units or args.units)
    if args.method.startswith("seqvq"):
        mini_batch = args.method == "seqvq mini-batch"
        tokenizer = KMeansTokenizer(args.units, args.dim, passes=args.mini_batch_passes if mini_batch else args.passes,
                                    update="mini_batch" if mini_batch else "full", reservoir_size=args.reservoir,
                                    sample_iterations=args.sample_iterations, seeding_trials=args.seeding_trials)
        stream = FileStream(args.data, args.frames, args.dim, args.batch_frames)
        ends = []
        start = time.perf_counter()
        tokenizer.fit(stream, log=lambda line: ends.append(time.perf_counter() - start))
        seconds = time.perf_counter() - start
        centroids = tokenizer.centroids.numpy()
        result.update(pass_ends=ends, pass_inertia=[float(v) for v in tokenizer.inertia if v == v],
                      units=args.units)
    else:
        data = np.fromfile(args.data, dtype=np.float32).reshape(args.frames, args.dim)
        with threadpool_limits(args.threads):
            start = time.perf_counter()
            if args.method == "FAISS Kmeans":
                model = faiss.Kmeans(args.dim, args.units, niter=args.passes, seed=1)
                model.train(data)
                centroids, units = model.centroids, args.units
            else:
                cls = MiniBatchKMeans if args.method == "sklearn MiniBatchKMeans" else KMeans
                extra = {"batch_size": args.sklearn_batch} if cls is MiniBatchKMeans else {}
                model = cls(n_clusters=sklearn_units, max_iter=args.passes, n_init=1, random_state=0, **extra)
                model.fit(data)
                centroids, units = model.cluster_centers_, sklearn_units
            seconds = time.perf_counter() - start
        del data
        result["units"] = units
    result.update(seconds=seconds, peak_gb=peak_gb(), base_gb=base)
    result["inertia"] = inertia(args.data, args.frames, args.dim, centroids)
    print(json.dumps(result), flush=True)


def fit_table(args) -> None:
    data_gb = args.frames * args.dim * 4 / 2**30
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "frames.f32")
        write_data(path, args.frames, args.dim)
        print(f"## fit {args.frames:,} x {args.dim} -> {args.units} units ({data_gb:.2f} GB of float32 frames), "
              f"{args.passes} passes / iterations, {args.threads} threads; {load()}")
        print("| method | units | seconds | peak RSS GB (after imports) | inertia per frame | notes |")
        print("|---|---|---|---|---|---|")
        results = {}
        for method in args.methods:
            command = [sys.executable, __file__, "--run", method, "--data", path] + [
                f"--{name.replace('_', '-')}={value}" for name, value in vars(args).items()
                if name in ("frames", "dim", "units", "passes", "mini_batch_passes", "reservoir", "sample_iterations",
                            "seeding_trials", "batch_frames", "threads", "sklearn_units", "sklearn_batch")
                and value is not None]
            environment = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
                               OPENBLAS_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
            done = subprocess.run(command, capture_output=True, text=True, env=environment)
            if done.returncode:
                print(f"| {method} | failed: {done.stderr.strip().splitlines()[-1]} |||||", flush=True)
                continue
            result = results[method] = json.loads(done.stdout.strip().splitlines()[-1])
            notes = ""
            if "pass_inertia" in result:
                notes = (f"seeding {result['pass_ends'][0]:.1f} s; per-pass inertia "
                         + " ".join(f"{v:.4g}" for v in result["pass_inertia"]))
            print(f"| {method} | {result['units']} | {result['seconds']:.1f} | {result['peak_gb']:.2f} "
                  f"({result['base_gb']:.2f}) | {result['inertia']:.5g} | {notes} |", flush=True)
    ours, theirs = results.get("seqvq full"), results.get("FAISS Kmeans")
    if ours and theirs:
        print(f"\nseqvq full / FAISS time: {ours['seconds'] / theirs['seconds']:.2f}x, inertia "
              f"{ours['inertia'] / theirs['inertia']:.4f}x; seqvq to FAISS's inertia: {to_inertia(ours, theirs)}")


def to_inertia(ours: dict, target: dict) -> str:
    """When seqvq first held centroids with at most ``target``'s inertia: pass p's recorded inertia is that of the
    centroids of the end of pass p - 1 (the seeding pass for p = 1)."""
    ends, per_pass = ours["pass_ends"], ours["pass_inertia"] + [ours["inertia"]]
    for passes_done, value in enumerate(per_pass):
        if value <= target["inertia"]:
            return f"{ends[passes_done]:.1f} s ({passes_done} Lloyd passes)"
    return "not reached"


def encode_table(args) -> None:
    import faiss
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    dim, units = 1024, 1000
    frames = np.concatenate([mixture_chunk(i, min(CHUNK, args.encode_frames - s), dim)
                             for i, s in enumerate(range(0, args.encode_frames, CHUNK))])
    pick = torch.randperm(frames.shape[0], generator=torch.Generator().manual_seed(0))[:units]
    with threadpool_limits(args.threads):
        functions = encoders(frames, pick)
        functions["floor: torch x @ C.T"] = lambda: torch.from_numpy(frames) @ torch.from_numpy(frames[pick]).T
        times = {name: [] for name in functions}
        for function in functions.values():
            function()  # warm-up
        for _ in range(args.repeats):
            for name, function in functions.items():
                start = time.perf_counter()
                function()
                times[name].append(time.perf_counter() - start)
    print(f"\n## encode {args.encode_frames:,} x {dim} frames, {units} centroids, {args.threads} threads, median of "
          f"{args.repeats}; {load()}")
    print("| method | seconds | frames / s |\n|---|---|---|")
    seconds = {name: statistics.median(values) for name, values in times.items()}
    for name, value in seconds.items():
        print(f"| {name} | {value:.2f} | {args.encode_frames / value:,.0f} |")
    print(f"\nseqvq encode is {seconds['sklearn predict'] / seconds['seqvq encode']:.2f}x sklearn predict")
    print("\n| frames (+ offset in every dimension) | method | rows differing from the float64 argmin | of which "
          "float32 ties (relative gap < 1e-6) | largest relative gap |\n|---|---|---|---|---|")
    for offset in (0.0, args.encode_offset):
        shifted = frames + np.float32(offset)
        x, table = torch.from_numpy(shifted), torch.from_numpy(shifted[pick]).double()
        reference = float64_argmin(x, table)
        with threadpool_limits(args.threads):
            outputs = {name: torch.as_tensor(np.asarray(function())).long()
                       for name, function in encoders(shifted, pick).items()}
        outputs["ESPnet float32 expansion"] = espnet_codes(shifted, shifted[pick])
        for name, codes in outputs.items():
            differ = (codes != reference).nonzero().squeeze(1)
            rows = x[differ].double()
            best = (rows - table[reference[differ]]).pow(2).sum(dim=1)
            gap = ((rows - table[codes[differ]]).pow(2).sum(dim=1) - best) / best
            print(f"| +{offset:g} | {name} | {differ.numel()} | {int((gap < 1e-6).sum())} | "
                  f"{float(gap.max()) if differ.numel() else 0:.2g} |", flush=True)


def encoders(frames: np.ndarray, pick: torch.Tensor) -> dict:
    """seqvq's encode and scikit-learn's predict (of the model write_sklearn writes) with the frames ``pick`` for
    centroids."""
    import joblib

    tokenizer = KMeansTokenizer.from_centroids(frames[pick])
    with tempfile.TemporaryDirectory() as folder:
        write_sklearn(tokenizer, os.path.join(folder, "km.joblib"), estimator="MiniBatchKMeans")
        model = joblib.load(os.path.join(folder, "km.joblib"))
    x = torch.from_numpy(frames)
    batch = x.view(-1, 1000, x.shape[1]) if x.shape[0] % 1000 == 0 else x.unsqueeze(0)
    return {"seqvq encode": lambda: tokenizer.encode(batch).view(-1), "sklearn predict": lambda: model.predict(frames)}


def espnet_codes(frames: np.ndarray, centroids: np.ndarray) -> torch.Tensor:
    """ESPnet's ``ApplyKmeans.__call__`` (numpy path), in blocks of rows: float32 ``|x|^2 - 2 x C + |C|^2``."""
    c_np = centroids.transpose()
    c_norm = (c_np**2).sum(0, keepdims=True)
    codes = [np.argmin((x**2).sum(1, keepdims=True) - 2 * np.matmul(x, c_np) + c_norm, axis=1)
             for x in np.array_split(frames, max(1, frames.shape[0] // 4096))]
    return torch.from_numpy(np.concatenate(codes)).long()


def float64_argmin(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """The nearest row of ``table`` (float64) to every row of x, in float64 (``|x|^2 - 2 x C + |C|^2``, blocks of
    rows)."""
    norms = table.pow(2).sum(dim=1)
    return torch.cat([torch.addmm(norms, x[s:s + 4096].double(), table.T, alpha=-2.0).argmin(dim=1)
                      for s in range(0, x.shape[0], 4096)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true",
                        help="1,000,000 x 768 -> 2,000 units (scikit-learn at 1,000), 10 passes")
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--units", type=int, default=500)
    parser.add_argument("--sklearn-units", type=int, default=None, help="clusters for scikit-learn (default K)")
    parser.add_argument("--sklearn-batch", type=int, default=1024, help="MiniBatchKMeans batch size")
    parser.add_argument("--passes", type=int, default=5, help="Lloyd passes / iterations / epochs")
    parser.add_argument("--mini-batch-passes", type=int, default=2)
    parser.add_argument("--reservoir", type=int, default=None, help="seqvq's reservoir (default 64 frames a unit)")
    parser.add_argument("--sample-iterations", type=int, default=0, help="seqvq: Lloyd iterations on the reservoir")
    parser.add_argument("--seeding-trials", type=int, default=None,
                        help="seqvq: k-means++ candidates per centroid (default 2 + ln K, greedy; 1: plain k-means++)")
    parser.add_argument("--batch-frames", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=[m for m in METHODS if m != "sklearn KMeans"],
                        choices=METHODS)
    parser.add_argument("--encode-frames", type=int, default=20_000)
    parser.add_argument("--encode-offset", type=float, default=20.0,
                        help="the codes are also compared on the frames shifted by this in every dimension")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tables", nargs="+", default=["fit", "encode"], choices=["fit", "encode"])
    parser.add_argument("--run", dest="method", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.full:
        args.frames, args.dim, args.units, args.passes = 1_000_000, 768, 2000, 10
        args.sklearn_units = args.sklearn_units or 1000
    if args.method:
        run_method(args)
        return
    if "fit" in args.tables:
        fit_table(args)
    if "encode" in args.tables:
        encode_table(args)


if __name__ == "__main__":
    main()
