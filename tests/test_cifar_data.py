"""The CIFAR-10 python-format reader on a fixture written the way the real archive is, and the built crop set."""
import os
import pickle
import sys
import tarfile

import numpy as np
import pytest

from seqvq.data.cifar import CifarImages, collate_images, read_cifar, write_cifar_batches
from seqvq.errors import UserError

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "data_prep"))
import make_mini_images  # noqa: E402


def _real_layout(root, per_batch=3):
    """cifar-10-batches-py/ as in cifar-10-python.tar.gz: bytes keys, uint8 (N, 3072) planar RGB rows, list
    labels, protocol 2 pickles. Image n of the whole training set has every value equal to n, except one green
    pixel at (row 5, column 7) = 200 + n; its label is n % 10."""
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)

    def dump(name, first, count):
        data = np.repeat(np.arange(first, first + count, dtype=np.uint8)[:, None], 3072, axis=1)
        data[:, 1024 + 5 * 32 + 7] = 200 + np.arange(first, first + count)
        batch = {b"batch_label": name.encode(), b"labels": [n % 10 for n in range(first, first + count)],
                 b"data": data, b"filenames": [f"{n}.png".encode() for n in range(first, first + count)]}
        with open(os.path.join(folder, name), "wb") as handle:
            pickle.dump(batch, handle, protocol=2)

    for number in range(5):
        dump(f"data_batch_{number + 1}", number * per_batch, per_batch)
    dump("test_batch", 40, 2)
    with open(os.path.join(folder, "batches.meta"), "wb") as handle:
        pickle.dump({b"label_names": [b"airplane"] * 10, b"num_cases_per_batch": per_batch, b"num_vis": 3072},
                    handle, protocol=2)
    archive = os.path.join(root, "cifar-10-python.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return folder, archive


@pytest.mark.parametrize("where", ["folder", "parent", "archive"])
def test_reader_gives_planar_rgb_images_in_batch_order(tmp_path, where):
    folder, archive = _real_layout(str(tmp_path))
    path = {"folder": folder, "parent": str(tmp_path), "archive": archive}[where]
    train = CifarImages(path, "train")
    assert len(train) == 15
    for n in range(15):
        image, label = train[n]
        assert image.shape == (3, 32, 32) and str(image.dtype) == "torch.uint8"
        assert label == n % 10
        assert int(image[1, 5, 7]) == 200 + n  # green plane, row-major
        assert int(image[0, 5, 7]) == n and int(image[2, 5, 7]) == n and int(image[1, 5, 6]) == n
    test_images, test_labels = read_cifar(path, "test")
    assert test_images.shape == (2, 3, 32, 32) and test_labels.tolist() == [0, 1]
    batch = collate_images([train[0], train[1]])
    assert batch.images.shape == (2, 3, 32, 32) and batch.labels.tolist() == [0, 1]


def test_reader_errors_name_the_file(tmp_path):
    folder, _ = _real_layout(str(tmp_path))
    os.remove(os.path.join(folder, "data_batch_3"))
    with pytest.raises(UserError, match="data_batch_3"):
        CifarImages(folder, "train")
    with pytest.raises(UserError, match="no such file"):
        CifarImages(str(tmp_path / "missing"), "test")


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_reader_refuses_pickles_that_would_run_code(tmp_path):
    folder, _ = _real_layout(str(tmp_path))
    with open(os.path.join(folder, "test_batch"), "wb") as handle:
        pickle.dump({b"data": _Exploit(), b"labels": []}, handle, protocol=2)
    with pytest.raises(ValueError, match="test_batch: not a CIFAR-10 python batch"):
        CifarImages(folder, "test")


def test_written_set_reads_back(tmp_path):
    rng = np.random.default_rng(0)
    train = (rng.integers(0, 256, (11, 3, 32, 32), dtype=np.uint8), rng.integers(0, 3, 11))
    test = (rng.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8), rng.integers(0, 3, 4))
    write_cifar_batches(str(tmp_path), train, test, ["a", "b", "c"])
    assert sorted(os.listdir(tmp_path)) == ["batches.meta", "data_batch_1", "data_batch_2", "data_batch_3",
                                            "data_batch_4", "data_batch_5", "test_batch"]
    for split, (images, labels) in (("train", train), ("test", test)):
        read_images, read_labels = read_cifar(str(tmp_path), split)
        np.testing.assert_array_equal(read_images, images)
        np.testing.assert_array_equal(read_labels, labels)


def test_built_crops_keep_test_regions_out_of_training():
    """A photo whose left 3/4 is dark and right 1/4 bright: every training tile is dark, every test tile bright."""
    photo = np.zeros((96, 256, 3), dtype=np.uint8)
    photo[:, 192:] = 255
    (train_images, train_labels), (test_images, test_labels), names = make_mini_images.build(
        [("two_tone", photo)], scales=(64, 96), test_fraction=0.25, train_stride=16)
    assert names == ["two_tone"] and len(train_labels) > len(test_labels) > 0
    assert train_images.shape[1:] == (3, 32, 32) and test_images.shape[1:] == (3, 32, 32)
    assert train_images.max() < 64 and test_images.min() > 192
    assert set(train_labels.tolist()) == {0} and set(test_labels.tolist()) == {0}
