"""Two gloo processes with different data per rank end every step with the same codebook and statistics:
EMA sums and counts are all-reduced, reservoirs merged before k-means, k-means and replacement broadcast."""
from __future__ import annotations

import datetime
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import seqvq

OPTIONS = dict(num_codebooks=2, codebook_update="ema", pre_norm=True, affine={"mode": "ema"}, replace_dead_after=2,
               reestimate={"init_steps": 2, "every": 2, "steps": 4, "reservoir_size": 24, "kmeans_iterations": 3})


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60))
    torch.set_num_threads(1)
    torch.manual_seed(0)  # same initial codebook on both ranks
    quantizer = seqvq.VectorQuantizer(8, 16, **OPTIONS)
    snapshots = []
    for step in range(8):
        generator = torch.Generator().manual_seed(100 * rank + step)  # different data per rank
        lengths = torch.randint(1, 7, (3,), generator=generator)
        x = torch.randn(3, 6, 8, generator=generator) * (1 + rank) + rank
        quantizer(x, lengths=lengths)
        snapshots.append({k: v.clone() for k, v in quantizer.state_dict().items()
                          if "rng" not in k and "reservoir.samples" not in k and "reservoir.seen" not in k})
    if rank == 0:  # evaluation on one rank (as the trainer does) must issue no collective
        quantizer.eval()
        quantizer(torch.randn(2, 5, 8))
    dist.barrier()
    torch.save(snapshots, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_hold_identical_codebooks_and_statistics(tmp_path):
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    for step, (a, b) in enumerate(zip(rank0, rank1)):
        for name in a:
            assert torch.equal(a[name], b[name]), f"{name} differs across ranks after step {step + 1}"
    assert int(rank0[-1]["rewrites"]) >= 2  # re-estimations (and replacements) did happen
    assert not torch.equal(rank0[1]["codebook"], rank0[2]["codebook"])  # k-means at M_init changed the codes
