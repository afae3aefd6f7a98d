"""Run-length helpers for unit sequences: ``dedup`` (ESPnet asr2's and SpeechBrain DiscreteSSL's de-duplication of
repeated units, keeping the durations) and its inverse ``expand_runs``."""
from __future__ import annotations

import torch


def dedup(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(units, durations)`` of one utterance's codes (1-D): each run of a repeated code becomes one unit and its
    length.  Padding codes (-1, as ``KMeansTokenizer.encode`` writes them) are dropped, so a row of a batch can be
    given as it is."""
    if codes.dim() != 1:
        raise ValueError(f"dedup expects one utterance's codes (1-D); got shape {tuple(codes.shape)}")
    return torch.unique_consecutive(codes[codes >= 0], return_counts=True)


def expand_runs(units: torch.Tensor, durations: torch.Tensor) -> torch.Tensor:
    """The codes that ``dedup`` turned into ``(units, durations)``: each unit repeated ``duration`` times."""
    return torch.repeat_interleave(units, durations)
