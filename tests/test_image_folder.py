"""A folder of PNG/JPEG line images as a handwriting corpus: conversion of every mode, deterministic splits, split
lists and transcripts, one-line errors naming the file, and a few training steps evaluated for bits/dim -- with
the user's folder left exactly as it was."""
import math

import numpy as np
import pytest
from PIL import Image

from seqvq.data.image_folder import ImageFolderLines, held_out
from seqvq.data.lines import image_to_levels
from seqvq.errors import UserError
from seqvq.tasks.handwriting import HandwritingTask, open_lines
from seqvq.train import Trainer, TrainConfig

HEIGHT, LEVELS = 16, 4
pytestmark = pytest.mark.usefixtures("one_thread")


def ink_line(height, width, seed):
    """8-bit gray line: white paper with dark vertical strokes."""
    rng = np.random.default_rng(seed)
    gray = np.full((height, width), 255, dtype=np.uint8)
    for left in range(2, width - 3, 7):
        top = int(rng.integers(0, height // 3))
        gray[top: top + height // 2, left: left + int(rng.integers(1, 4))] = int(rng.integers(0, 60))
    return gray


def save_in_mode(gray, mode, path):
    """Save an 8-bit gray line as `mode`, keeping what it looks like on white paper."""
    if mode == "RGBA":  # black ink whose darkness is in the alpha channel, on a transparent background
        rgba = np.zeros((*gray.shape, 4), dtype=np.uint8)
        rgba[..., 3] = 255 - gray
        Image.fromarray(rgba, "RGBA").save(path)
    elif mode == "I;16":
        Image.fromarray(gray.astype(np.uint16) * 257).save(path)  # 16-bit gray, mode I;16
    else:
        Image.fromarray(gray, "L").convert(mode).save(path)


MODES = ["L", "RGB", "RGBA", "P", "1", "I;16", "LA"]


@pytest.fixture
def folder(tmp_path):
    """22 lines of several sizes and modes (PNG and JPEG, some in a subfolder) and a transcript file."""
    root = tmp_path / "my lines"
    (root / "page2").mkdir(parents=True)
    names = []
    for index in range(22):
        height, width = [(20, 60), (40, 90), (64, 300), (11, 25)][index % 4]
        name = f"{'page2/' if index % 3 == 0 else ''}line{index:02d}.{'jpg' if index % 5 == 4 else 'png'}"
        mode = "RGB" if name.endswith(".jpg") else MODES[index % len(MODES)]
        save_in_mode(ink_line(height, width, index), mode, root / name)
        names.append(name)
    (root / "transcripts.txt").write_text("".join(f"{n} words of line {i}\n" for i, n in enumerate(names)))
    return root, names


def snapshot(root):
    return {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in root.rglob("*") if path.is_file()}


def test_every_mode_converts_like_the_scribblelens_reader(tmp_path):
    gray = ink_line(40, 90, seed=3)
    reference = image_to_levels(Image.fromarray(gray, "L"), HEIGHT, LEVELS)  # what ScribbleLensLines does
    assert reference.shape == (HEIGHT, 36) and reference.max() == LEVELS - 1 and reference[0, 0] == 0
    for mode in ("L", "RGB", "RGBA", "LA", "I;16", "P"):
        save_in_mode(gray, mode, tmp_path / f"{mode.replace(';', '')}.png")
        with Image.open(tmp_path / f"{mode.replace(';', '')}.png") as image:
            assert np.array_equal(image_to_levels(image, HEIGHT, LEVELS), reference), mode
    light = image_to_levels(Image.fromarray(255 - gray, "L"), HEIGHT, LEVELS, ink_is_dark=False)
    assert np.array_equal(light, reference)


def test_held_out_split_is_deterministic_disjoint_and_stable(folder):
    root, names = folder
    train = ImageFolderLines(root, "train", HEIGHT, LEVELS, test_fraction=0.2)
    test = ImageFolderLines(root, "test", HEIGHT, LEVELS, test_fraction=0.2)
    assert 1 <= len(test) < len(names) and sorted(train.names + test.names) == sorted(names)
    assert ImageFolderLines(root, "test", HEIGHT, LEVELS, test_fraction=0.2).names == test.names
    grown = held_out(names + [f"new{i}.png" for i in range(30)], 0.2)  # more images: old ones keep their split
    assert set(test.names) == grown & set(names)
    assert len(ImageFolderLines(root, "test", HEIGHT, LEVELS, test_fraction=1).names) == len(names)
    with pytest.raises(ValueError, match="no training images .* lower data.test_fraction"):
        ImageFolderLines(root, "train", HEIGHT, LEVELS, test_fraction=1)
    sample = test[0]
    assert sample.image.shape[0] == HEIGHT and sample.text.startswith("words of line")
    assert sample.name == str(root / test.names[0])


def test_split_lists_and_their_errors(folder, tmp_path):
    root, names = folder
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text("\n".join(names[:15]) + "\n")
    (lists / "test.txt").write_text("\n".join(names[15:]) + "\n\n")
    test = ImageFolderLines(root, "test", HEIGHT, LEVELS, train_list=lists / "train.txt", test_list=lists / "test.txt")
    assert test.names == names[15:]
    (lists / "test.txt").write_text(names[0] + "\nnot_there.png\n")
    with pytest.raises(ValueError, match=r"test.txt:2: not_there.png is not an image in the folder"):
        ImageFolderLines(root, "test", HEIGHT, LEVELS, train_list=lists / "train.txt", test_list=lists / "test.txt")
    (lists / "test.txt").write_text(names[0] + "\n")
    with pytest.raises(ValueError, match=r"1 images are in both split lists \(e.g. page2/line00.png\)"):
        ImageFolderLines(root, "test", HEIGHT, LEVELS, train_list=lists / "train.txt", test_list=lists / "test.txt")
    with pytest.raises(ValueError, match="give both split lists or neither"):
        ImageFolderLines(root, "test", HEIGHT, LEVELS, train_list=lists / "train.txt", test_list=lists / "none.txt")


def test_bad_image_and_empty_folder_errors_name_the_file(folder, tmp_path):
    root, _ = folder
    (root / "page2" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError) as error:
        ImageFolderLines(root, "test", HEIGHT, LEVELS, test_fraction=1)
    message = str(error.value)
    assert message.startswith(str(root / "page2" / "broken.png") + ": not a readable image") and "\n" not in message
    payload = (root / "line01.png").read_bytes()
    (root / "page2" / "broken.png").write_bytes(payload[: len(payload) // 2])  # header fine, pixels cut off
    lines = ImageFolderLines(root, "test", HEIGHT, LEVELS, test_fraction=1)
    with pytest.raises(ValueError, match=r"broken.png: not a readable image \(.*truncated"):
        lines[lines.names.index("page2/broken.png")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError) as error:
        open_lines(str(tmp_path / "empty"), "train", HEIGHT, LEVELS)
    assert "holds neither line images" in str(error.value) and "data/mini_handwriting" in str(error.value)
    assert not any((tmp_path / "empty").iterdir())


def test_folder_trains_and_evaluates_for_bits_per_dim_without_writing_into_it(folder, tmp_path):
    root, names = folder
    before = snapshot(root)
    config = {
        "task": "handwriting_ae", "exp_dir": str(tmp_path / "exp"),
        "data": {"corpus": str(root), "test_fraction": 0.2},
        "model": {"levels": LEVELS, "height": HEIGHT, "latent_dim": 8,
                  "encoder": {"channels": 8, "strides": [[2, 2], [2, 2], [2, 1]], "lstm_hidden": 8},
                  "decoder": {"channels": 8, "num_layers": 2, "first_kernel": 5},
                  "quantizer": {"codebook_size": 16, "pre_norm": True}},
        "eval": {"batch_size": 4, "grid_lines": 2},
    }
    bundle = HandwritingTask(config).build_task()
    test_lines = len(held_out(names, 0.2))
    assert len(bundle.train_dataset) == len(names) - test_lines
    train = TrainConfig(steps=4, batch_size=6, lr=3e-3, log_every=2, eval_every=4, checkpoint_every=4, device="cpu")
    figures = Trainer(bundle.model, train, bundle.train_dataset, bundle.collate_fn, bundle.evaluate,
                      exp_dir=tmp_path / "exp", run_config=config).fit()
    assert figures["lines"] == test_lines and 0 < figures["bpd"] < math.log2(LEVELS) + 1
    result = HandwritingTask(config).evaluate_checkpoint(tmp_path / "exp" / "checkpoints" / "last.pt", root,
                                                         tmp_path / "exp" / "eval")
    assert result["bpd"] == pytest.approx(figures["bpd"], rel=1e-5)
    assert (tmp_path / "exp" / "eval" / "reconstructions.png").exists()
    assert snapshot(root) == before
