"""Collapse diagnostics (Huh et al. 2023 §3, eq. 13, eq. 14 / A.3): usage tracker, divergence, gradient gap."""
import copy

import pytest
import torch
from torch import nn

import seqvq
from seqvq.quantize.core import perplexity
from seqvq.quantize.diagnostics import (UsageTracker, codebook_divergence, gradient_gap, plot_usage_histogram,
                                        quantizers_bypassed)


# ------------------------------------------------------------------------------------------------ tracker
def test_tracker_forgets_updates_older_than_the_window():
    tracker = UsageTracker(1, 6, window=2)
    tracker.update(torch.tensor([0, 0, 1]))
    tracker.update(torch.tensor([2, -1, -1]))  # -1 = padded, dropped
    assert tracker.counts().tolist() == [[2, 1, 1, 0, 0, 0]]
    assert tracker.active_codes().tolist() == [3] and tracker.dead_codes().tolist() == [3]
    tracker.update(torch.tensor([[3, 3], [4, -1]]))  # any shape for one codebook; first update falls out
    assert tracker.counts().tolist() == [[0, 0, 1, 2, 1, 0]]
    expected = perplexity(torch.tensor([0.0, 0, 1, 2, 1, 0]))
    torch.testing.assert_close(tracker.running_perplexity()[0], expected)
    assert tracker.metrics()["dead_codes"].item() == 3


def test_tracker_counts_each_codebook_of_a_trailing_axis():
    tracker = UsageTracker(2, 4, window=5)
    tracker.update(torch.tensor([[[0, 3], [0, 2]], [[-1, -1], [1, 2]]]))  # (B=2, T=2, G=2)
    assert tracker.counts().tolist() == [[2, 1, 0, 0], [0, 0, 2, 1]]
    with pytest.raises(ValueError, match="num_codebooks=2"):
        tracker.update(torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"\[-1, 3\]"):
        tracker.update(torch.tensor([[0, 4]]))


def test_tracker_state_dict_round_trip_continues_identically():
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(-1, 16, (30,), generator=generator) for _ in range(9)]
    tracker = UsageTracker(1, 16, window=4)
    for codes in batches[:5]:
        tracker.update(codes)
    restored = UsageTracker(1, 16, window=4)
    restored.load_state_dict(copy.deepcopy(tracker.state_dict()))
    for codes in batches[5:]:
        tracker.update(codes)
        restored.update(codes)
        for name, value in tracker.metrics().items():
            assert torch.equal(value, restored.metrics()[name]), name
    assert torch.equal(tracker.counts(), restored.counts())


def test_usage_histogram_png_is_written_atomically(tmp_path):
    path = tmp_path / "usage.png"
    path.write_bytes(b"old")
    plot_usage_histogram(torch.tensor([[5, 0, 2, 1], [0, 0, 9, 1]]), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["usage.png"]


# --------------------------------------------------------------------------------------------- divergence
def test_divergence_matches_brute_force_in_both_directions():
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(700, 5, generator=generator) + 3.0
    codes = torch.randn(90, 5, generator=generator)
    distances = torch.cdist(z.double(), codes.double()).pow(2)
    result = codebook_divergence(z, codes)
    torch.testing.assert_close(result.data_to_codes.double(), distances.min(dim=1).values.mean(), rtol=1e-5,
                               atol=1e-5)
    torch.testing.assert_close(result.codes_to_data.double(), distances.min(dim=0).values.mean(), rtol=1e-5,
                               atol=1e-5)


def test_a_far_unused_code_moves_only_the_reverse_divergence():
    z = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    near = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    with_far = torch.cat([near, torch.tensor([[10.0, 0.0]])])
    a, b = codebook_divergence(z, near), codebook_divergence(z, with_far)
    assert a.data_to_codes == b.data_to_codes == 0
    assert a.codes_to_data == 0 and b.codes_to_data == pytest.approx(81.0 / 3)


# ------------------------------------------------------------------------------------------- gradient gap
class TinyModel(nn.Module):
    def __init__(self, dim=4, codebook_size=8, dropout=0.0, **vq_options):
        super().__init__()
        self.encoder = nn.Linear(3, dim)
        self.dropout = nn.Dropout(dropout)
        self.quantizer = seqvq.VectorQuantizer(dim, codebook_size, **vq_options)
        self.decoder = nn.Linear(dim, 2)

    def forward(self, batch):
        x, mask, target = batch
        res = self.quantizer(self.dropout(self.encoder(x)), mask=mask)
        prediction = self.decoder(self.dropout(res.quantized))
        return ((prediction - target).pow(2).sum(-1) * mask).sum() / mask.sum() + res.loss


def tiny_batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, 3, generator=generator)
    mask = torch.arange(5).unsqueeze(0) < torch.tensor([5, 3, 4]).unsqueeze(1)
    return x, mask, torch.randn(3, 5, 2, generator=generator)


