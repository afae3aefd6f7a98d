"""What the codebook-free quantizers (FSQ, :mod:`.fsq`; BSQ, :mod:`.bsq`) share: an optional BatchNorm over valid
positions, learned linear projections to the quantized width and back (when the input has another width), the
selection of the valid vectors and their return to the input grid, and metrics of the codes a pass uses.

Padding follows :class:`VectorQuantizer`: padded positions pass through unchanged with code -1 and touch no metric.
Precision follows it too (:mod:`.precision`): the input is cast up to float32 (the parameters' dtype) with autocast
switched off, and the output cast back to the input's dtype.
Metrics (``perplexity``, ``active_codes``) are those of this pass's valid codes, from their unique values (the
implicit codebook may be too large to count).
"""
from __future__ import annotations

import torch
from torch import nn

from .core import QuantizedResult, channel_last_with_mask, perplexity
from .norm import MaskedBatchNorm
from .precision import autocast_disabled


def code_space_metrics(codes: torch.Tensor) -> dict[str, torch.Tensor]:
    """``perplexity`` (2^H) and ``active_codes`` of the valid codes (N,), from their distinct values."""
    if torch.compiler.is_compiling():
        return _traced_code_space_metrics(codes)
    if codes.numel() == 0:
        zero = codes.new_zeros((), dtype=torch.float)
        return {"perplexity": zero + 1, "active_codes": zero}
    counts = torch.unique(codes, return_counts=True)[1].float()
    return {"perplexity": perplexity(counts), "active_codes": counts.new_tensor(float(counts.numel()))}


def _traced_code_space_metrics(codes: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`code_space_metrics` without a size that depends on the data (``torch.unique``'s), for
    ``torch.compile``: the counts of the runs of the sorted codes, scattered into N slots (zeros add nothing to
    the entropy).  The same figures up to the order of a float sum."""
    ordered = codes.sort().values
    run = torch.cat([ordered.new_zeros(min(codes.numel(), 1)), (ordered[1:] != ordered[:-1]).long()]).cumsum(0)
    counts = torch.zeros(codes.numel(), device=codes.device).index_add_(0, run, torch.ones_like(run, dtype=torch.float))
    return {"perplexity": perplexity(counts), "active_codes": (counts > 0).sum().float()}


def place_valid(x_last: torch.Tensor, mask: torch.Tensor | None, valid_out: torch.Tensor, valid_codes: torch.Tensor):
    """Scatter the valid outputs (N, D) and codes (N,) back on the input grid; padding keeps the input, code -1."""
    if mask is None:
        return valid_out.reshape(x_last.shape), valid_codes.reshape(x_last.shape[:-1])
    quantized = x_last.index_put((mask,), valid_out.to(x_last.dtype))
    codes = valid_codes.new_full(x_last.shape[:-1], -1).index_put((mask,), valid_codes)
    return quantized, codes


class CodebookFreeQuantizer(nn.Module):
    """Base of FSQ and BSQ: `dim` input channels, `width` quantized channels (projected in and out when they
    differ), optional ``pre_norm`` (Łańcucki §III-A, "+BN"); subclasses quantize the valid vectors."""

    def __init__(self, dim: int, width: int, pre_norm: bool, channel_dim: int):
        super().__init__()
        self.dim, self.channel_dim = dim, channel_dim
        self.norm = MaskedBatchNorm(dim) if pre_norm else None
        self.project_in = nn.Linear(dim, width) if dim != width else None
        self.project_out = nn.Linear(width, dim) if dim != width else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> QuantizedResult:
        """Quantize ``x`` (any floating dtype; computed in the parameters' dtype, float32 unless the module was
        converted, or in at least float32 without parameters — see :mod:`.precision`)."""
        parameter = next(self.parameters(), None)
        dtype = parameter.dtype if parameter is not None else torch.promote_types(x.dtype, torch.float32)
        with autocast_disabled(x.device):
            result = self.quantize(x.to(dtype), mask, lengths)
        return result.with_output_dtype(x.dtype)

    def quantize(self, x: torch.Tensor, mask: torch.Tensor | None, lengths: torch.Tensor | None) -> QuantizedResult:
        """The forward pass in the computing dtype (subclasses)."""
        raise NotImplementedError

    def valid_inputs(self, x: torch.Tensor, mask: torch.Tensor | None, lengths: torch.Tensor | None):
        """``(x_last, mask, h)``: the input channel-last (normalized under ``pre_norm``), its padding mask and the
        valid vectors projected to the quantized width, (N, width)."""
        x_last, mask = channel_last_with_mask(x, self.dim, self.channel_dim, mask, lengths)
        if self.norm is not None:
            x_last = self.norm(x_last, mask)
        z = x_last.reshape(-1, self.dim) if mask is None else x_last[mask]
        return x_last, mask, self.project_in(z) if self.project_in is not None else z

    def output(self, x: torch.Tensor, x_last: torch.Tensor, mask: torch.Tensor | None, valid_quantized: torch.Tensor,
               codes: torch.Tensor, loss: torch.Tensor, losses: dict[str, torch.Tensor],
               metrics: dict[str, torch.Tensor]) -> QuantizedResult:
        """The result for input `x`: the valid quantized vectors (N, width) projected out and placed on the grid
        with their codes (N,), channels where `x` has them."""
        quantized, grid_codes = place_valid(x_last, mask, self.decode_width(valid_quantized), codes)
        return QuantizedResult(quantized.movedim(-1, self.channel_dim % x.dim()), grid_codes, loss, losses, metrics)

    def decode_width(self, quantized: torch.Tensor) -> torch.Tensor:
        """Quantized vectors (..., width) -> (..., dim)."""
        return self.project_out(quantized) if self.project_out is not None else quantized
