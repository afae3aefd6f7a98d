"""User mistakes get one line, ``error: <file or key>: <what>; <what to do>``, and exit code 1: one fixture per
fault. Config keys are checked at every level with a suggestion; NaN/Inf features are refused; a checkpoint
evaluates from another directory after its training directory is gone.

Most faults run ``seqvq.cli.main`` in this process (the same code path as the command, minus a 10 s interpreter
start on a shared CPU); the ones that depend on the process (working directory, ``--debug`` / ``SEQVQ_DEBUG``,
exit status) run ``python -m seqvq.cli`` in a subprocess.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile
import torch
import yaml

import toy_task
from seqvq import UserError, cli
from seqvq.data.features import FbankOptions
from seqvq.data.kaldi import read_data_dir
from seqvq.data.speech_corpus import compute_cmvn, read_features, save_cmvn, write_features
from seqvq.tasks import TASKS
from seqvq.tasks.speech import checkpoint_units
from seqvq.train import Trainer, TrainConfig
from seqvq.train.checkpoint import read_checkpoint
from test_speech_task import write_split
from helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
DIM = FbankOptions().dim  # the synthetic features have the fbank dimension, so raw Kaldi dirs evaluate too


# ---- fixtures ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    write_split(root / "train", 12, seed=0, dim=DIM)
    write_split(root / "dev", 4, seed=1, dim=DIM)
    save_cmvn(compute_cmvn(read_features(root / "train"), deltas=True), root / "train" / "cmvn.ark")
    return root


def speech_config(corpus: Path) -> dict:
    return {
        "task": "speech_ctc",
        "data": {"train": str(corpus / "train"), "dev": str(corpus / "dev"),
                 "cmvn": str(corpus / "train" / "cmvn.ark"), "deltas": True},
        "model": {"in_channels": 3, "conv_channels": [2, 2], "conv_kernels": [[3, 3], [3, 3]],
                  "conv_strides": [[3, 2], [1, 2]], "rnn_hidden": 8, "rnn_layers": 1, "bottleneck_dim": 4,
                  "mixer_dim": 8, "quantizer": {"codebook_size": 8, "pre_norm": True,
                                                "reestimate": {"init_steps": 1, "every": 1, "steps": 2}}},
        "train": {"steps": 2, "batch_size": 4, "eval_every": 2, "checkpoint_every": 2, "log_every": 1,
                  "device": "cpu", "threads": 1},
    }


@pytest.fixture
def config_file(corpus, tmp_path):
    def write(**changes) -> Path:
        config = speech_config(corpus)
        for key, value in changes.items():
            node, *path = key.split("__")
            target = config
            for part in [node, *path][:-1]:
                target = target.setdefault(part, {})
            target[[node, *path][-1]] = value
        path = tmp_path / "run.yaml"
        path.write_text(yaml.safe_dump(config))
        return path
    return write


def run_subprocess(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    """``python -m seqvq.cli ARGS`` with this tree on PYTHONPATH."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    environment.pop("SEQVQ_DEBUG", None)
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "seqvq.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=environment, timeout=300)


def assert_one_line_error(code, err, *fragments):
    assert code == 1, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """A 2-step speech run (its exp dir and the evaluation figures of its dev split)."""
    exp = tmp_path_factory.mktemp("run") / "exp"
    config = exp.parent / "run.yaml"
    config.write_text(yaml.safe_dump(speech_config(corpus)))
    cli.main(["train", str(config), "--exp-dir", str(exp)])
    return exp


