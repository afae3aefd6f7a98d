"""`seqvq doctor RUN_DIR` and the trainer's `doctor_every`: the doctor records leave training unchanged, the
command names a cause and writes one dashboard, and on the recorded runs under tests/data/doctor/ (each a short
VQ-VAE recipe run with one override of a known effect, tests/data/doctor/record.py) it names the true cause."""
from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from helpers import run_cli
from seqvq.data.cifar import write_cifar_batches
from seqvq.errors import UserError
from seqvq.quantize import VectorQuantizer
from seqvq.train import StepOutput, Trainer, TrainConfig, read_metrics
from seqvq.train.doctor import doctor

RECORDED = Path(__file__).parent / "data" / "doctor"


class TinyVQ(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(3, 4)
        self.quantizer = VectorQuantizer(4, 16)
        self.decoder = nn.Linear(4, 3)

    def forward(self, batch) -> StepOutput:
        result = self.quantizer(self.encoder(batch["x"]))
        mse = (self.decoder(result.quantized) - batch["x"]).pow(2).mean()
        return StepOutput(mse + result.loss, {"mse": mse, **result.metrics}, weight=len(batch["x"]))


def dataset():
    generator = torch.Generator().manual_seed(0)
    return [{"x": x} for x in torch.randn(40, 3, generator=generator)]


def collate(items):
    return {"x": torch.stack([item["x"] for item in items])}


def train(exp_dir, **overrides) -> Trainer:
    torch.manual_seed(0)
    config = TrainConfig(steps=12, batch_size=8, lr=0.01, log_every=3, checkpoint_every=6, device="cpu", **overrides)
    trainer = Trainer(TinyVQ(), config, dataset(), collate, exp_dir=exp_dir)
    trainer.fit()
    return trainer


def test_doctor_every_logs_the_bottleneck_and_leaves_training_unchanged(tmp_path):
    plain, checked = train(tmp_path / "plain"), train(tmp_path / "checked", doctor_every=4)
    for (name, a), b in zip(plain.model.state_dict().items(), checked.model.state_dict().values()):
        assert torch.equal(a, b), name
    train_records = [[r for r in read_metrics(run) if r["split"] == "train"] for run in (plain.exp_dir,
                                                                                           checked.exp_dir)]
    assert train_records[0] == train_records[1]
    records = [r for r in read_metrics(checked.exp_dir) if r["split"] == "doctor"]
    assert [r["step"] for r in records] == [4, 8, 12]
    assert all(r["bottleneck"] == "quantizer" and r["codebook_size"] == 16 and r["vectors"] == 8 for r in records)
    assert {"perplexity", "codes_used", "encoder_norm", "code_norm", "data_to_codes", "codes_to_data",
            "used_code_motion"} <= set(records[-1])


def test_doctor_every_without_a_quantizer_is_refused_before_training(tmp_path):
    model = TinyVQ()
    model.quantizer = nn.Identity()  # a no-bottleneck row given a table's doctor_every
    with pytest.raises(UserError, match="train.doctor_every=4: the model has no quantizer"):
        Trainer(model, TrainConfig(steps=12, batch_size=8, device="cpu", doctor_every=4), dataset(), collate,
                exp_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_doctor_command_names_a_cause_and_writes_one_dashboard(tmp_path, capsys):
    train(tmp_path / "run", doctor_every=4)
    code, out, err = run_cli(capsys, "doctor", tmp_path / "run")
    assert code == 0, err
    assert "quantizer (vq, step 12)" in out and "->" in out
    assert (tmp_path / "run" / "doctor.png").read_bytes()[:4] == b"\x89PNG"


def test_doctor_of_a_folder_that_is_no_run_is_one_line(tmp_path, capsys):
    code, out, err = run_cli(capsys, "doctor", tmp_path)
    assert code == 1 and err.count("\n") == 1 and "no metrics.jsonl" in err


def recorded_runs() -> list[Path]:
    return sorted(path for path in RECORDED.iterdir() if (path / "cause.txt").is_file())


def confusion() -> dict[tuple[str, str], int]:
    """(true cause, named cause) -> runs."""
    table = collections.Counter()
    for run in recorded_runs():
        true = (run / "cause.txt").read_text().strip()
        table[true, doctor(run).findings[0].cause] += 1
    return table


def test_recorded_runs_name_the_true_cause_and_flag_no_healthy_run():
    table = confusion()
    failures = sum(count for (true, _), count in table.items() if true != "healthy")
    right = sum(count for (true, named), count in table.items() if true == named and true != "healthy")
    healthy = sum(count for (true, _), count in table.items() if true == "healthy")
    assert failures >= 10 and healthy >= 5
    assert right >= 0.9 * failures, table
    assert all(named == "healthy" for (true, named) in table if true == "healthy"), table


def test_doctor_runs_batches_of_the_runs_data_through_its_checkpoint(tmp_path, capsys):
    data, exp = tmp_path / "data", tmp_path / "exp"
    generator = np.random.default_rng(0)
    images = generator.choice(np.array([0, 128, 255], dtype=np.uint8), size=(24, 3, 4, 4)).repeat(8, 2).repeat(8, 3)
    write_cifar_batches(str(data), (images[:16], np.zeros(16, np.int64)), (images[16:], np.zeros(8, np.int64)),
                        ["blocks"])
    code, _, err = run_cli(capsys, "train", Path(__file__).parents[1] / "recipes" / "vqvae" / "conf" / "vqvae.yaml",
                           f"data.corpus={data}", "model.channels=8", "model.residual_blocks=1",
                           "model.quantizer.codebook_size=16", "train.steps=6", "train.batch_size=8",
                           "train.warmup_steps=1", "train.log_every=2", "train.eval_every=6",
                           "train.checkpoint_every=6", "eval.batch_size=8", "--exp-dir", exp)
    assert code == 0, err
    code, out, err = run_cli(capsys, "doctor", exp, "--batches", 2)
    assert code == 0, err
    assert "vqvae.quantizer (vq, step 6)" in out and "used codes moved" in out
    assert "STE gradient gap not measured" not in out and "->" in out
