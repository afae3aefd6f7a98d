"""Bits per dimension and the NELBO of a deterministic VQ autoencoder (Łańcucki et al. 2020 §IV-B, eq. 9), and the
bits per second of a token stream (discrete units, a bottleneck's codes).

With a deterministic encoder q(x), -ELBO = -log p(x | z = q(x)) - log p(z = q(x)). In bits per pixel:
NELBO = BPD + (bits of one latent under the prior) / (pixels one latent stands for). The prior is uniform over
the K codes (log2 K bits) or the unigram of observed code frequencies (log2 perplexity bits on average).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

import torch

from seqvq.quantize.core import perplexity


def bits_per_dim(nll_nats: float, num_pixels: int) -> float:
    """Reconstruction bits/dim = summed NLL in nats / (ln 2 * number of pixels)."""
    if num_pixels <= 0:
        raise ValueError(f"bits_per_dim needs at least one pixel, got {num_pixels}")
    return float(nll_nats) / (math.log(2) * num_pixels)


def pixels_per_latent(height: int, width_stride: int) -> int:
    """Pixels one latent stands for: a latent covers `width_stride` columns of `height` pixels."""
    return height * width_stride


def code_perplexity(codes: torch.Tensor, codebook_size: int) -> float:
    """2 ** (entropy in bits of the code unigram); padded positions (code -1) are ignored."""
    valid = codes[codes >= 0].reshape(-1)
    if valid.numel() == 0:
        raise ValueError("code_perplexity needs at least one valid code")
    return float(perplexity(torch.bincount(valid, minlength=codebook_size).double()))


def nelbo_bits(bpd: float, bits_per_latent: float, pixels_per_latent: float) -> float:
    """BPD plus the cost of transmitting one latent, amortized over the pixels it covers (eq. 9)."""
    return bpd + bits_per_latent / pixels_per_latent


def uniform_nelbo(bpd: float, codebook_size: int, pixels_per_latent: float) -> float:
    """NELBO with a uniform prior p(z) = 1/K: BPD + log2(K) / pixels per latent."""
    return nelbo_bits(bpd, math.log2(codebook_size), pixels_per_latent)


def unigram_nelbo(bpd: float, perplexity: float, pixels_per_latent: float) -> float:
    """NELBO with the unigram prior of observed code frequencies: BPD + log2(perplexity) / pixels per latent."""
    return nelbo_bits(bpd, math.log2(perplexity), pixels_per_latent)


def stream_bit_rate(sequences: Iterable[Iterable[int]], vocabulary: int, seconds: float) -> dict[str, float]:
    """Bits per second of a token stream (the utterances' token sequences over ``seconds`` of speech): nominal,
    log2 of the ``vocabulary`` per token, and empirical, the entropy of the tokens' unigram per token (the rate an
    ideal unigram coder needs); with the tokens per second."""
    counts = Counter(token for sequence in sequences for token in sequence)
    total = sum(counts.values())
    entropy = -sum(c / total * math.log2(c / total) for c in counts.values())
    return {"tokens_per_second": total / seconds, "vocabulary": vocabulary,
            "nominal_bps": total / seconds * math.log2(vocabulary), "entropy_bps": total / seconds * entropy}
