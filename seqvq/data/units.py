"""Output units of the speech recognizer: phones (through a lexicon), characters, or sentencepiece subwords.

``phones``: the 39 ARPAbet phones of :mod:`seqvq.data.lexicon` (English; targets from CMUdict, a lexicon or phone
transcripts). ``chars``: the characters of the training transcripts plus a word-boundary unit ``▁``.
``bpe``: sentencepiece BPE pieces (Kudo & Richardson 2018), whose ``▁`` marks a word start. Characters and
subwords need no lexicon, so they work for a Kaldi data dir in any language (Unicode text).

Both text units are learned from the *training* transcripts only. Transcripts are first normalized (choices made
here, the papers train on phones only): Unicode NFC, lower case (case carries no acoustic information),
non-speech words in brackets (``<noise>``, ``[laughter]``) dropped, runs of whitespace collapsed to one space.
Words are rebuilt from units by joining them and splitting at ``▁`` (as sentencepiece detokenizes), so the
recognizer is scored in CER and WER on the normalized transcript. A unit that cannot be encoded (a character
never seen in training) becomes ``<unk>``, which is written ``⁇`` in hypotheses and never matches a reference.

A :class:`UnitInventory` serializes to JSON bytes (:meth:`UnitInventory.to_bytes`), the sentencepiece model
included, which the speech task keeps in a buffer so that every checkpoint carries its unit model.
"""
from __future__ import annotations

import base64
import io
import json
import os
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path

from seqvq.data.lexicon import PHONES, is_nonspeech_word
from seqvq.errors import UserError

UNIT_KINDS = ("phones", "chars", "bpe")
WORD_BOUNDARY = "\u2581"  # "▁", sentencepiece's word-start mark; the chars' word-boundary unit
UNKNOWN = "<unk>"
UNKNOWN_TEXT = "\u2047"  # "⁇", how an unknown unit reads in a hypothesis
TEXT = "text"  # a prepared split's normalized transcripts, one ``utt word word ...`` line each


def normalize_transcript(text: str) -> str:
    """NFC, lower case, non-speech words dropped, single spaces (module docstring)."""
    words = unicodedata.normalize("NFC", text).lower().split()
    return " ".join(word for word in words if not is_nonspeech_word(word))


