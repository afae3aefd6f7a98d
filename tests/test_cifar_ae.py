"""The CIFAR-10 multi-codebook autoencoder (Łańcucki et al. 2020 §IV-C): shapes, where the VQ sits, bits/dim with
the latents' cost, the Table III configs, and a short training run through the CLI."""
import glob
import json
import math
import os

import numpy as np
import pytest
import torch

from seqvq.cli import main as cli
from seqvq.data.cifar import CifarImages, write_cifar_batches
from seqvq.models.cifar_ae import CifarAutoencoder
from seqvq.tasks import get_task
from seqvq.tasks.cifar_ae import CifarAutoencoderModel, CifarAutoencoderTask, evaluate_images
from seqvq.train import TrainConfig, load_config

RECIPE = os.path.join(os.path.dirname(__file__), os.pardir, "recipes", "cifar10")


def _images(count, seed=0):
    return torch.randint(0, 256, (count, 3, 32, 32), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


def _smooth_set(folder, train=48, test=8, seed=0):
    """Images made of 8x8 blocks of a few colours: learnable in a few dozen steps."""
    rng = np.random.default_rng(seed)

    def images(count):
        blocks = rng.choice(np.array([0, 64, 128, 192, 255], dtype=np.uint8), size=(count, 3, 4, 4))
        return blocks.repeat(8, axis=2).repeat(8, axis=3)

    write_cifar_batches(folder, (images(train), np.zeros(train, np.int64)),
                        (images(test), np.zeros(test, np.int64)), ["blocks"])


def test_shapes_and_the_bottleneck_sits_between_encoder_and_decoder():
    model = CifarAutoencoder(channels=16, num_codebooks=5, code_dim=4, quantizer={"codebook_size": 32}).eval()
    images = _images(3)
    with torch.no_grad():
        out = model(images)
        assert out.logits.shape == (3, 32, 32, 3, 256)
        assert out.codes.shape == (3, 8, 8, 5) and out.codes.min() >= 0 and out.codes.max() < 32
        assert out.num_dims == 3 * 3072
        # the decoder sees exactly the code vectors of the 8x8 map: decoding the codes gives the same logits
        latents = model.quantizer.codes_to_vectors(out.codes)
        assert latents.shape == (3, 8, 8, 20)
        torch.testing.assert_close(model.decode(latents), out.logits)
        # and each block of d channels is quantized with its own codebook
        encoded = model.encode(images)
        block = encoded[..., 8:12].reshape(-1, 4)
        nearest = torch.cdist(block, model.quantizer.codebook[2]).argmin(1)
        assert torch.equal(nearest, out.codes[..., 2].reshape(-1))
    expected_nll = torch.nn.functional.cross_entropy(out.logits.reshape(-1, 256),
                                                     images.permute(0, 2, 3, 1).reshape(-1).long(), reduction="sum")
    torch.testing.assert_close(out.nll, expected_nll)


@pytest.mark.parametrize("groups, codes", [(8, 128), (5, 1024)])
def test_bits_per_dim_counts_the_latents_under_a_uniform_prior(tmp_path, groups, codes):
    """A decoder with a zeroed softmax layer predicts 1/256 for every sub-pixel: 8 bits/dim of reconstruction;
    64 positions x G codes x log2 K bits per 3,072 sub-pixels are added (8 x 128: 3,584 bits = 1.1667 bits/dim,
    5 x 1024: 3,200 bits = 1.0417 bits/dim)."""
    model = CifarAutoencoder(channels=8, num_codebooks=groups, code_dim=2, quantizer={"codebook_size": codes})
    with torch.no_grad():
        model.output.weight.zero_()
        model.output.bias.zero_()
    write_cifar_batches(str(tmp_path), (_images(2).numpy(), np.zeros(2, np.int64)),
                        (_images(7, seed=1).numpy(), np.zeros(7, np.int64)), ["x"])
    figures = evaluate_images(model.eval(), CifarImages(str(tmp_path), "test"), batch_size=3)
    latent_bits = 64 * groups * math.log2(codes)
    assert latent_bits == {8: 3584, 5: 3200}[groups]
    assert figures["rec_bpd"] == pytest.approx(8.0, abs=1e-5)
    assert figures["latent_bpd"] == pytest.approx(latent_bits / 3072)
    assert figures["bpd"] == pytest.approx(8.0 + latent_bits / 3072, abs=1e-5)
    assert figures["images"] == 7
    # the unigram prior charges log2 of each codebook's perplexity instead of log2 K, never more
    assert 8.0 <= figures["unigram_bpd"] <= figures["bpd"] + 1e-9
    assert 1 <= figures["code_perplexity"] <= codes and figures["codes_used"] >= groups


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(RECIPE, "conf", "*.yaml"))),
                         ids=lambda p: os.path.basename(p))
