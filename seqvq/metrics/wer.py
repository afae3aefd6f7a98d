"""Corpus character and word error rates of text hypotheses, (S + D + I) / N summed over all utterances.

Both align with jiwer through :func:`seqvq.metrics.per.error_counts`: WER over the whitespace-separated words,
CER over the characters with each space counted as a character (a missed word boundary is an error), as jiwer's
``cer`` does.
"""
from __future__ import annotations

from collections.abc import Sequence

from seqvq.metrics.per import ErrorCounts, error_counts

_SPACE = "\u2581"  # stands for a space in a character sequence (error_counts tokens hold no whitespace)


def _characters(text: str) -> list[str]:
    return list(" ".join(text.split()).replace(" ", _SPACE))


def character_error_counts(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorCounts:
    """Corpus S/D/I/N over characters, spaces included (words single-spaced first)."""
    return error_counts([_characters(r) for r in references], [_characters(h) for h in hypotheses])


def word_error_counts(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorCounts:
    """Corpus S/D/I/N over whitespace-separated words."""
    return error_counts([r.split() for r in references], [h.split() for h in hypotheses])