# ---- config keys at every level, and value types ------------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("trian.steps=1", "error: trian.steps=1: trian: unknown key; did you mean 'train'?"),
    ("train.thread=1", "error: train.thread=1: train.thread: unknown key; did you mean 'train.threads'?"),
    ("data.trian=elsewhere", "error: data.trian=elsewhere: data.trian: unknown key; did you mean 'data.train'?"),
    ("train.stpes=3", "error: train.stpes=3: train.stpes: unknown key; did you mean 'train.steps'?"),
    ("model.rnn_hiden=4", "model.rnn_hiden: unknown key; did you mean 'model.rnn_hidden'?"),
    ("model.quantizr.codebook_size=4", "model.quantizr: unknown key; did you mean 'model.quantizer'?"),
    ("model.quantizer.codebok_size=4",
     "model.quantizer.codebok_size: unknown key; did you mean 'model.quantizer.codebook_size'?"),
    ("model.quantizer.reestimate.init_step=4",
     "model.quantizer.reestimate.init_steps'?"),
    ("model.quantizer.usage_regularizer.wieght=1",
     "model.quantizer.usage_regularizer.wieght: unknown key; did you mean 'model.quantizer.usage_regularizer.weight'?"),
    ("model.rnn_hidden=many", "error: model.rnn_hidden=many: model.rnn_hidden: expected an integer, got str 'many'"),
    ("train.lr=fast", "train.lr: expected a number, got str 'fast'"),
    ("model.quantizer.pre_norm=3", "model.quantizer.pre_norm: expected true/false, got int 3"),
    ("data.deltas=[1]", "data.deltas: expected true/false, got list [1]"),
    ("model.conv_channels=4", "model.conv_channels: expected a list, got int 4"),
])
def test_override_typo_or_type_is_refused_before_anything_runs(config_file, tmp_path, capsys, override, message):
    code, _, err = run_cli(capsys, "train", config_file(), override, "--exp-dir", tmp_path / "exp")
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize("key, value, message", [
    ("trian", {"steps": 1}, "trian: unknown key; did you mean 'train'?"),
    ("data__trian", "elsewhere", "data.trian: unknown key; did you mean 'data.train'?"),
    ("model__quantizr", {"codebook_size": 4}, "model.quantizr: unknown key; did you mean 'model.quantizer'?"),
    ("model__quantizer__codebok_size", 4,
     "model.quantizer.codebok_size: unknown key; did you mean 'model.quantizer.codebook_size'?"),
    ("model__quantizer__affine", {"mod": "ema"},
     "model.quantizer.affine.mod: unknown key; did you mean 'model.quantizer.affine.mode'?"),
    ("train__clip_grad_norm", "lots", "train.clip_grad_norm: expected a number or null, got str 'lots'"),
])
def test_yaml_typo_names_the_file_and_key(config_file, tmp_path, capsys, key, value, message):
    path = config_file(**{key: value})
    code, _, err = run_cli(capsys, "train", path, "--exp-dir", tmp_path / "exp")
    assert_one_line_error(code, err, f"error: {path}: {message}")
    assert not (tmp_path / "exp").exists()


def test_typo_in_a_base_file_names_that_file(config_file, tmp_path, capsys):
    base = config_file(model__quantizer__distanse="cosine")
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {base.name}\ntrain: {{steps: 1}}\n")
    code, _, err = run_cli(capsys, "train", child, "--exp-dir", tmp_path / "exp")
    assert_one_line_error(code, err, f"error: {base}: model.quantizer.distanse: unknown key; did you mean "
                                     f"'model.quantizer.distance'?")


def test_evaluate_overrides_are_checked(trained, corpus, capsys):
    code, _, err = run_cli(capsys, "evaluate", trained / "checkpoints" / "last.pt", corpus / "dev",
                           "train.thredas=1")
    assert_one_line_error(code, err, "error: train.thredas=1: train.thredas: unknown key; did you mean "
                                     "'train.threads'?")


def test_handwriting_keys_are_checked_too(tmp_path, capsys):
    config = ROOT / "recipes" / "scribblelens" / "conf" / "bn.yaml"
    for override, message in [("model.encoder.lstm_hiden=8", "did you mean 'model.encoder.lstm_hidden'?"),
                              ("eval.max_line=3", "did you mean 'eval.max_lines'?"),
                              ("data.colourmode=bw", "did you mean 'data.colormode'?")]:
        code, _, err = run_cli(capsys, "train", config, override, "--exp-dir", tmp_path / "exp")
        assert_one_line_error(code, err, message)


