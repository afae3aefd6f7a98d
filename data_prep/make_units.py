"""Discrete speech units for the speech_ctc task: layer features -> k-means units -> dedup + sentencepiece tokens.

  features  ``--encoder none|CHECKPOINT --layer L --split NAME=DIR ... --out OUT``: OUT/NAME/feats.{ark,scp} of
            the log-mel frames (``none``) or of layer L of a speech_ctc checkpoint's encoder (0: front end, 1..:
            BiLSTM layers; seqvq.units.encoder_features), and OUT/NAME/utt2dur (seconds: 10 ms per input frame).
  kmeans    ``--features OUT/train --units K --out KM.pt``: seqvq.units.KMeansTokenizer fitted from the stream of
            the training features (padded batches of 16 utterances), Lloyd passes, one thread.
  tokens    ``--kmeans KM.pt --features OUT --targets WSJFEATS --vocab-size V --out TOK``: every split's codes,
            de-duplicated (ESPnet asr2 / DiscreteSSL), each unit written as one character and sentencepiece BPE
            (at most V pieces, learned on the training split) over those unit strings; TOK/NAME/feats.{ark,scp}
            holds each utterance's token ids as one-dimensional features (the input_tokens of speech_ctc's model),
            TOK/NAME/phones.txt its targets (from WSJFEATS/NAME), TOK/train/cmvn.ark identity statistics, and
            TOK/bitrate.json the bits per second of each token stream (frames, dedup units, sentencepiece tokens):
            nominal (log2 of the vocabulary per token) and empirical (unigram entropy per token), per split.

Each output's record of what it was built from goes beside it (``<output>.stamp.json``, seqvq/train/stamps.py): a
rerun reuses an output built from the same (so the K rows share one feature dump), refuses one built from anything
else in one line naming what changed, and rebuilds it with --force.
"""
import argparse
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from seqvq.data.speech_corpus import FeatureArchive
from seqvq.errors import UserError
from seqvq.metrics.bits import stream_bit_rate
from seqvq.train.stamps import STAMP_SUFFIX, files_under, fingerprint, reusable, write_stamp
from seqvq.units import KMeansTokenizer, dedup
from seqvq.units.encoder_features import dump_layer_features

UNIT_CHARACTERS = 0x4E00  # unit u is the character chr(0x4E00 + u) (CJK ideographs, as ESPnet asr2 maps units)
FRAME_SECONDS = 0.01


def build(out: Path, record: dict, force: bool, what: str) -> bool:
    """Whether to build ``out`` (an earlier, incomplete or forced one is removed first); False: it was built from
    ``record`` and is reused (said in one line)."""
    stamp = Path(f"{out}{STAMP_SUFFIX}")
    if reusable(out, stamp, record, force, what):
        print(f"{out}: {what} built from the same inputs exist; reusing them")
        return False
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    stamp.unlink(missing_ok=True)
    return True


