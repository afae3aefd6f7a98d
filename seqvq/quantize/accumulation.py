"""Gradient accumulation: k micro-batches, then one optimizer step, leave every statistic as one k-times-larger
batch does.

Without it each micro-batch's forward pass is a training step of its own to the quantizer: the step count moves k
times, the EMA codebook (Łańcucki eq. 4) and the affine moments (Huh A.12) are discounted k times, BatchNorm's
running moments are moved k times, replacement clocks (Huh §3) count micro-batches and a code can be replaced in
the middle of a step.  Within :func:`accumulated_step` every :class:`~.core.VectorQuantizer` and
:class:`~.norm.MaskedBatchNorm` instead keeps each training pass's valid vectors (and codes), detached, and on
leaving the block runs its state-updating phases once on all of them together: step count, reservoir (Algorithm 1),
EMA counts and sums, affine statistics, usage clocks and replacement, BatchNorm running moments — the same
operations on the same rows in the same order as one pass over the concatenated batch, so the same bits.

Exceptions, by construction: a micro-batch is normalised by its own BatchNorm moments (the forward cannot see the
others; only the running moments are those of the whole step); a re-estimation or k-means-init step assigns the
micro-batches with the codebook from before its k-means (one large batch is assigned after it); sampled
assignments draw per micro-batch.  The gradients are the caller's: scale each micro-batch's loss so that they add up to the large
batch's (e.g. 1/k for equal micro-batches of a mean loss).

Cost: the valid vectors of the whole step, detached, held until the step (N x D floats per quantizer and per
MaskedBatchNorm, as one large batch's statistics take), and no extra computation: the statistics are computed once
per step instead of once per micro-batch.  The ordinary path (outside the block) is unchanged.
"""
from __future__ import annotations

import contextlib

from torch import nn

from .core import VectorQuantizer
from .norm import MaskedBatchNorm

ACCUMULATING = (VectorQuantizer, MaskedBatchNorm)


@contextlib.contextmanager
def accumulated_step(model: nn.Module):
    """Within the block, the training passes of ``model`` are the micro-batches of one optimizer step (module
    docstring); leaving it normally applies their statistics once; an exception discards them (no step taken)."""
    modules = [module for module in model.modules() if isinstance(module, ACCUMULATING)]
    for module in modules:
        if module.micro_batches is not None:
            raise RuntimeError(f"accumulated_step: {type(module).__name__} is already in an accumulated step")
        module.micro_batches = []
    try:
        yield
    except BaseException:
        for module in modules:
            module.micro_batches = None
        raise
    for module in modules:
        micro_batches, module.micro_batches = module.micro_batches, None
        if micro_batches:
            module.finish_accumulated_step(micro_batches)
