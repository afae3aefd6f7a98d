"""Lookup-free quantization (LFQ; Yu et al. 2023, "Language Model Beats Diffusion — Tokenizer is Key to Visual
Generation" (MAGVIT-v2), arXiv 2310.05737, §3.1): binary codes without a codebook to look up.

The input is projected to ``L = bits`` channels ``z``, and each channel is quantized to its sign (eq. 3),

    q(z_i) = sign(z_i) = -1{z_i <= 0} + 1{z_i > 0},

so the implicit codebook is the ``2^L`` corners of ``{-1, 1}^L`` and a code's index is the binary number of its
signs, ``Index(z) = sum_i 2^i 1{z_i > 0}`` (channel i = bit i; :meth:`LookupFreeQuantizer.codes_to_bits` and
:meth:`~LookupFreeQuantizer.bits_to_codes` convert).  Gradients pass straight through the sign (``z + sg(q - z)``).
``loss`` is ``commitment`` x ``||z - sg q||^2`` (mean over valid vectors and channels; 0.25 by default, the
VQ-VAE weight, as for BSQ), reported as ``losses["commitment"]``.

Entropy penalty (§3.1; optional, ``entropy_regularizer``).  The soft assignment of ``z`` to the codes is
``q(c|z) = softmax_c(-||z - c||^2 / t)``; since ``||z - c||^2 = ||z||^2 + L - 2 c.z``, it factorizes over the
bits, ``q(c|z) = prod_i q(c_i|z_i)`` with ``q(c_i = +1 | z_i) = sigmoid(4 z_i / t)``.  The penalty is

    entropy = E_z[H(q(c|z))]  -  gamma * H(E_z[q(c|z)]),

the mean per-sample entropy (each assignment confident) minus the codebook entropy of the batch's mean assignment
(the batch spread over the codes); the paper's penalty is gamma = 1.  The per-sample entropy is exact and cheap:
the entropy of a product is the sum of the per-bit binary entropies.  The batch mean of factorized distributions
does not factorize, but it factorizes over the two halves A, B of the bits: with ``P_A[n, a]`` the probability of
the bits of half A taking the values ``a`` (a product over those bits) and likewise ``P_B``,

    E_z[q(a, b | z)] = (1/N) sum_n P_A[n, a] P_B[n, b] = (P_A^T P_B / N)[a, b],

a matrix product holding ``N x 2^ceil(L/2)`` numbers instead of ``N x 2^L``; its entropy over all ``2^L`` entries is
the exact codebook entropy (``codebook_entropy="exact"``, the default; up to ``MAX_EXACT_BITS`` bits, where the
mean holds 2^20 numbers).  ``codebook_entropy="per_bit"`` uses BSQ's approximation instead (Zhao et al. 2024,
eq. 8; :mod:`.bsq`): the sum of the entropies of the mean's per-bit marginals, an upper bound of the exact one,
O(N L) for any ``L``.  ``loss`` gains ``weight`` x ``entropy``, reported as ``losses["entropy"]``, while training
only.  Defaults: weight 0.1, gamma 1 and t = 0.01 (inverse temperature 100), those of the public MAGVIT-v2
reimplementations.  Under ``torch.distributed`` the codebook entropy is the global batch's (the sums of ``P_A^T
P_B`` or of the per-bit probabilities and the counts are all-reduced, differentiably); the per-sample part, like
the commitment loss, is each rank's own mean.

BSQ (:class:`~seqvq.quantize.bsq.BinarySphericalQuantizer`) is LFQ on the unit sphere and subclasses this one.
Inputs of another width than ``bits`` go through learned linear projections in and out; padding and metrics follow
:mod:`~seqvq.quantize.codebook_free`: padded positions enter no loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .codebook_free import CodebookFreeQuantizer, code_space_metrics
from .core import QuantizedResult, squared_error
from .distributed import all_reduce_sum, differentiable_all_reduce_sum

ENTROPY_KEYS = ("weight", "gamma", "temperature")
MAX_EXACT_BITS = 20  # the exact codebook entropy's mean distribution holds 2^bits numbers


def binary_entropy(probability: torch.Tensor) -> torch.Tensor:
    """``H_b(p) = -p log p - (1 - p) log(1 - p)`` in nats, elementwise; 0 (with finite gradients) at p = 0 and 1."""
    tiny = torch.finfo(probability.dtype).tiny
    return -(probability * torch.log(probability.clamp_min(tiny))
             + (1 - probability) * torch.log((1 - probability).clamp_min(tiny)))


def entropy_options(options: dict, defaults: dict[str, float]) -> dict[str, float]:
    """``entropy_regularizer`` with its ``defaults`` filled in; refuses unknown keys and out-of-range values."""
    unknown = set(options) - set(ENTROPY_KEYS)
    if unknown:
        raise ValueError(f"entropy_regularizer takes 'weight', 'gamma' and 'temperature'; got {sorted(unknown)}")
    filled = {key: float(value) for key, value in {**defaults, **options}.items()}
    if min(filled.values()) < 0 or filled["temperature"] == 0:
        raise ValueError(f"entropy_regularizer needs weight >= 0, gamma >= 0 and temperature > 0; got {filled}")
    return filled


def per_sample_bit_entropy(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(per_sample, probability)``: the mean over the N vectors of ``sum_i H_b(p_ni)`` for the per-bit logits
    (N, L), ``p = sigmoid(logits)``, and ``p`` itself."""
    probability = torch.sigmoid(logits)
    # H_b(sigmoid(a)) = softplus(a) - a sigmoid(a): exact, and finite where the sigmoid saturates.
    per_sample = (F.softplus(logits) - logits * probability).sum() / max(logits.shape[0], 1)
    return per_sample, probability


