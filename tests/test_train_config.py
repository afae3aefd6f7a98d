"""Run-config loading: base includes, dotted overrides, TrainConfig validation."""
from __future__ import annotations

import pytest

from seqvq import UserError
from seqvq.train import TrainConfig, load_config


def write(path, text):
    path.write_text(text)
    return path


def test_base_include_and_overrides(tmp_path):
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf" / "base.yaml",
          "task: toy\ntrain: {steps: 100, lr: 0.001, batch_size: 8}\nmodel: {dim: 4}\n")
    child = write(tmp_path / "conf" / "child.yaml",
                  "base: base.yaml\ntrain: {lr: 0.01}\nquantizer: {size: 16}\n")
    config = load_config(child, ["train.steps=5", "model.dim=8", "quantizer.distance=cosine", "new.nested.key=[1, 2]"])
    assert config == {"task": "toy", "train": {"steps": 5, "lr": 0.01, "batch_size": 8}, "model": {"dim": 8},
                      "quantizer": {"size": 16, "distance": "cosine"}, "new": {"nested": {"key": [1, 2]}}}
    assert load_config(child)["train"]["steps"] == 100  # overrides do not leak into the file's values


def test_bad_overrides_and_files(tmp_path):
    config = write(tmp_path / "c.yaml", "train: {steps: 3}\n")
    for bad in ["train.steps", "=3", "train..steps=3"]:
        with pytest.raises(ValueError, match="dotted.key=value"):
            load_config(config, [bad])
    with pytest.raises(ValueError, match="not a mapping"):
        load_config(config, ["train.steps.x=1"])
    with pytest.raises(UserError, match="missing.yaml: config file not found"):
        load_config(tmp_path / "missing.yaml")
    loop = write(tmp_path / "loop.yaml", "base: loop.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        load_config(loop)
    listing = write(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config(listing)


def test_train_config_from_dict():
    config = TrainConfig.from_dict({"lr": "1e-3", "steps": 10, "codebook_lr": 1, "polyak_decay": None})
    assert config.lr == 0.001 and isinstance(config.codebook_lr, float) and config.polyak_decay is None
    assert TrainConfig.from_dict(None) == TrainConfig()
    with pytest.raises(UserError, match="train.learning_rate: unknown key; train takes .*lr"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(UserError, match="train.steps: expected an integer, got str 'many'"):
        TrainConfig.from_dict({"steps": "many"})