def test_the_command_exits_1_with_one_line_and_debug_shows_the_traceback(config_file, tmp_path, monkeypatch):
    path = config_file()
    result = run_subprocess("train", path, "model.quantizer.codebok_size=4", "--exp-dir", tmp_path / "exp")
    assert_one_line_error(result.returncode, result.stderr,
                          "did you mean 'model.quantizer.codebook_size'?")
    # --debug (before or after the command) and SEQVQ_DEBUG=1 let the error through: Python prints its traceback
    for args in (["--debug", "train", path, "model.quantizer.codebok_size=4"],
                 ["train", path, "model.quantizer.codebok_size=4", "--debug"]):
        with pytest.raises(UserError, match="codebok_size=4: model.quantizer.codebok_size: unknown key"):
            cli.main([str(arg) for arg in args])
    monkeypatch.setenv("SEQVQ_DEBUG", "1")
    with pytest.raises(UserError, match="codebok_size=4: model.quantizer.codebok_size: unknown key"):
        cli.main(["train", str(path), "model.quantizer.codebok_size=4"])


def test_an_internal_bug_keeps_its_traceback(tmp_path, monkeypatch):
    monkeypatch.setitem(TASKS, "toy", "toy_task:ToyTask")

    def broken(task):
        raise RuntimeError("a bug")

    monkeypatch.setattr(toy_task.ToyTask, "build_task", broken)
    config = tmp_path / "toy.yaml"
    config.write_text("task: toy\n")
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["train", str(config), "--exp-dir", str(tmp_path / "exp")])


def test_a_model_option_value_the_model_refuses(config_file, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", config_file(), "model.quantizer.distance=manhattan",
                           "--exp-dir", tmp_path / "exp")
    assert_one_line_error(code, err, "error: model: distance must be 'l2' or 'cosine', got 'manhattan'")


def test_classification_mistakes_are_one_line(tmp_path, capsys):
    from test_classification_task import _folder

    _folder(tmp_path / "images", per_class=1)
    config = ROOT / "recipes" / "imagenet100" / "conf" / "resnet18" / "none.yaml"
    cases = [([], "error: data.root: not set; pass --data DIR or --mini to the recipe, or set it"),
             ([f"data.root={tmp_path / 'images'}", "model.arch=vgg16"],
              "error: model.arch: 'vgg16' is no architecture of this task; set it to one of resnet18, alexnet"),
             ([f"data.root={tmp_path / 'images'}", "data.crop_scale=[0.5, 2]"],
              "error: data: crop scale must satisfy 0 < min <= max <= 1, got (0.5, 2)"),
             ([f"data.root={tmp_path / 'images'}", "data.resize_size=100"],
              "error: data: resize_size=100 must be >= the crop size 224")]
    for overrides, message in cases:
        code, _, err = run_cli(capsys, "train", config, *overrides, "--exp-dir", tmp_path / "exp")
        assert_one_line_error(code, err, message)
        assert not (tmp_path / "exp").exists()


def test_a_checkpoint_of_a_run_config_with_the_old_threads_key_evaluates(trained, corpus, tmp_path, capsys):
    """Speech run configs held ``threads:`` before it became ``train.threads``: such a checkpoint still evaluates."""
    checkpoint = torch.load(trained / "checkpoints" / "last.pt", weights_only=True)
    config = checkpoint["config"]
    config["threads"] = config["train"].pop("threads")
    torch.save(checkpoint, tmp_path / "old.pt")
    code, out, err = run_cli(capsys, "evaluate", tmp_path / "old.pt", corpus / "dev", "--out", tmp_path / "out")
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["utterances"] == 4


