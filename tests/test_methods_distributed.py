"""Two ranks (gloo on CPU) with different data: usage counts and divergences are global, and the alternating
helper keeps codebooks identical across ranks."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from seqvq.quantize.diagnostics import UsageTracker, codebook_divergence


def local_data(rank: int):
    generator = torch.Generator().manual_seed(100 + rank)
    codes = [torch.randint(-1, 8, (20,), generator=generator) for _ in range(4)]
    z = torch.randn(40 + 15 * rank, 3, generator=generator) + 2.0 * rank
    return codes, z


CODEBOOK = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    from test_alternating import Model, make_batch, sgd_helper

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        codes, z = local_data(rank)
        tracker = UsageTracker(1, 8, window=3)
        for step_codes in codes:
            tracker.update(step_codes)
        divergence = codebook_divergence(z, CODEBOOK)

        torch.manual_seed(0)
        model = Model()
        helper = sgd_helper(model, inner_steps=2)
        task_model = DistributedDataParallel(model)
        for step in range(2):
            helper.step(make_batch(seed=10 * step + rank), task_model, model.codebook_loss)
        torch.save({"counts": tracker.counts(), "metrics": tracker.metrics(), "divergence": tuple(divergence),
                    "model": model.state_dict()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_ranks_share_usage_divergence_and_codebooks(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    data = [local_data(rank) for rank in range(2)]

    expected_counts = sum(torch.bincount(c[c >= 0], minlength=8) for codes, _ in data for c in codes[-3:])
    for result in ranks:
        assert torch.equal(result["counts"][0], expected_counts)
    assert all(torch.equal(ranks[0]["metrics"][k], ranks[1]["metrics"][k]) for k in ranks[0]["metrics"])

    everything = codebook_divergence(torch.cat([z for _, z in data]), CODEBOOK)
    for result in ranks:
        torch.testing.assert_close(torch.stack(result["divergence"]), torch.stack(tuple(everything)))
    single = codebook_divergence(data[0][1], CODEBOOK)
    assert not torch.allclose(torch.stack(tuple(single)), torch.stack(tuple(everything)))

    for name, value in ranks[0]["model"].items():
        assert torch.equal(value, ranks[1]["model"][name]), name


def _uneven_batches_worker(rank: int, init_file: str, out_dir: str) -> None:
    from distributed_helpers import init_rank
    from test_alternating import Model, make_batch, sgd_helper

    init_rank(rank, init_file)
    try:
        torch.manual_seed(0)
        model = Model()
        helper = sgd_helper(model, inner_steps=3)
        task_model = DistributedDataParallel(model)
        inner_steps = []
        for step in range(2):  # rank 1's local batch (2 items) is smaller than k = 3, rank 0's (4) is not
            batch = make_batch(seed=10 * step + rank, size=4 if rank == 0 else 2)
            inner_steps.append(helper.step(batch, task_model, model.codebook_loss).inner_losses.numel())
        torch.save({"inner_steps": inner_steps, "model": model.state_dict()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_alternating_steps_with_different_local_batch_sizes_take_the_same_inner_steps_on_every_rank(tmp_path):
    """Every inner step all-reduces the codebook gradient, so every rank must take as many: the smallest local
    batch bounds them all (here 2 < k = 3 on rank 1), and the ranks stay identical."""
    from distributed_helpers import run_ranks

    run_ranks(_uneven_batches_worker, (str(tmp_path / "init"), str(tmp_path)), timeout_s=120)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    assert ranks[0]["inner_steps"] == ranks[1]["inner_steps"] == [2, 2]
    for name, value in ranks[0]["model"].items():
        assert torch.equal(value, ranks[1]["model"][name]), name


def _nonfinite_worker(rank: int, init_file: str, out_dir: str) -> None:
    import copy

    from distributed_helpers import init_rank
    from seqvq.quantize.alternating import NonFiniteStep
    from test_alternating import Model, make_batch, sgd_helper

    init_rank(rank, init_file)
    try:
        torch.manual_seed(0)
        model = Model()
        helper = sgd_helper(model, inner_steps=2, check_finite=True)
        task_model = DistributedDataParallel(model)
        helper.step(make_batch(seed=rank), task_model, model.codebook_loss)
        before = copy.deepcopy(model.state_dict())

        def inner_loss(part):  # NaN on rank 1 alone, in its local loss only
            loss = model.codebook_loss(part)
            return loss * float("nan") if rank == 1 else loss

        try:
            helper.step(make_batch(seed=10 + rank), task_model, inner_loss)
            raised = None
        except NonFiniteStep as error:
            raised = error.where
        torch.save({"raised": raised, "before": before, "model": model.state_dict()},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_a_nonfinite_inner_loss_on_one_rank_stops_the_step_on_every_rank(tmp_path):
    from distributed_helpers import run_ranks

    run_ranks(_nonfinite_worker, (str(tmp_path / "init"), str(tmp_path)), timeout_s=120)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    assert ranks[0]["raised"] == ranks[1]["raised"] == "inner codebook step 1 of 2"
    for name, value in ranks[0]["model"].items():
        assert torch.equal(value, ranks[1]["model"][name]), name
        assert torch.equal(value, ranks[0]["before"][name]), name
