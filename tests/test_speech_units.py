"""Phone, character and sentencepiece units: the unit models, CER/WER, and each unit end to end on Kaldi dirs
made here (features, targets, training, evaluation of the prepared split and of the raw Kaldi dir)."""
import io
import json
import sys
from contextlib import redirect_stdout
from unittest import mock
from pathlib import Path

import numpy as np
import pytest
import yaml

from seqvq import cli
from seqvq.data.lexicon import read_phone_transcripts
from seqvq.data.speech_corpus import compute_cmvn, load_cmvn, read_features
from seqvq.data.units import UNKNOWN, WORD_BOUNDARY, UnitInventory, normalize_transcript
from seqvq.metrics.wer import character_error_counts, word_error_counts
from seqvq.train.checkpoint import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "data_prep"))
import compute_features  # noqa: E402
import make_targets  # noqa: E402
from helpers import write_kaldi_dir

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN_TEXT = ["de kat zit op de mat", "één kat", "THE CAT <noise> SAT", "de mat is rood", "rood is de kat",
              "the mat", "op de kat", "de rode mat"]


def test_normalization_is_nfc_lower_case_without_nonspeech_words():
    assert normalize_transcript("  E\u0301E\u0301N  <noise> [laughter] Kat ") == "\u00e9\u00e9n kat"


def test_chars_come_from_training_text_and_spell_words_back():
    chars = UnitInventory.train("chars", TRAIN_TEXT)
    assert chars.symbols[:2] == (UNKNOWN, WORD_BOUNDARY) and "é" in chars.symbols and "<" not in chars.symbols
    units = chars.encode("de kat")
    assert units == ["d", "e", WORD_BOUNDARY, "k", "a", "t"] and chars.to_text(units) == "de kat"
    assert chars.encode("zoë")[-1] == UNKNOWN  # never in training: unknown, read "⁇", never matches
    assert chars.to_text(chars.encode("de zoë")) == "de zo\u2047"
    for script in ("Привет мир", "你好 世界", "مرحبا بالعالم"):
        for kind, size in (("chars", None), ("bpe", 12)):
            other = UnitInventory.train(kind, [script] * 3, size)
            assert other.to_text(other.encode(script)) == script.lower()


def test_bpe_is_trained_on_training_text_only_deterministic_and_round_trips():
    bpe = UnitInventory.train("bpe", TRAIN_TEXT, vocab_size=30)
    assert bpe.kind == "bpe" and bpe.symbols[0] == UNKNOWN and len(bpe.symbols) <= 30
    assert UnitInventory.train("bpe", TRAIN_TEXT, vocab_size=30).to_bytes() == bpe.to_bytes()
    units = bpe.encode("De kat zit op de mat")
    assert units[0].startswith(WORD_BOUNDARY) and bpe.to_text(units) == "de kat zit op de mat"
    assert UNKNOWN in bpe.encode("xylofoon")  # x, y, f: not in the training text
    again = UnitInventory.from_bytes(bpe.to_bytes())
    assert again.symbols == bpe.symbols and again.encode("rode kat") == bpe.encode("rode kat")
    with pytest.raises(ValueError, match="vocabulary size"):
        UnitInventory.train("bpe", TRAIN_TEXT)


def test_cer_counts_spaces_and_wer_counts_words():
    characters = character_error_counts(["de kat", "op"], ["de  kt", ""])
    assert (characters.deletions, characters.reference_length) == (3, 8) and characters.rate == 3 / 8
    words = word_error_counts(["de kat zit", "op"], ["de kot zit mat", ""])
    assert (words.substitutions, words.deletions, words.insertions, words.reference_length) == (1, 1, 1, 4)


def run_script(script, arguments):
    """A data_prep script's main() with ``arguments`` as its command line; returns what it printed."""
    output = io.StringIO()
    with mock.patch.object(sys, "argv", [script.__file__, *map(str, arguments)]), redirect_stdout(output):
        script.main()
    return output.getvalue()


@pytest.fixture(scope="module")
def kaldi_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("units")
    write_kaldi_dir(root / "data" / "train", TRAIN_TEXT, seed=0)
    write_kaldi_dir(root / "data" / "dev", ["de kat is rood", "the cat sat", "zoë zit"], seed=1)
    feats = root / "feats"
    splits = ["--split", f"train={root / 'data' / 'train'}", "--split", f"dev={root / 'data' / 'dev'}"]
    run_script(compute_features, ["--out", feats, *splits])
    reports = {}
    for units in ("phones", "chars", "bpe"):
        arguments = ["--out", feats, *splits, "--units", units, "--unit-model", feats / f"units_{units}.json",
                     "--cmvn", feats / "train" / f"cmvn_{units}.ark"]
        reports[units] = run_script(make_targets, arguments + (["--vocab-size", 25] if units == "bpe" else []))
    return root, reports


