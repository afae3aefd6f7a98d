"""The VQ classifiers of Huh et al. 2023 §5.1: torchvision / timm parameter names, forward shapes, and the VQ layer
where the paper puts it (ResNet18 after layer2, AlexNet after the conv features, ViT after the 6th block)."""
import pytest
import torch

from seqvq.models.alexnet import AlexNet
from seqvq.models.resnet import ResNet18
from seqvq.models.vit import VisionTransformer

pytestmark = pytest.mark.usefixtures("one_thread")

QUANTIZER = {"codebook_size": 32}
BN = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]

# torchvision's resnet18().state_dict() keys (torchvision/models/resnet.py: BasicBlock, layers [2, 2, 2, 2]).
TORCHVISION_RESNET18_KEYS = (
    ["conv1.weight"] + [f"bn1.{k}" for k in BN]
    + [f"{block}.{name}" for block in ["layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0", "layer3.1",
                                       "layer4.0", "layer4.1"]
       for name in ["conv1.weight", *[f"bn1.{k}" for k in BN], "conv2.weight", *[f"bn2.{k}" for k in BN]]]
    + [f"{block}.downsample.{name}" for block in ["layer2.0", "layer3.0", "layer4.0"]
       for name in ["0.weight", *[f"1.{k}" for k in BN]]]
    + ["fc.weight", "fc.bias"])
# torchvision's alexnet().state_dict() keys (torchvision/models/alexnet.py).
TORCHVISION_ALEXNET_KEYS = [f"{layer}.{k}" for layer in ["features.0", "features.3", "features.6", "features.8",
                                                          "features.10", "classifier.1", "classifier.4",
                                                          "classifier.6"] for k in ["weight", "bias"]]
# timm's vit_tiny_patch16_224 state_dict keys (timm/models/vision_transformer.py).
TIMM_VIT_TINY_KEYS = (
    ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    + [f"blocks.{i}.{name}.{k}" for i in range(12) for name in ["norm1", "attn.qkv", "attn.proj", "norm2",
                                                                  "mlp.fc1", "mlp.fc2"] for k in ["weight", "bias"]]
    + ["norm.weight", "norm.bias", "head.weight", "head.bias"])


def _parameter_count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("build, keys, count", [
    (lambda q: ResNet18(quantizer=q), TORCHVISION_RESNET18_KEYS, 11_689_512),
    (lambda q: AlexNet(quantizer=q), TORCHVISION_ALEXNET_KEYS, 61_100_840),
    (lambda q: VisionTransformer(quantizer=q), TIMM_VIT_TINY_KEYS, 5_717_416),
])
def test_parameter_names_match_torchvision_and_timm(build, keys, count):
    plain = build(None)
    assert sorted(plain.state_dict()) == sorted(keys)
    assert _parameter_count(plain) == count  # the reference networks' published sizes (1000 classes)
    quantized_keys = set(build(QUANTIZER).state_dict())
    assert set(keys) <= quantized_keys and all(k.startswith("quantizer.") for k in quantized_keys - set(keys))


def test_torchvision_state_dicts_load_where_torchvision_imports():
    try:
        import torchvision
    except Exception as error:  # CPU torch here: its compiled ops do not load (`torchvision::nms does not exist`)
        pytest.skip(f"torchvision does not import: {error}")
    for ours, theirs in ((ResNet18, torchvision.models.resnet18), (AlexNet, torchvision.models.alexnet)):
        reference = theirs()
        model = ours(quantizer=QUANTIZER)
        missing, unexpected = model.load_state_dict(reference.state_dict(), strict=False)
        assert not unexpected and all(k.startswith("quantizer.") for k in missing)
        plain = ours(quantizer=None).eval()
        plain.load_state_dict(reference.state_dict())
        images = torch.randn(1, 3, 224, 224)
        assert torch.allclose(plain(images).logits, reference.eval()(images), atol=1e-4)