def task_loss(model, batch):
    return model(batch)


def manual_gradients(model, batch, bypass):
    model = copy.deepcopy(model)
    if bypass:
        model.quantizer.forward = lambda z, mask=None: seqvq.QuantizedResult(z, mask.long(), torch.zeros(()))
    else:
        model.quantizer.alpha = 0.0  # eq. 14 is the gradient of the task loss alone
    model(batch).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if not name.startswith("quantizer")}


def test_gradient_gap_is_the_squared_difference_of_the_two_task_gradients():
    torch.manual_seed(0)
    model, batch = TinyModel(), tiny_batch()
    gap = gradient_gap(model, task_loss, batch)
    g, g_hat = manual_gradients(model, batch, bypass=True), manual_gradients(model, batch, bypass=False)
    assert set(gap.per_parameter) == set(g)
    for name in g:
        torch.testing.assert_close(gap.per_parameter[name], (g[name] - g_hat[name]).pow(2).sum(), msg=name)
    assert gap.total > 0
    torch.testing.assert_close(gap.total, sum(gap.per_parameter.values()))
    with_loss = gradient_gap(model, task_loss, batch, include_quantizer_loss=True)
    assert not torch.allclose(with_loss.per_parameter["encoder.weight"], gap.per_parameter["encoder.weight"])


def test_gradient_gap_is_zero_when_every_input_is_a_code_even_with_dropout():
    torch.manual_seed(0)
    model, batch = TinyModel(codebook_size=12, dropout=0.3), tiny_batch()  # 12 valid frames
    x, mask, _ = batch
    # Codes = the (dropped-out) encoder outputs of this very batch: zero quantization error, so g == g_hat if and
    # only if both passes drew the same dropout masks.
    state = torch.get_rng_state()
    z = model.dropout(model.encoder(x))[mask].detach()
    torch.set_rng_state(state)
    with torch.no_grad():
        model.quantizer.codebook[0] = z
    gap = gradient_gap(model, task_loss, batch)
    assert gap.total.item() == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("options", [dict(codebook_update="ema", pre_norm=True), dict()])
def test_gradient_gap_leaves_state_grads_and_rng_as_they_were(options):
    torch.manual_seed(0)
    model, batch = TinyModel(dropout=0.1, **options), tiny_batch()
    model(batch).backward()  # some gradients the caller already holds
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    state = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    gradient_gap(model, task_loss, batch)
    assert torch.equal(torch.get_rng_state(), rng)
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    for name, p in model.named_parameters():
        assert (p.grad is None) == (name not in grads)
        if p.grad is not None:
            assert torch.equal(p.grad, grads[name]), name


def test_bypass_is_undone_after_the_block():
    model, batch = TinyModel(), tiny_batch()
    model.eval()
    with quantizers_bypassed(model):
        x, mask, _ = batch
        res = model.quantizer(model.encoder(x), mask=mask)
        assert torch.equal(res.quantized, model.encoder(x)) and res.loss == 0
        assert (res.codes[mask] >= 0).all()
    res = model.quantizer(model.encoder(x), mask=mask)
    assert not torch.equal(res.quantized[mask], model.encoder(x)[mask])
    assert model.quantizer.pass_kind == "step" and model.quantizer.codebook_terms is None


def test_gradient_gap_needs_a_quantizer():
    with pytest.raises(ValueError, match="no VectorQuantizer"):
        gradient_gap(nn.Linear(2, 2), lambda m, b: m(b).sum(), torch.ones(1, 2))
