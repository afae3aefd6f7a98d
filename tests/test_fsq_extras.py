"""FSQ's extras (seqvq/quantize/fsq.py): symmetric bounds and noise substitution while training — values, the
papers' properties, padded == unpadded, exact resume and the refusals."""
import copy

import pytest
import torch

from seqvq import FiniteScalarQuantizer
from seqvq.quantize import quantizer_section


def padded_batch(lengths, dim, seed=0, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), dim, generator=generator) * scale
    mask = torch.arange(max(lengths)).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    x[~mask] = 1e3  # garbage in the padding must not matter
    return x, mask


# ------------------------------------------------------------------------------------------- symmetric bounds
def test_symmetric_levels_are_symmetric_about_zero_and_span_minus_one_to_one():
    """Parker et al. 2024 §3.2: level k of L is 2k/(L - 1) - 1, so even L has no level at 0 (FSQ's even levels
    -L/2 .. L/2 - 1 are not symmetric)."""
    levels = [4, 5, 2, 6]
    symmetric, plain = FiniteScalarQuantizer(4, levels, symmetric=True), FiniteScalarQuantizer(4, levels)
    codebook = symmetric.codes_to_vectors(torch.arange(symmetric.codebook_size))
    for channel, level in enumerate(levels):
        values = codebook[:, channel].unique()
        torch.testing.assert_close(values, torch.linspace(-1, 1, level))
        torch.testing.assert_close(values, -values.flip(0))
    torch.testing.assert_close(codebook.mean(dim=0), torch.zeros(4))
    assert plain.codes_to_vectors(torch.arange(plain.codebook_size))[:, 0].unique().tolist() == [-1.0, -0.5, 0.0, 0.5]
    result = symmetric(torch.randn(1, 20000, 4, generator=torch.Generator().manual_seed(0)))
    assert result.codes.unique().numel() == symmetric.codebook_size  # every code reachable
    assert torch.equal(symmetric.codes_to_vectors(result.codes), result.quantized)


def test_symmetric_value_and_hand_derived_gradient():
    quantizer = FiniteScalarQuantizer(2, [4, 3], symmetric=True)
    z = torch.tensor([[[0.2, -0.9]]], requires_grad=True)
    result = quantizer(z)
    # L = 4: tanh(0.2) = 0.197 -> level index 1.5 (1 + 0.197) = 1.80 rounds to 2 -> 2 * 2/3 - 1 = 1/3.
    # L = 3: tanh(-0.9) = -0.716 -> index (1 - 0.716) = 0.28 rounds to 0 -> -1.
    torch.testing.assert_close(result.quantized, torch.tensor([[[1 / 3, -1.0]]]))
    assert int(result.codes) == 2 + 0 * 4
    result.quantized.sum().backward()
    torch.testing.assert_close(z.grad, 1 - torch.tanh(z.detach()) ** 2)  # straight through tanh(z)


def test_symmetric_odd_levels_are_fsqs_levels():
    x = torch.randn(1, 200, 3) * 2
    symmetric, plain = FiniteScalarQuantizer(3, [3, 5, 7], symmetric=True), FiniteScalarQuantizer(3, [3, 5, 7])
    assert (symmetric(x).codes != plain(x).codes).float().mean() < 0.01  # FSQ's 1 + eps widening aside
    codes = torch.arange(plain.codebook_size)
    assert torch.equal(symmetric.codes_to_vectors(codes), plain.codes_to_vectors(codes))


