"""Residual vector quantization: a stack of quantizers, each coding what the previous ones left over (the
SoundStream / EnCodec bottleneck, Zeghidour et al. 2021).

Stage ``i`` quantizes the residual ``r_i = x - sum_{j<i} sg(q_j)``; the output is ``sum_i q_i`` with one
straight-through estimator on the total (Huh eq. 7), so ``d output / d x`` is the identity.  Every stage's
commitment term ``||r_i - sg q_i||^2`` reaches the encoder through ``r_i``, and every stage's codebook term
trains that stage's codebook towards its own residuals.  The loss is the sum of the stage losses.

Stage options that have no meaning on residuals are refused at construction (one line naming the option):
``sync_nu`` and ``assignment="gumbel"`` act through a stage's output gradient, but the stage outputs are detached
(only the total carries a straight-through gradient), so neither would reach anything; ``distance="cosine"``
would normalise the residuals, whose norms are exactly what the later stages code; and ``reestimate`` passes the
input through for M_init steps, so stages >= 1 would see zero residuals and fill their reservoirs with zeros.
(``kmeans_init`` works: each stage runs its k-means on the first batch's residuals, in stage order.)

Padding follows :class:`VectorQuantizer`: padded positions pass the input through, get code -1 at every stage,
and touch no loss, statistic or codebook.  ``pre_norm=True`` normalises the input once, before the first stage
(normalising each residual separately would make the stage outputs live in different spaces).
"""
from __future__ import annotations

import torch
from torch import nn

from .core import QuantizedResult, VectorQuantizer, channel_last_with_mask, squared_error
from .norm import MaskedBatchNorm
from .precision import autocast_disabled


class ResidualVectorQuantizer(nn.Module):
    """``num_quantizers`` :class:`VectorQuantizer` stages on successive residuals.

    Args:
        dim, codebook_size: as for :class:`VectorQuantizer`; every stage has the same size.
        num_quantizers: number of stages.
        pre_norm: masked BatchNorm on the input, once, before the first stage.
        channel_dim: where the channels are (-1 = channel-last).
        **vq_kwargs: every other :class:`VectorQuantizer` option, applied to each stage.

    Codes are ``(..., num_quantizers)`` (``(..., num_quantizers, G)`` with ``num_codebooks = G > 1``).
    Metrics: each stage's under ``"stage{i}/<name>"``, their mean under ``"<name>"``, and
    ``"residual_error"``, the mean squared error of the whole stack's output.
    """

    def __init__(self, dim: int, codebook_size: int, num_quantizers: int, *, pre_norm: bool = False,
                 channel_dim: int = -1, **vq_kwargs):
        super().__init__()
        if num_quantizers < 1:
            raise ValueError(f"ResidualVectorQuantizer: num_quantizers must be >= 1, got {num_quantizers}")
        _check_stage_options(vq_kwargs)
        self.dim, self.channel_dim = dim, channel_dim
        self.norm = MaskedBatchNorm(dim) if pre_norm else None
        self.stages = nn.ModuleList(VectorQuantizer(dim, codebook_size, pre_norm=False, channel_dim=-1, **vq_kwargs)
                                    for _ in range(num_quantizers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> QuantizedResult:
        """Quantize ``x`` (any floating dtype; computed in the codebooks' dtype, see :mod:`.precision`)."""
        with autocast_disabled(x.device):
            result = self._forward(x.to(self.stages[0].codebook.dtype), mask, lengths)
        return result.with_output_dtype(x.dtype)

    def _forward(self, x: torch.Tensor, mask: torch.Tensor | None, lengths: torch.Tensor | None) -> QuantizedResult:
        channel_dim = self.channel_dim % x.dim()
        x_last, mask = channel_last_with_mask(x, self.dim, self.channel_dim, mask, lengths)
        if self.norm is not None:
            x_last = self.norm(x_last, mask)

        residual, total = x_last, torch.zeros_like(x_last)
        loss, losses, metrics, codes = 0.0, {}, {}, []
        for index, stage in enumerate(self.stages):
            result = stage(residual, mask=mask)
            stage_output = result.quantized.detach()  # the codes (input passed through at padded positions)
            total = total + stage_output
            residual = residual - stage_output
            codes.append(result.codes)
            loss = loss + result.loss
            for name, value in result.losses.items():
                losses[name] = losses.get(name, 0.0) + value
            for name, value in result.metrics.items():
                metrics[f"stage{index}/{name}"] = value
                metrics[name] = metrics.get(name, 0.0) + value / len(self.stages)

        valid_x = x_last.reshape(-1, self.dim) if mask is None else x_last[mask]
        valid_total = total.reshape(-1, self.dim) if mask is None else total[mask]
        metrics["residual_error"] = squared_error(valid_x.detach(), valid_total)
        quantized = x_last + (total - x_last).detach()  # one straight-through estimator on the sum
        codes = torch.stack(codes, dim=x_last.dim() - 1)
        return QuantizedResult(quantized.movedim(-1, channel_dim), codes, loss, losses, metrics)

    def codes_to_vectors(self, codes: torch.Tensor) -> torch.Tensor:
        """Decode ``(..., num_quantizers[, G])`` codes to ``(..., dim)`` vectors: the sum of the stages' codes
        (code -1 decodes to zeros)."""
        axis = -1 if self.stages[0].num_codebooks == 1 else -2
        if codes.dim() == 0 or codes.shape[axis] != len(self.stages):
            raise ValueError(f"codes of shape {tuple(codes.shape)} need a num_quantizers={len(self.stages)} axis "
                             f"at dim {axis}")
        return sum(stage.codes_to_vectors(codes.select(axis, index)) for index, stage in enumerate(self.stages))


def _check_stage_options(options: dict) -> None:
    """Refuse the stage options the module docstring explains, naming each."""
    reasons = {
        "sync_nu": "the stage outputs are detached, so the sync term has no gradient to carry",
        "reestimate": "stages >= 1 would see zero residuals during the pass-through warm-up",
    }
    for name, reason in reasons.items():
        if options.get(name):
            raise ValueError(f"ResidualVectorQuantizer does not support {name}: {reason}")
    if options.get("assignment") == "gumbel":
        raise ValueError("ResidualVectorQuantizer does not support assignment='gumbel': the stage outputs are "
                         "detached, so the Gumbel-softmax gradients would reach nothing")
    if options.get("distance") == "cosine":
        raise ValueError("ResidualVectorQuantizer does not support distance='cosine': normalising the residuals "
                         "discards the norms the later stages code")
