"""Two-process DDP (gloo on CPU): both ranks end with identical parameters, only rank 0 writes files, and a run
killed after a checkpoint resumes to the same parameters as an uninterrupted one."""
from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import toy_task


def _worker(rank: int, port: int, exp_dir: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    toy_task.install_stand_ins()
    from seqvq.train import Trainer, TrainConfig

    config = TrainConfig(steps=6, batch_size=3, lr=0.05, codebook_lr=0.5, polyak_decay=0.9, checkpoint_every=3,
                         eval_every=3, log_every=2, seed=5, device="cpu")

    def make_trainer(directory: str) -> Trainer:
        torch.manual_seed(rank)  # different initial weights per rank: DDP must broadcast rank 0's
        return Trainer(toy_task.ToyRegression(), config, toy_task.make_dataset(), toy_task.collate,
                       toy_task.evaluate, exp_dir=os.path.join(exp_dir, directory))

    straight = make_trainer("straight")
    straight.fit()

    killed = make_trainer("resumed")
    original_step = killed.train_step

    def die_at_step_5(batch):
        if killed.step == 4:
            raise KeyboardInterrupt
        return original_step(batch)

    killed.train_step = die_at_step_5
    try:
        killed.fit()
    except KeyboardInterrupt:
        pass
    resumed = make_trainer("resumed")
    assert resumed.step == 3
    resumed.fit()
    torch.save({"model": straight.model.state_dict(), "shadow": straight.polyak.shadow,
                "resumed": resumed.model.state_dict()}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_run_keeps_ranks_identical_and_resumes_exactly(tmp_path):
    exp_dir, out_dir = tmp_path / "exp", tmp_path / "out"
    out_dir.mkdir()
    mp.spawn(_worker, args=(_free_port(), str(exp_dir), str(out_dir)), nprocs=2, join=True)
    states = [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, value in states[0]["model"].items():
        assert torch.equal(value, states[1]["model"][name]), name
        assert torch.equal(value, states[0]["resumed"][name]), name
        assert torch.equal(value, states[1]["resumed"][name]), name
    for name, value in states[0]["shadow"].items():
        assert torch.equal(value, states[1]["shadow"][name]), name
    checkpoints = exp_dir / "straight" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.pt", "step_000003.pt", "step_000006.pt"]
    assert len(torch.load(checkpoints / "last.pt", weights_only=True)["rng"]) == 2
    assert (exp_dir / "straight" / "metrics.jsonl").is_file()
