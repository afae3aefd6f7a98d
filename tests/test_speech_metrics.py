"""PER on hand-computed examples and greedy CTC decoding."""
import math

import pytest
import torch

from seqvq.metrics.ctc import ctc_greedy_decode
from seqvq.metrics.per import ErrorCounts, error_counts, phone_error_rate


def test_per_counts_substitution_deletion_insertion():
    # ref: AA B  CH D ; hyp: AA CH CH D EH -> B->CH substitution, EH insertion: 2 errors / 4.
    counts = error_counts([["AA", "B", "CH", "D"]], [["AA", "CH", "CH", "D", "EH"]])
    assert counts == ErrorCounts(substitutions=1, deletions=0, insertions=1, reference_length=4)
    assert counts.rate == 0.5
    assert error_counts([["AA", "B"]], [[]]) == ErrorCounts(0, 2, 0, 2)


def test_per_is_corpus_level_not_mean_of_rates():
    refs = [["AA"], ["B", "CH", "D", "EH", "F", "G", "HH", "IH", "IY"]]
    hyps = [["B"], ["B", "CH", "D", "EH", "F", "G", "HH", "IH", "IY"]]
    # Per-utterance rates are 1.0 and 0.0 (mean 0.5); the corpus rate is 1 / 10.
    assert phone_error_rate(refs, hyps) == pytest.approx(0.1)


def test_per_edge_cases():
    assert error_counts([[]], [["AA"]]) == ErrorCounts(0, 0, 1, 0)
    assert math.isinf(error_counts([[]], [["AA"]]).rate)
    assert phone_error_rate([["AA"], []], [["AA"], []]) == 0.0
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        error_counts([["AA"], ["B"]], [["AA"]])
    with pytest.raises(ValueError, match="whitespace"):
        error_counts([["A A"]], [["AA"]])


def one_hot_log_probs(paths, classes=4):
    length = max(len(p) for p in paths)
    probs = torch.full((len(paths), length, classes), 1e-3)
    for b, path in enumerate(paths):
        for t, label in enumerate(path):
            probs[b, t, label] = 1.0
    return probs.log()


def test_ctc_greedy_merges_repeats_drops_blanks_and_respects_lengths():
    log_probs = one_hot_log_probs([[1, 1, 0, 1, 2, 2, 0, 0], [0, 3, 3, 3, 0, 3, 1, 2]])
    decoded = ctc_greedy_decode(log_probs, torch.tensor([8, 6]))
    assert decoded == [[1, 1, 2], [3, 3]]  # blank separates the repeated 1s; frames past length ignored
    assert ctc_greedy_decode(one_hot_log_probs([[0, 0, 0]]), torch.tensor([3])) == [[]]
    assert ctc_greedy_decode(one_hot_log_probs([[2, 2, 2]]), torch.tensor([0])) == [[]]
