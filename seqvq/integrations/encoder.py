"""The encoder contract shared by ESPnet post-encoders and icefall encoders: ``(x, lengths) -> (y, lengths)``.

Those contracts return tensors only, so the quantizer's :class:`~seqvq.QuantizedResult` (its loss, codes and
metrics) cannot travel with the output; :class:`SequenceBottleneck` keeps the result of its latest forward pass
until the training code takes it with :meth:`SequenceBottleneck.take_result` and adds ``result.loss`` to the
task loss.  Taking it clears it, so one forward pass's loss is never added twice; a training-mode forward pass
while the previous training pass's result is still waiting raises, since then nobody adds the VQ loss (the
codebook and the commitment term would silently not train).  Evaluation passes may leave theirs untaken.
"""
from __future__ import annotations

import torch
from torch import nn

from ..quantize import QuantizedResult


class SequenceBottleneck(nn.Module):
    """``quantizer`` (e.g. :class:`seqvq.VectorQuantizer`, channel-last) applied to ``(B, T, C)`` sequences with
    absolute ``lengths`` (B,); frames at or beyond a sequence's length pass through and get code -1."""

    def __init__(self, quantizer: nn.Module):
        super().__init__()
        self.quantizer = quantizer
        self._result: QuantizedResult | None = None
        self._result_from_training = False

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and self._result is not None and self._result_from_training:
            raise RuntimeError(f"{type(self).__name__}: the VQ loss of the previous training pass was never taken; "
                               "add take_result().loss to the training loss (ESPnet: model: espnet_vq)")
        self._result, self._result_from_training = self.quantizer(x, lengths=lengths), self.training
        return self._result.quantized, lengths

    def take_result(self) -> QuantizedResult:
        """The result of the latest forward pass (``loss``, ``codes``, ``metrics``); raises when it was already
        taken or there was none."""
        if self._result is None:
            raise RuntimeError(f"{type(self).__name__}: no forward pass since the last take_result()")
        result, self._result = self._result, None
        return result
