"""Run-config loading: base includes, dotted overrides, TrainConfig validation."""
from __future__ import annotations

import re

import pytest

from seqvq import UserError
from seqvq.options import Section
from seqvq.quantize import quantizer_section
from seqvq.train import TrainConfig, load_config
from seqvq.train.config import check_run_config, load_config_layers, merge_layers


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


def test_quantizer_keys_are_checked_against_the_kind_the_config_names():
    """model.quantizer's keys follow its ``kind`` (seqvq.build_quantizer); a layer without a kind (an override)
    may use any kind's keys."""
    section = quantizer_section()
    assert section.check({"kind": "fsq", "levels": [4, 4]}, "q") == {"kind": "fsq", "levels": [4, 4]}
    assert section.check({"codebook_size": 8, "reestimate": {"init_steps": 2}}, "q")["codebook_size"] == 8
    assert section.check({"levels": [4]}, "q", complete=False) == {"levels": [4]}
    for values, message in (({"kind": "fsq", "codebook_size": 8}, "q.codebook_size: unknown key"),
                            ({"levels": [4]}, "q.levels: unknown key"),  # a complete config without kind is vq
                            ({"kind": "fsq", "levls": [4]}, "did you mean 'q.levels'"),
                            ({"kind": "pq"}, "q.kind: unknown kind 'pq'")):
        with pytest.raises(UserError, match=message):
            section.check(values, "q")


@pytest.mark.parametrize("kind", ["vq", "residual"])
@pytest.mark.parametrize("option, values, message", [
    ("usage_regularizer", {"wieght": 1.0}, "q.usage_regularizer.wieght: unknown key; did you mean "
                                           "'q.usage_regularizer.weight'?"),
    ("usage_regularizer", {"weight": "heavy"}, "q.usage_regularizer.weight: expected a number, got str 'heavy'"),
    ("reestimate", {"every": 2, "reservoir": 8}, "did you mean 'q.reestimate.reservoir_size'?"),
    ("affine", {"mode": "ema", "momentun": 0.3}, "did you mean 'q.affine.momentum'?"),
    ("temperature", {"start": 1.0, "end": 0.5}, "q.temperature.decay_steps: missing"),
    ("temperature", {"start": 1.0, "end": 0.5, "decay_step": 3}, "did you mean 'q.temperature.decay_steps'?"),
])
def test_every_remedy_option_of_the_quantizer_is_checked(kind, option, values, message):
    """The nested keys come from the remedies' options dataclasses (seqvq.quantize), the same for a residual
    stack's stages."""
    section = quantizer_section()
    config = {"kind": kind, "codebook_size": 8, **({"num_quantizers": 2} if kind == "residual" else {})}
    assert section.check({**config, option: None if option != "temperature" else 0.5}, "q")[option] in (None, 0.5)
    with pytest.raises(UserError, match=re.escape(message)):
        section.check({**config, option: values}, "q")