# ------------------------------------------------------------------------------------------- noise substitution
@pytest.mark.parametrize("symmetric", [False, True])
def test_noise_is_uniform_over_one_bin_while_training_and_absent_in_evaluation(symmetric):
    """Ballé et al. 2017: training replaces rounding by additive uniform noise of one bin's width; with p = 1 every
    vector is noised: the output minus the bounded input is U(-w/2, w/2), w the bin width (mean 0, mean |noise| =
    w/4, variance w^2/12); gradients as without noise; evaluation is FSQ, deterministic."""
    levels = [4, 5, 8]
    quantizer = FiniteScalarQuantizer(3, levels, symmetric=symmetric, noise_dropout=1.0, seed=1)
    z = torch.randn(1, 40000, 3).requires_grad_()
    result = quantizer(z)
    continuous = quantizer.bound(z.detach()) / quantizer.centre(torch.float32)
    width = 1 / quantizer.centre(torch.float32)  # one level step at the output
    noise = (result.quantized.detach() - continuous)[0]
    assert (noise.abs() <= width / 2 + 1e-6).all()
    torch.testing.assert_close(noise.mean(dim=0), torch.zeros(3), atol=0.01 * width.max(), rtol=0)
    torch.testing.assert_close(noise.abs().mean(dim=0), width / 4, rtol=0.02, atol=0)
    torch.testing.assert_close(noise.pow(2).mean(dim=0), width**2 / 12, rtol=0.03, atol=0)
    result.quantized.sum().backward()
    reference = z.detach().requires_grad_()
    FiniteScalarQuantizer(3, levels, symmetric=symmetric)(reference).quantized.sum().backward()
    assert torch.equal(z.grad, reference.grad)

    quantizer.eval()
    state = copy.deepcopy(quantizer.state_dict())
    first, second = quantizer(z[:, :500]), quantizer(z[:, :500])
    plain = FiniteScalarQuantizer(3, levels, symmetric=symmetric).eval()(z[:, :500])
    assert torch.equal(first.quantized, second.quantized) and torch.equal(first.quantized, plain.quantized)
    for key, value in quantizer.state_dict().items():
        assert torch.equal(value, state[key]), key  # evaluation draws nothing


def test_noise_dropout_noises_that_fraction_of_vectors_and_keeps_their_codes():
    quantizer = FiniteScalarQuantizer(2, [5, 5], noise_dropout=0.3, seed=2)
    z = torch.randn(1, 20000, 2)
    result = quantizer(z)
    on_grid = (quantizer.codes_to_vectors(result.codes) == result.quantized).all(dim=-1)
    assert abs(float((~on_grid).float().mean()) - 0.3) < 0.02
    assert torch.equal(result.codes, quantizer.eval()(z).codes)  # a noised vector keeps its nearest level's code


def test_noise_padded_equals_unpadded_and_resumes_exactly():
    torch.manual_seed(0)
    make = lambda: FiniteScalarQuantizer(6, [8, 5, 4], noise_dropout=0.5, seed=4, pre_norm=True)  # noqa: E731
    padded_quantizer = make()
    packed_quantizer = copy.deepcopy(padded_quantizer)
    x, mask = padded_batch([5, 2, 7], 6)
    x_packed = x[mask].unsqueeze(0).clone().requires_grad_()
    x.requires_grad_()
    for _ in range(3):  # each pass draws new noise, the same for the same valid vectors
        padded, packed = padded_quantizer(x, mask=mask), packed_quantizer(x_packed)
        torch.testing.assert_close(padded.quantized[mask], packed.quantized[0])
        assert torch.equal(padded.codes[mask], packed.codes[0]) and (padded.codes[~mask] == -1).all()
        assert torch.equal(padded.quantized[~mask].detach(), x[~mask].detach())
        padded.quantized[mask].pow(2).sum().backward()
        packed.quantized.pow(2).sum().backward()
        torch.testing.assert_close(x.grad[mask], x_packed.grad[0])
        x.grad = x_packed.grad = None

    optimizer = torch.optim.SGD(padded_quantizer.parameters(), lr=0.1)
    batches = [padded_batch([5, 3, 4], 6, seed=seed) for seed in range(4)]
    for batch, batch_mask in batches[:2]:
        optimizer.zero_grad()
        padded_quantizer(batch, mask=batch_mask).quantized.pow(2).sum().backward()
        optimizer.step()
    torch.manual_seed(1)
    resumed = make()
    resumed.load_state_dict(copy.deepcopy(padded_quantizer.state_dict()))
    for batch, batch_mask in batches[2:]:
        assert torch.equal(padded_quantizer(batch, mask=batch_mask).quantized, resumed(batch, mask=batch_mask).quantized)


def test_fsq_extras_refusals():
    with pytest.raises(ValueError, match="noise_dropout must be in"):
        FiniteScalarQuantizer(3, [4, 4, 4], noise_dropout=1.5)
    with pytest.raises(ValueError, match="eps.*symmetric=True.*drop eps or symmetric"):
        FiniteScalarQuantizer(3, [4, 4, 4], symmetric=True, eps=1e-2)
    assert FiniteScalarQuantizer(3, [4, 4, 4]).eps == 1e-3  # FSQ's default widening
    section = quantizer_section()
    checked = section.check({"kind": "fsq", "levels": [4, 4], "symmetric": True, "noise_dropout": 0.5}, "q")
    assert checked["symmetric"] is True and checked["noise_dropout"] == 0.5
