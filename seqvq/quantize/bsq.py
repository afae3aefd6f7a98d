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
follow :class:`~seqvq.quantize.fsq.FiniteScalarQuantizer`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .core import QuantizedResult, channel_last_with_mask, squared_error
from .fsq import code_space_metrics, place_valid
from .norm import MaskedBatchNorm


class BinarySphericalQuantizer(nn.Module):
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
        super().__init__()
        if not 1 <= bits <= 62:
            raise ValueError(f"BinarySphericalQuantizer: bits must be in 1..62 (int64 codes), got {bits}")
        self.dim, self.bits, self.commitment, self.channel_dim = dim, bits, commitment, channel_dim
        self.codebook_size = 2**bits
        self.register_buffer("powers", 2 ** torch.arange(bits, dtype=torch.long), persistent=False)
        self.norm = MaskedBatchNorm(dim) if pre_norm else None
        self.project_in = nn.Linear(dim, bits) if dim != bits else None
        self.project_out = nn.Linear(bits, dim) if dim != bits else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> QuantizedResult:
        channel_dim = self.channel_dim % x.dim()
        x_last, mask = channel_last_with_mask(x, self.dim, self.channel_dim, mask, lengths)
        if self.norm is not None:
            x_last = self.norm(x_last, mask)
        z = x_last.reshape(-1, self.dim) if mask is None else x_last[mask]
        h = self.project_in(z) if self.project_in is not None else z
        u = F.normalize(h, dim=-1)
        positive = u >= 0
        q = torch.where(positive, 1.0, -1.0).to(u.dtype) / math.sqrt(self.bits)
        on_sphere = u + (q - u).detach()  # straight-through sign
        codes = (positive.long() * self.powers).sum(dim=-1)
        out = self.project_out(on_sphere) if self.project_out is not None else on_sphere
        quantized, grid_codes = place_valid(x_last, mask, out, codes)
        commitment = squared_error(u, q)
        metrics = {**code_space_metrics(codes), "quantization_error": commitment.detach()}
        return QuantizedResult(quantized.movedim(-1, channel_dim), grid_codes, self.commitment * commitment,
                               {"commitment": commitment}, metrics)

    def codes_to_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode codes ``(...)`` to vectors ``(..., dim)``; code -1 decodes to zeros."""
        bits = (codes.clamp_min(0).unsqueeze(-1) // self.powers) % 2
        on_sphere = (2.0 * bits.float() - 1.0) / math.sqrt(self.bits)
        out = self.project_out(on_sphere) if self.project_out is not None else on_sphere
        return out * (codes >= 0).unsqueeze(-1)
