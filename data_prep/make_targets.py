"""Write phone targets (``phones.txt``) for Kaldi data dirs, from CMUdict / a lexicon or a phone transcript file.

For each ``--split NAME=KALDI_DIR`` writes ``OUT/NAME/phones.txt`` and ``OUT/NAME/oov_report.txt`` and prints
the OOV report (see seqvq/data/lexicon.py for the 39-phone set, silence handling and the OOV policy).
``--phones NAME=FILE`` takes that split's targets from a phone transcript file instead (e.g. Kaldi's
``ali-to-phones`` output mapped to phone symbols).

Usage: PYTHONPATH=. python data_prep/make_targets.py --out exp/feats --split train=data/mini/train
"""
import argparse
import sys
from pathlib import Path

from seqvq.data.kaldi import DataDirError, read_data_dir
from seqvq.data.speech_corpus import make_targets, save_targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--split", action="append", required=True, metavar="NAME=KALDI_DIR")
    parser.add_argument("--phones", action="append", default=[], metavar="NAME=FILE")
    parser.add_argument("--lexicon", type=Path, help="Kaldi lexicon.txt instead of CMUdict")
    parser.add_argument("--oov-policy", default="drop_utterance", choices=["drop_utterance", "drop_word"])
    args = parser.parse_args()

    phone_files = dict(item.split("=", 1) for item in args.phones)
    for name, source in (item.split("=", 1) for item in args.split):
        try:
            targets = make_targets(read_data_dir(source, check_audio=False), phone_files.get(name), args.lexicon,
                                   args.oov_policy)
        except (DataDirError, ValueError) as error:
            sys.exit(f"error: {error}")
        save_targets(targets, args.out / name)
        print(f"{args.out / name}: {targets.report()}")


if __name__ == "__main__":
    main()
