"""Binary spherical quantization (BSQ; Zhao et al. 2024, "Image and Video Tokenization with Binary Spherical
Quantization", arXiv 2406.07548): a codebook-free baseline.

The input is projected to ``bits`` channels and onto the unit sphere, ``u = h / ||h||``, and each channel is
quantized to its sign, ``q = sign(u) / sqrt(bits)`` — the nearest corner of the hypercube inscribed in the sphere
(``sign(0) = +1``).  Gradients pass straight through the sign (``u + sg(q - u)``), so they reach ``h`` through the
normalisation.  The implicit codebook has ``2^bits`` codes; a code's index is the binary number of its signs
(channel i = bit i).  ``loss`` is ``commitment`` x ``||u - sg q||^2`` (mean over valid vectors and channels),
reported as ``losses["commitment"]``; the quantization error on the sphere is bounded, so the commitment weight is
small (0.25 by default, our choice; the paper's entropy regularizer is not implemented here).

Inputs of another width than ``bits`` go through learned linear projections in and out.  Padding and metrics
follow :mod:`~seqvq.quantize.codebook_free` (shared with FSQ).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .codebook_free import CodebookFreeQuantizer, code_space_metrics
from .core import QuantizedResult, squared_error


class BinarySphericalQuantizer(CodebookFreeQuantizer):
    """BSQ with ``bits`` binary channels (at most 62, so codes fit int64).

    Args:
        dim: channels of the input; projected to ``bits`` and back when they differ.
        bits: quantized channels; ``2^bits`` implicit codes.
        commitment: weight of ``||u - sg q||^2`` in ``loss``.
        pre_norm: BatchNorm over valid positions before the quantizer (Łańcucki §III-A, "+BN"), as for
            :class:`VectorQuantizer`.
        channel_dim: where the channels are (-1 = channel-last).
    """

    def __init__(self, dim: int, bits: int, *, pre_norm: bool = False, commitment: float = 0.25, channel_dim: int = -1):
        if not 1 <= bits <= 62:
            raise ValueError(f"BinarySphericalQuantizer: bits must be in 1..62 (int64 codes), got {bits}")
        super().__init__(dim, bits, pre_norm, channel_dim)
        self.bits, self.commitment = bits, commitment
        self.codebook_size = 2**bits
        self.register_buffer("powers", 2 ** torch.arange(bits, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> QuantizedResult:
        x_last, mask, h = self.valid_inputs(x, mask, lengths)
        u = F.normalize(h, dim=-1)
        positive = u >= 0
        q = torch.where(positive, 1.0, -1.0).to(u.dtype) / math.sqrt(self.bits)
        on_sphere = u + (q - u).detach()  # straight-through sign
        codes = (positive.long() * self.powers).sum(dim=-1)
        commitment = squared_error(u, q)
        metrics = {**code_space_metrics(codes), "quantization_error": commitment.detach()}
        return self.output(x, x_last, mask, on_sphere, codes, self.commitment * commitment, {"commitment": commitment},
                           metrics)

    def codes_to_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode codes ``(...)`` to vectors ``(..., dim)``; code -1 decodes to zeros."""
        bits = (codes.clamp_min(0).unsqueeze(-1) // self.powers) % 2
        on_sphere = (2.0 * bits.float() - 1.0) / math.sqrt(self.bits)
        return self.decode_width(on_sphere) * (codes >= 0).unsqueeze(-1)
