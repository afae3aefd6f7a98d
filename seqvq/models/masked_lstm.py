"""A (bi)LSTM over padded batches that gives packed-sequence results without packing.

On CPU, ``nn.LSTM`` on a ``PackedSequence`` narrows the packed data once per time step, and the backward of each
narrow writes a zero tensor as large as the whole input: the backward costs O(T^2) memory traffic, 62% of a speech
training step's CPU time (``bench/lstm_speed.py``). :class:`MaskedLSTM` runs each layer and direction as a
one-layer ``torch.lstm`` on the padded batch instead (per-step slices by ``unbind``, whose backward is one
``stack``). The reverse direction reads every sequence flipped within its own length, so it starts at the
sequence's last valid step exactly as the packed LSTM does; valid outputs therefore never depend on padded inputs,
and they equal the packed LSTM's up to float rounding. Padded outputs are zero, as ``pad_packed_sequence`` gives.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def flip_index(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, T) source steps that flip each sequence over its first ``lengths[b]`` steps; padded steps stay put."""
    step = torch.arange(steps, device=lengths.device)
    source = lengths[:, None] - 1 - step[None, :]
    return torch.where(source >= 0, source, step[None, :])


def reverse_within_lengths(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x`` (B, T, D) with each sequence flipped by :func:`flip_index` (its own inverse)."""
    return x.gather(1, index[:, :, None].expand_as(x))


class MaskedLSTM(nn.LSTM):
    """``nn.LSTM`` (``batch_first`` only, same parameters and ``state_dict`` keys) called as ``lstm(x, mask)``, with
    the (B, T) padding mask that is True on each sequence's first steps (the models' masks).

    Returns the (B, T, directions * hidden) outputs of the last layer, zero at padded steps, with zero initial
    states; dropout between layers as ``nn.LSTM`` applies it.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.batch_first or self.proj_size:
            raise ValueError("MaskedLSTM: needs batch_first=True and proj_size=0")

    def _direction(self, layer: int, reverse: bool) -> list[torch.Tensor]:
        suffix = f"_l{layer}" + ("_reverse" if reverse else "")
        names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if self.bias else ())
        return [getattr(self, name + suffix) for name in names]

    def _run(self, x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
        zeros = x.new_zeros(1, x.shape[0], self.hidden_size)
        return torch.lstm(x, (zeros, zeros), weights, self.bias, 1, 0.0, self.training, False, True)[0]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.layer_outputs(x, mask)[-1]

    def layer_outputs(self, x: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """The (B, T, directions * hidden) outputs of every layer, first to last, each zero at padded steps."""
        flip = flip_index(mask.sum(1), x.shape[1]) if self.bidirectional else None
        outputs_per_layer = []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0:
                x = F.dropout(x, self.dropout, self.training)
            outputs = [self._run(x, self._direction(layer, reverse=False))]
            if self.bidirectional:
                flipped = self._run(reverse_within_lengths(x, flip), self._direction(layer, reverse=True))
                outputs.append(reverse_within_lengths(flipped, flip))
            x = torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0]
            outputs_per_layer.append(x.masked_fill(~mask[:, :, None], 0.0))
        return outputs_per_layer
