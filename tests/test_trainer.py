"""Trainer behaviour on a toy regression task: learning, exact resume, schedules, Polyak, checkpoints, logs."""
from __future__ import annotations

import csv
import json
import math
import os

import pytest
import torch

import seqvq
import toy_task
from seqvq.errors import Interrupted
from seqvq.train import Trainer, TrainConfig, load_checkpoint, read_metrics
from seqvq.train.checkpoint import atomic_save
from seqvq.train.polyak import PolyakAverage
from seqvq.train.schedule import LRFactor
from helpers import raise_at_step


@pytest.fixture(autouse=True)
def quantizer_api(monkeypatch):
    """Stand-ins for the core's optimizer helpers only while the core is not merged."""
    if not hasattr(seqvq, "param_groups"):
        monkeypatch.setattr(seqvq, "param_groups", toy_task.stand_in_param_groups, raising=False)
    if not hasattr(seqvq, "reset_optimizer_state"):
        monkeypatch.setattr(seqvq, "reset_optimizer_state", toy_task.stand_in_reset_optimizer_state, raising=False)


def make_trainer(exp_dir, evaluate=toy_task.evaluate, **overrides) -> Trainer:
    values = dict(steps=10, batch_size=4, lr=0.05, codebook_lr=0.5, schedule="warmup_cosine", warmup_steps=3,
                  min_lr_ratio=0.1, clip_grad_norm=1.0, polyak_decay=0.9, checkpoint_every=5, eval_every=3,
                  log_every=5, seed=7, device="cpu")
    values.update(overrides)
    torch.manual_seed(0)
    return Trainer(toy_task.ToyRegression(), TrainConfig(**values), toy_task.make_dataset(), toy_task.collate,
                   evaluate, exp_dir=exp_dir)


def test_loss_falls(tmp_path):
    trainer = make_trainer(tmp_path, steps=60, log_every=10, polyak_decay=None, schedule="constant")
    trainer.fit()
    losses = [r["loss"] for r in read_metrics(tmp_path) if r["split"] == "train"]
    assert len(losses) == 6
    assert losses[-1] < 0.3 * losses[0]


class Killed(Exception):
    pass


def test_kill_and_resume_is_bit_identical(tmp_path):
    straight = make_trainer(tmp_path / "straight")
    straight.fit()

    killed = make_trainer(tmp_path / "resumed")
    raise_at_step(killed, 7, Killed)
    with pytest.raises(Killed):
        killed.fit()
    assert max(r["step"] for r in read_metrics(tmp_path / "resumed")) == 6  # a dev record after the checkpoint

    resumed = make_trainer(tmp_path / "resumed")
    assert resumed.step == 5
    resumed.fit()
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    for a, b in zip(straight.optimizer.state.values(), resumed.optimizer.state.values()):
        assert all(torch.equal(a[key], b[key]) for key in a)
    assert straight.optimizer.state_dict()["param_groups"] == resumed.optimizer.state_dict()["param_groups"]
    for name, value in straight.polyak.shadow.items():
        assert torch.equal(value, resumed.polyak.shadow[name]), name
    assert (straight.epoch, straight.batch_in_epoch) == (resumed.epoch, resumed.batch_in_epoch)
    assert read_metrics(tmp_path / "straight") == read_metrics(tmp_path / "resumed")
    csv_files = [(tmp_path / run / "metrics.csv").read_text() for run in ("straight", "resumed")]
    assert csv_files[0] == csv_files[1]


def test_uninterrupted_runs_differ_with_seed(tmp_path):
    a, b = make_trainer(tmp_path / "a", steps=3), make_trainer(tmp_path / "b", steps=3, seed=8)
    a.fit(), b.fit()
    assert not torch.equal(a.model.linear.weight, b.model.linear.weight)


