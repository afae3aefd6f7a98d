"""icefall adapter: VQEncoder keeps the EncoderInterface contract inside an icefall-style CTC model trained by an
icefall-style compute_loss, and icefall's checkpoint format (a dict with the model's state_dict, loaded strictly)
restores the quantizer.  k2 / icefall do not install next to current torch, so the encoder is written here to the
contract ``forward(x, x_lens) -> (encoder_out, encoder_out_lens)`` on (N, T, C) tensors."""
import pytest
import torch
from torch import nn

from integration_checks import (assert_codes_on_valid_frames, assert_quantizer_trained, assert_same_state,
                                assert_vq_loss_in_total, make_quantizer)
from seqvq.integrations.icefall import VQEncoder

FEATURES, DIM, VOCAB = 8, 12, 6


class SubsamplingEncoder(nn.Module):
    """An EncoderInterface: stride-2 convolution and a GRU; out_lens = ceil(x_lens / 2)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(FEATURES, DIM, 3, stride=2, padding=1)
        self.rnn = nn.GRU(DIM, DIM, batch_first=True)

    def forward(self, x, x_lens):
        out, _ = self.rnn(torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2))
        return out, (x_lens + 1) // 2


class CTCModel(nn.Module):
    """The shape of icefall's CTC models: ``self.encoder(x, x_lens)``, then a projection to log-probs."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.ctc_output = nn.Linear(DIM, VOCAB)

    def forward(self, x, x_lens, tokens, token_lens):
        encoder_out, encoder_out_lens = self.encoder(x, x_lens)
        log_probs = self.ctc_output(encoder_out).log_softmax(-1)
        ctc_loss = nn.functional.ctc_loss(log_probs.transpose(0, 1), tokens, encoder_out_lens, token_lens,
                                          reduction="sum", zero_infinity=True)
        return ctc_loss, encoder_out_lens


def compute_loss(model, batch, is_training):
    """icefall's compute_loss: the task loss plus the bottleneck's VQ loss, and the info it logs."""
    with torch.set_grad_enabled(is_training):
        ctc_loss, encoder_out_lens = model(batch["inputs"], batch["input_lens"], batch["tokens"],
                                           batch["token_lens"])
        vq = model.encoder.take_result()
        loss = ctc_loss + vq.loss
    info = {"frames": int(encoder_out_lens.sum()), "ctc_loss": ctc_loss.detach(), "vq_loss": vq.loss.detach(),
            "vq_perplexity": vq.metrics["perplexity"]}
    return loss, info, ctc_loss, vq


def make_batch(generator):
    lengths = torch.tensor([20, 15, 9])
    inputs = torch.randn(3, 20, FEATURES, generator=generator)
    inputs = inputs * (torch.arange(20) < lengths.unsqueeze(1)).unsqueeze(-1)
    tokens = torch.randint(1, VOCAB, (3, 4), generator=generator)
    return {"inputs": inputs, "input_lens": lengths, "tokens": tokens, "token_lens": torch.tensor([4, 3, 2])}


def build_model():
    torch.manual_seed(0)
    return CTCModel(VQEncoder(SubsamplingEncoder(), make_quantizer(DIM)))


def test_vq_encoder_trains_in_an_icefall_style_loop_and_checkpoint_restores_the_quantizer(tmp_path):
    model = build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(1)
    for _ in range(6):
        loss, info, _, _ = compute_loss(model, make_batch(generator), is_training=True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert_quantizer_trained(model.encoder.quantizer)

    batch = make_batch(generator)
    loss, info, ctc_loss, vq = compute_loss(model, batch, is_training=True)
    assert_vq_loss_in_total(loss, ctc_loss, vq.loss, list(model.encoder.encoder.parameters()))
    assert_codes_on_valid_frames(vq.codes, (batch["input_lens"] + 1) // 2)
    assert info["frames"] == int(((batch["input_lens"] + 1) // 2).sum())

    # icefall.checkpoint.save_checkpoint / load_checkpoint: {"model": state_dict, "optimizer": ...}, strict load.
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, tmp_path / "epoch-1.pt")
    restored = CTCModel(VQEncoder(SubsamplingEncoder(), make_quantizer(DIM)))
    checkpoint = torch.load(tmp_path / "epoch-1.pt")
    restored.load_state_dict(checkpoint["model"], strict=True)
    assert_same_state(restored.encoder.quantizer, model.encoder.quantizer.state_dict())
    model.eval(), restored.eval()
    with torch.no_grad():
        expected, _ = model.encoder(batch["inputs"], batch["input_lens"])
        actual, _ = restored.encoder(batch["inputs"], batch["input_lens"])
    assert torch.equal(actual, expected)


def test_take_result_hands_out_each_forward_once_and_training_refuses_an_untaken_loss():
    encoder = VQEncoder(None, make_quantizer(DIM))
    x, lengths = torch.randn(2, 5, DIM), torch.tensor([5, 3])
    encoder(x, lengths)
    encoder.take_result()
    with pytest.raises(RuntimeError, match="no forward pass"):
        encoder.take_result()
    encoder(x, lengths)
    with pytest.raises(RuntimeError, match="never taken"):
        encoder(x, lengths)
    encoder.eval()
    encoder(x, lengths)
    encoder(x, lengths)  # evaluation passes may leave their result untaken
    encoder.train()
    encoder(x, lengths)


def test_time_first_matches_batch_first_for_zipformer_layout():
    torch.manual_seed(0)
    batch_first = VQEncoder(None, make_quantizer(DIM)).eval()
    time_first = VQEncoder(None, make_quantizer(DIM), time_first=True).eval()
    time_first.load_state_dict(batch_first.state_dict())
    x, lengths = torch.randn(2, 7, DIM), torch.tensor([7, 4])
    expected, _ = batch_first(x, lengths)
    actual, out_lens = time_first(x.transpose(0, 1), lengths)
    assert torch.equal(actual.transpose(0, 1), expected) and torch.equal(out_lens, lengths)
    assert torch.equal(time_first.take_result().codes, batch_first.take_result().codes)
