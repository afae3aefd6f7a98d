"""The ImageNet-style class-folder reader and the standard augmentation (seqvq.data.image_folder)."""
import numpy as np
import pytest
import torch
from PIL import Image

from seqvq.data.class_folder import (IMAGENET_MEAN, IMAGENET_STD, ClassFolderDataset, EvalCollate, TrainCollate,
                                     eval_view, random_resized_crop_box, train_view)
from seqvq.errors import UserError


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path):
    """train/{cat,dog}, val/{cat,dog} in the ImageNet100 layout, JPEG and PNG, RGB and greyscale."""
    rng = np.random.default_rng(0)
    _write(tmp_path / "train" / "dog" / "d1.JPEG", rng.integers(0, 256, (20, 30, 3)))
    _write(tmp_path / "train" / "dog" / "d2.png", rng.integers(0, 256, (24, 24)))
    _write(tmp_path / "train" / "cat" / "c1.JPEG", rng.integers(0, 256, (30, 20, 3)))
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image file name")
    _write(tmp_path / "val" / "dog" / "d3.JPEG", rng.integers(0, 256, (16, 16, 3)))
    return tmp_path


def test_classes_sorted_labels_and_rgb(folder):
    train = ClassFolderDataset(str(folder / "train"))
    assert train.classes == ["cat", "dog"]
    assert [(p.rsplit("/", 1)[1], label) for p, label in train.samples] == [("c1.JPEG", 0), ("d1.JPEG", 1),
                                                                             ("d2.png", 1)]
    image, label = train[2]
    assert image.mode == "RGB" and image.size == (24, 24) and label == 1
    val = ClassFolderDataset(str(folder / "val"), train.classes)
    assert [label for _, label in val.samples] == [1]  # labels follow the training classes, not val's own folders


def test_bad_image_is_a_one_line_error_naming_the_file(folder):
    bad = folder / "train" / "cat" / "c2.JPEG"
    bad.write_bytes(b"this is not a JPEG")
    dataset = ClassFolderDataset(str(folder / "train"))
    with pytest.raises(ValueError) as error:
        dataset[[p for p, _ in dataset.samples].index(str(bad))]
    message = str(error.value)
    assert str(bad) in message and "\n" not in message


def test_folder_errors(folder, tmp_path):
    with pytest.raises(UserError, match="no such image folder"):
        ClassFolderDataset(str(tmp_path / "missing"))
    (tmp_path / "val" / "bird").mkdir()
    with pytest.raises(ValueError, match="bird"):
        ClassFolderDataset(str(folder / "val"), ["cat", "dog"])
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="no images"):
        ClassFolderDataset(str(tmp_path / "empty"))


def test_random_resized_crop_box_follows_scale_and_ratio():
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        left, top, w, h = random_resized_crop_box(100, 80, (0.2, 0.5), (3 / 4, 4 / 3), generator)
        assert 0 <= left and left + w <= 100 and 0 <= top and top + h <= 80
        assert 0.2 * 8000 * 0.9 <= w * h <= 0.5 * 8000 * 1.1  # rounding of the sides
        assert 3 / 4 * 0.9 <= w / h <= 4 / 3 * 1.1
    # no crop of the allowed ratio fits a very wide image: the central crop of the nearest ratio
    assert random_resized_crop_box(400, 10, (0.9, 1.0), (3 / 4, 4 / 3), generator) == (193, 0, 13, 10)


def test_views_are_normalized_and_the_flip_mirrors():
    colour = (200, 100, 50)
    plain = train_view(Image.new("RGB", (40, 30), colour), 16, torch.Generator().manual_seed(0))
    expected = (torch.tensor(colour) / 255.0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert plain.shape == (3, 16, 16)
    assert torch.allclose(plain, expected.view(3, 1, 1).expand(3, 16, 16), atol=1e-5)

    ramp = Image.fromarray(np.tile(np.arange(0, 240, 15, dtype=np.uint8), (16, 1))).convert("RGB")  # 16 x 16
    views = [train_view(ramp, 16, torch.Generator().manual_seed(seed), scale=(1.0, 1.0), ratio=(1.0, 1.0))
             for seed in range(16)]
    whole = views[0] if views[0][0, 0, 0] < views[0][0, 0, -1] else views[0].flip(-1)
    assert all(torch.equal(v, whole) or torch.equal(v, whole.flip(-1)) for v in views)
    assert sum(torch.equal(v, whole.flip(-1)) for v in views) not in (0, len(views))
    unflipped = [train_view(ramp, 16, torch.Generator().manual_seed(s), (1.0, 1.0), (1.0, 1.0), flip=False)
                 for s in range(8)]
    assert all(torch.equal(v, whole) for v in unflipped)


def test_eval_view_resizes_the_shorter_side_then_centre_crops():
    columns = np.tile(np.arange(64, dtype=np.uint8) * 4, (32, 1))  # 32 high, 64 wide, value = 4 * column
    view = eval_view(Image.fromarray(columns).convert("RGB"), 16, 32)  # no resize needed: crop the centre 16 x 16
    red = view[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    assert torch.allclose(red[0] * 255, torch.arange(24, 40, dtype=torch.float32) * 4, atol=1e-3)
    assert eval_view(Image.new("RGB", (50, 100)), 24, 28).shape == (3, 24, 24)


def test_collates_are_deterministic_per_generator(folder):
    items = list(ClassFolderDataset(str(folder / "train")))
    collate = TrainCollate(12, scale=(0.3, 1.0))
    first = collate(items, generator=torch.Generator().manual_seed(3))
    again = collate(items, generator=torch.Generator().manual_seed(3))
    other = collate(items, generator=torch.Generator().manual_seed(4))
    assert first.images.shape == (3, 3, 12, 12) and first.labels.tolist() == [0, 1, 1]
    assert torch.equal(first.images, again.images) and not torch.equal(first.images, other.images)
    batch = EvalCollate(12, 14)(items)
    assert batch.images.shape == (3, 3, 12, 12)
    with pytest.raises(ValueError, match="resize_size"):
        EvalCollate(12, 10)