# ---- missing and unreadable files ---------------------------------------------------------------------------
def test_missing_files(config_file, corpus, trained, tmp_path, capsys):
    exp = tmp_path / "exp"
    cases = [
        (["train", tmp_path / "nope.yaml"], f"error: {tmp_path / 'nope.yaml'}: config file not found"),
        (["train", config_file(), f"data.cmvn={tmp_path / 'x.ark'}", "--exp-dir", exp],
         f"error: {tmp_path / 'x.ark'}: CMVN statistics missing; write them with data_prep/make_targets.py --cmvn"),
        (["train", config_file(), f"data.train={tmp_path / 'none'}", "--exp-dir", exp],
         f"error: {tmp_path / 'none'}: no such directory"),
        (["evaluate", tmp_path / "last.pt", corpus / "dev"], f"error: {tmp_path / 'last.pt'}: checkpoint not found"),
        (["evaluate", config_file(), corpus / "dev"], "not a readable seqvq checkpoint"),
        (["evaluate", trained / "checkpoints" / "last.pt", tmp_path / "dev"],
         f"error: {tmp_path / 'dev'}: no such data set"),
        (["plot", tmp_path], f"error: {tmp_path}: no metrics.jsonl"),
    ]
    for args, message in cases:
        code, _, err = run_cli(capsys, *args)
        assert_one_line_error(code, err, message)


def test_features_without_targets_are_not_taken_for_a_data_dir(trained, corpus, tmp_path, capsys):
    split = tmp_path / "feats_only"
    split.mkdir()
    shutil.copy(corpus / "dev" / "feats.scp", split / "feats.scp")
    code, _, err = run_cli(capsys, "evaluate", trained / "checkpoints" / "last.pt", split)
    assert_one_line_error(code, err, f"error: {split / 'phones.txt'}: missing next to feats.scp")


# ---- features: NaN/Inf, dimension, zero length -------------------------------------------------------------
def corrupt_split(source: Path, target: Path, utterance: str, matrix: np.ndarray) -> Path:
    """A copy of a prepared split with ``utterance``'s features replaced by ``matrix``."""
    target.mkdir()
    features = {utt: np.array(value) for utt, value in kaldiio.load_scp(str(source / "feats.scp")).items()}
    features[utterance] = matrix
    kaldiio.save_ark(str(target / "feats.ark"), features, scp=str(target / "feats.scp"))
    shutil.copy(source / "phones.txt", target / "phones.txt")
    return target


def test_nan_features_are_refused_naming_the_utterance(corpus, config_file, tmp_path, capsys):
    matrix = np.zeros((30, DIM), dtype=np.float32)
    matrix[7, 3] = np.nan
    matrix[9, 0] = np.inf
    split = corrupt_split(corpus / "train", tmp_path / "train", "u003", matrix)
    code, _, err = run_cli(capsys, "train", config_file(), f"data.train={split}", "--exp-dir", tmp_path / "exp")
    assert_one_line_error(code, err, f"error: {split / 'feats.scp'} (", "utterance u003 has 2 NaN/Inf values in 2 "
                                     "frame(s) (first: frame 7)")
    with pytest.raises(UserError, match="u003 has 2 NaN/Inf"):  # CMVN statistics are never computed from them
        compute_cmvn(read_features(split), deltas=True)
    stats = np.array(kaldiio.load_mat(str(corpus / "train" / "cmvn.ark")))
    stats[0, 0] = np.nan
    kaldiio.save_mat(str(tmp_path / "nan_cmvn.ark"), stats)
    code, _, err = run_cli(capsys, "train", config_file(), f"data.cmvn={tmp_path / 'nan_cmvn.ark'}",
                           "--exp-dir", tmp_path / "exp")
    assert_one_line_error(code, err, f"error: {tmp_path / 'nan_cmvn.ark'}: CMVN stats hold NaN/Inf values")


