"""MaskedLSTM gives the packed nn.LSTM's outputs and gradients on valid steps, and ignores padded inputs."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqvq.models.masked_lstm import MaskedLSTM, flip_index, reverse_within_lengths


def packed_reference(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    return pad_packed_sequence(lstm(packed)[0], batch_first=True, total_length=x.shape[1])[0]


@pytest.mark.parametrize("layers, bidirectional, bias", [(3, True, True), (1, True, False), (2, False, True)])
def test_matches_packed_lstm_outputs_and_gradients(layers, bidirectional, bias):
    torch.manual_seed(0)
    masked = MaskedLSTM(12, 7, num_layers=layers, bidirectional=bidirectional, bias=bias, batch_first=True)
    reference = nn.LSTM(12, 7, num_layers=layers, bidirectional=bidirectional, bias=bias, batch_first=True)
    reference.load_state_dict(masked.state_dict())
    lengths = torch.tensor([9, 4, 1, 6])
    x = torch.randn(4, 9, 12)
    x_masked, x_reference = x.clone().requires_grad_(), x.clone().requires_grad_()
    weights = torch.randn(4, 9, 7 * (2 if bidirectional else 1))
    mask = torch.arange(9)[None, :] < lengths[:, None]
    out_masked, out_reference = masked(x_masked, mask), packed_reference(reference, x_reference, lengths)
    torch.testing.assert_close(out_masked, out_reference, atol=1e-6, rtol=1e-5)
    (out_masked * weights).sum().backward()
    (out_reference * weights).sum().backward()
    torch.testing.assert_close(x_masked.grad, x_reference.grad, atol=1e-6, rtol=1e-5)
    for (name, a), b in zip(masked.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_padded_inputs_change_nothing_and_padded_outputs_are_zero():
    torch.manual_seed(1)
    lstm = MaskedLSTM(5, 4, num_layers=2, bidirectional=True, batch_first=True)
    mask = torch.arange(6)[None, :] < torch.tensor([6, 3])[:, None]
    x = torch.randn(2, 6, 5)
    noisy = x.clone()
    noisy[1, 3:] = 1e3 * torch.randn(3, 5)
    out, out_noisy = lstm(x, mask), lstm(noisy, mask)
    torch.testing.assert_close(out, out_noisy, atol=0, rtol=0)
    assert out[1, 3:].abs().sum() == 0 and out[1, :3].abs().sum() > 0


def test_reverse_within_lengths_flips_valid_steps_only():
    x = torch.arange(8.0).reshape(2, 4, 1)
    flipped = reverse_within_lengths(x, flip_index(torch.tensor([4, 2]), 4))
    assert flipped[..., 0].tolist() == [[3, 2, 1, 0], [5, 4, 6, 7]]


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(2)
    lstm = MaskedLSTM(5, 4, num_layers=2, dropout=0.5, batch_first=True)
    reference = nn.LSTM(5, 4, num_layers=2, dropout=0.5, batch_first=True)
    reference.load_state_dict(lstm.state_dict())
    x, mask = torch.randn(2, 6, 5), torch.ones(2, 6, dtype=torch.bool)
    lstm.eval(), reference.eval()
    torch.testing.assert_close(lstm(x, mask), reference(x)[0])
    lstm.train()
    assert not torch.allclose(lstm(x, mask), lstm(x, mask))


def test_refuses_layouts_it_does_not_implement():
    with pytest.raises(ValueError, match="batch_first"):
        MaskedLSTM(5, 4)
    with pytest.raises(ValueError, match="proj_size"):
        MaskedLSTM(5, 4, proj_size=2, batch_first=True)


def test_layer_outputs_are_each_layers_outputs():
    torch.manual_seed(0)
    lstm = MaskedLSTM(5, 4, num_layers=2, batch_first=True, bidirectional=True)
    x, mask = torch.randn(3, 7, 5), torch.arange(7) < torch.tensor([7, 4, 2]).unsqueeze(1)
    first, second = lstm.layer_outputs(x, mask)
    assert torch.equal(second, lstm(x, mask))
    one = MaskedLSTM(5, 4, num_layers=1, batch_first=True, bidirectional=True)
    one.load_state_dict({name: value for name, value in lstm.state_dict().items() if "_l0" in name})
    assert torch.equal(first, one(x, mask))
