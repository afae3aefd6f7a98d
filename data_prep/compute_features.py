"""Compute fbank features (ark/scp) for Kaldi data dirs, once for what they hold.

For each ``--split NAME=KALDI_DIR`` writes ``OUT/NAME/feats.{ark,scp}`` (80 log-mel + log energy, Kaldi
conventions; see seqvq/data/features.py). A data dir that already has ``feats.scp`` keeps its features as they
are. Each split's ``OUT/NAME/features.stamp.json`` records what its features were built from (the data dir, the
fingerprint of its tables and of its audio or feature files: names, sizes, times; the feature options; see
seqvq/train/stamps.py): a rerun reuses features built from the same, and refuses features built from anything
else in one line naming what changed, unless ``--force``, which recomputes them. The global CMVN statistics are
written by data_prep/make_targets.py --cmvn, once the utterances with targets are known.

Usage: PYTHONPATH=. python data_prep/compute_features.py --out exp/feats \
           --split train=data/mini/train --split dev=data/mini/dev
"""
import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

from seqvq.data.features import FbankOptions
from seqvq.data.kaldi import read_data_dir
from seqvq.data.speech_corpus import FEATS_SCP, write_features
from seqvq.errors import UserError
from seqvq.train.stamps import STAMP_SUFFIX, fingerprint, reusable, write_stamp


def features_record(source: str, options: FbankOptions) -> dict:
    """What a split's features are built from: the data dir, its tables, its audio (or feature) files and the
    fbank options."""
    data = read_data_dir(source, require_text=False, check_audio=False)
    return {"source": str(Path(source).resolve()), "tables": fingerprint(data.tables()),
            "audio": fingerprint(data.source_files()), "fbank": dataclasses.asdict(options)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--split", action="append", required=True, metavar="NAME=KALDI_DIR")
    parser.add_argument("--force", action="store_true", help="recompute features built from other inputs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one is fastest for short FFTs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    options = FbankOptions()
    for name, source in dict(item.split("=", 1) for item in args.split).items():
        target = args.out / name
        try:
            record = features_record(source, options)
            stamp = target / f"features{STAMP_SUFFIX}"
            if reusable(target, stamp, record, args.force, "features", built=target / FEATS_SCP):
                print(f"{target}: features of {source} exist; reusing them")
                continue
            start = time.perf_counter()
            frames = write_features(read_data_dir(source), target, options)
        except UserError as error:  # a malformed data dir, NaN/Inf or mixed-dimension features, stale features
            sys.exit(f"error: {error}")
        write_stamp(stamp, record)
        elapsed = time.perf_counter() - start
        print(f"{target}: {frames} frames from {source} in {elapsed:.1f} s ({frames / elapsed:,.0f} frames/s)")


if __name__ == "__main__":
    main()
