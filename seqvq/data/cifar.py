"""CIFAR-10 in its standard python format, read in place, and writing a set in the same format.

The archive ``cifar-10-python.tar.gz`` unpacks to ``cifar-10-batches-py/`` holding ``data_batch_1`` ...
``data_batch_5`` (training), ``test_batch`` and ``batches.meta``. Each batch is a pickled dict (written by
Python 2, so its keys are bytes) with ``b"data"``: uint8 (N, 3072) rows of 1024 red, 1024 green then 1024 blue
values of a 32x32 image in row-major order, ``b"labels"``: N ints, ``b"filenames"`` and ``b"batch_label"``.

:class:`CifarImages` accepts the ``.tar.gz`` (members read from the archive, nothing extracted), the
``cifar-10-batches-py`` folder or a folder containing it. Batches are unpickled with an unpickler that only
resolves numpy's array constructors, so a tampered file cannot run code. :func:`write_cifar_batches` writes a
set in the same layout (used by ``data_prep/make_mini_images.py`` for the built set and by the tests).

Images come out channel-first, ``(3, 32, 32)`` uint8, the batch files' own layout and the one ``nn.Conv2d``
takes; :func:`collate_images` stacks them into an :class:`ImageBatch`.
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from seqvq.errors import UserError

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
SIDE, CHANNELS = 32, 3

# numpy's array pickling (numpy >= 2 writes numpy._core, the original CIFAR files numpy.core), and the bytes
# constructor Python 3 uses for bytes in protocol-2 pickles.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR batch dicts: builtins containers plus numpy arrays, nothing else."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch file")
        return super().find_class(module, name)


def _load_batch(raw: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3, 32, 32) uint8, labels (N,) int64) of one pickled batch; `source` names it in errors."""
    try:
        batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as error:  # a truncated or foreign file: say which one
        raise UserError(f"{source}: not a CIFAR-10 python batch ({error})") from error
    if not isinstance(batch, dict):
        raise UserError(f"{source}: not a CIFAR-10 python batch (a {type(batch).__name__}, not a dict)")
    batch = {key.decode() if isinstance(key, bytes) else key: value for key, value in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise UserError(f"{source}: a CIFAR-10 batch needs 'data' and 'labels' entries, found {sorted(batch)}")
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CHANNELS * SIDE * SIDE:
        raise UserError(f"{source}: 'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}")
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise UserError(f"{source}: {len(labels)} labels for {data.shape[0]} images")
    return data.reshape(-1, CHANNELS, SIDE, SIDE), labels


def _read_members(path: str, names: tuple[str, ...]) -> list[tuple[bytes, str]]:
    """Raw bytes of the batch files `names` from an archive or folder, with a name for error messages."""
    if os.path.isfile(path):
        if not tarfile.is_tarfile(path):
            raise UserError(f"{path}: not a tar archive; give cifar-10-python.tar.gz or the "
                             f"{FOLDER}/ folder")
        with tarfile.open(path, "r:*") as archive:
            members = {os.path.basename(m.name): m for m in archive.getmembers() if m.isfile()}
            missing = [name for name in names if name not in members]
            if missing:
                raise UserError(f"{path}: the archive lacks {', '.join(missing)}; is it "
                                        f"cifar-10-python.tar.gz?")
            return [(archive.extractfile(members[name]).read(), f"{path}:{members[name].name}") for name in names]
    folder = path if os.path.isfile(os.path.join(path, names[0])) else os.path.join(path, FOLDER)
    missing = [name for name in names if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise UserError(f"{path}: no {', '.join(missing)} here or in {FOLDER}/; give "
                                f"cifar-10-python.tar.gz, its unpacked {FOLDER}/ folder, or build the mini set "
                                f"with data_prep/make_mini_images.py")
    out = []
    for name in names:
        with open(os.path.join(folder, name), "rb") as handle:
            out.append((handle.read(), os.path.join(folder, name)))
    return out


def read_cifar(path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All images (N, 3, 32, 32) uint8 and labels (N,) of `split` ("train" or "test") under `path`."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file or folder; give cifar-10-python.tar.gz or {FOLDER}/")
    names = TRAIN_BATCHES if split == "train" else TEST_BATCHES
    batches = [_load_batch(raw, source) for raw, source in _read_members(path, names)]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


@dataclass
class ImageBatch:
    """`images` (B, 3, 32, 32) uint8 sub-pixel values, `labels` (B,) int64."""

    images: torch.Tensor
    labels: torch.Tensor


class CifarImages(Dataset):
    """One split of CIFAR-10 (or of a set in its format); items are (image (3, 32, 32) uint8, label)."""

    def __init__(self, path: str, split: str = "train", max_images: int | None = None):
        images, labels = read_cifar(path, split)
        if max_images is not None:
            images, labels = images[:max_images], labels[:max_images]
        self.images, self.labels = torch.from_numpy(images), torch.from_numpy(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


def collate_images(items: list[tuple[torch.Tensor, int]]) -> ImageBatch:
    return ImageBatch(torch.stack([image for image, _ in items]),
                      torch.tensor([label for _, label in items], dtype=torch.int64))


def _atomic_pickle(value, path: str) -> None:
    tmp_path = path + ".tmp"
    with open(tmp_path, "wb") as handle:
        pickle.dump(value, handle, protocol=2)
    os.replace(tmp_path, path)


def write_cifar_batches(folder: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                        label_names: list[str]) -> None:
    """Write (images (N, 3, 32, 32) uint8, labels) splits as `folder`/data_batch_*, test_batch, batches.meta in
    the CIFAR-10 python layout (bytes keys, as the original Python 2 pickles), each file atomically."""
    os.makedirs(folder, exist_ok=True)

    def batch(images, labels, label, offset):
        return {b"batch_label": label.encode(), b"labels": [int(v) for v in labels],
                b"data": np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), CHANNELS * SIDE * SIDE),
                b"filenames": [f"image_{offset + i:06d}.png".encode() for i in range(len(images))]}

    train_images, train_labels = train
    chunks = np.array_split(np.arange(len(train_labels)), len(TRAIN_BATCHES))
    for number, chunk in enumerate(chunks, start=1):
        offset = int(chunk[0]) if len(chunk) else 0
        _atomic_pickle(batch(train_images[chunk], train_labels[chunk], f"training batch {number} of 5", offset),
                       os.path.join(folder, f"data_batch_{number}"))
    _atomic_pickle(batch(*test, "testing batch 1 of 1", 0), os.path.join(folder, "test_batch"))
    per_batch = len(chunks[0]) if chunks else 0
    _atomic_pickle({b"label_names": [name.encode() for name in label_names], b"num_cases_per_batch": per_batch,
                    b"num_vis": CHANNELS * SIDE * SIDE}, os.path.join(folder, "batches.meta"))
