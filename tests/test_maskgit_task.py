"""The `maskgit` task: tokenization round trip through the frozen VQ-VAE, a smoke run of both stages (the
autoencoder, then the transformer on its codes) whose losses fall, the evaluation's figures and files, and the
exact resume of the transformer's training."""
import json
import os

import numpy as np
import pytest
import torch

from seqvq.cli import main as cli
from seqvq.data.cifar import CifarImages, write_cifar_batches
from seqvq.errors import UserError
from seqvq.tasks import get_task
from seqvq.tasks.maskgit import MaskGITTask, Tokenizer, collate_masked
from seqvq.train import load_config

RECIPE = os.path.join(os.path.dirname(__file__), os.pardir, "recipes", "maskgit", "conf")
ROWS = ("plain", "affine", "opt", "affine_opt", "replace", "l2", "all")


def _data(folder):
    """40 train and 8 test images of 4x4 blocks of three grey levels, labelled by their top-left block."""
    rng = np.random.default_rng(0)
    blocks = rng.choice(np.array([0, 128, 255], dtype=np.uint8), size=(48, 3, 4, 4)).repeat(8, 2).repeat(8, 3)
    labels = (blocks[:, 0, 0, 0] // 128).astype(np.int64)
    write_cifar_batches(str(folder), (blocks[:40], labels[:40]), (blocks[40:], labels[40:]), ["a", "b", "c"])
    return str(folder)


def _train_autoencoder(data, exp):
    cli(["train", os.path.join(RECIPE, "plain.yaml"), f"data.corpus={data}", "model.channels=8",
         "model.quantizer.codebook_size=16", "train.steps=40", "train.batch_size=8", "train.lr=1e-2",
         "train.warmup_steps=4", "train.log_every=5", "train.eval_every=40", "train.checkpoint_every=20",
         "eval.batch_size=4", "--exp-dir", exp])
    return os.path.join(exp, "checkpoints", "last.pt")


TRANSFORMER = ["model.dim=16", "model.depth=1", "model.heads=2", "model.dropout=0.1", "train.batch_size=8",
               "train.lr=3e-3", "train.schedule=constant", "train.warmup_steps=0", "train.log_every=5",
               "train.eval_every=20", "train.checkpoint_every=20", "eval.batch_size=8", "eval.samples=16",
               "eval.training_samples=8", "eval.decode_steps=4", "eval.classifier_steps=5"]


def _train_transformer(data, tokenizer, exp, steps):
    cli(["train", os.path.join(RECIPE, "transformer", "maskgit.yaml"), f"data.corpus={data}",
         f"data.tokenizer={tokenizer}", f"train.steps={steps}", *TRANSFORMER, "--exp-dir", exp])


@pytest.fixture(scope="module")
def stage_a(tmp_path_factory):
    folder = tmp_path_factory.mktemp("maskgit")
    torch.set_num_threads(1)
    data = _data(folder / "data")
    return data, _train_autoencoder(data, str(folder / "autoencoder"))


@pytest.mark.parametrize("row", ROWS)
def test_rows_are_the_vqvae_rows_at_32_channels(row):
    config = load_config(os.path.join(RECIPE, f"{row}.yaml"))
    assert config["task"] == "vqvae" and config["model"]["channels"] == 32
    assert config["train"]["keep_checkpoints"] == 0
    transformer = load_config(os.path.join(RECIPE, "transformer", "maskgit.yaml"))
    assert get_task(transformer["task"]) is MaskGITTask and transformer["model"]["depth"] == 8


def test_tokenization_round_trip(stage_a):
    data, checkpoint = stage_a
    tokenizer = Tokenizer(checkpoint)
    images = CifarImages(data, "test").images
    codes = tokenizer.encode(images)
    assert codes.shape == (8, 64) and tokenizer.num_tokens == 64 and tokenizer.codebook_size == 16
    with torch.no_grad():
        out = tokenizer.network(images)
    assert torch.equal(codes, out.codes.flatten(1))  # the codes the autoencoder itself uses, row-major
    expected = (out.reconstruction.clamp(0, 1) * 255).round().to(torch.uint8)
    assert torch.equal(tokenizer.decode(codes), expected)  # decoding them gives its own reconstruction
    assert torch.equal(tokenizer.encode(images, batch_size=3), codes)


def test_tokenizer_refuses_a_checkpoint_of_another_task(stage_a, tmp_path):
    state = torch.load(stage_a[1], weights_only=False)
    state["config"] = {**state["config"], "task": "cifar_ae"}
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(UserError, match="task 'cifar_ae'.*vqvae"):
        Tokenizer(tmp_path / "other.pt")


def test_masks_come_from_the_collate_generator():
    items = [torch.arange(64) % 16 for _ in range(4)]
    first = collate_masked(items, torch.Generator().manual_seed(5))
    second = collate_masked(items, torch.Generator().manual_seed(5))
    assert torch.equal(first.mask, second.mask) and first.mask.any(1).all()


def test_both_stages_train_their_loss_falls_and_evaluate_writes_its_figures(stage_a, tmp_path, one_thread):
    data, tokenizer = stage_a
    records = [json.loads(line) for line in open(os.path.join(os.path.dirname(os.path.dirname(tokenizer)),
                                                              "metrics.jsonl"))]
    mse = [r["mse"] for r in records if r["split"] == "train"]
    assert mse[-1] < 0.92 * mse[0], mse
    exp = str(tmp_path / "transformer")
    _train_transformer(data, tokenizer, exp, 60)
    records = [json.loads(line) for line in open(os.path.join(exp, "metrics.jsonl"))]
    nll = [r["nll"] for r in records if r["split"] == "train"]
    assert nll[-1] < 0.8 * nll[0], nll
    dev = [r for r in records if r["split"] == "dev"]
    assert [r["step"] for r in dev] == [20, 40, 60] and all(r["fd"] >= 0 for r in dev)
    out = os.path.join(exp, "eval")
    cli(["evaluate", os.path.join(exp, "checkpoints", "last.pt"), data, "--out", out])
    figures = json.load(open(os.path.join(out, "figures.json")))
    for key in ("nll", "rfd", "fd", "fd_test", "code_perplexity", "codes_used", "sample_code_perplexity",
                "sample_codes_used"):
        assert key in figures
    assert figures["nll"] == pytest.approx(dev[-1]["nll"], rel=1e-5)
    assert figures["rfd"] == pytest.approx(dev[-1]["rfd"], rel=1e-6)
    assert figures["samples"] == 16 and figures["images"] == 8
    curves = json.load(open(os.path.join(out, "curves.json")))
    assert [step for step, _ in curves["rfd"]] == [20, 40] and [step for step, _ in curves["fd"]] == [20, 40, 60]
    for name in ("samples.png", "curves.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0


def test_transformer_training_resumes_exactly(stage_a, tmp_path, one_thread):
    data, tokenizer = stage_a
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    _train_transformer(data, tokenizer, straight, 40)
    _train_transformer(data, tokenizer, resumed, 20)
    _train_transformer(data, tokenizer, resumed, 40)  # resumes from step 20
    first = torch.load(os.path.join(straight, "checkpoints", "last.pt"), weights_only=False)
    second = torch.load(os.path.join(resumed, "checkpoints", "last.pt"), weights_only=False)
    assert second["step"] == 40
    for name, tensor in first["model"].items():
        assert torch.equal(tensor, second["model"][name]), name


def test_transformer_refuses_to_resume_on_a_retrained_tokenizer(stage_a, tmp_path, one_thread, capsys):
    data, tokenizer = stage_a
    exp = str(tmp_path / "transformer")
    _train_transformer(data, tokenizer, exp, 20)
    os.utime(tokenizer)  # the autoencoder's checkpoint rewritten
    with pytest.raises(SystemExit):
        _train_transformer(data, tokenizer, exp, 40)
    err = capsys.readouterr().err
    assert "changed" in err and "last.pt" in err, err


def test_a_missing_tokenizer_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli(["train", os.path.join(RECIPE, "transformer", "maskgit.yaml"), f"data.corpus={tmp_path}",
             "--exp-dir", str(tmp_path / "exp")])
    assert "data.tokenizer: not set" in capsys.readouterr().err


@pytest.mark.parametrize("override,message", [("eval.samples=1", "eval.samples: 1"),
                                              ("eval.decode_steps=0", "eval.decode_steps: 0")])
def test_impossible_evaluation_settings_are_refused_before_training(tmp_path, capsys, override, message):
    with pytest.raises(SystemExit):
        cli(["train", os.path.join(RECIPE, "transformer", "maskgit.yaml"), override, "--exp-dir", str(tmp_path)])
    assert message in capsys.readouterr().err
