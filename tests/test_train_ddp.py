"""Two-process DDP (gloo on CPU): both ranks end with identical parameters; only rank 0 writes files."""
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

    torch.manual_seed(rank)  # different initial weights per rank: DDP must broadcast rank 0's
    config = TrainConfig(steps=6, batch_size=3, lr=0.05, codebook_lr=0.5, polyak_decay=0.9, checkpoint_every=3,
                         eval_every=3, log_every=2, seed=5, device="cpu")
    trainer = Trainer(toy_task.ToyRegression(), config, toy_task.make_dataset(), toy_task.collate,
                      toy_task.evaluate, exp_dir=exp_dir)
    trainer.fit()

    torch.save({"model": trainer.model.state_dict(), "shadow": trainer.polyak.shadow},
               os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_run_keeps_ranks_identical(tmp_path):
    exp_dir, out_dir = tmp_path / "exp", tmp_path / "out"
    out_dir.mkdir()
    mp.spawn(_worker, args=(_free_port(), str(exp_dir), str(out_dir)), nprocs=2, join=True)
    states = [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, value in states[0]["model"].items():
        assert torch.equal(value, states[1]["model"][name]), name
    for name, value in states[0]["shadow"].items():
        assert torch.equal(value, states[1]["shadow"][name]), name
    assert sorted(p.name for p in (exp_dir / "checkpoints").iterdir()) == ["last.pt", "step_000003.pt",
                                                                           "step_000006.pt"]
    assert len(torch.load(exp_dir / "checkpoints" / "last.pt", weights_only=True)["rng"]) == 2
    assert (exp_dir / "metrics.jsonl").is_file()
