"""BatchNorm over valid positions only — the "+BN" of Łańcucki et al. 2020, §III-A.

Łańcucki et al. put BatchNorm before the quantizer so that encoder outputs keep a fixed scale relative to the
codewords (codewords smaller in norm than the encoder outputs keep many codes in use, Fig. 1).  Padded frames must
not move the statistics, so the moments are computed from the valid vectors alone (and summed over ranks under
DDP, like SyncBatchNorm), and only the valid vectors are normalised: padded positions pass through unchanged, so
whatever they hold (-inf, the log energy of zero padding; NaN) reaches no output, statistic or gradient.
"""
from __future__ import annotations

import torch
from torch import nn

from .distributed import all_reduce_sum, differentiable_all_reduce_sum
from .precision import autocast_disabled


class MaskedBatchNorm(nn.Module):
    """BatchNorm over the last (channel) dimension of ``(..., C)`` input at the positions where mask is True;
    the others pass through unchanged.

    Training uses the batch moments of the valid vectors and updates running moments (unbiased variance, as
    ``nn.BatchNorm1d``); with fewer than two valid vectors the running moments are used instead and left alone.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        # A list while seqvq.quantize.accumulation gathers an optimizer step's micro-batches: their valid vectors.
        self.micro_batches: list[torch.Tensor] | None = None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise the valid positions of ``x`` (any floating dtype; moments and output computed in the running
        moments' dtype, the result cast back to ``x``'s — see :mod:`.precision`); padded positions are returned
        unchanged, bit for bit, and enter no moment and no gradient of the weight or bias."""
        with autocast_disabled(x.device):
            valid = x.reshape(-1, x.shape[-1]) if mask is None else x[mask]
            out = self._normalise(valid.to(self.running_mean.dtype)).to(x.dtype)
            return out.reshape(x.shape) if mask is None else x.index_put((mask,), out)

    def _normalise(self, valid: torch.Tensor) -> torch.Tensor:
        """BatchNorm of the valid vectors ``valid`` (N, C)."""
        mean, var = self.running_mean, self.running_var
        if self.training:
            count = all_reduce_sum(valid.new_tensor(float(valid.shape[0])))
            micro_batch = self.micro_batches is not None  # gradient accumulation: running moments at the step
            if micro_batch:
                self.micro_batches.append(valid.detach())
            if torch.compiler.is_compiling():  # N may be known only at run time (masked): no Python branch on it
                mean, var = self._batch_moments(valid, count, enough=count >= 2, update_running=not micro_batch)
            elif count.item() >= 2:
                mean, var = self._batch_moments(valid, count, update_running=not micro_batch)
        out = (valid - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            out = out * self.weight + self.bias
        return out

    @torch.no_grad()
    def finish_accumulated_step(self, micro_batches: list[torch.Tensor]) -> None:
        """Gradient accumulation (:mod:`.accumulation`): fold the moments of the valid vectors of all the step's
        micro-batches, taken together, into the running moments — as one pass over their concatenation does."""
        valid = torch.cat(micro_batches)
        count = all_reduce_sum(valid.new_tensor(float(valid.shape[0])))
        if count.item() >= 2:
            self._batch_moments(valid, count)

    def _batch_moments(self, valid: torch.Tensor, count: torch.Tensor, enough: torch.Tensor | None = None,
                       update_running: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch moments of ``valid``, folded into the running ones unless not ``update_running``; where the
        bool tensor ``enough`` is False (fewer than two vectors), the running moments instead, left alone — the
        same values as the branch on the count, without reading it."""
        # Two passes (mean, then centred squares) stay accurate for data far from the origin.
        mean = differentiable_all_reduce_sum(valid.sum(0)) / count
        var = differentiable_all_reduce_sum((valid - mean).pow(2).sum(0)) / count
        if update_running:
            with torch.no_grad():
                running_mean = self.running_mean.lerp(mean.detach(), self.momentum)
                running_var = self.running_var.lerp(var.detach() * count / (count - 1), self.momentum)
                if enough is not None:
                    running_mean = torch.where(enough, running_mean, self.running_mean)
                    running_var = torch.where(enough, running_var, self.running_var)
                self.running_mean.copy_(running_mean)
                self.running_var.copy_(running_var)
        if enough is not None:
            mean, var = torch.where(enough, mean, self.running_mean), torch.where(enough, var, self.running_var)
        return mean, var
