"""Compute fbank features (ark/scp) for Kaldi data dirs once, and global CMVN statistics from the training split.

For each ``--split NAME=KALDI_DIR`` writes ``OUT/NAME/feats.{ark,scp}`` (80 log-mel + log energy, Kaldi
conventions; see seqvq/data/features.py). A data dir that already has ``feats.scp`` keeps its features as they
are. Statistics for CMVN (after Δ/ΔΔ unless ``--no-deltas``) come from the split named by ``--train`` only and go
to ``OUT/<train>/cmvn.ark``. Splits whose ``feats.scp`` already exists are skipped (``--force`` recomputes).

Usage: PYTHONPATH=. python data_prep/compute_features.py --out exp/feats \
           --split train=data/mini/train --split dev=data/mini/dev --train train
"""
import argparse
import sys
import time
from pathlib import Path

import torch

from seqvq.data.kaldi import read_data_dir
from seqvq.data.speech_corpus import CMVN, FEATS_SCP, compute_cmvn, read_features, save_cmvn, write_features
from seqvq.errors import UserError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--split", action="append", required=True, metavar="NAME=KALDI_DIR")
    parser.add_argument("--train", default="train", help="split whose statistics define CMVN")
    parser.add_argument("--no-deltas", dest="deltas", action="store_false", help="CMVN on features without Δ/ΔΔ")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one is fastest for short FFTs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    splits = dict(item.split("=", 1) for item in args.split)
    if args.train not in splits:
        sys.exit(f"--train {args.train!r} is not among the --split names {sorted(splits)}")
    for name, source in splits.items():
        target = args.out / name
        if (target / FEATS_SCP).exists() and not args.force:
            print(f"{target}: features exist; reusing them")
            continue
        start = time.perf_counter()
        try:
            frames = write_features(read_data_dir(source), target)
        except UserError as error:  # a malformed data dir, NaN/Inf or mixed-dimension features
            sys.exit(f"error: {error}")
        elapsed = time.perf_counter() - start
        print(f"{target}: {frames} frames from {source} in {elapsed:.1f} s ({frames / elapsed:,.0f} frames/s)")
    cmvn_path = args.out / args.train / CMVN
    if not cmvn_path.exists() or args.force:
        try:
            save_cmvn(compute_cmvn(read_features(args.out / args.train), args.deltas), cmvn_path)
        except UserError as error:
            sys.exit(f"error: {error}")
        print(f"{cmvn_path}: global CMVN statistics from {args.train} (deltas={args.deltas})")


if __name__ == "__main__":
    main()
