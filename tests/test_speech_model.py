"""DeepSpeech2-like CTC model: lengths, masking, bottleneck on/off."""
import pytest
import torch

from seqvq.models.deepspeech2 import ConvFrontEnd, DeepSpeech2CTC

SMALL = dict(in_channels=3, conv_channels=(4, 4), conv_kernels=((5, 7), (5, 7)), rnn_hidden=16, rnn_layers=2,
             bottleneck_dim=8, mixer_dim=12)


def test_time_stride_three_and_feature_blocks():
    front = ConvFrontEnd(243, in_channels=3)
    lengths = torch.tensor([1, 2, 3, 4, 100, 301])
    assert front.output_lengths(lengths).tolist() == [1, 1, 1, 2, 34, 101]  # ceil(T / 3)
    assert front.output_dim == 32 * 21  # 81 bins -> 41 -> 21
    with pytest.raises(ValueError, match="in_channels=2"):
        ConvFrontEnd(243, in_channels=2)


def test_padding_does_not_change_outputs():
    torch.manual_seed(0)
    model = DeepSpeech2CTC(27, 5, quantizer=dict(codebook_size=16), **SMALL).eval()
    features = torch.randn(2, 40, 27)
    lengths = torch.tensor([40, 22])
    batched = model(features, lengths)
    alone = model(features[1:, :22], lengths[1:])
    assert batched.lengths.tolist() == [14, 8]
    assert torch.allclose(batched.log_probs[1, :8], alone.log_probs[0], atol=1e-5)
    assert torch.equal(batched.codes[1, :8], alone.codes[0])
    assert torch.all(batched.codes[1, 8:] == -1) and torch.all(batched.codes[0] >= 0)


def test_bottleneck_and_no_bottleneck_share_layers():
    with_vq = DeepSpeech2CTC(27, 5, quantizer=dict(codebook_size=16), **SMALL)
    without = DeepSpeech2CTC(27, 5, quantizer=None, **SMALL)
    assert without.quantizer is None
    names = {n for n, _ in with_vq.named_parameters() if not n.startswith("quantizer.")}
    assert names == {n for n, _ in without.named_parameters()}
    out = without(torch.randn(3, 30, 27), torch.tensor([30, 20, 10]))
    assert out.codes is None and out.vq_loss is None
    assert torch.allclose(out.log_probs.exp().sum(-1), torch.ones(3, 10), atol=1e-5)


def test_gradients_reach_the_encoder_through_the_quantizer():
    torch.manual_seed(0)
    model = DeepSpeech2CTC(27, 5, quantizer=dict(codebook_size=16), **SMALL).train()
    out = model(torch.randn(3, 30, 27), torch.tensor([30, 20, 10]))
    (out.log_probs[:, :, 1].sum() + out.vq_loss).backward()
    assert model.front_end.convs[0].weight.grad.abs().sum() > 0
    assert model.rnn.weight_ih_l0.grad.abs().sum() > 0
    assert model.quantizer.codebook.grad.abs().sum() > 0


def test_token_inputs_go_through_an_embedding():
    torch.manual_seed(0)
    model = DeepSpeech2CTC(1, 5, input_tokens=30, token_dim=27, quantizer=None, **SMALL).eval()
    tokens = torch.randint(30, (2, 40, 1)).float()  # token ids stored as one-dimensional features
    tokens[1, 22:] = 0.0
    lengths = torch.tensor([40, 22])
    batched = model(tokens, lengths)
    plain = DeepSpeech2CTC(27, 5, quantizer=None, **SMALL).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("token_embedding.")})
    embedded = plain(model.token_embedding.weight[tokens[..., 0].long()], lengths)
    assert torch.equal(batched.log_probs, embedded.log_probs)
    alone = model(tokens[1:, :22], lengths[1:])
    assert torch.allclose(batched.log_probs[1, :8], alone.log_probs[0], atol=1e-5)
    with pytest.raises(ValueError, match="input_tokens=30.*input_dim=27"):
        DeepSpeech2CTC(27, 5, input_tokens=30, **SMALL)
