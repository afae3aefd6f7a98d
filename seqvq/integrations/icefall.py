"""icefall adapter: a VQ bottleneck after any ``EncoderInterface`` encoder.

icefall's encoders implement ``forward(x, x_lens) -> (encoder_out, encoder_out_lens)`` on ``(N, T, C)``
tensors, and its transducer / CTC models call ``self.encoder(x, x_lens)``; :class:`VQEncoder` keeps that
contract, so it replaces the encoder in any model without editing it.  The VQ loss is returned through
:meth:`VQEncoder.take_result` (see :mod:`seqvq.integrations.encoder`); ``compute_loss`` in ``train.py`` adds it::

    model.encoder = VQEncoder(model.encoder, seqvq.VectorQuantizer(encoder_dim, 512, pre_norm=True))
    optimizer = ScaledAdam(...)
    seqvq.reset_optimizer_state_on_step(model, optimizer)  # clears rewritten codes' moments before each step
    ...
    loss = simple_scale * simple_loss + pruned_scale * pruned_loss
    loss = loss + model.encoder.take_result().loss

``time_first=True`` is for Zipformer's internal ``(T, N, C)`` layout (between its encoder stacks).  k2 (and so
icefall) has no wheel for current torch, so nothing here imports icefall: the adapter is plain torch.
"""
from __future__ import annotations

import torch
from torch import nn

from .encoder import SequenceBottleneck


class VQEncoder(SequenceBottleneck):
    """``encoder`` (an icefall ``EncoderInterface``, or None for a bare bottleneck) followed by ``quantizer``;
    ``forward(x, x_lens) -> (quantized, out_lens)``."""

    def __init__(self, encoder: nn.Module | None, quantizer: nn.Module, time_first: bool = False):
        super().__init__(quantizer)
        self.encoder, self.time_first = encoder, time_first

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, out_lens = (x, x_lens) if self.encoder is None else self.encoder(x, x_lens)
        if self.time_first:
            quantized, out_lens = super().forward(out.transpose(0, 1), out_lens)
            return quantized.transpose(0, 1), out_lens
        return super().forward(out, out_lens)
