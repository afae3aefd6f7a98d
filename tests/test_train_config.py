"""Run-config loading: base includes, dotted overrides, TrainConfig validation."""
from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from seqvq import UserError
from seqvq.train import TrainConfig, load_config
from seqvq.train.config import Section, check_run_config, load_config_layers, merge_layers


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


def test_a_section_takes_the_keys_and_types_of_what_reads_it():
    def remedy(dim: int, steps: int = 3, scale: float = 1.0, mode: str = "a", names: list[str] | None = None):
        return None

    def layer(dim: int, size: int, *, remedy: dict | None = None, flag: bool = False, **rest):
        return None

    section = Section.of(layer, skip=("dim",), remedy=Section.of(remedy, skip=("dim",)))
    assert set(section.fields) == {"size", "remedy", "flag"} and section.open  # **rest: other keys pass
    checked = section.check({"size": 2.0, "remedy": {"scale": "1e-3", "steps": 4, "names": ["x"]}, "other": 1})
    assert checked == {"size": 2, "remedy": {"scale": 0.001, "steps": 4, "names": ["x"]}, "other": 1}
    assert section.check({"remedy": None}) == {"remedy": None}
    for values, message in [({"remedy": {"step": 1}}, "m.remedy.step: unknown key; did you mean 'm.remedy.steps'?"),
                            ({"remedy": {"dim": 1}}, "m.remedy.dim: unknown key; m.remedy takes mode, names, scale"),
                            ({"size": 2.5}, "m.size: expected an integer, got float 2.5"),
                            ({"flag": "yes"}, "m.flag: expected true/false, got str 'yes'"),
                            ({"remedy": {"names": [1]}}, "m.remedy.names: expected a list or null, got list"),
                            ({"remedy": "on"}, "m.remedy: expected a mapping or null, got str 'on'")]:
        with pytest.raises(UserError, match=re.escape(message)):
            section.check(values, "m")


def test_required_keys_of_a_dataclass_section():
    @dataclass
    class Data:
        train: str
        dev: str | None = None

    section = Section.of(Data)
    assert section.check({"dev": None}, "data", complete=False) == {"dev": None}
    with pytest.raises(UserError, match=re.escape("data.train: missing; set it in the config or as an override")):
        section.check({"dev": "x"}, "data")


def test_layers_name_their_source(tmp_path):
    write(tmp_path / "base.yaml", "task: toy\nmodel: {dim: 4}\n")
    child = write(tmp_path / "child.yaml", "base: base.yaml\nmodel: {dimm: 8}\n")
    layers = load_config_layers(child, ["model.dim=null", "train.steps=2"])
    assert [layer.source for layer in layers] == [str(tmp_path / "base.yaml"), str(child), "model.dim=null",
                                                  "train.steps=2"]
    assert merge_layers(layers) == {"task": "toy", "model": {"dim": None, "dimm": 8}, "train": {"steps": 2}}
    task_section = Section.keys("toy", model=Section.keys("model", dim=int | None))
    with pytest.raises(UserError, match=re.escape(f"{child}: model.dimm: unknown key; did you mean 'model.dim'?")):
        check_run_config(merge_layers(layers), task_section, layers)
