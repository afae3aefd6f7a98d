"""Two-process DDP (gloo on CPU) through the trainer: both ranks end with identical parameters, only rank 0 writes
files, a run killed after a checkpoint resumes to the same parameters as an uninterrupted one, and Algorithm 1's
reservoir is one uniform sample of both ranks' vectors, also when one rank's batch is all padding — through the
Trainer and through ``seqvq train`` under torchrun."""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

import toy_task
from distributed_helpers import init_rank, run_ranks, run_torchrun
from seqvq.quantize.reservoir import Reservoir
from helpers import raise_at_step


def _worker(rank: int, init_file: str, exp_dir: str, out_dir: str) -> None:
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank))
    init_rank(rank, init_file)  # the trainer joins this process group
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
    raise_at_step(killed, 4, KeyboardInterrupt)
    try:
        killed.fit()
    except KeyboardInterrupt:
        pass
    resumed = make_trainer("resumed")
    assert resumed.step == 3
    resumed.fit()

    probe_config = TrainConfig(steps=PROBE_STEPS, batch_size=PROBE_BATCH, lr=0.1, checkpoint_every=100, log_every=100,
                               device="cpu")
    probe = Trainer(ReservoirProbe(), probe_config, probe_dataset(), pad, exp_dir=os.path.join(exp_dir, "probe"))
    probe.fit()
    torch.save({"model": straight.model.state_dict(), "shadow": straight.polyak.shadow,
                "resumed": resumed.model.state_dict(), "offered": probe.model.offered,
                "quantizer": probe.model.quantizer.state_dict(), "scale": float(probe.model.scale)},
               os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(experiment directory, what each rank recorded) of the two-process runs above."""
    root = tmp_path_factory.mktemp("ddp")
    exp_dir, out_dir = root / "exp", root / "out"
    out_dir.mkdir()
    run_ranks(_worker, (str(root / "init"), str(exp_dir), str(out_dir)), timeout_s=300)
    return exp_dir, [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_two_process_gloo_run_keeps_ranks_identical_and_resumes_exactly(run):
    exp_dir, states = run
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


# ------------------------------------------------------------------ Algorithm 1's reservoir under the trainer
RESERVOIR_SIZE, PROBE_STEPS, PROBE_BATCH = 32, 4, 2


class ReservoirProbe(torch.nn.Module):
    """A task that feeds its batch, times a trained scale, to a quantizer in Algorithm 1's warm-up (pass-through,
    reservoir filling; EMA codebook, EMA affine statistics and replacement reduce over ranks all the same), and
    remembers the valid vectors it offered (a plain list, for the test only)."""

    def __init__(self):
        super().__init__()
        import seqvq

        self.scale = torch.nn.Parameter(torch.ones(()))
        self.quantizer = seqvq.VectorQuantizer(
            2, 4, reestimate={"init_steps": 100, "reservoir_size": RESERVOIR_SIZE}, codebook_update="ema",
            affine="ema", replace_dead_after=1, seed=7)
        self.offered = []

    def forward(self, batch):
        from seqvq.train import StepOutput

        x, lengths = batch
        mask = torch.arange(x.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
        x = x * self.scale
        self.offered.append(x[mask].detach().clone())
        result = self.quantizer(x, lengths=lengths)
        return StepOutput(result.loss + 1e-3 * result.quantized[mask].pow(2).sum(), weight=len(x))


def probe_dataset():
    """Utterances of 1-5 vectors (item index, position): every vector says where it came from.  Rank 1's second
    batch holds only empty utterances: an all-padding batch on one rank under DDP."""
    from seqvq.train.data import EpochBatchSampler

    lengths = torch.randint(1, 6, (16,), generator=torch.Generator().manual_seed(2))
    for index, _ in list(EpochBatchSampler(16, PROBE_BATCH, seed=0, epoch=0, rank=1, world_size=2))[1]:
        lengths[index] = 0
    return [torch.stack([torch.full((n,), float(i)), torch.arange(float(n))], dim=1) for i, n in enumerate(lengths)]


def pad(items):
    lengths = torch.tensor([len(item) for item in items])
    padded = torch.zeros(len(items), 5, 2)
    for row, item in enumerate(items):
        padded[row, : len(item)] = item
    return padded, lengths


def test_ddp_trainer_reservoir_is_one_uniform_sample_of_both_ranks(run):
    _, ranks = run
    offered = [result["offered"] for result in ranks]
    assert len(offered[0]) == len(offered[1]) == PROBE_STEPS
    reference = Reservoir(RESERVOIR_SIZE, 2, seed=7)  # Algorithm R in one process over the ranks' joint stream
    for step in range(PROBE_STEPS):
        reference.add(torch.cat([offered[0][step], offered[1][step]]))
    assert offered[1][1].shape[0] == 0 < offered[0][1].shape[0]  # rank 1's all-padding batch
    assert ranks[0]["scale"] == ranks[1]["scale"] != 1.0  # DDP trained the scale, the empty rank included
    for result in ranks:
        assert torch.equal(result["quantizer"]["reestimation.reservoir.samples"], reference.samples)
        assert int(result["quantizer"]["reestimation.reservoir.seen"]) == int(reference.seen)
    for name, value in ranks[0]["quantizer"].items():
        assert torch.equal(value, ranks[1]["quantizer"][name]), name
    # In proportion: each rank's share of the reservoir is its share of the stream.
    items = [{int(i) for i in torch.cat(part)[:, 0]} for part in offered]
    sample = reference.samples[: reference.filled]
    from_rank1 = sum(int(row[0]) in items[1] for row in sample)
    share = sum(len(p) for p in offered[1]) / int(reference.seen)
    assert abs(from_rank1 / len(sample) - share) < 0.3 and 0 < from_rank1 < len(sample)


def test_torchrun_seqvq_train_fills_one_reservoir_from_both_ranks(tmp_path):
    """``seqvq train`` under torchrun (2 gloo processes, the handwriting task on a tiny corpus): Algorithm 1's
    reservoir counts every valid latent of both ranks, not rank 0's alone."""
    import numpy as np
    import yaml

    from seqvq.data.lines import save_line_corpus
    from seqvq.tasks.handwriting import HandwritingTask

    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("test", 2)):  # equal widths: every line has the same number of latents
        lines = [(rng.random((8, 16)) < 0.3).astype(np.uint8) * 3 for _ in range(count)]
        save_line_corpus(str(tmp_path / "corpus" / f"{split}.npz"), lines, [""] * count, 4)
    steps, batch_size = 3, 2
    config = {"task": "handwriting_ae", "data": {"corpus": str(tmp_path / "corpus")},
              "model": {"levels": 4, "height": 8, "latent_dim": 4,
                        "encoder": {"channels": 4, "strides": [[2, 2], [2, 2]], "lstm_hidden": 4},
                        "decoder": {"channels": 4, "num_layers": 1, "first_kernel": 3},
                        "quantizer": {"codebook_size": 4, "pre_norm": True, "codebook_update": "ema",
                                      "reestimate": {"init_steps": 10, "every": 1, "steps": 10,
                                                     "reservoir_size": 1000}}},
              "eval": {"batch_size": 2, "grid_lines": 1},
              "train": {"steps": steps, "batch_size": batch_size, "device": "cpu", "eval_every": 100,
                        "checkpoint_every": 100, "log_every": 1}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    run_torchrun(["--nproc_per_node=2", "-m", "seqvq.cli", "train", str(tmp_path / "run.yaml"),
                  "--exp-dir", str(tmp_path / "exp")], tmp_path / "logs")

    # Latents per batch of one rank, from one training forward of a fresh model (M_init = 10 > steps: no k-means,
    # so no restart of the reservoir, within the run).
    bundle = HandwritingTask(config).build_task()
    bundle.model.train()
    bundle.model(bundle.collate_fn([bundle.train_dataset[i] for i in range(batch_size)]))
    per_batch = int(bundle.model.autoencoder.quantizer.reestimation.reservoir.seen)
    state = torch.load(tmp_path / "exp" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert int(state["autoencoder.quantizer.reestimation.reservoir.seen"]) == 2 * steps * per_batch
