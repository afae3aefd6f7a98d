"""Write recognizer targets for Kaldi data dirs: phones (CMUdict / a lexicon / phone transcripts), characters or
sentencepiece subwords, and the unit model.

For each ``--split NAME=KALDI_DIR``:
  --units phones (default): ``OUT/NAME/phones.txt`` and ``OUT/NAME/oov_report.txt``, and prints the OOV report
    (see seqvq/data/lexicon.py for the 39-phone set, silence handling and the OOV policy). ``--phones NAME=FILE``
    takes that split's targets from a phone transcript file instead (e.g. Kaldi's ``ali-to-phones`` output
    mapped to phone symbols).
  --units chars | --units bpe --vocab-size N: ``OUT/NAME/text``, the normalized transcripts (see
    seqvq/data/units.py), for any language, no lexicon needed. The unit model is learned from the split named by
    ``--train-split`` (default ``train``) only.
The unit model goes to ``--unit-model`` (default ``OUT/units.json``); the run config's ``data.units`` names it.

Usage: PYTHONPATH=. python data_prep/make_targets.py --out exp/feats --split train=data/mini/train \\
           --split dev=data/mini/dev [--units bpe --vocab-size 300]
"""
import argparse
import sys
from pathlib import Path

from seqvq.data.kaldi import DataDirError, read_data_dir
from seqvq.data.speech_corpus import make_targets, save_targets
from seqvq.data.units import TEXT, UNIT_KINDS, UNKNOWN, UnitInventory, normalize_transcript, write_transcripts


def text_units(splits: dict[str, str], args) -> UnitInventory:
    """Write every split's normalized ``text``; learn the unit model from the training split's transcripts."""
    transcripts = {}
    for name, source in splits.items():
        data = read_data_dir(source, check_audio=False)
        if not data.text:
            raise DataDirError(f"{Path(source) / 'text'}: missing; {args.units} units need transcripts")
        transcripts[name] = data.text
    if args.train_split not in transcripts:
        raise ValueError(f"--train-split {args.train_split}: no --split of that name (have {', '.join(splits)})")
    inventory = UnitInventory.train(args.units, transcripts[args.train_split].values(), args.vocab_size)
    for name, text in transcripts.items():
        write_transcripts(text, args.out / name / TEXT)
        units = [inventory.encode(line) for line in text.values() if normalize_transcript(line)]
        unknown = sum(unit == UNKNOWN for sequence in units for unit in sequence)
        print(f"{args.out / name}: {len(units)} utterances with text ({len(text) - len(units)} without); "
              f"{sum(map(len, units))} units, {unknown} unknown")
    return inventory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--split", action="append", required=True, metavar="NAME=KALDI_DIR")
    parser.add_argument("--units", default="phones", choices=UNIT_KINDS)
    parser.add_argument("--vocab-size", type=int, help="sentencepiece vocabulary size (--units bpe)")
    parser.add_argument("--train-split", default="train", help="the split the unit model is learned from")
    parser.add_argument("--unit-model", type=Path, help="where to write the unit model (default OUT/units.json)")
    parser.add_argument("--phones", action="append", default=[], metavar="NAME=FILE")
    parser.add_argument("--lexicon", type=Path, help="Kaldi lexicon.txt instead of CMUdict")
    parser.add_argument("--oov-policy", default="drop_utterance", choices=["drop_utterance", "drop_word"])
    args = parser.parse_args()
    if args.units == "bpe" and not args.vocab_size:
        parser.error("--units bpe needs --vocab-size N")
    if args.units != "phones" and (args.phones or args.lexicon):
        parser.error("--phones and --lexicon give phone targets; drop them or use --units phones")

    splits = dict(item.split("=", 1) for item in args.split)
    try:
        if args.units == "phones":
            phone_files = dict(item.split("=", 1) for item in args.phones)
            for name, source in splits.items():
                targets = make_targets(read_data_dir(source, check_audio=False), phone_files.get(name),
                                       args.lexicon, args.oov_policy)
                save_targets(targets, args.out / name)
                print(f"{args.out / name}: {targets.report()}")
            inventory = UnitInventory.phones()
        else:
            inventory = text_units(splits, args)
    except (DataDirError, ValueError) as error:
        sys.exit(f"error: {error}")
    unit_model = args.unit_model or args.out / "units.json"
    inventory.save(unit_model)
    print(f"{unit_model}: {inventory.kind} units, {len(inventory.symbols)} of them")


if __name__ == "__main__":
    main()
