"""Binary spherical quantization (BSQ; Zhao et al. 2024, "Image and Video Tokenization with Binary Spherical
Quantization", arXiv 2406.07548): a codebook-free baseline, lookup-free quantization (:mod:`.lfq`) on the unit
sphere, whose code it shares (codes, straight-through sign, commitment loss, the entropy penalty's parts).

The input is projected to ``L = bits`` channels and onto the unit sphere, ``u = h / ||h||``, and each channel is
quantized to its sign, ``q = sign(u) / sqrt(L)`` — the nearest corner of the hypercube inscribed in the sphere
(``sign(0) = +1``).  Gradients pass straight through the sign (``u + sg(q - u)``), so they reach ``h`` through the
normalisation.  The implicit codebook has ``2^L`` codes; a code's index is the binary number of its signs
(channel i = bit i).  ``loss`` is ``commitment`` x ``||u - sg q||^2`` (mean over valid vectors and channels),
reported as ``losses["commitment"]``; the quantization error on the sphere is bounded, so the commitment weight is
small (0.25 by default, our choice).

Entropy regularizer (the paper's, after LFQ; optional, ``entropy_regularizer``).  The soft assignment of ``u`` to
the implicit codes is ``q(c|u) = softmax_c(-||u - c||^2 / t)``; since ``||u - c||^2 = 2 - 2 c.u`` on the sphere,
it factorizes over the bits, ``q(c|u) = prod_i q(c_i|u_i)`` with

    q(c_i = +-1/sqrt(L) | u_i) = sigmoid(+-4 u_i / (t sqrt(L))).

(The authors' released code computes the same per-bit probabilities, ``sigmoid(4 tau u_i / sqrt(L))``, with an
inverse temperature ``tau`` = our ``1 / t``, default 1; the scale of ``t`` is a convention.)  With ``H_b`` the
binary entropy in nats and ``p_ni = q(c_i = +1/sqrt(L) | u_n)`` for the N valid vectors, the term is

    entropy = (1/N) sum_n sum_i H_b(p_ni)  -  gamma * sum_i H_b(p̄_i),        p̄_i = (1/N) sum_n p_ni.

The first part is the mean per-sample entropy ``E_u[H(q(c|u))]``, exact because ``q(c|u)`` factorizes; minimizing
it makes each assignment confident.  The second stands for the codebook entropy ``H(E_u[q(c|u)])``, to be
maximized so that the batch spreads over the codes.  The batch mean of factorized distributions does not factorize,
so we use the paper's approximation (eq. 8): the entropy of the product of its per-bit marginals p̄_i, the sum of the
per-bit entropies.  It is an upper bound of the exact entropy (equal when the bits are independent over the batch),
costs O(N L) for any ``L`` (the exact one needs the 2^L-entry mean), and cannot see bits that are balanced but
correlated (a batch using only the codes 0...0 and 1...1 gets the maximum ``L log 2``).  ``loss`` gains
``weight`` x ``entropy``, reported as ``losses["entropy"]``; like :class:`VectorQuantizer`'s usage regularizer it
acts while training only.  Under ``torch.distributed`` the sums of ``p_ni`` and the counts are all-reduced
(differentiably) before ``p̄`` is taken, so the codebook entropy is the global batch's; the per-sample part, like
the commitment loss, is each rank's own mean.

Inputs of another width than ``bits`` go through learned linear projections in and out.  Padding and metrics
follow :mod:`~seqvq.quantize.codebook_free` (shared with FSQ and LFQ): padded positions enter no loss.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .lfq import LookupFreeQuantizer, per_bit_codebook_entropy, per_sample_bit_entropy


def bsq_entropy(u: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(per_sample, codebook)`` entropies (module docstring) of the valid unit vectors ``u`` (N, L), the codebook
    one over every rank's vectors under ``torch.distributed``; 0 for an empty batch."""
    logits = 4.0 * u / (temperature * math.sqrt(u.shape[-1]))  # q(c_i = +1/sqrt(L) | u) = sigmoid(logit)
    per_sample, probability = per_sample_bit_entropy(logits)
    return per_sample, per_bit_codebook_entropy(probability)


class BinarySphericalQuantizer(LookupFreeQuantizer):
    """BSQ with ``bits`` binary channels (at most 62, so codes fit int64).

    Args:
        dim: channels of the input; projected to ``bits`` and back when they differ.
        bits: quantized channels; ``2^bits`` implicit codes.
        commitment: weight of ``||u - sg q||^2`` in ``loss``.
        entropy_regularizer: ``{"weight": w, "gamma": gamma, "temperature": t}`` (defaults 0.1, 1.0, 1.0): adds
            w x (mean per-sample entropy - gamma x codebook entropy) to ``loss`` while training, reported as
            ``losses["entropy"]`` (the paper's entropy term, eq. 8's factorized codebook entropy; module
            docstring).  None (the default): no entropy term.
        pre_norm: BatchNorm over valid positions before the quantizer (Łańcucki §III-A, "+BN"), as for
            :class:`VectorQuantizer`.
        channel_dim: where the channels are (-1 = channel-last).
    """

    entropy_defaults = {"weight": 0.1, "gamma": 1.0, "temperature": 1.0}
    zero_is_positive = True  # sign(0) = +1

    def __init__(self, dim: int, bits: int, *, pre_norm: bool = False, commitment: float = 0.25,
                 entropy_regularizer: dict | None = None, channel_dim: int = -1):
        super().__init__(dim, bits, pre_norm=pre_norm, commitment=commitment,
                         entropy_regularizer=entropy_regularizer, codebook_entropy="per_bit", channel_dim=channel_dim)

    def latent(self, h: torch.Tensor) -> torch.Tensor:
        """The input on the unit sphere, ``u = h / ||h||``."""
        return F.normalize(h, dim=-1)

    def corners(self, signs: torch.Tensor) -> torch.Tensor:
        """The corners of the hypercube inscribed in the unit sphere, ``sign / sqrt(L)``."""
        return signs / math.sqrt(self.bits)

    def entropy_terms(self, z: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        return bsq_entropy(z, temperature)