def test_a_kaldi_dir_with_nan_features_is_refused_at_feature_preparation(corpus, tmp_path):
    """A data dir with its own feats.scp (as Kaldi prepares them): compute_features copies its scp, checking."""
    matrix = np.ones((20, DIM), dtype=np.float32)
    matrix[4] = np.nan
    data = corrupt_split(corpus / "dev", tmp_path / "kaldi", "u002", matrix)
    (data / "utt2spk").write_text("".join(f"u{i:03d} s\n" for i in range(4)))
    with pytest.raises(UserError, match=r"feats.scp \(.*\): utterance u002 has 81 NaN/Inf values in 1 frame"):
        write_features(read_data_dir(data, require_text=False), tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []  # neither features nor temporary files


def test_features_of_another_dimension_are_refused(corpus, trained, tmp_path, capsys):
    split = corrupt_split(corpus / "dev", tmp_path / "dev", "u001", np.zeros((30, 13), dtype=np.float32))
    code, _, err = run_cli(capsys, "evaluate", trained / "checkpoints" / "last.pt", split, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "utterance u001 has 13-dim features but 81 are expected")


def test_a_zero_length_utterance_at_evaluation(corpus, trained, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "figures.json").write_text("{}\n")  # an earlier result that must survive the failed stage
    split = corrupt_split(corpus / "dev", tmp_path / "dev", "u002", np.zeros((0, DIM), dtype=np.float32))
    code, _, err = run_cli(capsys, "evaluate", trained / "checkpoints" / "last.pt", split, "--out", out)
    assert_one_line_error(code, err, f"error: {split / 'feats.scp'}:3: utterance u002 has no feature frames")
    assert sorted(p.name for p in out.iterdir()) == ["figures.json"]
    assert (out / "figures.json").read_text() == "{}\n"


def write_kaldi_dir(root: Path, samples: dict[str, int]) -> Path:
    """A raw Kaldi data dir (wav.scp, text, utt2spk) of noise recordings saying HELLO WORLD."""
    root.mkdir()
    rng = np.random.default_rng(0)
    for utt, count in samples.items():
        soundfile.write(root / f"{utt}.wav", rng.uniform(-0.1, 0.1, count).astype(np.float32), 16000)
    (root / "wav.scp").write_text("".join(f"{u} {root / u}.wav\n" for u in samples))
    (root / "text").write_text("".join(f"{u} HELLO WORLD\n" for u in samples))
    (root / "utt2spk").write_text("".join(f"{u} s\n" for u in samples))
    return root


def test_a_raw_kaldi_dir_evaluates_and_its_short_utterance_is_named(trained, tmp_path, capsys):
    raw = write_kaldi_dir(tmp_path / "raw", {"r1": 8000, "r2": 6000})
    code, out, err = run_cli(capsys, "evaluate", trained / "checkpoints" / "last.pt", raw)
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["utterances"] == 2
    short = write_kaldi_dir(tmp_path / "short", {"r1": 8000, "r2": 200})
    code, _, err = run_cli(capsys, "evaluate", trained / "checkpoints" / "last.pt", short)
    assert_one_line_error(code, err, f"error: {short / 'wav.scp'}:2: utterance r2 has no feature frames")


# ---- checkpoints that travel -------------------------------------------------------------------------------------
def test_a_checkpoint_evaluates_elsewhere_after_its_training_dir_is_deleted(corpus, trained, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "evaluate", trained / "checkpoints" / "last.pt", corpus / "dev")
    before = json.loads(out.splitlines()[-1])
    assert Path(before["out_dir"]).parent == trained and Path(before["out_dir"]).name.startswith("decode_dev_")

    # Copy the checkpoint and the dev split away; the training dir and the training split (its CMVN) disappear.
    moved = tmp_path / "machine2"
    shutil.copytree(corpus / "dev", moved / "dev")
    model = moved / "model.pt"
    shutil.copy(trained / "checkpoints" / "last.pt", model)
    hidden = [(trained, tmp_path / "exp_gone"), (corpus / "train", tmp_path / "train_gone")]
    for path, away in hidden:  # put back afterwards: the module's other tests use them
        os.rename(path, away)
    try:
        elsewhere = tmp_path / "cwd"
        elsewhere.mkdir()
        result = run_subprocess("evaluate", os.path.relpath(model, elsewhere), os.path.relpath(moved / "dev", elsewhere),
                                cwd=elsewhere)
        assert result.returncode == 0, result.stderr
        after = json.loads(result.stdout.splitlines()[-1])
        assert after["per"] == pytest.approx(before["per"])
        assert after["code_perplexity"] == pytest.approx(before["code_perplexity"])
        assert Path(after["out_dir"]).parent == moved and (Path(after["out_dir"]) / "hyp.txt").is_file()
        assert not list(elsewhere.iterdir())

        # Another data set with the same folder name gets its own directory; --out puts results where told.
        other = moved / "other" / "dev"
        shutil.copytree(moved / "dev", other)
        code, out, err = run_cli(capsys, "evaluate", model, other)
        assert code == 0, err
        assert json.loads(out.splitlines()[-1])["out_dir"] != after["out_dir"]
        assert json.loads((Path(after["out_dir"]) / "figures.json").read_text())["data"] == str(moved / "dev")
        code, out, err = run_cli(capsys, "evaluate", model, other, "--out", tmp_path / "mine")
        assert code == 0 and json.loads((tmp_path / "mine" / "figures.json").read_text())["utterances"] == 4
        assert not list((tmp_path / "mine").glob("*.tmp"))
    finally:
        for path, away in hidden:
            os.rename(away, path)


def test_evaluation_state_is_in_every_checkpoint(trained, corpus):
    state = read_checkpoint(trained / "checkpoints" / "last.pt")["evaluation_state"]
    stats = np.array(kaldiio.load_mat(str(corpus / "train" / "cmvn.ark")))
    assert torch.equal(state["cmvn"], torch.from_numpy(stats))
    assert state["deltas"] is True and state["feature_dim"] == DIM
    # the unit inventory travels in the model's unit_model buffer (seqvq.tasks.speech.checkpoint_units)
    assert checkpoint_units(read_checkpoint(trained / "checkpoints" / "last.pt")["model"], "ckpt").kind == "phones"
    assert FbankOptions(**state["fbank"]) == FbankOptions()


# ---- the trainer and non-finite steps ------------------------------------------------------------------------
class FlakyRegression(toy_task.ToyRegression):
    """The toy regression with a NaN loss (or a NaN gradient under a finite loss) on chosen forward calls, and a
    buffer its forward pass changes in place, as BatchNorm moments and EMA codebooks do."""

    def __init__(self, bad_calls=(), bad="loss"):
        super().__init__()
        self.bad_calls, self.bad, self.calls = set(bad_calls), bad, 0
        self.register_buffer("forward_passes", torch.zeros(()))

    def forward(self, batch):
        self.calls += 1
        self.forward_passes += 1
        out = super().forward(batch)
        if self.calls in self.bad_calls:
            if self.bad == "loss":
                out.loss = out.loss * float("nan")
            else:  # d sqrt(u) / du is inf at u = 0: a finite loss, a NaN gradient
                out.loss = out.loss + (self.linear.weight.sum() * 0).sqrt()
        return out


def flaky_trainer(exp_dir, model, **train):
    config = TrainConfig(**{"steps": 6, "batch_size": 4, "checkpoint_every": 2, "log_every": 2,
                            "device": "cpu", **train})
    return Trainer(model, config, toy_task.make_dataset(), toy_task.collate, exp_dir=exp_dir)


@pytest.mark.parametrize("bad, what", [("loss", "the loss is nan"), ("gradient", "the gradient norm is nan")])
def test_a_nonfinite_step_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, bad, what):
    trainer = flaky_trainer(tmp_path, FlakyRegression(bad_calls={3}, bad=bad))
    with pytest.raises(UserError, match=f"step 3: {what}; training stopped and .*last.pt \\(step 2\\) is the last "
                                        f"good checkpoint; .*train.skip_nonfinite=true"):
        trainer.fit()
    last = read_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["step"] == 2
    assert all(torch.isfinite(t).all() for t in last["model"].values() if t.is_floating_point())


