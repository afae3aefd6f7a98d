"""The classification task under two-process DDP (gloo on CPU, as torchrun launches it): with Huh's full remedy set
(k-means init, affine, sync, fused alternating step, replacement) both ranks end with identical weights, codebooks
and quantizer state, and rank 0's evaluation does not hang the other rank."""
from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(rank: int, port: int, root: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from seqvq.tasks.classification import ClassificationTask
    from seqvq.train import Trainer, TrainConfig

    config = {"task": "image_classification",
              "data": {"root": root, "image_size": 32, "resize_size": 32, "crop_scale": [0.5, 1.0]},
              "model": {"arch": "resnet18", "width": 8,
                        "quantizer": {"codebook_size": 16, "kmeans_init": True, "affine": "learned",
                                      "sync_nu": 0.2, "replace_dead_after": 2}}}
    torch.manual_seed(rank)  # different initial weights per rank: DDP must broadcast rank 0's
    bundle = ClassificationTask(config).build_task()
    train = TrainConfig(steps=4, batch_size=6, optimizer="sgd", lr=0.05, alternating_fused=True, log_every=2,
                        eval_every=2, checkpoint_every=4, device="cpu")
    trainer = Trainer(bundle.model, train, bundle.train_dataset, bundle.collate_fn, bundle.evaluate,
                      exp_dir=os.path.join(out_dir, "exp"), run_config=config)
    figures = trainer.fit()
    torch.save({"model": trainer.model.state_dict(), "figures": figures}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_classification_keeps_ranks_identical(tmp_path):
    from test_classification_task import _folder

    _folder(tmp_path / "images", per_class=4)
    mp.spawn(_worker, args=(_free_port(), str(tmp_path / "images"), str(tmp_path)), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name, value in states[0]["model"].items():
        if name.endswith(("running_mean", "running_var")):
            continue  # BatchNorm statistics are per rank between DDP's buffer broadcasts (as torchvision's recipe)
        assert torch.equal(value, states[1]["model"][name]), name
    assert int(states[0]["model"]["classifier.quantizer.rewrites"]) >= 1  # k-means on the first (gathered) batch
    assert int(states[0]["model"]["classifier.quantizer.step"]) == 4  # one quantizer step per optimizer step
    assert set(states[0]["figures"]) == {"accuracy", "images", "code_perplexity", "codes_used"}
    assert states[1]["figures"] == {}  # only rank 0 evaluates
