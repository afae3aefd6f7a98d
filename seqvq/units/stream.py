"""The valid frames of a padded batch, and stepping through a stream of batches in lockstep with the other ranks."""
from __future__ import annotations

from collections.abc import Iterator

import torch

from seqvq.errors import UserError
from seqvq.quantize.distributed import all_reduce_sum, is_distributed


def valid_frames(features: torch.Tensor, lengths: torch.Tensor | None, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(frames (N, dim), mask (B, T))``: the first ``lengths[b]`` frames of every utterance of ``features``
    (B, T, dim), utterance after utterance (all T frames where ``lengths`` is None).  Padding is never read, so its
    values (NaN, inf) cannot matter."""
    if features.dim() != 3 or features.shape[2] != dim:
        raise UserError(f"expected a batch of features of dimension {dim}, shape (batch, frames, {dim}); got "
                        f"{tuple(features.shape)}")
    batch, steps = features.shape[:2]
    if lengths is None:
        mask = torch.ones(batch, steps, dtype=torch.bool, device=features.device)
    else:
        lengths = torch.as_tensor(lengths, device=features.device)
        if lengths.shape != (batch,) or bool((lengths < 0).any()) or bool((lengths > steps).any()):
            raise UserError(f"lengths must be {batch} frame counts between 0 and {steps} (one per utterance of the "
                            f"batch); got {lengths.tolist()}")
        mask = torch.arange(steps, device=features.device) < lengths.unsqueeze(1)
        if not bool(mask.all()):
            return features[mask], mask
    return features.reshape(-1, dim), mask  # no padding: no copy


def lockstep(batches: Iterator, device: torch.device) -> Iterator:
    """The batches of ``batches``; under torch.distributed, after this rank's run out, None for as long as another
    rank's go on, so that every rank takes the same steps and issues the same collectives (one summed flag a step)."""
    while True:
        batch = next(batches, None)
        if is_distributed():
            if int(all_reduce_sum(torch.tensor([batch is not None], dtype=torch.long, device=device))) == 0:
                return
        elif batch is None:
            return
        yield batch