def test_table3_configs_build(path):
    config = load_config(path)
    assert config["task"] == "cifar_ae" and get_task(config["task"]) is CifarAutoencoderTask
    TrainConfig.from_dict(config["train"])
    model = CifarAutoencoderTask(config).build_model().autoencoder
    quantizer, name = model.quantizer, os.path.basename(path)
    assert (model.num_codebooks, quantizer.codebook_size, quantizer.code_dim) == (8, 128, 32)
    assert (quantizer.norm is not None) == name.startswith("bn")
    assert (quantizer.ema is not None) == (name == "bn_ema.yaml")
    assert (quantizer.reestimation is not None) == ("reestimation" in name)
    assert (config["train"].get("codebook_lr") is not None) == ("codebook_lr" in name)


def test_training_lowers_the_loss_and_evaluate_reproduces_the_polyak_figures(tmp_path, one_thread):
    data, exp = str(tmp_path / "data"), str(tmp_path / "exp")
    _smooth_set(data)
    cli([
        "train", os.path.join(RECIPE, "conf", "bn_reestimation.yaml"), f"data.corpus={data}",
        "model.channels=8", "model.code_dim=2", "model.quantizer.codebook_size=16",
        "model.quantizer.reestimate.init_steps=4", "model.quantizer.reestimate.every=4",
        "model.quantizer.reestimate.steps=8", "model.quantizer.reestimate.reservoir_size=256",
        "train.steps=30", "train.batch_size=8", "train.lr=3e-3", "train.polyak_decay=0.9", "train.log_every=5",
        "train.eval_every=30", "train.checkpoint_every=30", "eval.batch_size=4", "--exp-dir", exp])
    records = [json.loads(line) for line in open(os.path.join(exp, "metrics.jsonl"))]
    train = [r["loss"] for r in records if r["split"] == "train"]
    assert train[-1] < train[0] - 0.3, train
    dev = [r for r in records if r["split"] == "dev"][-1]
    cli(["evaluate", os.path.join(exp, "checkpoints", "last.pt"), data, "--out", os.path.join(exp, "eval")])
    evaluated = json.load(open(os.path.join(exp, "eval", "figures.json")))
    for key in ("bpd", "rec_bpd", "code_perplexity", "codes_used"):
        assert evaluated[key] == pytest.approx(dev[key], rel=1e-5)
    assert evaluated["bpd"] == pytest.approx(evaluated["rec_bpd"] + 64 * 8 * 4 / 3072)


def test_codebook_loss_leaves_the_encoder_without_gradient():
    task = CifarAutoencoderModel(CifarAutoencoder(channels=8, num_codebooks=2, code_dim=2,
                                                  quantizer={"codebook_size": 8}))
    from seqvq.data.cifar import ImageBatch
    loss = task.codebook_loss(ImageBatch(_images(2), torch.zeros(2, dtype=torch.long)))
    loss.backward()
    assert task.autoencoder.quantizer.codebook.grad is not None
    assert all(p.grad is None for p in task.autoencoder.encoder.parameters())


def test_config_mistakes_are_one_line_user_errors(tmp_path):
    from seqvq.errors import UserError

    config = load_config(os.path.join(RECIPE, "conf", "vqvae.yaml"))
    with pytest.raises(UserError, match="model.quantizer.codebok_size"):
        CifarAutoencoderTask({**config, "model": {**config["model"], "quantizer": {"codebok_size": 8}}}).build_model()
    with pytest.raises(UserError, match="num_codebooks of the autoencoder"):
        CifarAutoencoderTask({**config, "model": {**config["model"], "quantizer": {"num_codebooks": 2}}}).build_model()
    with pytest.raises(UserError, match="data.corpus: not set"):
        CifarAutoencoderTask(config).build_task()
    with pytest.raises(UserError, match="no such file"):
        CifarAutoencoderTask({**config, "data": {"corpus": str(tmp_path / "nowhere")}}).build_task()