def per_bit_codebook_entropy(probability: torch.Tensor) -> torch.Tensor:
    """BSQ's eq. 8: ``sum_i H_b(p̄_i)`` of the per-bit marginals ``p̄`` of the mean assignment of every rank's
    vectors (N, L); 0 for an empty batch."""
    sums = differentiable_all_reduce_sum(probability.sum(dim=0))
    count = all_reduce_sum(torch.tensor(float(probability.shape[0]), device=probability.device, dtype=sums.dtype))
    return binary_entropy(sums / count.clamp_min(1.0)).sum()


def half_code_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """``P[n, a]``: the probability that the bits of ``logits`` (N, k) take the values of ``a`` in 0..2^k - 1 (bit
    i of ``a`` = column i), the product of the per-bit probabilities; (N, 1) of ones for k = 0."""
    probabilities = logits.new_ones(logits.shape[0], 1)
    for column in range(logits.shape[1]):
        bit = logits[:, column:column + 1]
        probabilities = torch.cat([probabilities * torch.sigmoid(-bit), probabilities * torch.sigmoid(bit)], dim=1)
    return probabilities


def exact_codebook_entropy(logits: torch.Tensor) -> torch.Tensor:
    """``H(E_z[q(c|z)])`` over all ``2^L`` codes of every rank's vectors' per-bit logits (N, L), from the product of
    the two halves' code probabilities (module docstring); 0 for an empty batch."""
    half = (logits.shape[1] + 1) // 2
    sums = differentiable_all_reduce_sum(half_code_probabilities(logits[:, :half]).T
                                         @ half_code_probabilities(logits[:, half:]))
    count = all_reduce_sum(torch.tensor(float(logits.shape[0]), device=logits.device, dtype=sums.dtype))
    mean = sums / count.clamp_min(1.0)
    return -(mean * torch.log(mean.clamp_min(torch.finfo(mean.dtype).tiny))).sum()


