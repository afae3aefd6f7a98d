"""Cost of the collapse remedies: ``python bench/vq_methods.py``.

1. One data-dependent re-estimation (Łańcucki Algorithm 1): k-means++ seeding + Lloyd iterations on a full
   reservoir of 20,480 x 64 vectors, to 2,048 and to 4,096 codes (target: under 2 s on 2 cores).
2. The per-step overhead of each method: one training step (forward, backward, reset_optimizer_state, Adam step)
   of a quantizer on a (16, 200, 64) padded batch with 512 codes, relative to plain VQ.  Re-estimation is timed in
   its steady state between k-means runs (reservoir updates only); the k-means itself is row 1.
3. The quantizers of 2024-25 (OptVQ, IBQ, DiVeQ, SF-DiVeQ, VQBridge, LFQ) against plain VQ, the same step at
   K = 1,024 and 16,384 codes (``--recent-only`` runs this section alone; ``--recent-steps`` steps per median).
"""
from __future__ import annotations

import argparse
import time

import torch

import seqvq
from seqvq.quantize.reestimation import DataDependentReestimation, ReestimationOptions

METHODS = {
    "plain VQ": {},
    "+ BN": {"pre_norm": True},
    "EMA codebook": {"codebook_update": "ema"},
    "cosine distance": {"distance": "cosine"},
    "affine (learned)": {"affine": "learned"},
    "affine (EMA statistics)": {"affine": "ema"},
    "sync update nu=1": {"sync_nu": 1.0},
    "LRU replacement (20)": {"replace_dead_after": 20},
    "re-estimation (reservoir steps)": {"reestimate": {"init_steps": 0, "every": 10**9, "steps": 10**9,
                                                       "reservoir_size": 20480}},
    "all of the above (l2)": {"pre_norm": True, "affine": "learned", "sync_nu": 1.0, "replace_dead_after": 20,
                              "reestimate": {"init_steps": 0, "every": 10**9, "steps": 10**9,
                                             "reservoir_size": 20480}},
}


RECENT_METHODS = {
    "plain VQ": {},
    "OptVQ (Sinkhorn, 5 iterations)": {"assignment": "optimal_transport"},
    "IBQ (index backpropagation)": {"assignment": "index_backprop"},
    "DiVeQ": {"diveq": {"noise": 1e-3}, "alpha": 0.0},
    "SF-DiVeQ": {"diveq": {"space_filling": True}, "alpha": 0.0},
    "VQBridge (group 16, width 256, 1 block)": {"bridge": {"group": 16}},
    "LFQ (log2 K bits, entropy penalty)": {"kind": "lfq", "entropy_regularizer": {}},
}
RECENT_CODEBOOK_SIZES = (1024, 16384)


def reestimation_seconds(codes: int, repeats: int) -> float:
    module = DataDependentReestimation(64, ReestimationOptions(reservoir_size=20480))
    module.reservoir.add(torch.randn(40000, 64))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        module.codebook(1, codes)
        best = min(best, time.perf_counter() - start)
    return best


def step_seconds(options: dict, steps: int, codebook_size: int = 512) -> float:
    torch.manual_seed(0)
    if options.get("kind") == "lfq":  # K implicit codes: log2 K bits, with learned 64 -> bits -> 64 projections
        quantizer = seqvq.build_quantizer(64, **options, bits=codebook_size.bit_length() - 1)
    else:
        quantizer = seqvq.VectorQuantizer(64, codebook_size, **options)
    groups = seqvq.param_groups(quantizer, 1e-3, 1e-2)
    optimizer = torch.optim.Adam(groups if groups else [torch.zeros(1, requires_grad=True)])
    x = torch.randn(16, 200, 64, requires_grad=True)
    lengths = torch.randint(100, 201, (16,), generator=torch.Generator().manual_seed(0))

    def one_step():
        optimizer.zero_grad()
        out = quantizer(x, lengths=lengths)
        (out.loss + out.quantized.pow(2).mean()).backward()
        seqvq.reset_optimizer_state(quantizer, optimizer)
        optimizer.step()

    for _ in range(3):
        one_step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        one_step()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--recent-steps", type=int, default=5)
    parser.add_argument("--recent-only", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if not args.recent_only:
        remedies(args)
    recent(args)


def remedies(args) -> None:
    print("| re-estimation (reservoir 20,480 x 64) | seconds |\n|---|---|")
    for codes in (2048, 4096):
        print(f"| k-means++ + 5 Lloyd iterations -> {codes} codes | {reestimation_seconds(codes, args.repeats):.2f} |",
              flush=True)
    print("\n| method (K=512, batch 16 x 200 x 64) | step (ms, median) | relative to plain VQ |\n|---|---|---|")
    baseline = None
    for name, options in METHODS.items():
        seconds = step_seconds(options, args.steps)
        baseline = baseline or seconds
        print(f"| {name} | {seconds * 1e3:.1f} | {seconds / baseline:.2f}x |", flush=True)


def recent(args) -> None:
    sizes = " | ".join(f"K={k:,} step (ms) | vs plain" for k in RECENT_CODEBOOK_SIZES)
    print(f"\n| method (batch 16 x 200 x 64) | {sizes} |\n|---|" + "---|---|" * len(RECENT_CODEBOOK_SIZES))
    baselines = {}
    for name, options in RECENT_METHODS.items():
        cells = []
        for size in RECENT_CODEBOOK_SIZES:
            seconds = step_seconds(options, args.recent_steps, size)
            baselines.setdefault(size, seconds)
            cells.append(f"{seconds * 1e3:.0f} | {seconds / baselines[size]:.2f}x")
        print(f"| {name} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
