"""Finite scalar quantization (FSQ; Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple",
arXiv 2309.15505): a codebook-free baseline.

Each of ``len(levels)`` channels is bounded to ``L_i`` values and rounded, with straight-through gradients through
the rounding (§2):

    bound(z) = tanh(z + shift) * (L - 1)(1 + eps) / 2 - offset,        z_hat = round(bound(z)) / floor(L/2),

with ``offset = 0.5`` and ``shift = atanh(offset / half_level)`` for even ``L`` (so the rounded values are the ``L``
integers ``-L/2 .. L/2 - 1``), 0 for odd ``L`` (``-(L-1)/2 .. (L-1)/2``).  The implicit codebook is the product of
the levels; a code's index is the mixed-radix number of its per-channel levels.  There is no codebook to collapse
and no auxiliary loss (``loss`` is 0).

Inputs of another width than ``len(levels)`` go through a learned linear projection in and out (our choice, so that
FSQ drops into a model whose bottleneck has another width).  Padding follows :class:`VectorQuantizer`: padded
positions pass through unchanged with code -1 and touch no metric.  Metrics (``perplexity``, ``active_codes``) are
those of this pass's valid codes, from their unique values (the implicit codebook may be too large to count).
The quantizer keeps no state beyond the projections, so nothing is reduced under DDP and the metrics are per rank.
"""
from __future__ import annotations

import math

import torch

from .codebook_free import CodebookFreeQuantizer, code_space_metrics
from .core import QuantizedResult


class FiniteScalarQuantizer(CodebookFreeQuantizer):
    """FSQ with per-channel ``levels`` (e.g. ``[8, 5, 5, 5]`` for about 2^10 codes; FSQ Table 1).

    Args:
        dim: channels of the input; projected to ``len(levels)`` and back when they differ.
        levels: values per quantized channel, each >= 2.
        pre_norm: BatchNorm over valid positions before the quantizer (Łańcucki §III-A, "+BN"), as for
            :class:`VectorQuantizer`.
        channel_dim: where the channels are (-1 = channel-last).
        eps: widens the bound slightly past the outer levels (``1 + eps``), so that ``L = 2`` (``shift =
            atanh(0.5 / half_level)``) is finite and the outer levels are reached.
    """

    def __init__(self, dim: int, levels: list[int], *, pre_norm: bool = False, channel_dim: int = -1,
                 eps: float = 1e-3):
        if not levels or any(int(level) < 2 for level in levels):
            raise ValueError(f"FiniteScalarQuantizer: levels must be a non-empty list of integers >= 2, got {levels}")
        codebook_size = math.prod(int(level) for level in levels)
        if codebook_size >= 2**63:
            raise ValueError(f"FiniteScalarQuantizer: {codebook_size} codes do not fit int64 codes; use fewer "
                             "or smaller levels")
        super().__init__(dim, len(levels), pre_norm, channel_dim)
        self.codebook_size, self.eps = codebook_size, eps
        level_tensor = torch.tensor([int(level) for level in levels], dtype=torch.long)
        basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), level_tensor[:-1]]), dim=0)
        # Constants of the level layout, buffers so they follow .to(device) (not trained, not state).
        self.register_buffer("levels", level_tensor, persistent=False)
        self.register_buffer("basis", basis, persistent=False)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash each channel into the range of its levels (before rounding)."""
        levels = self.levels.to(z.dtype)
        half_level = (levels - 1) * (1 + self.eps) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0).to(z.dtype)
        shift = torch.atanh(offset / half_level)
        return torch.tanh(z + shift) * half_level - offset

    def quantize(self, x: torch.Tensor, mask: torch.Tensor | None, lengths: torch.Tensor | None) -> QuantizedResult:
        x_last, mask, h = self.valid_inputs(x, mask, lengths)
        bounded = self.bound(h)
        half_width = self.levels // 2
        # Each channel's level as a digit in 0..L-1, in int64 (exact for any L).  The bound reaches (L - 1) eps / 2
        # past the outer levels, which rounds one level further once that is 1/2 (L >= 1001): clamp.
        digits = torch.minimum((bounded.round().long() + half_width).clamp_min(0), self.levels - 1)
        rounded = (digits - half_width).to(h.dtype)  # as codes_to_vectors computes it
        levels_out = (bounded + (rounded - bounded).detach()) / half_width.to(h.dtype)  # straight-through rounding
        codes = (digits * self.basis).sum(dim=-1)
        return self.output(x, x_last, mask, levels_out, codes, x_last.new_zeros(()), {},
                           code_space_metrics(codes.detach()))

    def codes_to_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode codes ``(...)`` to vectors ``(..., dim)``; code -1 decodes to zeros."""
        digits = (codes.clamp_min(0).unsqueeze(-1) // self.basis) % self.levels
        half_width = self.levels // 2
        levels_out = (digits - half_width).float() / half_width.float()
        return self.decode_width(levels_out) * (codes >= 0).unsqueeze(-1)
