"""Running a function on two gloo ranks in a test: file rendezvous (no port to race for), a per-collective gloo
timeout, and a wall-clock limit after which the ranks are killed and the test fails instead of hanging; and a
torchrun command under the same limit, failing with every process's Python stack when it hangs."""
from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux /proc): torchrun starts each rank in a session of its own, out of reach
    of a signal to torchrun's process group."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, frontier = [], [pid]
    while frontier:
        tree.append(frontier.pop())
        frontier += children.get(tree[-1], [])
    return tree


def _signal_all(pids: list[int], signal_number: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal_number)
        except ProcessLookupError:
            pass


def run_torchrun(arguments: list[str], log_dir: Path, timeout_s: float = 180.0) -> str:
    """``python -m torch.distributed.run --standalone ARGUMENTS`` (one thread a process), its output in a file of
    ``log_dir`` rather than a pipe (a rank still holding a pipe cannot block the wait); the output when it exits 0.
    Otherwise the test fails with the output's tail; after ``timeout_s`` torchrun and every rank first get SIGABRT,
    so that each writes where it hangs (``PYTHONFAULTHANDLER``), then SIGKILL."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path = log_dir / "torchrun.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    with open(out_path, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", *arguments],
                                   stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            returncode = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            tree = _process_tree(process.pid)
            _signal_all(tree[1:], signal.SIGABRT)  # the ranks first: torchrun would stop them on its own abort
            time.sleep(3)
            _signal_all(tree[:1], signal.SIGABRT)
            time.sleep(2)
            _signal_all(tree, signal.SIGKILL)
            process.wait()
            pytest.fail(f"torchrun still running after {timeout_s:.0f} s; the stacks of its processes:\n"
                        f"{out_path.read_text()[-8000:]}")
    output = out_path.read_text()
    assert returncode == 0, output[-3000:]
    return output