class UnitInventory:
    """The CTC output units (blank excluded) and the map between a transcript and its unit sequence."""

    def __init__(self, kind: str, symbols: Iterable[str], sentencepiece_model: bytes | None = None):
        if kind not in UNIT_KINDS:
            raise UserError(f"units must be one of {', '.join(UNIT_KINDS)}, got {kind!r}")
        self.kind = kind
        self.symbols = tuple(symbols)
        self.ids = {symbol: index for index, symbol in enumerate(self.symbols)}
        self.sentencepiece_model = sentencepiece_model
        self._processor = None
        if sentencepiece_model is not None:
            import sentencepiece

            self._processor = sentencepiece.SentencePieceProcessor(model_proto=sentencepiece_model)

    @classmethod
    def phones(cls) -> "UnitInventory":
        return cls("phones", PHONES)

    @classmethod
    def train_chars(cls, transcripts: Iterable[str]) -> "UnitInventory":
        """``<unk>``, ``▁`` and every character of the (normalized) training transcripts, sorted."""
        characters = set()
        for text in transcripts:
            characters.update(normalize_transcript(text).replace(" ", ""))
        if not characters:
            raise UserError("the training transcripts are empty; character units need text")
        return cls("chars", [UNKNOWN, WORD_BOUNDARY, *sorted(characters - {WORD_BOUNDARY})])

    @classmethod
    def train_bpe(cls, transcripts: Iterable[str], vocab_size: int) -> "UnitInventory":
        """Sentencepiece BPE with at most ``vocab_size`` pieces (``<unk>`` included) on the normalized training
        transcripts: identity normalization (ours is done already), every character covered, one thread, so the
        same transcripts give the same model. A small corpus may give fewer pieces than asked for."""
        import sentencepiece

        sentences = [s for s in (normalize_transcript(t) for t in transcripts) if s]
        if not sentences:
            raise UserError("the training transcripts are empty; subword units need text")
        model = io.BytesIO()
        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences), model_writer=model, vocab_size=int(vocab_size),
                model_type="bpe", character_coverage=1.0, normalization_rule_name="identity",
                hard_vocab_limit=False, bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0, num_threads=1,
                minloglevel=2)
        except RuntimeError as error:
            raise UserError(f"sentencepiece could not train {vocab_size} units on {len(sentences)} training "
                             f"transcripts ({error}); choose another --vocab-size") from None
        processor = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())
        return cls("bpe", [processor.id_to_piece(i) for i in range(processor.get_piece_size())],
                   model.getvalue())

    @classmethod
    def train(cls, kind: str, transcripts: Iterable[str], vocab_size: int | None = None) -> "UnitInventory":
        if kind == "phones":
            return cls.phones()
        if kind == "chars":
            return cls.train_chars(transcripts)
        if kind == "bpe":
            if not vocab_size:
                raise UserError("bpe units need a vocabulary size (--vocab-size N)")
            return cls.train_bpe(transcripts, vocab_size)
        raise UserError(f"units must be one of {', '.join(UNIT_KINDS)}, got {kind!r}")

    @property
    def has_words(self) -> bool:
        """Whether words can be rebuilt from the units (characters and subwords; not phones)."""
        return self.kind != "phones"

    def encode(self, transcript: str) -> list[str]:
        """A (raw) transcript -> its units; unseen characters become ``<unk>``. Phones have no text encoding."""
        text = normalize_transcript(transcript)
        if self.kind == "chars":
            return [c if c in self.ids else UNKNOWN for c in text.replace(" ", WORD_BOUNDARY)]
        if self.kind == "bpe":
            return [self.symbols[index] for index in self._processor.encode(text)]  # unknown -> id 0, <unk>
        raise UserError("phone units come from a lexicon, not from text; see seqvq.data.lexicon")

    def to_text(self, units: Iterable[str]) -> str:
        """Units -> the words they spell, single-spaced (``▁`` starts a word; ``<unk>`` reads ``⁇``)."""
        joined = "".join(UNKNOWN_TEXT if unit == UNKNOWN else unit for unit in units)
        return " ".join(joined.replace(WORD_BOUNDARY, " ").split())

    def to_bytes(self) -> bytes:
        record = {"kind": self.kind, "symbols": list(self.symbols)}
        if self.sentencepiece_model is not None:
            record["sentencepiece_model"] = base64.b64encode(self.sentencepiece_model).decode("ascii")
        return json.dumps(record, ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_bytes(cls, payload: bytes, where: str = "unit model") -> "UnitInventory":
        try:
            record = json.loads(payload.decode("utf-8"))
            model = record.get("sentencepiece_model")
            return cls(record["kind"], record["symbols"], base64.b64decode(model) if model else None)
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise UserError(f"{where}: not a unit model written by seqvq ({error!r}); rerun "
                             f"data_prep/make_targets.py") from None

    def save(self, path: str | Path) -> None:
        """Write the JSON atomically (temp file in the same directory, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(self.to_bytes())
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: str | Path) -> "UnitInventory":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: unit model missing; write it with data_prep/make_targets.py --units")
        return cls.from_bytes(path.read_bytes(), str(path))

    def __repr__(self) -> str:
        return f"UnitInventory({self.kind!r}, {len(self.symbols)} units)"


def write_transcripts(text: Mapping[str, str], path: str | Path) -> None:
    """``utt normalized transcript`` lines, sorted, atomically; utterances whose text normalizes away are left
    out (a target needs at least one unit)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        for utt in sorted(text):
            normalized = normalize_transcript(text[utt])
            if normalized:
                handle.write(f"{utt} {normalized}\n")
    os.replace(temporary, path)


def read_transcripts(path: str | Path) -> dict[str, str]:
    """``utt word word ...`` lines -> ``{utt: "word word ..."}``, with file:line errors."""
    transcripts: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.split(maxsplit=1)
            if not parts:
                raise UserError(f"{path}:{number}: empty line; delete it")
            if parts[0] in transcripts:
                raise UserError(f"{path}:{number}: utterance {parts[0]!r} appears twice; keep one line")
            transcripts[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return transcripts
