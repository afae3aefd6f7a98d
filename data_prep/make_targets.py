"""Write recognizer targets for Kaldi data dirs: phones (CMUdict / a lexicon / phone transcripts), characters or
sentencepiece subwords, the unit model, and the training split's global CMVN statistics.

For each ``--split NAME=KALDI_DIR``:
  --units phones (default): ``OUT/NAME/phones.txt`` and ``OUT/NAME/oov_report.txt``, and prints the OOV report
    naming the dropped utterances (see seqvq/data/lexicon.py for the 39-phone set, silence handling and the OOV
    policy). ``--phones NAME=FILE`` takes that split's targets from a phone transcript file instead (e.g. Kaldi's
    ``ali-to-phones`` output mapped to phone symbols).
  --units chars | --units bpe --vocab-size N: ``OUT/NAME/text``, the normalized transcripts (see
    seqvq/data/units.py), for any language, no lexicon needed. The unit model is learned from the split named by
    ``--train-split`` (default ``train``) only.
The unit model goes to ``--unit-model`` (default ``OUT/units.json``); the run config's ``data.units`` names it.
``--cmvn FILE`` writes the global CMVN statistics (after Δ/ΔΔ unless ``--no-deltas``) of the ``--train-split``'s
features (``OUT/<train split>/feats.scp``, from data_prep/compute_features.py) over the utterances that have
targets: an utterance left out of training is left out of the statistics too.

``<unit model>.stamp.json`` records what the targets were built from (each split's data dir and transcripts, the
lexicon or phone files, the unit options, the features under the statistics: names, sizes, times; see
seqvq/train/stamps.py): a rerun reuses targets built from the same, and refuses targets built from anything else
in one line naming what changed, unless ``--force``, which rebuilds them.

Usage: PYTHONPATH=. python data_prep/make_targets.py --out exp/feats --split train=data/mini/train \\
           --split dev=data/mini/dev [--units bpe --vocab-size 300] [--cmvn exp/feats/train/cmvn.ark]
"""
import argparse
import sys
from pathlib import Path

from seqvq.data.kaldi import DataDirError, read_data_dir
from seqvq.data.speech_corpus import PHONES, compute_cmvn, make_targets, read_features, save_cmvn, save_targets
from seqvq.data.units import TEXT, UNIT_KINDS, UNKNOWN, UnitInventory, normalize_transcript, write_transcripts
from seqvq.errors import UserError
from seqvq.train.stamps import STAMP_SUFFIX, fingerprint, reusable, write_stamp


def text_units(splits: dict[str, str], args) -> tuple[UnitInventory, dict[str, set[str]]]:
    """Write every split's normalized ``text``; learn the unit model from the training split's transcripts.
    Returns it and each split's utterances with a (non-empty) transcript."""
    transcripts = {}
    for name, source in splits.items():
        data = read_data_dir(source, check_audio=False)
        if not data.text:
            raise DataDirError(f"{Path(source) / 'text'}: missing; {args.units} units need transcripts")
        transcripts[name] = data.text
    inventory = UnitInventory.train(args.units, transcripts[args.train_split].values(), args.vocab_size)
    kept = {}
    for name, text in transcripts.items():
        write_transcripts(text, args.out / name / TEXT)
        kept[name] = {utt for utt, line in text.items() if normalize_transcript(line)}
        units = [inventory.encode(text[utt]) for utt in sorted(kept[name])]
        unknown = sum(unit == UNKNOWN for sequence in units for unit in sequence)
        print(f"{args.out / name}: {len(units)} utterances with text ({len(text) - len(units)} without); "
              f"{sum(map(len, units))} units, {unknown} unknown")
    return inventory, kept


def phone_units(splits: dict[str, str], args) -> tuple[UnitInventory, dict[str, set[str]]]:
    """Write every split's ``phones.txt`` and OOV report; returns the phone set and each split's utterances with
    targets."""
    phone_files = dict(item.split("=", 1) for item in args.phones)
    kept = {}
    for name, source in splits.items():
        targets = make_targets(read_data_dir(source, check_audio=False), phone_files.get(name), args.lexicon,
                               args.oov_policy)
        save_targets(targets, args.out / name)
        kept[name] = set(targets.targets)
        print(f"{args.out / name}: {targets.report()}")
    return UnitInventory.phones(), kept


