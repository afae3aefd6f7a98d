"""Binary spherical quantization (BSQ; Zhao et al. 2024, "Image and Video Tokenization with Binary Spherical
Quantization", arXiv 2406.07548): a codebook-free baseline.

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
follow :mod:`~seqvq.quantize.codebook_free` (shared with FSQ): padded positions enter no loss.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .codebook_free import CodebookFreeQuantizer, code_space_metrics
from .core import QuantizedResult, squared_error
from .distributed import all_reduce_sum, differentiable_all_reduce_sum

ENTROPY_DEFAULTS = {"weight": 0.1, "gamma": 1.0, "temperature": 1.0}


def binary_entropy(probability: torch.Tensor) -> torch.Tensor:
    """``H_b(p) = -p log p - (1 - p) log(1 - p)`` in nats, elementwise; 0 (with finite gradients) at p = 0 and 1."""
    tiny = torch.finfo(probability.dtype).tiny
    return -(probability * torch.log(probability.clamp_min(tiny))
             + (1 - probability) * torch.log((1 - probability).clamp_min(tiny)))


def bsq_entropy(u: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(per_sample, codebook)`` entropies (module docstring) of the valid unit vectors ``u`` (N, L), the codebook
    one over every rank's vectors under ``torch.distributed``; 0 for an empty batch."""
    logits = 4.0 * u / (temperature * math.sqrt(u.shape[-1]))  # q(c_i = +1/sqrt(L) | u) = sigmoid(logit)
    probability = torch.sigmoid(logits)
    # H_b(sigmoid(a)) = softplus(a) - a sigmoid(a): exact, and finite where the sigmoid saturates.
    per_sample = (F.softplus(logits) - logits * probability).sum() / max(u.shape[0], 1)
    sums = differentiable_all_reduce_sum(probability.sum(dim=0))
    count = all_reduce_sum(torch.tensor(float(u.shape[0]), device=u.device, dtype=sums.dtype))
    return per_sample, binary_entropy(sums / count.clamp_min(1.0)).sum()


def entropy_options(options: dict) -> dict[str, float]:
    """``entropy_regularizer`` with its defaults filled in; refuses unknown keys and out-of-range values."""
    unknown = set(options) - set(ENTROPY_DEFAULTS)
    if unknown:
        raise ValueError(f"entropy_regularizer takes 'weight', 'gamma' and 'temperature'; got {sorted(unknown)}")
    filled = {key: float(value) for key, value in {**ENTROPY_DEFAULTS, **options}.items()}
    if min(filled.values()) < 0 or filled["temperature"] == 0:
        raise ValueError(f"entropy_regularizer needs weight >= 0, gamma >= 0 and temperature > 0; got {filled}")
    return filled


class BinarySphericalQuantizer(CodebookFreeQuantizer):
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

    def __init__(self, dim: int, bits: int, *, pre_norm: bool = False, commitment: float = 0.25,
                 entropy_regularizer: dict | None = None, channel_dim: int = -1):
        if not 1 <= bits <= 62:
            raise ValueError(f"BinarySphericalQuantizer: bits must be in 1..62 (int64 codes), got {bits}")
        super().__init__(dim, bits, pre_norm, channel_dim)
        self.bits, self.commitment = bits, commitment
        self.entropy_regularizer = entropy_options(entropy_regularizer) if entropy_regularizer is not None else None
        self.codebook_size = 2**bits
        self.register_buffer("powers", 2 ** torch.arange(bits, dtype=torch.long), persistent=False)

    def quantize(self, x: torch.Tensor, mask: torch.Tensor | None, lengths: torch.Tensor | None) -> QuantizedResult:
        x_last, mask, h = self.valid_inputs(x, mask, lengths)
        u = F.normalize(h, dim=-1)
        positive = u >= 0
        q = torch.where(positive, 1.0, -1.0).to(u.dtype) / math.sqrt(self.bits)
        on_sphere = u + (q - u).detach()  # straight-through sign
        codes = (positive.long() * self.powers).sum(dim=-1)
        commitment = squared_error(u, q)
        loss, losses = self.commitment * commitment, {"commitment": commitment}
        if self.training and self.entropy_regularizer is not None:
            options = self.entropy_regularizer
            per_sample, codebook = bsq_entropy(u, options["temperature"])
            losses["entropy"] = per_sample - options["gamma"] * codebook
            loss = loss + options["weight"] * losses["entropy"]
        metrics = {**code_space_metrics(codes), "quantization_error": commitment.detach()}
        return self.output(x, x_last, mask, on_sphere, codes, loss, losses, metrics)

    def codes_to_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode codes ``(...)`` to vectors ``(..., dim)``; code -1 decodes to zeros."""
        bits = (codes.clamp_min(0).unsqueeze(-1) // self.powers) % 2
        on_sphere = (2.0 * bits.float() - 1.0) / math.sqrt(self.bits)
        return self.decode_width(on_sphere) * (codes >= 0).unsqueeze(-1)
