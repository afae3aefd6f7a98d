"""Running a function on two gloo ranks in a test: file rendezvous (no port to race for), a per-collective gloo
timeout, and a wall-clock limit after which the ranks are killed and the test fails instead of hanging."""
from __future__ import annotations

import datetime
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def init_rank(rank: int, init_file: str, world_size: int = 2, timeout_s: float = 30.0) -> None:
    """Join the gloo group of the test (called first in every worker)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))


def run_ranks(worker, args: tuple, nprocs: int = 2, timeout_s: float = 120.0) -> None:
    """``worker(rank, *args)`` on ``nprocs`` spawned processes; fails the test if any raises or if they have not
    all finished after ``timeout_s`` (a deadlock)."""
    context = mp.start_processes(worker, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            pytest.fail(f"{nprocs} ranks still running after {timeout_s:.0f} s: deadlock")


def rank_results(worker, out_dir, timeout_s: float = 300.0) -> list:
    """``worker(rank, init_file, out_dir)`` on two ranks, each saving what it recorded to ``out_dir/rank<r>.pt``:
    the two records, rank 0's first."""
    run_ranks(worker, (str(out_dir / "init"), str(out_dir)), timeout_s=timeout_s)
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(2)]
