"""vector-quantize-pytorch's ``VectorQuantize`` (lucidrains, the most used VQ library) as a seqvq bottleneck, for
side-by-side runs: ``quantizer: {kind: vector_quantize_pytorch, codebook_size: 512}`` in any recipe's config.

The defaults are the settings that library's README documents for a codebook that does not collapse: EMA codebook
with ``decay=0.8``, ``commitment_weight=1``, k-means initialisation on the first batch (``kmeans_init``, 10
iterations), the rotation trick (Fifty et al. 2024) instead of the straight-through estimator, and dead-code
replacement.  For the last, the README's ``threshold_ema_dead_code=2`` is deprecated in the library's current
versions in favour of ``dead_code_threshold_ratio`` (a code is dead below that fraction of the mean EMA cluster
size), whose suggested value, 0.1, is the default here.  Any other keyword of ``VectorQuantize`` passes through
``options``.

Only the valid vectors reach the peer (as one (1, N, D) sequence), so its k-means, EMA statistics and dead-code
counts see no padding, as seqvq's own quantizers; padded positions pass through with code -1.  ``loss`` is the
peer's own (its commitment term), reported as ``losses["commitment"]``; metrics are those of this pass's codes
(:func:`~seqvq.quantize.codebook_free.code_space_metrics`).  The peer is imported when the module is built, so
seqvq imports without it (``pip install vector-quantize-pytorch``).
"""
from __future__ import annotations

import torch
from torch import nn

from .codebook_free import code_space_metrics, place_valid
from .core import QuantizedResult, channel_last_with_mask
from .precision import autocast_disabled


class PeerVectorQuantize(nn.Module):
    """``vector_quantize_pytorch.VectorQuantize(dim, codebook_size, ...)`` behind seqvq's quantizer interface
    (``forward(x, mask=None, lengths=None) -> QuantizedResult``, channels at ``channel_dim``)."""

    def __init__(self, dim: int, codebook_size: int = 512, decay: float = 0.8, commitment_weight: float = 1.0,
                 kmeans_init: bool = True, kmeans_iters: int = 10, rotation_trick: bool = True,
                 dead_code_threshold_ratio: float = 0.1, channel_dim: int = -1, options: dict | None = None):
        super().__init__()
        try:
            from vector_quantize_pytorch import VectorQuantize
        except ImportError as error:
            raise ImportError("quantizer kind 'vector_quantize_pytorch' needs that package: "
                              "pip install -c constraints.txt vector-quantize-pytorch") from error
        self.dim, self.channel_dim, self.codebook_size = dim, channel_dim, codebook_size
        self.peer = VectorQuantize(dim=dim, codebook_size=codebook_size, decay=decay,
                                   commitment_weight=commitment_weight, kmeans_init=kmeans_init,
                                   kmeans_iters=kmeans_iters, rotation_trick=rotation_trick,
                                   dead_code_threshold_ratio=dead_code_threshold_ratio, **(options or {}))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> QuantizedResult:
        """Quantize the valid vectors of ``x`` in float32 (autocast off), the output cast back to ``x``'s dtype."""
        with autocast_disabled(x.device):
            x_last, mask = channel_last_with_mask(x.float(), self.dim, self.channel_dim, mask, lengths)
            z = x_last.reshape(-1, self.dim) if mask is None else x_last[mask]
            quantized, codes, loss = self.peer(z.unsqueeze(0))
            codes = codes.reshape(-1)
            loss = loss.sum()
            grid_quantized, grid_codes = place_valid(x_last, mask, quantized.reshape(-1, self.dim), codes)
        result = QuantizedResult(grid_quantized.movedim(-1, self.channel_dim % x.dim()), grid_codes, loss,
                                 {"commitment": loss.detach()}, code_space_metrics(codes))
        return result.with_output_dtype(x.dtype)
