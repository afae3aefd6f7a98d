"""Two gloo ranks with different data per rank, through the bare layer:

* every rank ends every step with the same quantizer state (codebook, statistics, reservoir, generators);
* the reservoir of Algorithm 1 is one uniform sample of *every* rank's vectors: exactly what a single process
  running Algorithm R over the rank-ordered concatenation of the ranks' batches holds;
* a rank whose batch is all padding issues the same collectives as the others, forward and backward, for every
  option that reduces, inside DistributedDataParallel (a missing collective is a deadlock or a mismatched
  all-reduce, which fails the test after a timeout instead of hanging it).
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import seqvq
from distributed_helpers import init_rank, rank_results
from seqvq.quantize.diagnostics import UsageTracker, codebook_divergence
from seqvq.quantize.reservoir import Reservoir

OPTIONS = dict(num_codebooks=2, codebook_update="ema", pre_norm=True, affine={"mode": "ema"}, replace_dead_after=2,
               reestimate={"init_steps": 2, "every": 2, "steps": 4, "reservoir_size": 24, "kmeans_iterations": 3})


def rank_batch(rank: int, step: int):
    """Different data per rank: rank 1's vectors sit around +10 in every channel, rank 0's around 0."""
    generator = torch.Generator().manual_seed(100 * rank + step)
    lengths = torch.randint(1, 7, (3,), generator=generator)
    return torch.randn(3, 6, 8, generator=generator) + 10.0 * rank, lengths


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    """All scenarios in one pair of processes (starting them is what takes time)."""
    init_rank(rank, init_file, timeout_s=20.0)
    results = {"identical_state": identical_state_scenario(rank), "reservoir": reservoir_scenario(rank),
               "empty_batch": empty_batch_scenario(rank)}
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """What each of the two ranks recorded in every scenario below."""
    return rank_results(_worker, tmp_path_factory.mktemp("gloo"))


def identical_state_scenario(rank: int) -> list[dict]:
    torch.manual_seed(0)  # same initial codebook on both ranks
    quantizer = seqvq.VectorQuantizer(8, 16, **OPTIONS)
    snapshots = []
    for step in range(8):
        x, lengths = rank_batch(rank, step)
        quantizer(x * (1 + rank), lengths=lengths)
        snapshots.append({k: v.clone() for k, v in quantizer.state_dict().items()})
    if rank == 0:  # evaluation on one rank (as the trainer does) must issue no collective
        quantizer.eval()
        quantizer(torch.randn(2, 5, 8))
    dist.barrier()
    return snapshots


def test_two_gloo_ranks_hold_identical_codebooks_and_statistics(ranks):
    rank0, rank1 = (result["identical_state"] for result in ranks)
    for step, (a, b) in enumerate(zip(rank0, rank1)):
        for name in a:
            assert torch.equal(a[name], b[name]), f"{name} differs across ranks after step {step + 1}"
    assert int(rank0[-1]["rewrites"]) >= 2  # re-estimations (and replacements) did happen
    assert not torch.equal(rank0[1]["codebook"], rank0[2]["codebook"])  # k-means at M_init changed the codes


# ------------------------------------------------------------------------------------ one global reservoir
RESERVOIR = {"init_steps": 100, "every": 1, "steps": 1, "reservoir_size": 24}
RESERVOIR_STEPS = 5


def reservoir_scenario(rank: int) -> dict:
    quantizer = seqvq.VectorQuantizer(8, 16, reestimate=RESERVOIR, seed=3)
    for step in range(RESERVOIR_STEPS):
        x, lengths = rank_batch(rank, step)
        quantizer(x, lengths=lengths)
    reservoir = quantizer.reestimation.reservoir
    return {"state": reservoir.state_dict(), "contents": reservoir.contents()}


def valid_rows(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return x[torch.arange(x.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)]


def test_reservoir_is_one_uniform_sample_of_every_ranks_vectors(ranks):
    ranks = [result["reservoir"] for result in ranks]
    # Algorithm R in one process over the stream the two ranks saw together, rank 0's rows first at every step.
    reference = Reservoir(RESERVOIR["reservoir_size"], 8, seed=3)
    offered = [0, 0]
    for step in range(RESERVOIR_STEPS):
        rows = [valid_rows(*rank_batch(rank, step)) for rank in range(2)]
        offered = [total + part.shape[0] for total, part in zip(offered, rows)]
        reference.add(torch.cat(rows))
    for result in ranks:
        assert int(result["state"]["seen"]) == sum(offered)
        assert torch.equal(result["state"]["samples"], reference.samples)
        assert torch.equal(result["contents"], reference.samples)
    from_rank1 = int((ranks[0]["contents"][:, 0] > 5.0).sum())
    share = offered[1] / sum(offered)
    assert abs(from_rank1 / RESERVOIR["reservoir_size"] - share) < 0.3, (from_rank1, share)
    assert 0 < from_rank1 < RESERVOIR["reservoir_size"]


# ----------------------------------------------------------------------------------- a rank with no vectors
REESTIMATE = {"init_steps": 2, "every": 1, "steps": 3, "reservoir_size": 16, "kmeans_iterations": 2}
VQ = dict(kind="vq", codebook_size=8)
# Every option that issues a collective, forward or backward (build_quantizer's options, on 8 channels).
REDUCING_OPTIONS = {
    "pre_norm": dict(VQ, pre_norm=True),
    "ema": dict(VQ, codebook_update="ema"),
    "affine_ema": dict(VQ, affine="ema"),
    "affine_learned": dict(VQ, affine="learned"),
    "kmeans_init": dict(VQ, kmeans_init=True),
    "reestimate": dict(VQ, reestimate=REESTIMATE),
    "replacement": dict(VQ, replace_dead_after=1),
    "replacement_pre_norm": dict(VQ, replace_dead_after=1, pre_norm=True),
    "replacement_with_reestimation": dict(VQ, replace_dead_after=1, reestimate=REESTIMATE),
    "stochastic": dict(VQ, assignment="stochastic"),
    "gumbel": dict(VQ, assignment="gumbel"),
    "usage": dict(VQ, usage_regularizer={"weight": 0.5}),
    "usage_ema": dict(VQ, usage_regularizer={"weight": 0.5}, codebook_update="ema"),
    "usage_reestimate": dict(VQ, usage_regularizer={"weight": 0.5}, reestimate=REESTIMATE),
    "all": dict(VQ, pre_norm=True, codebook_update="ema", affine="ema", replace_dead_after=1, reestimate=REESTIMATE,
                num_codebooks=2, usage_regularizer={"weight": 0.5}),
    "residual": dict(VQ, kind="residual", num_quantizers=2, pre_norm=True, codebook_update="ema", affine="ema",
                     replace_dead_after=1, usage_regularizer={"weight": 0.5}),
    "bsq_entropy": dict(kind="bsq", bits=6, entropy_regularizer={"weight": 0.5}),
    "bsq_entropy_pre_norm": dict(kind="bsq", bits=6, entropy_regularizer={"weight": 0.5}, pre_norm=True),
    "fsq_pre_norm": dict(kind="fsq", levels=[4, 4, 4], pre_norm=True),
}
PROBE_CODEBOOK = torch.randn(8, 8, generator=torch.Generator().manual_seed(1))  # for codebook_divergence
# Which rank sees only padding at each step (None: both have data, "both": neither has).
EMPTY_AT = [1, 0, None, 0, "both", None]


class EncodedQuantizer(torch.nn.Module):
    """A linear encoder and the quantizer: a model that DistributedDataParallel accepts whatever the quantizer's
    options (an EMA codebook has no parameter to average)."""

    def __init__(self, options: dict):
        super().__init__()
        self.encoder = torch.nn.Linear(8, 8)
        self.quantizer = seqvq.build_quantizer(8, **options)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        result = self.quantizer(self.encoder(x), lengths=lengths)
        return result.quantized, result.codes, result.loss


def empty_batch_scenario(rank: int) -> dict:
    """Train each option under DistributedDataParallel (gradients averaged in backward, then an SGD step) while
    one rank or both see only padding.  Buffers are not broadcast, so equal state shows the quantizer's own
    reductions keep the ranks identical."""
    results = {}
    for name, options in REDUCING_OPTIONS.items():
        torch.manual_seed(0)
        model = DistributedDataParallel(EncodedQuantizer(options), forward_sync_buffers=False)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        tracker = UsageTracker(1, 64, window=3)
        snapshots = []
        for step, empty in enumerate(EMPTY_AT):
            x, lengths = rank_batch(rank, step)
            if empty == rank or empty == "both":
                lengths = torch.zeros_like(lengths)
            x.requires_grad_(True)
            mask = torch.arange(6).unsqueeze(0) < lengths.unsqueeze(1)
            try:
                quantized, codes, loss = model(x, lengths)
                optimizer.zero_grad()
                (quantized[mask].pow(2).sum() + loss).backward()  # a task loss over valid positions
                optimizer.step()
                tracker.update(codes)
                divergence = codebook_divergence(x.detach()[mask], PROBE_CODEBOOK)
            except Exception as error:
                raise RuntimeError(f"option {name!r}, step {step} (empty rank: {empty}): {error}") from error
            snapshots.append({"state": {k: v.clone() for k, v in model.module.state_dict().items()},
                              "tracker": tracker.counts().clone(), "divergence": torch.stack(tuple(divergence)),
                              "finite": bool(torch.isfinite(quantized).all() and torch.isfinite(x.grad).all())})
        results[name] = snapshots
    return results


def test_a_rank_with_an_all_padding_batch_issues_every_collective(ranks):
    rank0, rank1 = (result["empty_batch"] for result in ranks)
    for name in REDUCING_OPTIONS:
        for step, (a, b) in enumerate(zip(rank0[name], rank1[name])):
            assert a["finite"] and b["finite"], f"{name}: non-finite output or gradient at step {step}"
            assert torch.equal(a["tracker"], b["tracker"]), f"{name}: usage counts differ at step {step}"
            assert torch.equal(a["divergence"], b["divergence"]), f"{name}: divergence differs at step {step}"
            for key in a["state"]:
                assert torch.equal(a["state"][key], b["state"][key]), f"{name}: {key} differs after step {step}"
    # The options did act: k-means ran although rank 1 had no vector on the first step; the reservoir holds
    # only the vectors of the ranks that had some (checked after the first step: the reservoir restarts after each
    # re-estimation, from step 2 on); replacement rewrote codes; the encoder was trained.
    assert bool(rank0["kmeans_init"][0]["state"]["quantizer.initialized"])
    seen = sum(int(valid_rows(*rank_batch(rank, 0)).shape[0]) for rank in range(2) if EMPTY_AT[0] != rank)
    assert seen > 0
    assert int(rank0["reestimate"][0]["state"]["quantizer.reestimation.reservoir.seen"]) == seen
    assert int(rank0["replacement"][-1]["state"]["quantizer.rewrites"]) >= 1
    assert int(rank0["replacement_pre_norm"][-1]["state"]["quantizer.rewrites"]) >= 1
    for name in REDUCING_OPTIONS:
        first, last = rank0[name][0]["state"], rank0[name][-1]["state"]
        assert not torch.equal(first["encoder.weight"], last["encoder.weight"]), name
