"""Two gloo processes: the usage regularizer (seqvq/quantize/usage.py) and BSQ's and LFQ's codebook entropies (bsq.py,
lfq.py) are the global batch's on every rank, and each rank's input gradient is its share of the global gradient
(x world size, which DDP's averaging undoes); and
training with the modern methods (SimVQ map, rotation trick, usage regularizer; residual VQ with quantizer dropout
and DAC projections; LFQ with its entropy penalty, FSQ with symmetric bounds and noise, residual FSQ) with
DDP-averaged gradients ends every step with identical state on both ranks."""
from __future__ import annotations

import datetime
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import seqvq
from seqvq.quantize.bsq import bsq_entropy
from seqvq.quantize.lfq import exact_codebook_entropy
from seqvq.quantize.usage import kl_to_uniform, mean_soft_assignment

CODEBOOK = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


def rank_data(rank: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(10 + rank)
    return torch.randn(4 + 3 * rank, 2, 3, generator=generator, dtype=torch.float64) + rank


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60))
    torch.set_num_threads(1)
    z = rank_data(rank).requires_grad_()
    kl = kl_to_uniform(mean_soft_assignment(z, CODEBOOK, 0.5, reduce_over_ranks=True, block_elements=12))
    kl.backward()
    torch.manual_seed(0)
    quantizer = seqvq.VectorQuantizer(6, 6, num_codebooks=2, usage_regularizer={"weight": 1.0})
    usage = quantizer(rank_data(rank).float().reshape(1, -1, 6)).losses["usage"]
    u = torch.nn.functional.normalize(rank_data(rank).reshape(-1, 6), dim=-1).requires_grad_()
    codebook_entropy = bsq_entropy(u, 0.5)[1]
    codebook_entropy.backward()
    snapshots = {name: train(make, rank) for name, make in MODELS.items()}
    torch.save({"kl": kl.detach(), "grad": z.grad, "usage": usage.detach(), "codebook_entropy":
                codebook_entropy.detach(), "entropy_grad": u.grad, "snapshots": snapshots},
               os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


MODELS = {
    "simvq+rotation+usage": lambda: seqvq.VectorQuantizer(
        6, 8, affine={"mode": "linear"}, rotation_trick=True, usage_regularizer={"weight": 0.5},
        replace_dead_after=1, pre_norm=True),
    "residual+dropout+dac": lambda: seqvq.ResidualVectorQuantizer(
        6, [8, 4], 2, quantizer_dropout=0.5, code_dim=3, replace_dead_after=1, kmeans_init=True),
}


def train(make, rank: int) -> list[dict]:
    """Four steps on rank-specific data with gradients averaged over ranks (what DDP does); the state per step."""
    torch.manual_seed(0)
    model = make()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    snapshots = []
    for step in range(4):
        generator = torch.Generator().manual_seed(100 * rank + step)
        x = torch.randn(3, 5, 6, generator=generator) * (1 + rank)
        result = model(x, lengths=torch.tensor([5, 2 + rank, 4]))
        optimizer.zero_grad()
        (result.quantized.pow(2).mean() + result.loss).backward()
        for parameter in model.parameters():
            if parameter.grad is not None:
                dist.all_reduce(parameter.grad)
                parameter.grad /= 2
        optimizer.step()
        snapshots.append({k: v.clone() for k, v in model.state_dict().items() if "reservoir" not in k})
    return snapshots


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_usage_regularizer_and_bsq_entropy_are_global_under_two_gloo_ranks(tmp_path):
    mp.start_processes(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    z = torch.cat([rank_data(0), rank_data(1)]).requires_grad_()
    kl = kl_to_uniform(mean_soft_assignment(z, CODEBOOK, 0.5, reduce_over_ranks=False))
    kl.backward()
    for rank, result in enumerate(ranks):
        torch.testing.assert_close(result["kl"], kl.detach())
        rows = slice(0, 4) if rank == 0 else slice(4, None)
        torch.testing.assert_close(result["grad"] / 2, z.grad[rows])
    torch.manual_seed(0)
    quantizer = seqvq.VectorQuantizer(6, 6, num_codebooks=2, usage_regularizer={"weight": 1.0})
    whole = quantizer(z.detach().float().reshape(1, -1, 6)).losses["usage"]
    for result in ranks:
        torch.testing.assert_close(result["usage"], whole)
    u = torch.nn.functional.normalize(z.detach().reshape(-1, 6), dim=-1).requires_grad_()
    codebook_entropy = bsq_entropy(u, 0.5)[1]
    codebook_entropy.backward()
    for rank, result in enumerate(ranks):
        torch.testing.assert_close(result["codebook_entropy"], codebook_entropy.detach())
        rows = slice(0, 4) if rank == 0 else slice(4, None)
        torch.testing.assert_close(result["entropy_grad"] / 2, u.grad[rows])
    for name in MODELS:
        for step, (a, b) in enumerate(zip(ranks[0]["snapshots"][name], ranks[1]["snapshots"][name])):
            for key in a:
                assert torch.equal(a[key], b[key]), f"{name}: {key} differs across ranks after step {step + 1}"
        first, last = ranks[0]["snapshots"][name][0], ranks[0]["snapshots"][name][-1]
        assert any(not torch.equal(first[key], last[key]) for key in first if "codebook" in key), name


CODEBOOK_FREE_MODELS = {
    "lfq": lambda: seqvq.LookupFreeQuantizer(6, 4, pre_norm=True,
                                             entropy_regularizer={"weight": 0.5, "temperature": 0.5}),
    "fsq symmetric + noise": lambda: seqvq.FiniteScalarQuantizer(6, [5, 4, 4], symmetric=True, noise_dropout=0.5,
                                                                 pre_norm=True),
    "residual fsq": lambda: seqvq.ResidualVectorQuantizer(6, num_quantizers=3, quantizer_dropout=0.5, stage={
        "kind": "fsq", "levels": [5, 4, 4], "noise_dropout": 0.5}),
}


def _codebook_free_worker(rank: int, init_file: str, out_dir: str) -> None:
    from distributed_helpers import init_rank

    init_rank(rank, init_file)
    logits = (rank_data(rank).reshape(-1, 6)[:, :5] * 2).requires_grad_()
    codebook_entropy = exact_codebook_entropy(logits)
    codebook_entropy.backward()
    snapshots = {name: train(make, rank) for name, make in CODEBOOK_FREE_MODELS.items()}
    torch.save({"codebook_entropy": codebook_entropy.detach(), "grad": logits.grad, "snapshots": snapshots},
               os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_lfq_entropy_is_global_and_codebook_free_training_stays_identical_under_two_gloo_ranks(tmp_path):
    from distributed_helpers import run_ranks

    run_ranks(_codebook_free_worker, (str(tmp_path / "init"), str(tmp_path)))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    logits = (torch.cat([rank_data(0), rank_data(1)]).reshape(-1, 6)[:, :5] * 2).requires_grad_()
    codebook_entropy = exact_codebook_entropy(logits)
    codebook_entropy.backward()
    for rank, result in enumerate(ranks):
        torch.testing.assert_close(result["codebook_entropy"], codebook_entropy.detach())
        rows = slice(0, 4) if rank == 0 else slice(4, None)
        torch.testing.assert_close(result["grad"] / 2, logits.grad[rows])
    for name in CODEBOOK_FREE_MODELS:
        for step, (a, b) in enumerate(zip(ranks[0]["snapshots"][name], ranks[1]["snapshots"][name])):
            for key in a:
                assert torch.equal(a[key], b[key]), f"{name}: {key} differs across ranks after step {step + 1}"
        first, last = ranks[0]["snapshots"][name][0], ranks[0]["snapshots"][name][-1]
        assert any(not torch.equal(first[key], last[key]) for key in first if "weight" in key), name
        assert all(not torch.equal(first[key], last[key]) for key in first if key.endswith("rng.state")), name
