"""The built-corpus pipeline: espeak-ng synthesis -> valid Kaldi dirs -> features and targets (skipped without
espeak-ng), and the resampler it uses."""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seqvq.data.kaldi import read_data_dir
from seqvq.data.speech_corpus import load_split, make_targets, read_features, write_features

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "data_prep"))
from make_mini_wsj import resample  # noqa: E402


def test_resample_keeps_frequency_and_length():
    t = np.arange(22050) / 22050
    out = resample(np.sin(2 * np.pi * 440 * t), 22050, 16000)
    assert len(out) == 16000
    assert abs(np.argmax(np.abs(np.fft.rfft(out))) - 440) <= 1
    assert np.abs(out).max() == pytest.approx(1.0, abs=0.02)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_built_corpus_is_a_valid_kaldi_dir_with_features_and_targets(tmp_path):
    command = [sys.executable, str(ROOT / "data_prep" / "make_mini_wsj.py"), "--out", str(tmp_path / "corpus"),
               "--train-utts", "3", "--dev-utts", "2", "--test-utts", "2", "--vocabulary", "50", "--jobs", "1"]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin:/usr/local/bin"}
    subprocess.run(command, check=True, capture_output=True, env=env)
    train = read_data_dir(tmp_path / "corpus" / "train")
    dev = read_data_dir(tmp_path / "corpus" / "dev")
    assert len(train.utterances) == 3 and train.sample_rate == 16000
    assert not set(train.spk2utt) & set(dev.spk2utt)  # speakers do not cross splits
    frames = write_features(train, tmp_path / "feats")
    features = read_features(tmp_path / "feats")
    assert sum(len(features[u]) for u in train.utterances) == frames and features[train.utterances[0]].shape[1] == 81
    targets = make_targets(train)
    assert set(targets.targets) == set(train.utterances) and not targets.oov_words
    again = subprocess.run(command, check=True, capture_output=True, env=env, text=True)
    assert "reusing it" in again.stdout
    loaded_features, loaded_targets = load_split(tmp_path / "corpus" / "dev")  # a raw Kaldi dir, in memory
    assert set(loaded_features) == set(loaded_targets) == set(dev.utterances)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_fewer_training_speakers_keep_the_dev_and_test_voices(tmp_path):
    def build(out, *extra):
        subprocess.run([sys.executable, str(ROOT / "data_prep" / "make_mini_wsj.py"), "--out", str(out),
                        "--train-utts", "4", "--dev-utts", "2", "--test-utts", "2", "--vocabulary", "50",
                        "--jobs", "1", *extra], check=True, capture_output=True)
        return {split: read_data_dir(out / split) for split in ("train", "dev", "test")}
    default, two = build(tmp_path / "ten"), build(tmp_path / "two", "--train-speakers", "2")
    assert len(default["train"].spk2utt) == 4 and len(two["train"].spk2utt) == 2
    assert len(two["train"].utterances) == 4 and set(two["train"].spk2utt) <= set(default["train"].spk2utt)
    for split in ("dev", "test"):
        assert set(two[split].spk2utt) == set(default[split].spk2utt)
    bad = subprocess.run([sys.executable, str(ROOT / "data_prep" / "make_mini_wsj.py"), "--out", str(tmp_path / "x"),
                          "--train-speakers", "11"], capture_output=True, text=True)
    assert bad.returncode == 1 and "--train-speakers must be between 1 and 10" in bad.stderr
