"""LFQ (seqvq/quantize/lfq.py): the sign quantizer and its codes, the entropy penalty against its brute-force value
over all 2^bits codes, BSQ as LFQ on the sphere, and the refusals."""
import itertools
import math

import pytest
import torch

import seqvq
from seqvq import BinarySphericalQuantizer, LookupFreeQuantizer
from seqvq.quantize import quantizer_section

from helpers import entropy_spreads_a_collapsed_batch


def test_lfq_signs_codes_and_straight_through_gradient():
    quantizer = LookupFreeQuantizer(4, 4, commitment=0.0)
    h = torch.tensor([[[0.5, -2.0, 0.0, 3.0]]], requires_grad=True)
    result = quantizer(h)
    # eq. 3: sign(z) = -1{z <= 0} + 1{z > 0}, so 0 is -1; the code is sum_i 2^i 1{z_i > 0}.
    assert torch.equal(result.quantized, torch.tensor([[[1.0, -1.0, -1.0, 1.0]]]))
    assert int(result.codes) == 1 + 8
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0])
    (result.quantized * weights).sum().backward()
    assert torch.equal(h.grad, weights.expand_as(h))  # straight through the sign
    assert torch.equal(quantizer.codes_to_vectors(result.codes), result.quantized.detach())


def test_lfq_codes_and_bits_round_trip():
    quantizer = LookupFreeQuantizer(6, 6)
    codes = torch.arange(2**6)
    bits = quantizer.codes_to_bits(codes)
    assert bits.shape == (64, 6) and set(bits.unique().tolist()) == {0, 1}
    assert torch.equal(quantizer.bits_to_codes(bits), codes)
    assert torch.equal(bits[5], torch.tensor([1, 0, 1, 0, 0, 0]))  # channel i = bit i
    vectors = quantizer.codes_to_vectors(codes)
    assert torch.equal(quantizer(vectors.unsqueeze(0)).codes[0], codes)  # every corner codes to itself
    assert (quantizer.codes_to_vectors(torch.tensor([-1])) == 0).all()
    wide = LookupFreeQuantizer(3, 62)
    top = torch.tensor([2**62 - 1, 2**61 + 5])
    assert torch.equal(wide.bits_to_codes(wide.codes_to_bits(top)), top)


