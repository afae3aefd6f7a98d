"""Bits/dim and NELBO formulas on hand-computed examples (Łańcucki et al. 2020 §IV-B)."""
import math

import pytest
import torch

from seqvq.metrics.bits import (bits_per_dim, code_perplexity, nelbo_bits, pixels_per_latent, stream_bit_rate,
                                uniform_nelbo, unigram_nelbo)


def test_bits_per_dim():
    # 8 pixels each predicted with probability 1/2: 8 ln 2 nats -> exactly 1 bit per pixel
    assert bits_per_dim(8 * math.log(2), 8) == pytest.approx(1.0)
    # 4 pixels with probability 1/4 and 4 certain ones: 4 * ln 4 nats over 8 pixels = 1 bit/dim
    assert bits_per_dim(4 * math.log(4), 8) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        bits_per_dim(1.0, 0)


def test_geometry():
    assert pixels_per_latent(32, 4) == 128
    assert pixels_per_latent(16, 8) == 128
    assert pixels_per_latent(32, 2) == 64


def test_paper_row():
    """Table II, '+ BN + data-dep reest': BPD 0.200, K = 4096, perplexity 2388 on 32-px lines, stride 4."""
    ppl = pixels_per_latent(32, 4)
    assert uniform_nelbo(0.200, 4096, ppl) == pytest.approx(0.200 + 12 / 128)  # 0.29375 -> "0.294"
    assert round(uniform_nelbo(0.200, 4096, ppl), 3) == 0.294
    assert round(unigram_nelbo(0.200, 2388, ppl), 3) == 0.288
    assert round(unigram_nelbo(0.213, 322, ppl), 3) == 0.278  # 'vanilla VQ'


def test_nelbo_amortization():
    assert nelbo_bits(0.5, 8.0, 16) == pytest.approx(1.0)
    assert uniform_nelbo(0.0, 256, 64) == pytest.approx(8 / 64)
    assert unigram_nelbo(0.1, 1.0, 64) == pytest.approx(0.1)  # one code used: the latents cost nothing


def test_code_perplexity():
    assert code_perplexity(torch.tensor([3, 3, 3, -1]), 8) == pytest.approx(1.0)
    assert code_perplexity(torch.tensor([[0, 1], [2, 3]]), 8) == pytest.approx(4.0)
    # p = (1/2, 1/4, 1/4): H = 1.5 bits -> 2 ** 1.5
    assert code_perplexity(torch.tensor([0, 0, 1, 2, -1, -1]), 4) == pytest.approx(2 ** 1.5)
    with pytest.raises(ValueError):
        code_perplexity(torch.tensor([-1, -1]), 4)


def test_stream_bit_rate():
    # 8 tokens in 2 s over a vocabulary of 8: 4 tokens/s of 3 nominal bits; the unigram {0: 1/2, 1: 1/4, 2: 1/4}
    # has an entropy of 1.5 bits a token
    rate = stream_bit_rate([[0, 0, 1, 2], [0, 1, 0, 2]], 8, 2.0)
    assert rate["tokens_per_second"] == 4.0 and rate["nominal_bps"] == 12.0
    assert rate["entropy_bps"] == pytest.approx(6.0)
