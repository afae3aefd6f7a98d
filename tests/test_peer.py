"""vector-quantize-pytorch's VectorQuantize as a seqvq quantizer kind (seqvq/quantize/peer.py): padding never reaches
it (padded == unpadded, state included), its state resumes exactly, channels may come first, and the speech and
ResNet18 recipes' head-to-head rows build and train a step with it."""
import copy
import os

import pytest
import torch

import seqvq
from seqvq.models.deepspeech2 import DeepSpeech2CTC
from seqvq.models.resnet import ResNet18
from seqvq.quantize import quantizer_section
from seqvq.train import load_config

import row_overrides  # recipes/common/row_overrides.py (on sys.path: conftest.py)

pytest.importorskip("vector_quantize_pytorch")
RECIPES = os.path.join(os.path.dirname(__file__), os.pardir, "recipes")


def peer(**options):
    torch.manual_seed(0)
    return seqvq.build_quantizer(8, **quantizer_section().check(
        {"kind": "vector_quantize_pytorch", "codebook_size": 16, **options}, "model.quantizer")).train()


def test_padding_never_reaches_the_peer(one_thread):
    x, lengths = torch.randn(3, 20, 8), torch.tensor([20, 7, 13])
    padded, unpadded = peer(), peer()
    mask = torch.arange(20)[None] < lengths[:, None]
    for step in range(3):  # k-means init on the first pass, EMA and dead-code replacement after
        x = torch.randn(3, 20, 8)
        torch.manual_seed(step)
        out = padded(x, lengths=lengths)
        torch.manual_seed(step)
        ref = unpadded(x[mask])
        assert torch.equal(out.codes[mask], ref.codes) and (out.codes[~mask] == -1).all()
        assert torch.equal(out.quantized[mask], ref.quantized)
        assert torch.equal(out.quantized[~mask], x[~mask])  # padding passes through
        assert torch.equal(out.loss, ref.loss)
    for (name, a), b in zip(padded.state_dict().items(), unpadded.state_dict().values()):
        assert torch.equal(a, b), name


def test_state_resumes_exactly(one_thread):
    trained = peer()
    for _ in range(2):
        trained(torch.randn(64, 8))
    resumed = peer()
    resumed.load_state_dict(copy.deepcopy(trained.state_dict()))
    x = torch.randn(64, 8)
    torch.manual_seed(5)
    a = trained(x)
    torch.manual_seed(5)
    b = resumed(x)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.quantized, b.quantized)
    assert a.metrics["active_codes"] > 1


def test_channels_first_and_gradients_reach_the_input(one_thread):
    quantizer = peer(channel_dim=1)
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    out = quantizer(x)
    assert out.quantized.shape == x.shape and out.codes.shape == (2, 4, 4)
    (out.quantized.sum() + out.loss).backward()
    assert x.grad.abs().sum() > 0  # the rotation trick passes gradients to the encoder


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match="pre_norm"):
        quantizer_section().check({"kind": "vector_quantize_pytorch", "pre_norm": True}, "model.quantizer")


def head_to_head_config(recipe, row):
    conf = os.path.join(RECIPES, recipe, "conf", os.path.dirname(row))
    path = os.path.join(conf, f"{os.path.basename(row)}.yaml")
    return load_config(path, row_overrides.row_overrides(os.path.join(conf, "mini.overrides"), path))


def test_speech_row_trains_a_step(one_thread):
    config = head_to_head_config("wsj", "peer_vector_quantize")
    model = DeepSpeech2CTC(input_dim=243, num_classes=40, **config["model"])
    assert model.quantizer.codebook_size == 512
    out = model(torch.randn(2, 90, 243), torch.tensor([90, 60]))
    (out.log_probs.mean() + out.vq_loss).backward()
    assert (out.codes[1, out.lengths[1]:] == -1).all() and (out.codes[0] >= 0).all()
    # an EMA codebook: a buffer moved by its statistics, not a parameter for the optimizer
    assert any(name.endswith("embed") for name, _ in model.quantizer.named_buffers())
    assert not any(name.endswith("embed") for name, _ in model.quantizer.named_parameters())


def test_resnet18_row_builds_after_layer2(one_thread):
    config = head_to_head_config("imagenet100", os.path.join("resnet18", "peer_vector_quantize"))
    model = ResNet18(num_classes=10, quantizer=config["model"]["quantizer"]).train()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.quantized.codes.shape == (2, 4, 4) and out.logits.shape == (2, 10)
