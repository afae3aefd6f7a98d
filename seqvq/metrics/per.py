"""Corpus-level phone error rate: PER = (S + D + I) / N summed over all utterances (not a mean of rates)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorCounts:
    """Edit operations of a minimal alignment, summed over a corpus."""

    substitutions: int
    deletions: int
    insertions: int
    reference_length: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """(S + D + I) / N; ``inf`` when there is nothing to recognize but the hypothesis is not empty."""
        if self.reference_length == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.reference_length

    def __add__(self, other: "ErrorCounts") -> "ErrorCounts":
        return ErrorCounts(self.substitutions + other.substitutions, self.deletions + other.deletions,
                           self.insertions + other.insertions, self.reference_length + other.reference_length)


def error_counts(references: Sequence[Sequence[str]], hypotheses: Sequence[Sequence[str]]) -> ErrorCounts:
    """Corpus S/D/I/N between token sequences (phones), aligned per utterance with jiwer."""
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    for sequence in (*references, *hypotheses):
        if any(not token or any(c.isspace() for c in token) for token in sequence):
            raise ValueError(f"tokens must be non-empty and contain no whitespace: {list(sequence)!r}")
    total = ErrorCounts(0, 0, 0, 0)
    pairs = [(" ".join(r), " ".join(h)) for r, h in zip(references, hypotheses) if r]
    total += ErrorCounts(0, 0, sum(len(h) for r, h in zip(references, hypotheses) if not r), 0)
    if pairs:
        output = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
        total += ErrorCounts(output.substitutions, output.deletions, output.insertions,
                             sum(len(r) for r in references))
    return total


def phone_error_rate(references: Sequence[Sequence[str]], hypotheses: Sequence[Sequence[str]]) -> float:
    return error_counts(references, hypotheses).rate