def splits_of(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def features(args) -> None:
    from seqvq.tasks.speech import SpeechEncoderLayers

    encoder = None if args.encoder == "none" else SpeechEncoderLayers(args.encoder)
    for name, source in splits_of(args.split).items():
        out = Path(args.out) / name
        record = {"encoder": "none" if encoder is None else fingerprint([args.encoder]),
                  "layer": args.layer if encoder is not None else 0,
                  "source": fingerprint(files_under(source))}
        if not build(out, record, args.force, "layer features"):
            continue
        frames = dump_layer_features(encoder, args.layer if encoder is not None else 0, source, out)
        inputs = FeatureArchive(Path(source) / "feats.scp")
        (out / "utt2dur").write_text("".join(f"{utt} {len(inputs[utt]) * FRAME_SECONDS:.2f}\n"
                                             for utt in inputs.entries), encoding="utf-8")
        write_stamp(f"{out}{STAMP_SUFFIX}", record)
        print(f"{out}: {frames} frames of {'log-mel' if encoder is None else f'layer {args.layer}'} features")


class Batches:
    """Padded batches ``(features (B, T, D), lengths)`` of ``size`` utterances of a feats.scp, on every pass."""

    def __init__(self, archive: FeatureArchive, size: int = 16):
        self.archive, self.size, self.keys = archive, size, list(archive.entries)

    def __iter__(self):
        for first in range(0, len(self.keys), self.size):
            matrices = [torch.from_numpy(np.array(self.archive[k])) for k in self.keys[first:first + self.size]]
            yield (torch.nn.utils.rnn.pad_sequence(matrices, batch_first=True),
                   torch.tensor([len(m) for m in matrices]))


def kmeans(args) -> None:
    out = Path(args.out)
    record = {"units": args.units, "passes": args.passes, "seed": args.seed,
              "features": fingerprint(files_under(args.features))}
    if not build(out, record, args.force, "k-means units"):
        return
    archive = FeatureArchive(Path(args.features) / "feats.scp")
    dim = archive[next(iter(archive.entries))].shape[1]
    tokenizer = KMeansTokenizer(args.units, dim, passes=args.passes, seed=args.seed)
    tokenizer.fit(Batches(archive), log=lambda line: print(f"{out.name}: {line}", flush=True))
    tokenizer.save(out)
    write_stamp(f"{out}{STAMP_SUFFIX}", record)


def tokens(args) -> None:
    import kaldiio
    import sentencepiece

    out = Path(args.out)
    names = [path.name for path in sorted(Path(args.features).iterdir()) if (path / "feats.scp").is_file()]
    record = {"kmeans": fingerprint([args.kmeans]), "vocab_size": args.vocab_size,
              "features": fingerprint(f for name in names for f in files_under(Path(args.features) / name)),
              "targets": fingerprint(Path(args.targets) / name / "phones.txt" for name in names)}
    if not build(out, record, args.force, "unit tokens"):
        return
    tokenizer = KMeansTokenizer.load(args.kmeans)
    codes, units = {}, {}
    for name in names:
        archive = FeatureArchive(Path(args.features) / name / "feats.scp")
        codes[name] = {utt: tokenizer.encode(torch.from_numpy(np.array(archive[utt]))[None])[0]
                       for utt in archive.entries}
        units[name] = {utt: dedup(c)[0].tolist() for utt, c in codes[name].items()}
    strings = {name: {utt: "".join(chr(UNIT_CHARACTERS + u) for u in seq) for utt, seq in split.items()}
               for name, split in units.items()}
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(strings["train"].values()), model_writer=model, vocab_size=args.vocab_size,
        model_type="bpe", character_coverage=1.0, normalization_rule_name="identity", hard_vocab_limit=False,
        split_by_whitespace=False, add_dummy_prefix=False, max_sentencepiece_length=16, bos_id=-1, eos_id=-1,
        pad_id=-1, unk_id=0, num_threads=1, minloglevel=2)
    processor = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())
    out.mkdir(parents=True)
    (out / "sentencepiece.model").write_bytes(model.getvalue())
    figures = {"units": tokenizer.num_units, "sentencepiece_pieces": processor.get_piece_size()}
    for name in names:
        split = out / name
        split.mkdir()
        ids = {utt: processor.encode(text) for utt, text in strings[name].items()}
        with kaldiio.WriteHelper(f"ark,scp:{(split / 'feats.ark').resolve()},{split / 'feats.scp'}") as writer:
            for utt, sequence in ids.items():
                writer(utt, np.asarray(sequence, dtype=np.float32)[:, None])
        shutil.copy(Path(args.targets) / name / "phones.txt", split / "phones.txt")
        seconds = sum(float(line.split()[1]) for line in
                      (Path(args.features) / name / "utt2dur").read_text().splitlines())
        streams = {"frames": ([c.tolist() for c in codes[name].values()], tokenizer.num_units),
                   "dedup": (list(units[name].values()), tokenizer.num_units),
                   "sentencepiece": (list(ids.values()), processor.get_piece_size())}
        figures[name] = {stream: stream_bit_rate(sequences, vocabulary, seconds)
                         for stream, (sequences, vocabulary) in streams.items()}
        figures[name]["seconds"] = seconds
    count = 1000.0  # identity statistics: mean 0, variance 1 (the token ids pass through unchanged)
    kaldiio.save_mat(str(out / "train" / "cmvn.ark"), np.array([[0.0, count], [count, 0.0]]))
    (out / "bitrate.json").write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    write_stamp(f"{out}{STAMP_SUFFIX}", record)
    print(json.dumps({name: {k: round(v["entropy_bps"], 1) for k, v in figures[name].items() if isinstance(v, dict)}
                      for name in names}))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = parser.add_subparsers(dest="step", required=True)
    step = steps.add_parser("features")
    step.add_argument("--encoder", required=True, help="none (log-mel) or a speech_ctc checkpoint")
    step.add_argument("--layer", type=int, default=-1)
    step.add_argument("--split", action="append", required=True, help="NAME=DIR (a prepared split or Kaldi dir)")
    step.add_argument("--out", required=True)
    step = steps.add_parser("kmeans")
    step.add_argument("--features", required=True)
    step.add_argument("--units", type=int, required=True)
    step.add_argument("--passes", type=int, default=10)
    step.add_argument("--seed", type=int, default=0)
    step.add_argument("--out", required=True)
    step = steps.add_parser("tokens")
    step.add_argument("--kmeans", required=True)
    step.add_argument("--features", required=True)
    step.add_argument("--targets", required=True, help="the prepared speech splits (NAME/phones.txt)")
    step.add_argument("--vocab-size", type=int, required=True)
    step.add_argument("--out", required=True)
    for step in steps.choices.values():
        step.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    try:
        {"features": features, "kmeans": kmeans, "tokens": tokens}[args.step](args)
    except UserError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
