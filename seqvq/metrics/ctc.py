"""Greedy (best-path) CTC decoding: argmax per frame, merge repeats, drop blanks (Graves et al. 2006)."""
from __future__ import annotations

import torch


def ctc_greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int = 0) -> list[list[int]]:
    """``log_probs (B, T, C)`` and valid ``lengths (B,)`` -> label sequences without blanks or repeats."""
    best = log_probs.argmax(dim=-1).cpu()
    keep = torch.ones_like(best, dtype=torch.bool)
    keep[:, 1:] = best[:, 1:] != best[:, :-1]
    keep &= best != blank
    sequences = []
    for row, mask, length in zip(best, keep, lengths.cpu().tolist()):
        sequences.append(row[:length][mask[:length]].tolist())
    return sequences
