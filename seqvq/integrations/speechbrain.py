"""SpeechBrain adapter: the VQ bottleneck with SpeechBrain's *relative* lengths.

SpeechBrain batches carry lengths as fractions of the padded length (``PaddedBatch``: ``lengths[i] =
len_i / T_max``), which stay valid after any downsampling; the absolute length at ``T`` frames is
``round(lengths_rel * T)``, SpeechBrain's own rule (``relative_time_to_absolute``, ``length_to_mask``).

HyperPyYAML builds any importable class, so no registration is needed::

    vq: !new:seqvq.integrations.speechbrain.VQBottleneck
        quantizer: !new:seqvq.VectorQuantizer
            dim: 256
            codebook_size: 256

``compute_forward`` calls ``out = self.modules.vq(x, lengths_rel=wav_lens)`` and ``compute_objectives`` adds
``out.loss`` to the task loss.  The optimizer, which ``Brain.fit`` builds in ``init_optimizers``, clears the moments
of rewritten codes (re-estimation, replacement, k-means) before each step once the Brain says so::

    def init_optimizers(self):
        super().init_optimizers()
        seqvq.reset_optimizer_state_on_step(self.modules, self.optimizer)

Every piece of the quantizer's state is a parameter or buffer, so putting the module into ``modules`` (and the
``Checkpointer``'s recoverables) checkpoints all of it.  Nothing here imports SpeechBrain: the adapter is plain
torch.
"""
from __future__ import annotations

import torch
from torch import nn

from ..quantize import QuantizedResult


def absolute_lengths(lengths_rel: torch.Tensor, max_len: int) -> torch.Tensor:
    """SpeechBrain relative lengths (B,) in [0, 1] -> frame counts (B,) at ``max_len`` frames."""
    if lengths_rel.is_floating_point() and bool(((lengths_rel < 0) | (lengths_rel > 1)).any()):
        raise ValueError(f"relative lengths must lie in [0, 1], got {lengths_rel.tolist()}")
    return torch.round(lengths_rel.float() * max_len).long()


class VQBottleneck(nn.Module):
    """``quantizer`` on ``(B, T, C)`` SpeechBrain tensors; ``lengths_rel`` (B,) relative lengths or None (all
    frames valid).  Returns the quantizer's :class:`~seqvq.QuantizedResult` (``quantized``, ``codes`` with -1 at
    padded frames, ``loss`` to add to the task loss, ``metrics``)."""

    def __init__(self, quantizer: nn.Module):
        super().__init__()
        self.quantizer = quantizer

    def forward(self, x: torch.Tensor, lengths_rel: torch.Tensor | None = None) -> QuantizedResult:
        if lengths_rel is None:
            return self.quantizer(x)
        return self.quantizer(x, lengths=absolute_lengths(lengths_rel, x.shape[1]))