def targets_record(splits: dict[str, str], args) -> dict:
    """What the targets are built from: each split's data dir and transcripts (or phone file), the lexicon, the
    unit options, and the features the statistics are computed over."""
    phone_files = dict(item.split("=", 1) for item in args.phones)
    record = {"units": args.units, "vocab_size": args.vocab_size, "oov_policy": args.oov_policy,
              "lexicon": fingerprint([args.lexicon]) if args.lexicon else None,
              "splits": {name: {"source": str(Path(source).resolve()),
                                "text": fingerprint([Path(source) / "text"]),
                                "phones": fingerprint([phone_files[name]]) if name in phone_files else None}
                         for name, source in splits.items()}}
    if args.cmvn:
        features = read_features(args.out / args.train_split)
        record["cmvn"] = {"path": str(args.cmvn.resolve()), "deltas": args.deltas,
                          "features": fingerprint([features.path, *features.files()])}
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--split", action="append", required=True, metavar="NAME=KALDI_DIR")
    parser.add_argument("--units", default="phones", choices=UNIT_KINDS)
    parser.add_argument("--vocab-size", type=int, help="sentencepiece vocabulary size (--units bpe)")
    parser.add_argument("--train-split", default="train", help="the split the unit model and statistics come from")
    parser.add_argument("--unit-model", type=Path, help="where to write the unit model (default OUT/units.json)")
    parser.add_argument("--phones", action="append", default=[], metavar="NAME=FILE")
    parser.add_argument("--lexicon", type=Path, help="Kaldi lexicon.txt instead of CMUdict")
    parser.add_argument("--oov-policy", default="drop_utterance", choices=["drop_utterance", "drop_word"])
    parser.add_argument("--cmvn", type=Path, help="write the training split's CMVN statistics here")
    parser.add_argument("--no-deltas", dest="deltas", action="store_false", help="CMVN on features without Δ/ΔΔ")
    parser.add_argument("--force", action="store_true", help="rebuild targets built from other inputs")
    args = parser.parse_args()
    if args.units == "bpe" and not args.vocab_size:
        parser.error("--units bpe needs --vocab-size N")
    if args.units != "phones" and (args.phones or args.lexicon):
        parser.error("--phones and --lexicon give phone targets; drop them or use --units phones")

    splits = dict(item.split("=", 1) for item in args.split)
    unit_model = args.unit_model or args.out / "units.json"
    target = TEXT if args.units != "phones" else PHONES
    outputs = [unit_model, *(args.out / name / target for name in splits), *([args.cmvn] if args.cmvn else [])]
    try:
        if (args.units != "phones" or args.cmvn) and args.train_split not in splits:
            raise UserError(f"--train-split {args.train_split}: no --split of that name (have {', '.join(splits)})")
        record = targets_record(splits, args)
        stamp = unit_model.with_suffix(STAMP_SUFFIX)
        if reusable(args.out, stamp, record, args.force, f"{args.units} targets", built=outputs):
            print(f"{args.out}: {args.units} targets of {', '.join(splits.values())} exist; reusing them")
            return
        inventory, kept = (phone_units if args.units == "phones" else text_units)(splits, args)
        if args.cmvn:
            used = kept[args.train_split]
            save_cmvn(compute_cmvn(read_features(args.out / args.train_split), args.deltas, used), args.cmvn)
            print(f"{args.cmvn}: global CMVN statistics of the {len(used)} utterances of {args.train_split} with "
                  f"targets (deltas={args.deltas})")
    except (UserError, ValueError) as error:
        sys.exit(f"error: {error}")
    inventory.save(unit_model)
    write_stamp(stamp, record)
    print(f"{unit_model}: {inventory.kind} units, {len(inventory.symbols)} of them")


if __name__ == "__main__":
    main()