def brute_force_entropy(z: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample and codebook entropy of q(c|z) = softmax_c(-||z - c||^2 / t) over every corner c of {-1, 1}^L,
    written out code by code."""
    bits = z.shape[-1]
    corners = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=bits)), dtype=z.dtype)
    assignment = torch.softmax(-torch.cdist(z, corners).pow(2) / temperature, dim=-1)  # (N, 2^L)

    def entropy(p):
        return -(p * torch.log(p.clamp_min(1e-300))).sum(dim=-1)

    return entropy(assignment).mean(), entropy(assignment.mean(dim=0))


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 6])
def test_lfq_entropy_penalty_equals_the_brute_force_value_over_all_codes(bits):
    """The factorized per-sample entropy and the exact codebook entropy (the 2^L mean from the product of the two
    halves' code probabilities) equal the penalty written out over all 2^L codes, value and gradient."""
    generator = torch.Generator().manual_seed(bits)
    x = (torch.randn(3, 5, bits, generator=generator, dtype=torch.float64) * 0.7)
    lengths = torch.tensor([5, 2, 4])
    mask = torch.arange(5) < lengths.unsqueeze(1)
    options = {"weight": 2.0, "gamma": 0.5, "temperature": 0.8}
    quantizer = LookupFreeQuantizer(bits, bits, commitment=0.0, entropy_regularizer=options)
    padded = x.clone().requires_grad_()
    result = quantizer(padded, lengths=lengths)
    valid = x[mask].clone().requires_grad_()
    per_sample, codebook = brute_force_entropy(valid, 0.8)
    expected = per_sample - 0.5 * codebook
    torch.testing.assert_close(result.losses["entropy"], expected)
    torch.testing.assert_close(result.loss, 2.0 * expected)
    result.losses["entropy"].backward()
    expected.backward()
    torch.testing.assert_close(padded.grad[mask], valid.grad)
    assert (padded.grad[~mask] == 0).all()


def test_lfq_per_bit_codebook_entropy_is_bsq_eq8_and_bounds_the_exact_one():
    torch.manual_seed(0)
    z = torch.randn(1, 40, 4, dtype=torch.float64) + torch.tensor([0.5, -0.3, 0.0, 0.2], dtype=torch.float64)
    options = {"weight": 1.0, "gamma": 1.0, "temperature": 0.5}
    exact = LookupFreeQuantizer(4, 4, commitment=0.0, entropy_regularizer=options)
    per_bit = LookupFreeQuantizer(4, 4, commitment=0.0, entropy_regularizer=options, codebook_entropy="per_bit")
    per_sample, codebook = brute_force_entropy(z[0], 0.5)
    probability = torch.sigmoid(4 * z[0] / 0.5).mean(dim=0)  # marginals of the batch mean, per bit
    bitwise = -(probability * probability.log() + (1 - probability) * (1 - probability).log()).sum()
    torch.testing.assert_close(exact(z).losses["entropy"], per_sample - codebook)
    torch.testing.assert_close(per_bit(z).losses["entropy"], per_sample - bitwise)
    assert bitwise > codebook


def test_lfq_entropy_only_while_training_and_spreads_a_collapsed_batch():
    """Gradient steps on 16 vectors that share one code: the entropy term spreads them over most of the 8 codes;
    the commitment loss alone keeps them on one."""
    quantizer = LookupFreeQuantizer(3, 3, entropy_regularizer={"weight": 1.0})
    x = torch.randn(2, 5, 3)
    assert set(quantizer(x).losses) == {"commitment", "entropy"}
    assert set(quantizer.eval()(x).losses) == {"commitment"}
    entropy_spreads_a_collapsed_batch(LookupFreeQuantizer, temperature=1.0)


def test_lfq_defaults_are_the_papers_weights():
    assert LookupFreeQuantizer(8, 8).entropy_regularizer is None
    quantizer = LookupFreeQuantizer(8, 8, entropy_regularizer={})  # as for BSQ: the penalty with its defaults
    assert quantizer.entropy_regularizer == {"weight": 0.1, "gamma": 1.0, "temperature": 0.01}
    assert quantizer.commitment == 0.25 and quantizer.codebook_size == 256


def test_bsq_is_lfq_on_the_unit_sphere():
    """BSQ quantizes h / ||h|| with corners +-1/sqrt(L) and shares LFQ's codes; LFQ on the normalized input with
    corners scaled by 1/sqrt(L) gives the same output."""
    torch.manual_seed(0)
    h = torch.randn(2, 6, 5)
    bsq, lfq = BinarySphericalQuantizer(5, 5), LookupFreeQuantizer(5, 5)
    assert isinstance(bsq, LookupFreeQuantizer)
    u = torch.nn.functional.normalize(h, dim=-1)
    spherical, lookup_free = bsq(h), lfq(u)
    assert torch.equal(spherical.codes, lookup_free.codes)
    torch.testing.assert_close(spherical.quantized, lookup_free.quantized / math.sqrt(5))


def test_lfq_config_constructor_and_refusals():
    assert isinstance(seqvq.build_quantizer(4, kind="lfq", bits=6), LookupFreeQuantizer)
    section = quantizer_section()
    checked = section.check({"kind": "lfq", "bits": 10, "entropy_regularizer": {"weight": 0.1}}, "q")
    assert checked == {"kind": "lfq", "bits": 10, "entropy_regularizer": {"weight": 0.1}}
    with pytest.raises(ValueError, match="bits must be in 1..62"):
        LookupFreeQuantizer(4, 0)
    with pytest.raises(ValueError, match="codebook_entropy must be 'exact' or 'per_bit'"):
        LookupFreeQuantizer(4, 4, codebook_entropy="approximate")
    with pytest.raises(ValueError, match="codebook_entropy='exact'.*bits=21.*codebook_entropy='per_bit'"):
        LookupFreeQuantizer(4, 21, entropy_regularizer={"weight": 0.1})
    LookupFreeQuantizer(4, 21)  # no penalty: nothing to refuse
    LookupFreeQuantizer(4, 40, entropy_regularizer={"weight": 0.1}, codebook_entropy="per_bit")
    with pytest.raises(ValueError, match="takes 'weight', 'gamma' and 'temperature'"):
        LookupFreeQuantizer(4, 4, entropy_regularizer={"tau": 1.0})


def test_an_lfq_model_reports_that_it_quantizes():
    """Evaluation's ``quantized`` figure (seqvq/train/warmup.py) counts LFQ, like FSQ and BSQ, as a quantizer."""
    from seqvq.train.warmup import quantized_figure

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), LookupFreeQuantizer(4, 4))
    assert quantized_figure(model) == {"quantized": True}
    assert quantized_figure(torch.nn.Linear(3, 4)) == {}