@pytest.mark.parametrize("units", ["phones", "chars", "bpe"])
def test_each_unit_end_to_end(kaldi_dirs, tmp_path, capsys, units):
    root, reports = kaldi_dirs
    feats = root / "feats"
    assert f"{units} units" in reports[units]
    if units != "phones":  # learned from the training text only: the dev split's "ë" is unknown
        dev_report = next(line for line in reports[units].splitlines() if line.startswith(str(feats / "dev")))
        assert dev_report.endswith(", 1 unknown"), dev_report
    config = {
        "task": "speech_ctc",
        "data": {"train": str(feats / "train"), "dev": str(feats / "dev"),
                 "cmvn": str(feats / "train" / f"cmvn_{units}.ark"), "units": str(feats / f"units_{units}.json")},
        "model": {"in_channels": 3, "conv_channels": [4], "conv_kernels": [[3, 3]], "conv_strides": [[1, 2]],
                  "rnn_hidden": 16, "rnn_layers": 1, "bottleneck_dim": 8, "mixer_dim": 16,
                  "quantizer": {"codebook_size": 8, "pre_norm": True}},
        "train": {"steps": 3, "batch_size": 4, "lr": 1e-2, "eval_every": 3, "checkpoint_every": 3, "log_every": 1,
                  "device": "cpu", "threads": 1},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    cli.main(["train", str(tmp_path / "run.yaml"), "--exp-dir", str(tmp_path / "exp")])
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rates = {"per"} if units == "phones" else {"cer", "wer"}
    assert rates <= set(trained) and not ({"per", "cer", "wer"} - rates) & set(trained)
    assert {"code_perplexity", "codes_used"} <= set(trained)

    # The checkpoint carries its unit model: evaluation ignores the unit file, here deleted after a copy.
    checkpoint = tmp_path / "exp" / "checkpoints" / "last.pt"
    saved = bytes(read_checkpoint(checkpoint)["model"]["unit_model"].tolist())
    assert saved == (feats / f"units_{units}.json").read_bytes()
    for data in (feats / "dev", root / "data" / "dev"):  # the prepared split, then the raw Kaldi dir
        cli.main(["evaluate", str(checkpoint), str(data), "data.units=/nonexistent/units.json"])
        figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        for rate in rates:
            assert figures[rate] == pytest.approx(trained[rate])
        # the phones drop the dev utterance with an OOV word (zoë); characters and subwords keep all three
        assert figures["utterances"] == (2 if units == "phones" else 3)
    hypotheses = (Path(figures["out_dir"]) / "hyp.txt").read_text(encoding="utf-8").splitlines()
    assert len(hypotheses) == figures["utterances"]


def test_dropped_utterances_are_named_and_left_out_of_the_cmvn_statistics(kaldi_dirs):
    root, reports = kaldi_dirs
    train = root / "feats" / "train"
    report = next(line for line in reports["phones"].splitlines() if line.startswith(str(train)))
    assert "2 utterances dropped (s0_u00, s0_u01)" in report  # "zit" and "één" are not in CMUdict
    assert "dropped utterances: s0_u00 s0_u01" in (train / "oov_report.txt").read_text().splitlines()
    features = read_features(train)
    for units, kept in (("phones", read_phone_transcripts(train / "phones.txt").targets), ("chars", features)):
        expected = compute_cmvn({utt: features[utt] for utt in features if utt in kept}, deltas=True)
        assert np.array_equal(load_cmvn(train / f"cmvn_{units}.ark").stats, expected), units
    assert len(features) == len(TRAIN_TEXT) == len(read_phone_transcripts(train / "phones.txt").targets) + 2


def test_units_and_phone_options_do_not_mix(kaldi_dirs, tmp_path, capsys):
    root, _ = kaldi_dirs
    with pytest.raises(SystemExit) as exit_status:
        run_script(make_targets, ["--out", tmp_path, "--split", f"train={root / 'data' / 'train'}", "--units", "chars",
                                  "--lexicon", "lex.txt"])
    assert exit_status.value.code == 2 and "--phones and --lexicon give phone targets" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--train-split train: no --split of that name"):
        run_script(make_targets, ["--out", tmp_path, "--split", f"dev={root / 'data' / 'dev'}", "--units", "chars"])
