"""Mixed precision: the quantizers compute in the precision of their codebook whatever the input's.

Under AMP (``torch.autocast``, or float16 / bfloat16 activations) the nearest-code search, every statistic
(BatchNorm moments, EMA counts and sums, affine moments, the reservoir) and the codebook stay in the codebook's
dtype, float32 unless the module itself was converted: counts are exact there (bfloat16 holds 1001 as 1000) and
the distance expansion is not drowned in rounding.  The input is cast up on entry with autocast switched off, and
the output cast back to the input's dtype; both casts are differentiable, so the gradient reaches the input in
its own dtype.  Losses and metrics are returned in float32.
"""
from __future__ import annotations

import contextlib

import torch


def autocast_disabled(device: torch.device):
    """A context in which autocast does not lower the precision of operations on ``device``."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()
