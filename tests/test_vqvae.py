"""The VQ-VAE of Huh et al. 2023 §5.2: shapes, where the VQ sits, the MSE metric, the Table 3 configs, and short
training runs (plain and with the full remedy set, alternating optimization included) through the CLI."""
import glob
import json
import os

import numpy as np
import pytest
import torch

from seqvq.cli import main as cli
from seqvq.data.cifar import CifarImages, write_cifar_batches
from seqvq.models.vqvae import VQVAE
from seqvq.tasks import get_task
from seqvq.tasks.vqvae import VQVAETask, evaluate_reconstruction
from seqvq.train import TrainConfig, load_config

RECIPE = os.path.join(os.path.dirname(__file__), os.pardir, "recipes", "vqvae")


def _images(count, seed=0):
    return torch.randint(0, 256, (count, 3, 32, 32), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


def test_shapes_and_the_bottleneck_sits_between_encoder_and_decoder():
    model = VQVAE(channels=16, quantizer={"codebook_size": 32}).eval()
    images = _images(3)
    with torch.no_grad():
        out = model(images)
        assert out.reconstruction.shape == (3, 3, 32, 32)
        assert 0 < out.reconstruction.min() and out.reconstruction.max() < 1
        assert out.codes.shape == (3, 8, 8) and out.num_dims == 3 * 3072
        latents = model.encode(images)
        assert latents.shape == (3, 8, 8, 16)
        nearest = torch.cdist(latents.reshape(-1, 16), model.quantizer.codebook[0]).argmin(1)
        assert torch.equal(nearest, out.codes.reshape(-1))
        # the decoder sees exactly the chosen code vectors
        torch.testing.assert_close(model.decode(model.quantizer.codes_to_vectors(out.codes)), out.reconstruction)
    target = images.float() / 255
    torch.testing.assert_close(out.squared_error, ((out.reconstruction - target) ** 2).sum())


def test_mse_of_a_constant_reconstruction(tmp_path):
    """A zeroed last layer outputs sigmoid(0) = 0.5 everywhere: white images (255) give MSE (1 - 0.5)^2 = 0.25,
    black ones 0.25 too, and the mean over the test split is 0.25."""
    model = VQVAE(channels=8, quantizer={"codebook_size": 4})
    with torch.no_grad():
        model.decoder[-2].weight.zero_()
        model.decoder[-2].bias.zero_()
    test = np.concatenate([np.full((3, 3, 32, 32), 255, np.uint8), np.zeros((2, 3, 32, 32), np.uint8)])
    write_cifar_batches(str(tmp_path), (test[:1], np.zeros(1, np.int64)), (test, np.zeros(5, np.int64)), ["x"])
    figures = evaluate_reconstruction(model.eval(), CifarImages(str(tmp_path), "test"), batch_size=2)
    assert figures["mse"] == pytest.approx(0.25)
    assert figures["images"] == 5 and 1 <= figures["code_perplexity"] <= 4


TABLE3_ROWS = [path for path in sorted(glob.glob(os.path.join(RECIPE, "conf", "*.yaml")))  # the claims rows and their
               if not os.path.basename(path).startswith(("recent_", "modern_", "bn_", "codebook_free"))]  # bases:
# tests/test_claims_rows.py


@pytest.mark.parametrize("path", TABLE3_ROWS, ids=lambda p: os.path.basename(p))
def test_table3_configs_build(path):
    config = load_config(path)
    assert config["task"] == "vqvae" and get_task(config["task"]) is VQVAETask
    train = TrainConfig.from_dict(config["train"])
    model = VQVAETask(config).build_model().vqvae
    quantizer, name = model.quantizer, os.path.basename(path)[:-5]
    assert (model.channels, quantizer.codebook_size) == (64, 1024)
    parts = set(name.split("_"))
    assert (quantizer.distance == "cosine") == ("l2" in parts)
    assert (quantizer.replacement is not None) == ("replace" in parts)
    assert (quantizer.affine is not None) == ("affine" in parts)
    assert (quantizer.sync_nu > 0 and train.alternating_fused) == ("opt" in parts)
    assert quantizer.assignment == {"sqvae": "stochastic", "gumbel": "gumbel"}.get(name, "nearest")


@pytest.mark.parametrize("row", ["vqvae", "affine_opt_replace_l2"])
def test_training_lowers_the_loss_and_evaluate_reproduces_it(tmp_path, row, one_thread):
    data, exp = str(tmp_path / "data"), str(tmp_path / "exp")
    rng = np.random.default_rng(0)
    blocks = rng.choice(np.array([0, 128, 255], dtype=np.uint8), size=(40, 3, 4, 4)).repeat(8, 2).repeat(8, 3)
    write_cifar_batches(data, (blocks[:32], np.zeros(32, np.int64)), (blocks[32:], np.zeros(8, np.int64)), ["b"])
    replace = ["model.quantizer.replace_dead_after=5"] if "replace" in row else []
    cli(["train", os.path.join(RECIPE, "conf", f"{row}.yaml"), f"data.corpus={data}", "model.channels=8",
         "model.quantizer.codebook_size=16", *replace, "train.steps=40", "train.batch_size=8", "train.lr=1e-2",
         "train.warmup_steps=4", "train.log_every=5", "train.eval_every=40", "train.checkpoint_every=40",
         "eval.batch_size=4", "--exp-dir", exp])
    records = [json.loads(line) for line in open(os.path.join(exp, "metrics.jsonl"))]
    mse = [r["mse"] for r in records if r["split"] == "train"]
    assert mse[-1] < 0.92 * mse[0], mse
    if row != "vqvae":  # the alternating step ran its codebook-only inner step
        assert all("inner_codebook_loss" in r for r in records if r["split"] == "train")
    dev = [r for r in records if r["split"] == "dev"][-1]
    cli(["evaluate", os.path.join(exp, "checkpoints", "last.pt"), data, "--out", os.path.join(exp, "eval")])
    evaluated = json.load(open(os.path.join(exp, "eval", "figures.json")))
    for key in ("mse", "code_perplexity", "codes_used"):
        assert evaluated[key] == pytest.approx(dev[key], rel=1e-5)