def test_skip_nonfinite_skips_counts_logs_and_undoes_the_forward_pass(tmp_path):
    model = FlakyRegression(bad_calls={2, 5})
    trainer = flaky_trainer(tmp_path, model, skip_nonfinite=True)
    trainer.fit()
    assert trainer.step == 6 and trainer.skipped_nonfinite == 2
    assert int(model.forward_passes) == 4  # the two skipped forward passes were undone
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_nonfinite"] for r in records if r["split"] == "train"] == [1, 1, 2]
    assert all(np.isfinite(r["loss"]) for r in records if r["split"] == "train")
    assert read_checkpoint(tmp_path / "checkpoints" / "last.pt")["skipped_nonfinite"] == 2


def test_a_checkpoint_is_never_written_from_nonfinite_state(tmp_path):
    trainer = flaky_trainer(tmp_path, FlakyRegression(), steps=2)
    trainer.fit()
    with torch.no_grad():
        trainer.model.linear.weight[0, 0] = float("inf")
    with pytest.raises(UserError, match="linear.weight holds NaN/Inf values; no checkpoint written"):
        trainer.save_checkpoint()
    assert read_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 2


# ---- a run resumed on other data ----------------------------------------------------------------------------------
def test_resuming_on_changed_training_data_is_refused(corpus, config_file, tmp_path, capsys):
    train = tmp_path / "train"
    shutil.copytree(corpus / "train", train)
    features = {utt: np.array(matrix) for utt, matrix in kaldiio.load_scp(str(train / "feats.scp")).items()}
    kaldiio.save_ark(str(train / "feats.ark"), features, scp=str(train / "feats.scp"))  # this copy's own archive
    exp = tmp_path / "exp"
    config = config_file(data__train=str(train))
    assert run_cli(capsys, "train", config, "--exp-dir", exp)[0] == 0
    code, _, err = run_cli(capsys, "train", config, "train.steps=3", "--exp-dir", exp)  # the same data: resumes
    assert code == 0, err
    targets = (train / "phones.txt").read_text().splitlines()
    (train / "phones.txt").write_text("\n".join(targets[1:]) + "\n")  # an utterance fewer
    code, _, err = run_cli(capsys, "train", config, "train.steps=4", "--exp-dir", exp)
    assert_one_line_error(code, err, f"error: {exp / 'checkpoints' / 'last.pt'}: trained (step 3) from other data: "
                                     f"{train / 'phones.txt'} changed; rerun with the data it was trained on to "
                                     f"resume it, or pass --force to start over")
    assert read_checkpoint(exp / "checkpoints" / "last.pt")["step"] == 3