def test_timm_state_dict_loads_where_timm_imports():
    try:
        import timm
    except Exception as error:  # timm needs torchvision, which does not import next to CPU torch here
        pytest.skip(f"timm does not import: {error}")
    reference = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    model = VisionTransformer(quantizer=None).eval()
    model.load_state_dict(reference.state_dict())
    images = torch.randn(1, 3, 224, 224)
    assert torch.allclose(model(images).logits, reference(images), atol=1e-4)


def _quantizer_input(model, images):
    seen = []
    handle = model.quantizer.register_forward_hook(lambda module, args, result: seen.append((args[0], result)))
    try:
        out = model(images)
    finally:
        handle.remove()
    assert len(seen) == 1
    return out, seen[0][0], seen[0][1]


def test_resnet18_quantizes_the_output_of_layer2():
    torch.manual_seed(0)
    model = ResNet18(num_classes=7, quantizer=QUANTIZER, width=16).eval()
    images = torch.randn(2, 3, 64, 48)
    out, features, result = _quantizer_input(model, images)
    stem = torch.nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2)
    assert torch.equal(features, stem(images)) and features.shape == (2, 32, 8, 6)
    assert out.logits.shape == (2, 7) and out.quantized.codes.shape == (2, 8, 6)
    assert torch.allclose(out.logits, model.classify(result.quantized), atol=1e-5)
    assert torch.allclose(result.quantized, model.quantizer.codes_to_vectors(result.codes).permute(0, 3, 1, 2),
                          atol=1e-5)


def test_alexnet_quantizes_the_conv_features_before_the_classifier():
    torch.manual_seed(0)
    model = AlexNet(num_classes=5, quantizer=QUANTIZER, hidden=32).eval()
    images = torch.randn(1, 3, 224, 224)
    out, features, result = _quantizer_input(model, images)
    assert torch.equal(features, model.features(images)) and features.shape == (1, 256, 6, 6)
    assert out.logits.shape == (1, 5) and out.quantized.codes.shape == (1, 6, 6)
    assert torch.allclose(out.logits, model.classify(result.quantized), atol=1e-5)


def test_vit_quantizes_every_token_after_the_sixth_block():
    torch.manual_seed(0)
    model = VisionTransformer(num_classes=3, quantizer=QUANTIZER, image_size=32, patch_size=8, embed_dim=24,
                              num_heads=3).eval()
    images = torch.randn(2, 3, 32, 32)
    out, tokens, result = _quantizer_input(model, images)
    x = model.patch_embed(images)
    x = torch.cat([model.cls_token.expand(2, -1, -1), x], dim=1) + model.pos_embed
    for block in list(model.blocks)[:6]:
        x = block(x)
    assert tokens.shape == (2, 17, 24) and torch.allclose(tokens, x)
    assert out.quantized.codes.shape == (2, 17) and (out.quantized.codes >= 0).all()
    assert torch.allclose(out.logits, model.classify(result.quantized), atol=1e-5)
    assert out.logits.shape == (2, 3)


def test_networks_without_vq_and_option_errors():
    out = ResNet18(num_classes=4, quantizer=None, width=8)(torch.randn(2, 3, 32, 32))
    assert out.quantized is None and out.logits.shape == (2, 4)
    with pytest.raises(ValueError, match="set by the model"):
        ResNet18(quantizer={"codebook_size": 8, "dim": 64})
    with pytest.raises(ValueError, match="codebook_size"):
        AlexNet(quantizer={"alpha": 5.0})
    with pytest.raises(ValueError, match="quantize_after"):
        VisionTransformer(depth=4, quantize_after=5)
    with pytest.raises(ValueError, match="32 x 32"):
        VisionTransformer(image_size=32, patch_size=8, embed_dim=24)(torch.randn(1, 3, 48, 48))


def test_codebook_loss_runs_the_encoder_without_gradients():
    model = ResNet18(num_classes=3, quantizer=QUANTIZER, width=8)
    loss = model.codebook_loss(torch.randn(2, 3, 32, 32))
    loss.backward()
    assert model.quantizer.codebook.grad is not None and model.quantizer.codebook.grad.abs().sum() > 0
    assert all(p.grad is None for name, p in model.named_parameters() if not name.startswith("quantizer."))
