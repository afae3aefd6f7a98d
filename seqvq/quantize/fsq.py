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
from torch import nn

from .core import QuantizedResult, channel_last_with_mask, perplexity
from .norm import MaskedBatchNorm


def code_space_metrics(codes: torch.Tensor) -> dict[str, torch.Tensor]:
    """``perplexity`` (2^H) and ``active_codes`` of the valid codes (N,), from their distinct values."""
    if codes.numel() == 0:
        zero = codes.new_zeros((), dtype=torch.float)
        return {"perplexity": zero + 1, "active_codes": zero}
    counts = torch.unique(codes, return_counts=True)[1].float()
    return {"perplexity": perplexity(counts), "active_codes": counts.new_tensor(float(counts.numel()))}


def place_valid(x_last: torch.Tensor, mask: torch.Tensor | None, valid_out: torch.Tensor, valid_codes: torch.Tensor):
    """Scatter the valid outputs (N, D) and codes (N,) back on the input grid; padding keeps the input, code -1."""
    if mask is None:
        return valid_out.reshape(x_last.shape), valid_codes.reshape(x_last.shape[:-1])
    quantized = x_last.index_put((mask,), valid_out.to(x_last.dtype))
    codes = valid_codes.new_full(x_last.shape[:-1], -1).index_put((mask,), valid_codes)
    return quantized, codes


class FiniteScalarQuantizer(nn.Module):
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
        super().__init__()
        if not levels or any(int(level) < 2 for level in levels):
            raise ValueError(f"FiniteScalarQuantizer: levels must be a non-empty list of integers >= 2, got {levels}")
        self.codebook_size = math.prod(int(level) for level in levels)
        if self.codebook_size >= 2**63:
            raise ValueError(f"FiniteScalarQuantizer: {self.codebook_size} codes do not fit int64 codes; use fewer "
                             "or smaller levels")
        self.dim, self.channel_dim, self.eps = dim, channel_dim, eps
        level_tensor = torch.tensor([int(level) for level in levels], dtype=torch.long)
        basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), level_tensor[:-1]]), dim=0)
        # Constants of the level layout, buffers so they follow .to(device) (not trained, not state).
        self.register_buffer("levels", level_tensor, persistent=False)
        self.register_buffer("basis", basis, persistent=False)
        width = len(levels)
        self.norm = MaskedBatchNorm(dim) if pre_norm else None
        self.project_in = nn.Linear(dim, width) if dim != width else None
        self.project_out = nn.Linear(width, dim) if dim != width else None

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash each channel into the range of its levels (before rounding)."""
        levels = self.levels.to(z.dtype)
        half_level = (levels - 1) * (1 + self.eps) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0).to(z.dtype)
        shift = torch.atanh(offset / half_level)
        return torch.tanh(z + shift) * half_level - offset

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> QuantizedResult:
        channel_dim = self.channel_dim % x.dim()
        x_last, mask = channel_last_with_mask(x, self.dim, self.channel_dim, mask, lengths)
        if self.norm is not None:
            x_last = self.norm(x_last, mask)
        z = x_last.reshape(-1, self.dim) if mask is None else x_last[mask]
        h = self.project_in(z) if self.project_in is not None else z
        bounded = self.bound(h)
        rounded = bounded.round()
        half_width = (self.levels // 2).to(h.dtype)
        levels_out = (bounded + (rounded - bounded).detach()) / half_width  # straight-through rounding
        codes = ((rounded.long() + self.levels // 2) * self.basis).sum(dim=-1)
        out = self.project_out(levels_out) if self.project_out is not None else levels_out
        quantized, grid_codes = place_valid(x_last, mask, out, codes)
        loss = x_last.new_zeros(())
        return QuantizedResult(quantized.movedim(-1, channel_dim), grid_codes, loss, {},
                               code_space_metrics(codes.detach()))

    def codes_to_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode codes ``(...)`` to vectors ``(..., dim)``; code -1 decodes to zeros."""
        digits = (codes.clamp_min(0).unsqueeze(-1) // self.basis) % self.levels
        half_width = self.levels // 2
        levels_out = (digits - half_width).float() / half_width.float()
        out = self.project_out(levels_out) if self.project_out is not None else levels_out
        return out * (codes >= 0).unsqueeze(-1)