def test_schedule_shapes():
    step = LRFactor("step", total_steps=100, step_size=10, gamma=0.5)
    assert [step(s) for s in (0, 9, 10, 25, 99)] == [1.0, 1.0, 0.5, 0.25, 0.5**9]
    cosine = LRFactor("warmup_cosine", total_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    warm = [cosine(s) for s in range(10)]
    assert warm == pytest.approx([(s + 1) / 10 for s in range(10)])
    decay = [cosine(s) for s in range(10, 101)]
    assert decay[0] == pytest.approx(1.0) and decay[-1] == pytest.approx(0.1)
    assert cosine(55) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(x >= y for x, y in zip(decay, decay[1:]))
    with pytest.raises(ValueError, match="unknown LR schedule"):
        LRFactor("linear", 10)


def test_codebook_group_follows_schedule_at_its_own_lr(tmp_path):
    trainer = make_trainer(tmp_path, steps=6, schedule="step", step_size=2, gamma=0.5, polyak_decay=None)
    seen = []
    for batch in trainer._batches():
        trainer.train_step(batch)
        seen.extend(group["lr"] for group in trainer.optimizer.param_groups)
        if trainer.step == 6:
            break
    assert seen == pytest.approx([lr * 0.5 ** (s // 2) for s in range(1, 7) for lr in (0.05, 0.5)])
    codebook_group = [g for g in trainer.optimizer.param_groups if any(p is trainer.model.codebook for p in g["params"])]
    assert codebook_group[0]["weight_decay"] == 0.0


def test_polyak_shadow_is_the_ema_of_the_trajectory(tmp_path):
    trainer = make_trainer(tmp_path, steps=5, polyak_decay=0.8)
    expected = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    batches = trainer._batches()
    for _ in range(5):
        trainer.train_step(next(batches))
        for name, p in trainer.model.named_parameters():
            expected[name] = 0.8 * expected[name] + 0.2 * p.detach()
    for name, value in expected.items():
        assert torch.allclose(trainer.polyak.shadow[name], value, atol=1e-6), name
    live = trainer.model.linear.weight.detach().clone()
    with trainer.polyak.swapped_in(trainer.model):
        assert torch.allclose(trainer.model.linear.weight, expected["linear.weight"], atol=1e-6)
    assert torch.equal(trainer.model.linear.weight, live)


def test_polyak_rejects_bad_decay():
    with pytest.raises(ValueError, match="polyak_decay"):
        PolyakAverage(toy_task.ToyRegression(), 1.0)


def test_load_checkpoint_uses_polyak_weights(tmp_path):
    trainer = make_trainer(tmp_path, steps=5)
    trainer.fit()
    last = tmp_path / "checkpoints" / "last.pt"
    averaged, live = toy_task.ToyRegression(), toy_task.ToyRegression()
    load_checkpoint(last, averaged)
    load_checkpoint(last, live, use_polyak=False)
    assert torch.equal(averaged.linear.weight, trainer.polyak.shadow["linear.weight"])
    assert torch.equal(live.linear.weight, trainer.model.linear.weight)
    assert not torch.equal(averaged.linear.weight, live.linear.weight)


def test_checkpoint_files_and_pruning(tmp_path):
    make_trainer(tmp_path, steps=20, checkpoint_every=4, keep_checkpoints=2).fit()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.pt", "step_000016.pt", "step_000020.pt"]


def test_atomic_save_never_leaves_a_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.pt"
    atomic_save({"value": torch.ones(3)}, target)
    before = target.read_bytes()

    def failing_save(obj, f):
        f.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"value": torch.zeros(3)}, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_metrics_logs_and_plots(tmp_path):
    make_trainer(tmp_path, steps=6, log_every=2, eval_every=3).fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    dev = [r for r in records if r["split"] == "dev"]
    assert [r["step"] for r in train] == [2, 4, 6] and [r["step"] for r in dev] == [3, 6]
    assert {"loss", "lr", "mse", "pull", "grad_norm", "epoch"} <= set(train[0])
    assert {"mse", "perplexity"} <= set(dev[0])
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:2] == ["step", "split"] and len(rows) == len(records)
    for row, record in zip(rows, records):
        assert {k: v for k, v in row.items() if v != ""} == {k: str(v) for k, v in record.items()}
    plots = {p.name for p in (tmp_path / "plots").iterdir()}
    assert {"loss.png", "mse.png", "perplexity.png", "lr.png"} <= plots
    assert (tmp_path / "plots" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_weighted_log_average(tmp_path):
    """Batches of 4, 4, 4, 1 items (13 items): the logged loss weights each step by its item count."""
    trainer = make_trainer(tmp_path, steps=4, log_every=4, polyak_decay=None, evaluate=None)
    losses, weights = [], []
    original = trainer.train_step

    def recording(batch):
        out = original(batch)
        losses.append(float(out.loss.detach())), weights.append(out.weight)
        return out

    trainer.train_step = recording
    trainer.fit()
    assert weights == [4, 4, 4, 1]
    logged = read_metrics(tmp_path)[0]["loss"]
    assert logged == pytest.approx(sum(l * w for l, w in zip(losses, weights)) / 13, rel=1e-5)


def test_forward_must_return_step_output(tmp_path):
    trainer = make_trainer(tmp_path, steps=1)
    trainer.model.forward = lambda batch: torch.tensor(0.0, requires_grad=True)
    with pytest.raises(TypeError, match="StepOutput"):
        trainer.fit()


def test_alternating_training_steps_codebook_and_task_separately_and_resumes_exactly(tmp_path):
    """Huh §4.2 through the trainer: inner codebook steps, then the task step; resume is exact."""
    import seqvq
    from seqvq.train import StepOutput, TrainConfig, Trainer

    class Quantized(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Linear(4, 4)
            self.quantizer = seqvq.VectorQuantizer(4, 8, affine="learned")
            self.head = torch.nn.Linear(4, 1)

        def forward(self, batch):
            out = self.quantizer(self.encoder(batch["x"]).unsqueeze(1))
            mse = (self.head(out.quantized).squeeze(-1).squeeze(-1) - batch["y"]).pow(2).mean()
            return StepOutput(loss=mse + out.loss, metrics={"mse": mse}, weight=len(batch["x"]))

    def train(directory, steps, kill_at=None):
        torch.manual_seed(0)
        config = TrainConfig(steps=steps, batch_size=4, lr=0.01, codebook_lr=0.1, alternating_inner_steps=2,
                             checkpoint_every=3, eval_every=100, log_every=1, seed=1, device="cpu")
        trainer = Trainer(Quantized(), config, toy_task.make_dataset(), toy_task.collate,
                          exp_dir=tmp_path / directory)
        if kill_at is not None:
            config.steps = kill_at
        trainer.fit()
        return trainer

    straight = train("straight", 8)
    assert len(straight.optimizers) == 2
    assert {id(p) for g in straight.optimizers[1].param_groups for p in g["params"]} == {
        id(p) for p in seqvq.quantize.codebook_parameters(straight.model)}
    train("resumed", 8, kill_at=6)
    resumed = train("resumed", 8)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    rows = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert all("inner_codebook_loss" in row for row in rows if row["split"] == "train")


class FlakyQuantized(torch.nn.Module):
    """A quantized regression for alternating optimization with a NaN on chosen calls of the task's forward pass
    (``where="task"``) or of the inner codebook loss (``where="inner"``): in the loss, or (``what="gradient"``) in
    the gradient under a finite loss (d sqrt(u) / du is inf at u = 0)."""

    def __init__(self, bad_calls=(), where="task", what="loss"):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = torch.nn.Linear(4, 4)
        self.quantizer = seqvq.VectorQuantizer(4, 8, affine="learned")
        self.head = torch.nn.Linear(4, 1)
        self.bad_calls, self.where, self.what = set(bad_calls), where, what
        self.calls = {"task": 0, "inner": 0}

    def poisoned(self, loss, where, parameter):
        self.calls[where] += 1
        if where == self.where and self.calls[where] in self.bad_calls:
            return loss * float("nan") if self.what == "loss" else loss + (parameter.sum() * 0).sqrt()
        return loss

    def forward(self, batch):
        out = self.quantizer(self.encoder(batch["x"]).unsqueeze(1))
        mse = (self.head(out.quantized).squeeze(-1).squeeze(-1) - batch["y"]).pow(2).mean()
        loss = self.poisoned(mse + out.loss, "task", self.head.weight)
        return seqvq.train.StepOutput(loss=loss, metrics={"mse": mse}, weight=len(batch["x"]))

    def codebook_loss(self, part):
        with torch.no_grad():
            z_e = self.encoder(part["x"]).unsqueeze(1)
        return self.poisoned(self.quantizer(z_e).losses["codebook"], "inner", self.quantizer.codebook)


def flaky_alternating_trainer(exp_dir, model, **overrides) -> Trainer:
    values = dict(steps=6, batch_size=4, lr=0.01, codebook_lr=0.1, alternating_inner_steps=2, clip_grad_norm=1.0,
                  checkpoint_every=2, eval_every=100, log_every=2, seed=1, device="cpu")
    values.update(overrides)
    return Trainer(model, TrainConfig(**values), toy_task.make_dataset(), toy_task.collate, exp_dir=exp_dir)


def assert_same_optimizer_state(a: dict, b: dict) -> None:
    assert a["param_groups"] == b["param_groups"] and a["state"].keys() == b["state"].keys()
    for index, state in a["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["state"][index][key])), (index, key)


# Step 3 (a batch of 4: two inner steps) is the bad one: its task pass is the 3rd, its inner passes the 5th and 6th.
NONFINITE_ALTERNATING = [
    ("task", "loss", 3, r"step 3: the loss is nan"),
    ("task", "gradient", 3, r"step 3: the gradient norm is nan"),
    ("inner", "loss", 6, r"step 3 \(inner codebook step 2 of 2\): the loss is nan"),
    ("inner", "gradient", 5, r"step 3 \(inner codebook step 1 of 2\): the gradient norm is nan"),
]


@pytest.mark.parametrize("where, what, bad_call, message", NONFINITE_ALTERNATING)
def test_a_nonfinite_alternating_step_stops_before_any_optimizer_step(tmp_path, where, what, bad_call, message):
    trainer = flaky_alternating_trainer(tmp_path, FlakyQuantized({bad_call}, where, what))
    with pytest.raises(seqvq.errors.UserError, match=message + r"; training stopped and .*last.pt \(step 2\) is the "
                                                               r"last good checkpoint; .*train.skip_nonfinite=true"):
        trainer.fit()
    last = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert last["step"] == 2
    for name, parameter in trainer.model.named_parameters():  # no inner step of step 3 stayed applied
        assert torch.equal(parameter, last["model"][name]), name
    for optimizer, state in zip(trainer.optimizers, last["optimizers"], strict=True):
        assert_same_optimizer_state(optimizer.state_dict(), state)


@pytest.mark.parametrize("where, what, bad_call, message", NONFINITE_ALTERNATING)
def test_skip_nonfinite_under_alternating_leaves_the_state_as_before_the_batch(tmp_path, where, what, bad_call,
                                                                              message):
    import copy

    trainer = flaky_alternating_trainer(tmp_path, FlakyQuantized({bad_call}, where, what), skip_nonfinite=True)
    original_step, steps = trainer.train_step, []

    def recording(batch):
        state = lambda: (copy.deepcopy(trainer.model.state_dict()), [copy.deepcopy(o.state_dict())
                                                                      for o in trainer.optimizers])
        before = state()
        out = original_step(batch)
        steps.append((before, out, state()))
        return out

    trainer.train_step = recording
    trainer.fit()
    assert trainer.step == 6 and trainer.skipped_nonfinite == 1
    assert [out is None for _, out, _ in steps] == [False, False, True, False, False, False]
    (model_before, optimizers_before), _, (model_after, optimizers_after) = steps[2]
    for name, value in model_before.items():
        assert torch.equal(value, model_after[name]), name
    for a, b in zip(optimizers_before, optimizers_after, strict=True):
        assert_same_optimizer_state(a, b)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_length_bucketing_needs_a_dataset_with_lengths(tmp_path):
    with pytest.raises(seqvq.errors.UserError, match="no example lengths to bucket by; set train.bucket_batches=0"):
        make_trainer(tmp_path, bucket_batches=2)


def test_trainer_batches_by_length_when_asked(tmp_path):
    class WithLengths(list):
        lengths = [(7 * index) % 13 for index in range(13)]  # distinct

    dataset, seen = WithLengths(toy_task.make_dataset()), []

    def collate(items, generator):
        seen.append(sorted(WithLengths.lengths[next(i for i, d in enumerate(dataset) if d is item)] for item in items))
        return toy_task.collate(items, generator)

    for bucket_batches in (0, 100):  # 100 batches: the whole epoch is one length-sorted run
        seen.clear()
        Trainer(toy_task.ToyRegression(), TrainConfig(steps=4, batch_size=4, bucket_batches=bucket_batches,
                                                      device="cpu", eval_every=100, checkpoint_every=100),
                dataset, collate, exp_dir=tmp_path / str(bucket_batches)).fit()
        consecutive = [batch == list(range(batch[0], batch[0] + len(batch))) for batch in seen]
        assert len(seen) == 4 and all(consecutive) == (bucket_batches > 0)


def test_ctrl_c_stops_in_one_line_naming_the_step_and_the_last_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path)
    raise_at_step(trainer, 7, KeyboardInterrupt)
    with pytest.raises(Interrupted) as interrupted:
        trainer.fit()
    assert str(interrupted.value) == (f"interrupted at step 7 of 10; last checkpoint at step 5 "
                                      f"({tmp_path / 'checkpoints' / 'last.pt'}); rerun the same command to resume")
    assert isinstance(interrupted.value, KeyboardInterrupt)
    early = make_trainer(tmp_path / "early")
    early.train_step = lambda batch: (_ for _ in ()).throw(KeyboardInterrupt)
    with pytest.raises(Interrupted, match="^interrupted at step 0 of 10; no checkpoint yet; rerun the same command "
                                          "to start again$"):
        early.fit()


def test_resumption_and_a_finished_run_are_announced(tmp_path, capsys):
    make_trainer(tmp_path, steps=5).fit()
    capsys.readouterr()
    make_trainer(tmp_path, steps=5)
    assert capsys.readouterr().err == (f"{tmp_path}: already trained (step 5 of 5, "
                                       f"{tmp_path / 'checkpoints' / 'last.pt'}); raise train.steps to train on\n")
    make_trainer(tmp_path, steps=8)
    last = tmp_path / "checkpoints" / "last.pt"
    assert capsys.readouterr().err == f"{tmp_path}: resuming from step 5 of 8 ({last})\n"


def test_a_checkpoint_left_unfinished_by_a_kill_is_removed_on_the_next_start(tmp_path, capsys):
    make_trainer(tmp_path, steps=5).fit()
    orphans = [tmp_path / "checkpoints" / name for name in (".last.pt.a1b2c3.tmp", ".step_000010.pt.d4e5f6.tmp")]
    for orphan in orphans:  # what atomic_save leaves when the process is killed (SIGKILL) while writing
        orphan.write_bytes(b"partial")
    capsys.readouterr()
    resumed = make_trainer(tmp_path, steps=6)
    assert not any(orphan.exists() for orphan in orphans) and resumed.step == 5
    assert capsys.readouterr().err.splitlines()[0] == (
        f"{tmp_path / 'checkpoints'}: removed 2 unfinished checkpoint file(s) a killed run left behind "
        f"(.last.pt.a1b2c3.tmp, .step_000010.pt.d4e5f6.tmp)")


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoints_and_logs_are_written_with_the_users_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        make_trainer(tmp_path, steps=5).fit()
    finally:
        os.umask(previous)
    for name in ("checkpoints/last.pt", "checkpoints/step_000005.pt", "metrics.jsonl", "metrics.csv"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name
