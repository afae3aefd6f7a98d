"""The quantizers since 2024 on two gloo ranks with different data per rank (one pair of processes for all): a model
inside DistributedDataParallel trains a few steps — one of them with rank 1's batch all padding — and every rank
ends with the same state; and what each method computes over the batch is global (OptVQ's transport plan)."""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import seqvq
from distributed_helpers import init_rank, rank_results
from seqvq.quantize.optimal_transport import sinkhorn_potentials

METHODS = {
    "optimal_transport": {"assignment": "optimal_transport"},
    "index_backprop": {"assignment": "index_backprop"},
    "diveq": {"diveq": {"noise": 1e-3}, "alpha": 0.0},
    "sf_diveq": {"diveq": {"space_filling": True}, "alpha": 0.0},
    "bridge": {"bridge": {"group": 4, "width": 8, "heads": 2}},
}


def rank_batch(rank: int, step: int):
    generator = torch.Generator().manual_seed(100 * rank + step)
    x = torch.randn(3, 6, 4, generator=generator) + 3.0 * rank
    lengths = torch.randint(1, 7, (3,), generator=generator)
    if rank == 1 and step == 1:
        lengths.zero_()  # an all-padding batch: the same collectives as the other rank
    return x, lengths


class Model(nn.Module):
    def __init__(self, options):
        super().__init__()
        torch.manual_seed(0)
        self.encoder, self.decoder = nn.Linear(4, 4), nn.Linear(4, 4)
        self.quantizer = seqvq.VectorQuantizer(4, 16, seed=1, **options)

    def forward(self, x, lengths):
        result = self.quantizer(self.encoder(x), lengths=lengths)
        mask = (torch.arange(x.shape[1]) < lengths[:, None]).unsqueeze(-1)
        error = ((self.decoder(result.quantized) - x) * mask).pow(2).sum() / mask.sum().clamp_min(1)
        return error + result.loss


def train_scenario(options) -> dict:
    model = Model(options)
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.5)
    for step in range(3):
        optimizer.zero_grad()
        ddp(*rank_batch(dist.get_rank(), step)).backward()
        optimizer.step()
    return {name: value.clone() for name, value in model.state_dict().items()}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    init_rank(rank, init_file, timeout_s=30.0)
    results = {name: train_scenario(options) for name, options in METHODS.items()}
    x, lengths = rank_batch(rank, 0)
    z = x[torch.arange(6) < lengths[:, None]]
    codebook = torch.randn(8, 4, generator=torch.Generator().manual_seed(5))
    results["plan"] = sinkhorn_potentials(z, codebook, reduce_over_ranks=True)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return rank_results(_worker, tmp_path_factory.mktemp("gloo"))


@pytest.mark.parametrize("method", METHODS)
def test_every_rank_ends_with_the_same_state(ranks, method):
    for name, value in ranks[0][method].items():
        assert torch.equal(value, ranks[1][method][name]), name
    assert int(ranks[0][method]["quantizer.step"]) == 3


def test_the_transport_plan_is_that_of_the_global_batch(ranks):
    """Each rank's potentials are the single-process ones of the concatenated batch: g in full, f its own rows."""
    data = []
    for rank in range(2):
        x, lengths = rank_batch(rank, 0)
        data.append(x[torch.arange(6) < lengths[:, None]])
    codebook = torch.randn(8, 4, generator=torch.Generator().manual_seed(5))
    f, g, scale, mean = sinkhorn_potentials(torch.cat(data), codebook)
    for rank, result in enumerate(ranks):
        torch.testing.assert_close(result["plan"][1], g)
        torch.testing.assert_close(result["plan"][0], f[:len(data[0])] if rank == 0 else f[len(data[0]):])
        assert result["plan"][2] == pytest.approx(scale) and result["plan"][3] == pytest.approx(mean)
