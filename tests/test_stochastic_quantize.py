"""Stochastic assignment baselines (Huh eq. 12 / SQ-VAE; Gumbel-softmax) and the temperature anneal."""
import pytest
import torch

from seqvq.quantize import nearest_codes
from seqvq.quantize.stochastic import annealed_temperature, gumbel_softmax_quantize, stochastic_codes


def softmax_of_distances(z, codebook, temperature):
    return torch.softmax(-torch.cdist(z.double(), codebook.double()).pow(2) / temperature, dim=1)


@pytest.mark.parametrize("block_elements", [5 * 1000, 1 << 18])  # 1000 rows per block (K = 5); one block
def test_sampling_frequencies_follow_eq_12(block_elements):
    codebook = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.5], [2.0, 2.0], [-1.0, 0.5]]) + 20.0
    z = torch.tensor([[0.3, 0.2], [1.0, 1.0]]) + 20.0
    repeats = 10000
    generator = torch.Generator().manual_seed(0)
    codes = stochastic_codes(z.repeat(repeats, 1), codebook, 0.8, generator=generator,
                             block_elements=block_elements)
    expected = softmax_of_distances(z, codebook, 0.8)
    for row in range(2):
        frequencies = torch.bincount(codes[row::2], minlength=5).double() / repeats
        torch.testing.assert_close(frequencies, expected[row], atol=0.02, rtol=0)  # ~4 standard errors


def test_row_blocks_do_not_change_the_draws():
    generator = torch.Generator().manual_seed(3)
    z, codebook = torch.randn(50, 4, generator=generator), torch.randn(9, 4, generator=generator)
    a = stochastic_codes(z, codebook, 1.0, generator=torch.Generator().manual_seed(1), block_elements=9)
    b = stochastic_codes(z, codebook, 1.0, generator=torch.Generator().manual_seed(1))
    c = stochastic_codes(z, codebook, 1.0, generator=torch.Generator().manual_seed(2))
    assert a.shape == (50,) and a.dtype == torch.long
    assert not torch.equal(a, c)  # the generator drives the draws
    # The CPU generator's uniforms come out in sequence, so the same seed draws the same codes however the rows
    # are blocked (one row per block vs one block).
    assert torch.equal(a, b)


@pytest.mark.parametrize("temperature", [0.0, 1e-6])
def test_vanishing_temperature_is_the_nearest_code(temperature):
    generator = torch.Generator().manual_seed(4)
    z, codebook = torch.randn(2000, 8, generator=generator), torch.randn(64, 8, generator=generator)
    codes = stochastic_codes(z, codebook, temperature, generator=generator)
    assert torch.equal(codes, nearest_codes(z, codebook)[0])


def test_high_temperature_spreads_the_draws_over_every_code():
    generator = torch.Generator().manual_seed(5)
    z, codebook = torch.randn(4000, 3, generator=generator), torch.randn(16, 3, generator=generator)
    cold = stochastic_codes(z, codebook, 1e-6, generator=generator)
    hot = stochastic_codes(z, codebook, 1e3, generator=generator)
    assert torch.unique(hot).numel() == 16
    assert (hot != cold).float().mean() > 0.8


def test_gumbel_hard_output_is_the_sampled_code_and_gradients_reach_every_code():
    generator = torch.Generator().manual_seed(6)
    z = torch.randn(30, 4, generator=generator, requires_grad=True)
    codebook = torch.randn(10, 4, generator=generator, requires_grad=True)
    z_q, codes = gumbel_softmax_quantize(z, codebook, 0.5, hard=True, generator=generator)
    assert torch.equal(z_q.detach(), codebook.detach()[codes])
    (z_q * torch.randn(30, 4, generator=generator)).sum().backward()
    assert z.grad.abs().sum() > 0
    unused = torch.ones(10, dtype=torch.bool)
    unused[codes] = False
    assert unused.any() and (codebook.grad[unused].abs().sum(dim=1) > 0).all()  # through the soft weights


def test_gumbel_soft_output_is_the_weighted_mixture_and_draws_follow_the_softmax():
    codebook = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    z = torch.tensor([[0.4, 0.3]]).repeat(20000, 1)
    z_q, codes = gumbel_softmax_quantize(z, codebook, 1.0, hard=False, generator=torch.Generator().manual_seed(7))
    frequencies = torch.bincount(codes, minlength=3).double() / z.shape[0]
    torch.testing.assert_close(frequencies, softmax_of_distances(z[:1], codebook, 1.0)[0], atol=0.015, rtol=0)
    # Soft output: inside the convex hull of the codes, not equal to any one of them.
    assert (z_q.min(dim=0).values >= -1e-6).all() and (z_q[:, 0] <= 1 + 1e-6).all()
    assert (z_q - codebook[codes]).abs().sum(dim=1).gt(1e-3).float().mean() > 0.5


def test_annealed_temperature_is_exponential_and_clamped():
    assert annealed_temperature(0, 2.0, 0.5, 100) == pytest.approx(2.0)
    assert annealed_temperature(50, 2.0, 0.5, 100) == pytest.approx(1.0)
    assert annealed_temperature(100, 2.0, 0.5, 100) == pytest.approx(0.5)
    assert annealed_temperature(1000, 2.0, 0.5, 100) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="must be > 0"):
        annealed_temperature(0, 0.0, 0.5, 100)


def test_bad_shapes_and_temperatures_are_refused():
    with pytest.raises(ValueError, match="z_e \\(N, d\\) and codebook \\(K, d\\)"):
        stochastic_codes(torch.zeros(3, 2), torch.zeros(4, 3), 1.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        gumbel_softmax_quantize(torch.zeros(3, 2), torch.zeros(4, 2), 0.0)