class LookupFreeQuantizer(CodebookFreeQuantizer):
    """LFQ with ``bits`` binary channels (at most 62, so codes fit int64).

    Args:
        dim: channels of the input; projected to ``bits`` and back when they differ.
        bits: quantized channels; ``2^bits`` implicit codes.
        commitment: weight of ``||z - sg q||^2`` in ``loss``.
        entropy_regularizer: ``{"weight": w, "gamma": gamma, "temperature": t}`` (defaults 0.1, 1.0, 0.01): adds
            w x (mean per-sample entropy - gamma x codebook entropy) to ``loss`` while training, reported as
            ``losses["entropy"]`` (module docstring).  None (the default): no entropy term.
        codebook_entropy: ``"exact"`` (the entropy of the 2^bits mean assignment; bits <= ``MAX_EXACT_BITS`` with
            the penalty on) or ``"per_bit"`` (BSQ's eq. 8 upper bound, any bits).
        pre_norm: BatchNorm over valid positions before the quantizer (Łańcucki §III-A, "+BN"), as for
            :class:`VectorQuantizer`.
        channel_dim: where the channels are (-1 = channel-last).
    """

    entropy_defaults = {"weight": 0.1, "gamma": 1.0, "temperature": 0.01}
    zero_is_positive = False  # eq. 3: sign(0) = -1

    def __init__(self, dim: int, bits: int, *, pre_norm: bool = False, commitment: float = 0.25,
                 entropy_regularizer: dict | None = None, codebook_entropy: str = "exact", channel_dim: int = -1):
        name = type(self).__name__
        if not 1 <= bits <= 62:
            raise ValueError(f"{name}: bits must be in 1..62 (int64 codes), got {bits}")
        if codebook_entropy not in ("exact", "per_bit"):
            raise ValueError(f"{name}: codebook_entropy must be 'exact' or 'per_bit', got {codebook_entropy!r}")
        if entropy_regularizer is not None and codebook_entropy == "exact" and bits > MAX_EXACT_BITS:
            raise ValueError(f"{name}: codebook_entropy='exact' holds the mean assignment over all 2^bits codes, "
                             f"at most {MAX_EXACT_BITS} bits, and bits={bits} with entropy_regularizer on; use "
                             "codebook_entropy='per_bit' or fewer bits")
        super().__init__(dim, bits, pre_norm, channel_dim)
        self.bits, self.commitment, self.codebook_entropy = bits, commitment, codebook_entropy
        self.entropy_regularizer = (entropy_options(entropy_regularizer, self.entropy_defaults)
                                    if entropy_regularizer is not None else None)
        self.codebook_size = 2**bits
        self.register_buffer("powers", 2 ** torch.arange(bits, dtype=torch.long), persistent=False)

    def latent(self, h: torch.Tensor) -> torch.Tensor:
        """The vectors that are quantized, from the valid inputs at the quantized width (LFQ: as they are)."""
        return h

    def corners(self, signs: torch.Tensor) -> torch.Tensor:
        """The code vectors of the per-channel signs (+-1) (LFQ: the signs themselves)."""
        return signs

    def entropy_terms(self, z: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(per_sample, codebook)`` entropies of the soft assignment of the valid latents ``z`` (module
        docstring)."""
        logits = 4.0 * z / temperature  # q(c_i = +1 | z_i) = sigmoid(logit)
        per_sample, probability = per_sample_bit_entropy(logits)
        if self.codebook_entropy == "per_bit":
            return per_sample, per_bit_codebook_entropy(probability)
        return per_sample, exact_codebook_entropy(logits)

    def quantize(self, x: torch.Tensor, mask: torch.Tensor | None, lengths: torch.Tensor | None) -> QuantizedResult:
        x_last, mask, h = self.valid_inputs(x, mask, lengths)
        z = self.latent(h)
        positive = z >= 0 if self.zero_is_positive else z > 0
        q = self.corners(torch.where(positive, 1.0, -1.0).to(z.dtype))
        straight_through = z + (q - z).detach()
        codes = self.bits_to_codes(positive.long())
        commitment = squared_error(z, q)
        loss, losses = self.commitment * commitment, {"commitment": commitment}
        if self.training and self.entropy_regularizer is not None:
            options = self.entropy_regularizer
            per_sample, codebook = self.entropy_terms(z, options["temperature"])
            losses["entropy"] = per_sample - options["gamma"] * codebook
            loss = loss + options["weight"] * losses["entropy"]
        metrics = {**code_space_metrics(codes), "quantization_error": commitment.detach()}
        return self.output(x, x_last, mask, straight_through, codes, loss, losses, metrics)

    def bits_to_codes(self, bits: torch.Tensor) -> torch.Tensor:
        """Bits (..., bits) of 0/1 -> codes (...): ``sum_i 2^i bit_i``."""
        return (bits.long() * self.powers).sum(dim=-1)

    def codes_to_bits(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (...) -> their bits (..., bits) of 0/1 (int64); the inverse of :meth:`bits_to_codes`."""
        return (codes.clamp_min(0).unsqueeze(-1) // self.powers) % 2

    def codes_to_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode codes ``(...)`` to vectors ``(..., dim)``; code -1 decodes to zeros."""
        signs = 2.0 * self.codes_to_bits(codes).float() - 1.0
        return self.decode_width(self.corners(signs)) * (codes >= 0).unsqueeze(-1)