# ---- a run shorter than the quantizer's warm-up -------------------------------------------------------------------
def test_a_run_inside_the_pass_through_warm_up_is_warned_and_its_figures_marked(config_file, corpus, tmp_path,
                                                                                 capsys):
    exp = tmp_path / "exp"
    code, out, err = run_cli(capsys, "train", config_file(), "model.quantizer.reestimate.init_steps=3",
                             "--exp-dir", exp)
    assert code == 0, err
    assert err.splitlines()[0] == (
        "warning: train.steps=2 ends inside the quantizer's pass-through warm-up (model.quantizer: its first 2 steps, "
        "reestimate.init_steps=3): it never quantizes, and its code perplexity and codes used count the codes of a "
        "codebook nothing used; set train.steps above 2 or lower reestimate.init_steps")
    assert json.loads(out.splitlines()[-1])["quantized"] is False
    code, out, err = run_cli(capsys, "evaluate", exp / "checkpoints" / "last.pt", corpus / "dev",
                             "--out", tmp_path / "o")
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "figures.json").read_text())["quantized"] is False
    # quantized from step 2 on: no warning, and the figures say so
    code, out, err = run_cli(capsys, "train", config_file(), "model.quantizer.reestimate.init_steps=2",
                             "--exp-dir", tmp_path / "exp2")
    assert code == 0 and "warning" not in err and json.loads(out.splitlines()[-1])["quantized"] is True
