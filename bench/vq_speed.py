"""Nearest-code search speed and memory: ``python bench/vq_speed.py [--quick]``.

For each (N, K, D) the assignment time of ``seqvq.quantize.nearest_codes`` (indices only, as the quantizer calls
it) is divided by the floor: the bare
``x @ C.T`` product over the same row blocks into a preallocated buffer (the arithmetic any exact search must do;
a single ``x @ C.T`` of the full shape would need N*K*4 bytes — 16 GB at N = 10^6, K = 4096).  Peak memory is the
growth of the process's peak RSS while searching, measured in a fresh subprocess per shape.  Where
vector-quantize-pytorch is installed its ``VectorQuantize`` (eval-mode forward, which builds the full N x K
distance matrix) is timed at N = 10^5, K = 1024, D = 256 against the same floor.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from seqvq.quantize.distance import DEFAULT_BLOCK_ELEMENTS, DEFAULT_CODE_CHUNK, nearest_codes


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def best_time(function, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def floor_function(z, codebook):
    """The bare ``x @ C.T`` over the row blocks nearest_codes uses, into one preallocated buffer."""
    rows = max(1, DEFAULT_BLOCK_ELEMENTS // min(codebook.shape[0], DEFAULT_CODE_CHUNK))
    out = torch.empty(rows, codebook.shape[0])

    def run():
        for start in range(0, z.shape[0], rows):
            block = z[start:start + rows]
            torch.mm(block, codebook.T, out=out[: block.shape[0]])

    return run


def measure(n: int, k: int, d: int, repeats: int, compare_vqp: bool) -> dict:
    """Runs in a fresh process (see main) so that peak RSS belongs to this shape alone."""
    torch.manual_seed(0)
    z, codebook = torch.randn(n, d), torch.randn(k, d)
    nearest_codes(z[:10], codebook, with_distances=False)  # warm-up
    before = peak_rss_mb()
    search_time = best_time(lambda: nearest_codes(z, codebook, with_distances=False), repeats)
    peak = peak_rss_mb() - before
    floor_time = best_time(floor_function(z, codebook), repeats)
    row = {"N": n, "K": k, "D": d, "seqvq_s": search_time, "floor_s": floor_time,
           "ratio": search_time / floor_time, "peak_mb": peak}
    if compare_vqp:
        from vector_quantize_pytorch import VectorQuantize

        layer = VectorQuantize(dim=d, codebook_size=k).eval()
        with torch.no_grad():
            layer(z[:10].unsqueeze(0))
            row["vqp_s"] = best_time(lambda: layer(z.unsqueeze(0)), repeats)
        row["vqp_ratio"] = row["vqp_s"] / floor_time
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N up to 10^5 only")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: 'N,K,D,repeats,vqp' for a child process
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        n, k, d, repeats, vqp = (int(v) for v in args.one.split(","))
        print(json.dumps(measure(n, k, d, repeats, bool(vqp))))
        return

    try:
        import vector_quantize_pytorch  # noqa: F401
        have_vqp = True
    except ImportError:
        have_vqp = False
    sizes = [10**4, 10**5] + ([] if args.quick else [10**6])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; floor = x @ C.T over the same row blocks")
    print("| N | K | D | seqvq (s) | floor (s) | seqvq / floor | peak memory (MB) |\n|---|---|---|---|---|---|---|")
    extra = []
    for n in sizes:
        for k in (512, 4096):
            for d in (64, 256):
                repeats = 3 if n < 10**6 else 1
                command = [sys.executable, __file__, "--one", f"{n},{k},{d},{repeats},0"]
                if args.threads:
                    command += ["--threads", str(args.threads)]
                row = json.loads(subprocess.check_output(command))
                print(f"| {n:.0e} | {k} | {d} | {row['seqvq_s']:.3f} | {row['floor_s']:.3f} | "
                      f"{row['ratio']:.2f}x | {row['peak_mb']:.0f} |", flush=True)
    if have_vqp:
        command = [sys.executable, __file__, "--one", "100000,1024,256,3,1"]
        row = json.loads(subprocess.check_output(command))
        extra.append(f"vector-quantize-pytorch VectorQuantize at N=1e5, K=1024, D=256: {row['vqp_s']:.3f} s = "
                     f"{row['vqp_ratio']:.2f}x the floor (seqvq: {row['ratio']:.2f}x)")
    else:
        extra.append("vector-quantize-pytorch not installed: no comparison row")
    print("\n".join(extra))


if __name__ == "__main__":
    main()
