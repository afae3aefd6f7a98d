"""ScribbleLens zip reader on a fixture in the corpus layout, the .npz line corpus, and line batching."""
import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from seqvq.data.lines import LineCorpus, LineSample, collate_lines, quantize_ink, save_line_corpus
from seqvq.data.scribblelens import ScribbleLensLines

ROOT = "scribblelens.corpus.v1/"


def _jpeg(width, height, ink_box):
    """White page with a black rectangle `ink_box` = (x0, y0, x1, y1)."""
    page = np.full((height, width), 255, dtype=np.uint8)
    x0, y0, x1, y1 = ink_box
    page[y0:y1, x0:x1] = 0
    buffer = io.BytesIO()
    Image.fromarray(page).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _make_corpus(path, broken=None, missing=None):
    """A zip laid out like scribblelens.corpus.v1.2.zip: lists under corpora/, lines under nl/<scribe>/<page>/."""
    train = ["nl/tasman/36.1/line1.jpg nl/tasman/36.1/line1.txt", "", "nl/kieft/2/line2.jpg"]
    test = ["nl/zeewijck/10.0/line7.jpg nl/zeewijck/10.0/line7.txt"]
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(ROOT + "corpora/nl.bw.lines.train.dat", "\n".join(train) + "\n")
        archive.writestr(ROOT + "corpora/nl.bw.lines.test.dat", "\n".join(test) + "\n")
        archive.writestr(ROOT + "nl/tasman/36.1/line1.jpg", _jpeg(320, 64, (40, 16, 120, 48)))
        archive.writestr(ROOT + "nl/tasman/36.1/line1.txt", "de Zee\n")
        if missing != "nl/kieft/2/line2.jpg":
            payload = b"not an image" if broken == "nl/kieft/2/line2.jpg" else _jpeg(90, 45, (0, 0, 30, 45))
            archive.writestr(ROOT + "nl/kieft/2/line2.jpg", payload)
        archive.writestr(ROOT + "nl/zeewijck/10.0/line7.jpg", _jpeg(100, 32, (10, 0, 20, 32)))
        archive.writestr(ROOT + "nl/zeewijck/10.0/line7.txt", "Anno 1727")


def test_reads_lines_resized_and_quantized(tmp_path):
    path = tmp_path / "scribblelens.corpus.v1.2.zip"
    _make_corpus(path)
    train = ScribbleLensLines(str(path), "train", height=32, levels=4)
    assert len(train) == 2
    first = train[0]
    assert first.image.shape == (32, 160)  # 320 x 64 scaled by 1/2, aspect kept
    assert first.text == "de Zee"
    assert first.name == ROOT + "nl/tasman/36.1/line1.jpg"
    assert int(first.image.min()) == 0 and int(first.image.max()) == 3
    # the ink rectangle (x 40..120, y 16..48 in the original) is the top level, the paper is level 0
    assert (first.image[12:20, 25:55] == 3).all()
    assert (first.image[:, 70:] == 0).all()
    second = train[1]
    assert second.image.shape == (32, 64) and second.text == ""
    test = ScribbleLensLines(str(path), "test", height=32, levels=2)
    assert len(test) == 1 and test[0].text == "Anno 1727" and int(test[0].image.max()) == 1


def test_missing_member_is_named(tmp_path):
    path = tmp_path / "corpus.zip"
    _make_corpus(path, missing="nl/kieft/2/line2.jpg")
    with pytest.raises(ValueError, match="nl/kieft/2/line2.jpg"):
        ScribbleLensLines(str(path), "train")


def test_corrupt_member_is_named(tmp_path):
    path = tmp_path / "corpus.zip"
    _make_corpus(path, broken="nl/kieft/2/line2.jpg")
    lines = ScribbleLensLines(str(path), "train")
    lines[0]
    with pytest.raises(ValueError, match="nl/kieft/2/line2.jpg"):
        lines[1]


def test_not_the_corpus(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="nl.bw.lines.train.dat"):
        ScribbleLensLines(str(path), "train")


def test_quantize_levels():
    gray = np.array([[255, 192, 128, 64, 0]], dtype=np.uint8)
    assert quantize_ink(gray, 4).tolist() == [[0, 0, 1, 2, 3]]
    assert quantize_ink(gray, 4, ink_is_dark=False).tolist() == [[3, 3, 2, 1, 0]]


def test_line_corpus_roundtrip_and_collate(tmp_path):
    rng = np.random.default_rng(0)
    lines = [rng.integers(0, 4, size=(32, width), dtype=np.uint8) for width in (5, 9, 3)]
    path = tmp_path / "train.npz"
    save_line_corpus(str(path), lines, ["12", "345", "6"], levels=4)
    assert [p.name for p in tmp_path.iterdir()] == ["train.npz"]  # no temp file left behind
    corpus = LineCorpus(str(path))
    assert len(corpus) == 3 and corpus.levels == 4
    for sample, line in zip(corpus, lines):
        assert torch.equal(sample.image, torch.from_numpy(line.astype(np.int64)))
    batch = collate_lines([corpus[0], corpus[1], corpus[2]])
    assert batch.images.shape == (3, 32, 9)
    assert batch.widths.tolist() == [5, 9, 3]
    assert batch.mask.sum(1).tolist() == [5, 9, 3]
    assert (batch.images[0, :, 5:] == 0).all() and batch.texts == ["12", "345", "6"]


def test_collate_rejects_mixed_heights():
    with pytest.raises(ValueError, match="height"):
        collate_lines([LineSample(torch.zeros(32, 4, dtype=torch.long), "", "a"),
                       LineSample(torch.zeros(16, 4, dtype=torch.long), "", "b")])


def test_corrupt_npz_is_named(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.npz"):
        LineCorpus(str(path))
