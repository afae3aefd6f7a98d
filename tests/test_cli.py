"""The seqvq CLI: train a run config through the task registry, evaluate its checkpoint, plot its log."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import seqvq
import toy_task
from seqvq import cli
from seqvq.tasks import TASKS, get_task
from seqvq.train.checkpoint import load_checkpoint
from helpers import run_cli


@pytest.fixture(autouse=True)
def toy_registered(monkeypatch):
    monkeypatch.setitem(TASKS, "toy", "toy_task:ToyTask")
    if not hasattr(seqvq, "param_groups"):
        monkeypatch.setattr(seqvq, "param_groups", toy_task.stand_in_param_groups, raising=False)
    if not hasattr(seqvq, "reset_optimizer_state"):
        monkeypatch.setattr(seqvq, "reset_optimizer_state", toy_task.stand_in_reset_optimizer_state, raising=False)


def test_train_then_evaluate(tmp_path, capsys):
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump({"task": "toy", "model": {"dim": 4},
                                      "train": {"steps": 100, "batch_size": 4, "log_every": 2, "eval_every": 2,
                                                "checkpoint_every": 2, "device": "cpu", "polyak_decay": 0.5}}))
    exp_dir = tmp_path / "exp"
    cli.main(["train", str(config), "train.steps=4", "--exp-dir", str(exp_dir)])
    final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert final["step"] == 4 and {"mse", "perplexity"} <= set(final)
    saved = yaml.safe_load((exp_dir / "config.yaml").read_text())
    assert saved["train"]["steps"] == 4 and saved["exp_dir"] == str(exp_dir)

    (tmp_path / "some_data").mkdir()
    cli.main(["evaluate", str(exp_dir / "checkpoints" / "last.pt"), str(tmp_path / "some_data")])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["data"] == str(tmp_path / "some_data") and result["mse"] == pytest.approx(final["mse"])
    assert result["step"] == 4 and json.loads((Path(result["out_dir"]) / "figures.json").read_text()) == result

    # --live-weights: the last step's parameters, not the Polyak average the run evaluated on
    cli.main(["evaluate", str(exp_dir / "checkpoints" / "last.pt"), str(tmp_path / "some_data"), "--live-weights"])
    live = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    live_model = toy_task.ToyRegression(4)
    load_checkpoint(exp_dir / "checkpoints" / "last.pt", live_model, use_polyak=False)
    with torch.no_grad():
        assert live["mse"] == pytest.approx(toy_task.evaluate(live_model.eval())["mse"])
    assert live["mse"] != pytest.approx(final["mse"])

    cli.main(["plot", str(exp_dir)])
    assert str(exp_dir / "plots" / "loss.png") in capsys.readouterr().out


def test_unknown_task_and_missing_exp_dir(tmp_path, capsys):
    with pytest.raises(seqvq.UserError, match="unknown task 'nope'.*speech_ctc"):
        get_task("nope")
    config = tmp_path / "c.yaml"
    config.write_text("task: toy\n")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", str(config)])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == f"error: {config}: no exp_dir; pass --exp-dir DIR or set exp_dir: in the config\n"


def test_help_lists_every_task(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    listed = capsys.readouterr().out
    assert all(name in listed for name in TASKS)
    for name in TASKS:  # every registered task is a Task with its schema
        assert get_task(name).name == name and get_task(name).schema().sections.keys() >= {"data", "model"}


def test_train_threads_is_applied_for_train_and_evaluate(tmp_path, capsys):
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump({"task": "toy", "train": {"steps": 2, "batch_size": 4, "device": "cpu",
                                                               "threads": 2}}))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        cli.main(["train", str(config), "--exp-dir", str(tmp_path / "exp")])
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        cli.main(["evaluate", str(tmp_path / "exp" / "checkpoints" / "last.pt"), str(tmp_path), "train.threads=3"])
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def toy_config(tmp_path, **train):
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump({"task": "toy", "model": {"dim": 4},
                                      "train": {"steps": 4, "batch_size": 4, "log_every": 2, "eval_every": 2,
                                                "checkpoint_every": 2, "device": "cpu", **train}}))
    return config


def test_resuming_with_another_config_is_refused_and_force_starts_over(tmp_path, capsys):
    config, exp_dir = toy_config(tmp_path), tmp_path / "exp"
    assert run_cli(capsys, "train", config, "--exp-dir", exp_dir)[0] == 0
    trained = torch.load(exp_dir / "checkpoints" / "last.pt", weights_only=True)["model"]["linear.weight"]
    code, out, err = run_cli(capsys, "train", config, "train.lr=0.5", "--exp-dir", exp_dir)
    assert code == 1 and not out and err.count("\n") == 1
    assert err == (f"error: {exp_dir / 'checkpoints' / 'last.pt'}: trained (step 4) with other settings: train.lr: "
                   f"0.001, now 0.5; rerun with the config it was trained with to resume it, or pass --force to "
                   f"start over (its checkpoints and logs are deleted)\n")
    assert torch.equal(torch.load(exp_dir / "checkpoints" / "last.pt", weights_only=True)["model"]["linear.weight"],
                       trained)
    # more steps, other logging or evaluation intervals, threads: the same run, resumed
    code, _, err = run_cli(capsys, "train", config, "train.steps=6", "train.log_every=3", "--exp-dir", exp_dir)
    assert code == 0, err
    code, out, err = run_cli(capsys, "train", config, "train.lr=0.5", "train.steps=6", "--exp-dir", exp_dir, "--force")
    assert code == 0, err
    assert f"{exp_dir}: starting over; deleted the previous run's checkpoints (last at step 6) and logs" in err
    assert json.loads(out.strip().splitlines()[-1])["step"] == 6
    records = [json.loads(line) for line in (exp_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "train"] == [2, 4, 6]
    assert torch.load(exp_dir / "checkpoints" / "last.pt", weights_only=True)["config"]["train"]["lr"] == 0.5


def test_a_run_whose_config_held_the_old_threads_key_resumes(tmp_path, capsys):
    """Speech run configs held ``threads:`` before it became ``train.threads``: such a run resumes with it."""
    config, exp_dir = toy_config(tmp_path), tmp_path / "exp"
    assert run_cli(capsys, "train", config, "--exp-dir", exp_dir)[0] == 0
    checkpoint = torch.load(exp_dir / "checkpoints" / "last.pt", weights_only=True)
    checkpoint["config"]["threads"] = 1
    torch.save(checkpoint, exp_dir / "checkpoints" / "last.pt")
    before = torch.get_num_threads()
    try:
        code, out, err = run_cli(capsys, "train", config, "train.steps=6", "train.threads=1", "--exp-dir", exp_dir)
    finally:
        torch.set_num_threads(before)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["step"] == 6


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path, capsys, monkeypatch):
    from seqvq.train import Trainer

    original_step = Trainer.train_step

    def interrupt_at_step_3(self, batch):
        if self.step == 3:
            raise KeyboardInterrupt
        return original_step(self, batch)

    monkeypatch.setattr(Trainer, "train_step", interrupt_at_step_3)
    exp_dir = tmp_path / "exp"
    code, out, err = run_cli(capsys, "train", toy_config(tmp_path), "--exp-dir", exp_dir)
    assert code == 130 and not out
    assert err == (f"interrupted at step 3 of 4; last checkpoint at step 2 ({exp_dir / 'checkpoints' / 'last.pt'}); "
                   f"rerun the same command to resume\n")
